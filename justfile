# uds-course: each recipe is a thin wrapper over a cargo command that the README also shows,
# so plain cargo works as well. N is a lesson number, written 1 or 01.

set positional-arguments
set shell := ["bash", "-euo", "pipefail", "-c"]

# List these recipes
default:
    @just --list

# One line per lesson: number, short name, the one idea
list:
    cargo run -q -- list

# Run lesson N: its client with sample messages, then what its server printed
lesson N:
    cargo run -q -- lesson "$1"

# Start lesson N's server; ARGS go to it (a socket path, flags)
server N *ARGS:
    @n=$(printf %02d "$((10#$1))") && cargo run -q -p "lesson$n" --bin "lesson$n-server" -- "${@:2}"

# Run lesson N's client; ARGS go to it (the socket path, then messages)
client N *ARGS:
    @n=$(printf %02d "$((10#$1))") && cargo run -q -p "lesson$n" --bin "lesson$n-client" -- "${@:2}"

# Run lesson N's tests and exercise checks, which fail until solved; --solution: the reference ones
check N *ARGS:
    cargo run -q -- check "$1" "${@:2}"

# Run every test of every lesson, the runner and the helpers
test:
    cargo test

# The source diff from lesson A to lesson B: only the idea B adds
diff A B:
    cargo run -q -- diff "$1" "$2"

# Regenerate every terminal transcript the book shows (book/transcripts/); review the diff
transcripts:
    cargo run -q -- transcripts

# Measure a Unix socket beside TCP, a pipe and a file, and each lesson's server; --quick: seconds
bench *ARGS:
    cargo run --release -q -- bench "$@"

# Run the full bench and keep it as the book's recorded run (book/src/measured/); review the diff
bench-book:
    cargo run --release -q -- bench
    mkdir -p book/src/measured && cp target/bench/report.md book/src/measured/
    cargo run -q -- bench-chart book/src/measured/report.md book/src/measured/chart.svg

# Build the book into book/book/ (open book/book/index.html)
book:
    mdbook build book

# Build the book and check every page in headless Chromium (needs chromium, chromium-driver, selenium)
book-check:
    mdbook build book && python3 book/check_in_browser.py

# Serve the book on localhost (mdbook serve; without it, build once and serve with Python)
book-serve:
    @# mdbook built with only the search feature (as CI installs it) has no `serve`: then build
    @# once and serve the files with Python.
    @if mdbook serve --help >/dev/null 2>&1; then mdbook serve book --open; \
    else mdbook build book && python3 -m http.server --directory book/book 3000; fi
