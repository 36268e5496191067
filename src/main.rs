//! uds-course: the course runner. `list` the lessons, run one with `lesson N`, check its
//! exercises with `check N`, show what a lesson adds to another with `diff A B`,
//! regenerate the book's terminal blocks with `transcripts`, and measure with `bench`.
//!
//! Run: `cargo run -- list`, `cargo run -- lesson 1`, `cargo run -- check 1`,
//! `cargo run -- diff 1 2`, `cargo run -- transcripts --check`, `cargo run --release -- bench`.

mod bench;
mod cargo;
mod check;
mod child;
mod diff;
mod lessons;
mod run;
mod transcripts;

use std::io;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::lessons::Number;

/// The Unix domain sockets course, lesson by lesson.
#[derive(Parser)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// One line per lesson: number, short name, the one idea
    List,
    /// Build lesson N, run its server and its client with sample messages, show both
    Lesson {
        /// The lesson number, `1` or `01`
        n: Number,
    },
    /// Lesson N's tests, then its exercise checks: one PASS/FAIL line each (as shipped they fail)
    Check {
        /// The lesson number, `1` or `01`
        n: Number,
        /// Check the reference solutions (`solutions/exK/`) instead of the lesson's binaries
        #[arg(long)]
        solution: bool,
    },
    /// The source diff from lesson A to lesson B (or from the lesson N builds on), so only the
    /// idea shows
    Diff {
        /// The lesson to diff from; alone, the lesson N to diff to from its base
        a: Number,
        /// The lesson to diff to
        b: Option<Number>,
    },
    /// Run every scene the book shows and write its terminal blocks to book/transcripts/
    Transcripts {
        /// Compare instead of writing, and fail if any block differs (drift)
        #[arg(long)]
        check: bool,
    },
    /// Measure a Unix socket beside TCP, a pipe and a file, and each lesson's server under load
    Bench {
        /// A few seconds instead of minutes: the same tables from far fewer round trips and bytes
        #[arg(long)]
        quick: bool,
        /// Print the results as JSON instead of Markdown tables
        #[arg(long)]
        json: bool,
        /// Where to write report.md, report.json and chart.svg [default: the course's target/bench]
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
    /// The second process of a `bench` measurement, which `bench` starts itself
    #[command(hide = true)]
    BenchPeer(bench::PeerArgs),
    /// Draw the chart of a recorded report.md again, without measuring
    #[command(hide = true)]
    BenchChart {
        /// A report.md the bench wrote
        from: PathBuf,
        /// Where to write the chart (SVG)
        out: PathBuf,
    },
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        // `uds-course diff 1 2 | head`: a reader that has seen enough is not an error.
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("uds-course: {err:#}");
            // 128 + SIGINT, as a shell reports a program that Ctrl-C stopped.
            if err.is::<child::Interrupted>() { ExitCode::from(130) } else { ExitCode::FAILURE }
        }
    }
}

fn run() -> anyhow::Result<()> {
    // Usage errors exit 2 here, with clap's message.
    match Cli::parse().command {
        Cmd::List => lessons::list(),
        Cmd::Lesson { n } => run::lesson(n),
        Cmd::Check { n, solution } => check::check(n, solution),
        Cmd::Diff { a, b } => diff::diff(a, b),
        Cmd::Transcripts { check } => transcripts::transcripts(check),
        Cmd::Bench { quick, json, out } => bench::bench(quick, json, out),
        Cmd::BenchPeer(args) => bench::peer(args),
        Cmd::BenchChart { from, out } => bench::chart_from_report(&from, &out),
    }
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    let kind = |cause: &(dyn std::error::Error + 'static)| {
        cause.downcast_ref::<io::Error>().map(io::Error::kind)
    };
    err.chain().any(|cause| kind(cause) == Some(io::ErrorKind::BrokenPipe))
}
