//! lesson01-server: bind a socket file, accept clients, answer each line in upper case.
//! Reference solution of exercise 1 (EXERCISES.md).
//!
//! The one idea: a server is `bind` (which creates a *socket file*, a name in the file system
//! that clients `connect` to), `listen`, and an `accept` loop that gives each client its own
//! thread. The socket file outlives the server, so a second run after a crash fails with
//! "Address already in use" — lesson 02 fixes that.
//!
//! Run: `cargo run --bin lesson01-server` prints `listening on PATH`; then, in another terminal,
//! `cargo run --bin lesson01-client -- PATH hello` or `nc -NU PATH`. Partner: client.rs.

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use std::{fs, thread};

use anyhow::Context;
use clap::Parser;
use lesson01::{SOCKET_NAME, default_socket_dir, log};

/// Answer each line a client sends with the same line in ASCII upper case.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Where to create the socket [default: $XDG_RUNTIME_DIR/uds-course/lesson01.sock]
    path: Option<PathBuf>,
}

fn main() -> ExitCode {
    if let Err(err) = run() {
        log!("{err:#}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

fn run() -> anyhow::Result<()> {
    let args = Args::parse();
    let path = match args.path {
        Some(path) => path,
        None => {
            let dir = default_socket_dir();
            fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
            dir.join(SOCKET_NAME)
        }
    };
    // ANCHOR: bind
    // `bind` creates the socket file; std then calls `listen`, so clients can queue up until
    // we `accept` them. If anything exists at `path` — even the socket file of a server that
    // died — `bind` fails with "Address already in use".
    let listener = UnixListener::bind(&path).with_context(|| format!("bind {}", path.display()))?;
    // ANCHOR_END: bind
    // The line that scripts and tests wait for. writeln!, not println!, which would panic
    // if nobody reads our stdout.
    let mut stdout = io::stdout();
    writeln!(stdout, "listening on {}", path.display())
        .and_then(|()| stdout.flush())
        .context("write stdout")?;
    // ANCHOR: accept_loop
    for id in 1.. {
        match listener.accept() {
            Ok((stream, _addr)) => {
                // Builder, not thread::spawn: spawn panics when the OS refuses a thread.
                if let Err(err) = thread::Builder::new().spawn(move || serve(id, stream)) {
                    log!("connection {id}: spawn: {err}");
                }
            }
            Err(err) => {
                // Out of file descriptors (EMFILE) the client stays queued, so `accept` fails
                // again at once: a bare `continue` here would spin a core. Wait instead.
                log!("accept: {err}");
                thread::sleep(Duration::from_millis(100));
            }
        }
    }
    // ANCHOR_END: accept_loop
    Ok(())
}

// ANCHOR: serve
/// One client's connection, on its own thread: whatever goes wrong ends only this connection.
fn serve(id: u64, stream: UnixStream) {
    log!("connection {id}: accepted");
    match answer_lines(&stream) {
        Ok(lines) => log!("connection {id}: closed, lines answered: {lines}"),
        Err(err) => log!("connection {id}: {err:#}"),
    }
} // dropping `stream` closes the connection: the client reads EOF

/// Answer each line until EOF (the client half-closed or went away); returns how many.
fn answer_lines(stream: &UnixStream) -> anyhow::Result<u64> {
    // `&UnixStream` is both Read and Write: one socket carries both directions (full duplex).
    let mut reader = BufReader::new(stream);
    let mut writer = stream;
    let mut line = Vec::new();
    let mut lines = 0;
    loop {
        line.clear();
        // read_until, not read_line: a client may send bytes that are not UTF-8.
        if reader.read_until(b'\n', &mut line).context("read")? == 0 {
            return Ok(lines);
        }
        // `quit` ends the conversation from our side: answer, return without reading on, and
        // `serve` drops the stream — the client reads EOF. The bytes are compared before
        // upper-casing, so only the exact line counts: `QUIT` and `quitter` are echoed.
        if matches!(line.as_slice(), b"quit\n" | b"quit") {
            writer.write_all(b"BYE\n").context("write")?;
            return Ok(lines + 1);
        }
        if !line.ends_with(b"\n") {
            line.push(b'\n'); // a last line without a newline is answered too
        }
        line.make_ascii_uppercase();
        writer.write_all(&line).context("write")?;
        lines += 1;
    }
}
// ANCHOR_END: serve
