//! Exercise checks for lesson 13 (EXERCISES.md). A plain `cargo test` skips them (`#[ignore]`);
//! `cargo run -- check 13` runs them against your binaries, `--solution` against the reference
//! ones.

use std::env;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use assert_cmd::cargo::cargo_bin;
use rustix::process::Signal;
use uds_test_support::{Conn, Server, temp_dir};

/// The server under test: `UDS_SERVER` (an absolute path), else this lesson's own.
fn server() -> PathBuf {
    env::var_os("UDS_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| cargo_bin!("lesson13-server").to_owned())
}

/// How much later than it should something may happen on a loaded machine and still count as
/// "at once".
const SLACK: Duration = Duration::from_secs(2);

/// Start the server under test on `<dir>/lesson13.sock` with `extra` flags after the path.
fn start(dir: &Path, extra: &[&str]) -> (PathBuf, Server) {
    let path = dir.join("lesson13.sock");
    let mut args = vec![path.to_str().expect("a UTF-8 temp path")];
    args.extend(extra);
    let server = Server::start(&server(), &path, &args);
    (path, server)
}

/// The next line `conn` reads within `limit`, or what went wrong instead.
fn line_within(conn: &Conn, limit: Duration) -> Result<String, String> {
    conn.stream().set_read_timeout(Some(limit)).expect("set a read timeout");
    let mut line = String::new();
    match BufReader::new(conn.stream()).read_line(&mut line) {
        Ok(_) => Ok(line),
        Err(err) => Err(format!("nothing within {limit:?}: {err}")),
    }
}

// Exercise 1: tell idle clients the server is shutting down.

/// On SIGTERM, a client that is waiting between lines and one that never sent a line are both
/// told `error: shutting down` at once, then EOF, although the grace period is a minute; the
/// server logs why it closed each, and exits 0 within moments.
#[test]
#[ignore = "exercise: cargo run -- check 13"]
fn ex1_idle_clients_are_told_shutting_down_at_once_and_the_server_exits() {
    let dir = temp_dir();
    let (path, mut server) = start(dir.path(), &["--grace-ms", "60000"]);
    let mut talked = Conn::connect(&path);
    assert_eq!(talked.ask("before"), "BEFORE\n");
    let mut silent = Conn::connect(&path);
    let accepted = "lesson13-server: connection 2: accepted";
    server.wait_for(|line| line.starts_with(accepted), accepted);
    server.signal(Signal::TERM);
    let signalled = Instant::now();
    for (name, conn) in [("between lines", &mut talked), ("silent", &mut silent)] {
        let told = line_within(conn, SLACK);
        assert_eq!(told.as_deref(), Ok("error: shutting down\n"), "the client {name}");
        assert!(conn.at_eof(), "the client {name}: more after the error line");
    }
    let status = server.wait_exit_within(SLACK);
    let (_, output) = server.finish();
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{output}");
    assert!(signalled.elapsed() < 2 * SLACK, "exited {:?} after SIGTERM", signalled.elapsed());
    for id in [1, 2] {
        let logged = format!("lesson13-server: connection {id}: shutting down; closed\n");
        assert!(output.contains(&logged), "no {logged:?} in:\n{output}");
    }
}

/// A reply owed is not cut short: a client whose line is being answered when the signal
/// comes still gets its reply; only then, waiting for its next line, is it told.
#[test]
#[ignore = "exercise: cargo run -- check 13"]
fn ex1_a_line_sent_before_the_signal_is_answered_first() {
    let dir = temp_dir();
    let (path, mut server) = start(dir.path(), &["--grace-ms", "60000"]);
    let mut conn = Conn::connect(&path);
    assert_eq!(conn.ask("first"), "FIRST\n");
    // The line is in the server's socket before the signal.
    conn.send(b"second\n");
    thread::sleep(Duration::from_millis(100));
    server.signal(Signal::TERM);
    assert_eq!(line_within(&conn, SLACK).as_deref(), Ok("SECOND\n"));
    assert_eq!(line_within(&conn, SLACK).as_deref(), Ok("error: shutting down\n"));
    assert!(conn.at_eof(), "more after the error line");
    let status = server.wait_exit_within(SLACK);
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{}", server.output());
}

// Exercise 2: a `/stats` line.

/// `/stats` is answered with the number of connections open, this one included, out of
/// `--max-connections`; once another closes, the count falls.
#[test]
#[ignore = "exercise: cargo run -- check 13"]
fn ex2_stats_counts_the_open_connections() {
    let dir = temp_dir();
    let (path, _server) = start(dir.path(), &["--max-connections", "50"]);
    let mut asking = Conn::connect(&path);
    let mut other = Conn::connect(&path);
    assert_eq!(other.ask("here too"), "HERE TOO\n");
    assert_eq!(asking.ask("/stats"), "stats: 2 of 50 connections open\n");
    other.shutdown_write();
    assert!(other.at_eof());
    drop(other);
    // The slot is given back when the connection's task ends, a moment after the close.
    let started = Instant::now();
    loop {
        let stats = asking.ask("/stats");
        if stats == "stats: 1 of 50 connections open\n" {
            break;
        }
        assert_eq!(stats, "stats: 2 of 50 connections open\n");
        assert!(started.elapsed() < SLACK, "still {stats:?} {SLACK:?} after a close");
        thread::sleep(Duration::from_millis(10));
    }
}

/// Only a line that is exactly `/stats` asks: others, `/STATS` or `/stats now` among them,
/// are upper-cased as before.
#[test]
#[ignore = "exercise: cargo run -- check 13"]
fn ex2_only_the_exact_line_asks() {
    let dir = temp_dir();
    let (path, _server) = start(dir.path(), &[]);
    let mut conn = Conn::connect(&path);
    assert_eq!(conn.ask("/stats"), "stats: 1 of 1024 connections open\n");
    for line in ["/STATS", "/stats now", " /stats", "stats"] {
        assert_eq!(conn.ask(line), format!("{}\n", line.to_ascii_uppercase()));
    }
}

// Exercise 3: a limit on lines per second.

/// With `--max-lines-per-second 5`, a client that sends ten lines at once gets five replies,
/// then `error: more than 5 lines a second`, then EOF; the server logs it and serves others.
#[test]
#[ignore = "exercise: cargo run -- check 13"]
fn ex3_a_client_over_the_rate_is_answered_and_closed() {
    let dir = temp_dir();
    let (path, mut server) = start(dir.path(), &["--max-lines-per-second", "5"]);
    let mut fast = Conn::connect(&path);
    let lines: String = (1..=10).map(|i| format!("line {i}\n")).collect();
    fast.send(lines.as_bytes());
    for i in 1..=5 {
        assert_eq!(fast.recv_line(), format!("LINE {i}\n"));
    }
    assert_eq!(fast.recv_line(), "error: more than 5 lines a second\n");
    assert!(fast.at_eof(), "more after the error line");
    server.wait_for_line("lesson13-server: connection 1: more than 5 lines a second; closed");
    assert_eq!(Conn::connect(&path).ask("next"), "NEXT\n");
}

/// A client within the rate is never cut off: eight lines, one every 300 ms (about three a
/// second), against `--max-lines-per-second 5`.
#[test]
#[ignore = "exercise: cargo run -- check 13"]
fn ex3_a_client_within_the_rate_is_served() {
    let dir = temp_dir();
    let (path, _server) = start(dir.path(), &["--max-lines-per-second", "5"]);
    let mut conn = Conn::connect(&path);
    for i in 1..=8 {
        assert_eq!(conn.ask(&format!("slow {i}")), format!("SLOW {i}\n"));
        thread::sleep(Duration::from_millis(300));
    }
}
