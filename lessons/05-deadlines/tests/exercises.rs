//! Exercise checks for lesson 05 (EXERCISES.md). A plain `cargo test` skips them (`#[ignore]`);
//! `cargo run -- check 5` runs them against your binaries, `--solution` against the reference ones.

use std::env;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use assert_cmd::cargo::cargo_bin;
use uds_test_support::{ChildGuard, DEADLINE, Server, TICK, stale_socket_file, temp_dir};

/// The server under test: `UDS_SERVER` (an absolute path), else this lesson's own.
fn server() -> PathBuf {
    env::var_os("UDS_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| cargo_bin!("lesson05-server").to_owned())
}

/// The client under test: `UDS_CLIENT` (an absolute path), else this lesson's own.
fn client() -> PathBuf {
    env::var_os("UDS_CLIENT")
        .map(PathBuf::from)
        .unwrap_or_else(|| cargo_bin!("lesson05-client").to_owned())
}

/// How much later than its timeout something may happen on a loaded machine and still count
/// as "at the timeout".
const SLACK: Duration = Duration::from_secs(2);

/// Start the server under test on `path` with `extra` flags after the path.
fn start(path: &Path, extra: &[&str]) -> Server {
    let mut args = vec![path.to_str().expect("a UTF-8 temp path")];
    args.extend(extra);
    Server::start(&server(), path, &args)
}

/// A connection of the test's own, with a deadline on every read and write.
fn connect(path: &Path) -> UnixStream {
    let stream = UnixStream::connect(path).expect("connect");
    stream.set_read_timeout(Some(DEADLINE)).expect("set a read timeout");
    stream.set_write_timeout(Some(DEADLINE)).expect("set a write timeout");
    stream
}

/// Start the client under test on `path` with `args`, its stdout piped; it runs on its own.
fn spawn_client(path: &Path, args: &[&str]) -> ChildGuard {
    let child = Command::new(client())
        .arg(path)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the client");
    ChildGuard(child)
}

/// Wait up to `limit` for the client to exit; its exit code, stdout and stderr.
fn finish(mut child: ChildGuard, limit: Duration) -> (Option<i32>, String, String) {
    let status = child
        .wait_within(limit)
        .unwrap_or_else(|| panic!("the client was still running after {limit:?}"));
    let read = |pipe: &mut dyn Read| {
        let mut text = String::new();
        pipe.read_to_string(&mut text).expect("read the client's output");
        text
    };
    let stdout = read(child.0.stdout.as_mut().expect("piped stdout"));
    let stderr = read(child.0.stderr.as_mut().expect("piped stderr"));
    (status.code(), stdout, stderr)
}

// Exercise 1: a maximum age for every connection.

/// A connection that sends a line every 100 ms is never idle (300 ms), yet at
/// `--max-connection-ms 500` it is answered `error: connection older than 500 ms` and closed;
/// every line before that was answered.
#[test]
#[ignore = "exercise: cargo run -- check 5"]
fn ex1_a_busy_connection_is_closed_at_its_maximum_age() {
    let dir = temp_dir();
    let path = dir.path().join("lesson05.sock");
    let mut server = start(&path, &["--idle-timeout-ms", "300", "--max-connection-ms", "500"]);
    let started = Instant::now();
    let busy = connect(&path);
    let mut replies = BufReader::new(&busy);
    let mut reply = String::new();
    for i in 0.. {
        (&busy).write_all(format!("ping {i}\n").as_bytes()).expect("send a line");
        reply.clear();
        replies.read_line(&mut reply).expect("read a reply");
        if reply.starts_with("error: ") {
            break;
        }
        assert_eq!(reply, format!("PING {i}\n"));
        assert!(started.elapsed() < Duration::from_millis(500) + SLACK, "never closed");
        thread::sleep(Duration::from_millis(100));
    }
    let elapsed = started.elapsed();
    assert_eq!(reply, "error: connection older than 500 ms\n");
    let max_age = Duration::from_millis(500); // a socket timeout may end a tick early
    assert!(elapsed + TICK >= max_age, "closed after {elapsed:?}, before 500 ms");
    let mut rest = Vec::new();
    replies.read_to_end(&mut rest).expect("read to EOF");
    assert!(rest.is_empty(), "more after the error line: {rest:?}");
    server.wait_for_line("lesson05-server: connection 1: connection older than 500 ms; closed");
}

/// Both limits hold at once, and the earlier decides: a silent connection is still closed by
/// the idle timeout (200 ms) long before its maximum age (a minute).
#[test]
#[ignore = "exercise: cargo run -- check 5"]
fn ex1_a_silent_connection_is_still_closed_by_the_idle_timeout() {
    let dir = temp_dir();
    let path = dir.path().join("lesson05.sock");
    let _server = start(&path, &["--idle-timeout-ms", "200", "--max-connection-ms", "60000"]);
    let started = Instant::now();
    let silent = connect(&path);
    let mut reply = String::new();
    BufReader::new(&silent).read_line(&mut reply).expect("read the error line");
    assert_eq!(reply, "error: no complete line in 200 ms\n");
    assert!(started.elapsed() < Duration::from_millis(200) + SLACK, "{:?}", started.elapsed());
}

// Exercise 2: the client waits for a server to come up.

/// Started before its server, the client with `--retry-ms` keeps trying (ENOENT: no socket
/// file yet) and is served once the server is up.
#[test]
#[ignore = "exercise: cargo run -- check 5"]
fn ex2_the_client_waits_for_a_server_that_starts_late() {
    let dir = temp_dir();
    let path = dir.path().join("lesson05.sock");
    // The retry period is only an upper bound here: the server is up within a second.
    let child = spawn_client(&path, &["--retry-ms", "10000", "hello"]);
    thread::sleep(Duration::from_millis(300));
    let _server = start(&path, &[]);
    assert_eq!(finish(child, DEADLINE), (Some(0), "HELLO\n".to_owned(), String::new()));
}

/// A stale socket file (ECONNREFUSED) is retried too, as while a server restarts: the
/// server removes it on start (lesson 02) and the client gets through.
#[test]
#[ignore = "exercise: cargo run -- check 5"]
fn ex2_a_stale_socket_file_is_retried_until_the_server_is_back() {
    let dir = temp_dir();
    let path = dir.path().join("lesson05.sock");
    stale_socket_file(&path); // a socket file whose listener is gone
    let child = spawn_client(&path, &["--retry-ms", "10000", "back"]);
    thread::sleep(Duration::from_millis(300));
    let _server = start(&path, &[]);
    assert_eq!(finish(child, DEADLINE), (Some(0), "BACK\n".to_owned(), String::new()));
}

/// When nobody comes, the client gives up after `--retry-ms` with the last error, as the
/// lesson's client reports it at once.
#[test]
#[ignore = "exercise: cargo run -- check 5"]
fn ex2_the_client_gives_up_after_retry_ms_with_the_last_error() {
    let dir = temp_dir();
    let path = dir.path().join("lesson05.sock");
    let started = Instant::now();
    let child = spawn_client(&path, &["--retry-ms", "300", "anyone?"]);
    let outcome = finish(child, DEADLINE);
    let elapsed = started.elapsed();
    let error = format!(
        "lesson05-client: connect {}: No such file or directory (os error 2)\n",
        path.display()
    );
    assert_eq!(outcome, (Some(1), String::new(), error));
    assert!(elapsed >= Duration::from_millis(300), "gave up after {elapsed:?}, before 300 ms");
    assert!(elapsed < Duration::from_millis(300) + SLACK, "gave up after {elapsed:?}");
}

/// An error that waiting cannot fix is not retried: a path too long for a socket address
/// fails at once, even with a minute to retry.
#[test]
#[ignore = "exercise: cargo run -- check 5"]
fn ex2_errors_that_waiting_cannot_fix_are_not_retried() {
    let dir = temp_dir();
    let base = dir.path().as_os_str().len() + 1;
    let path = dir.path().join("s".repeat(108 - base));
    let child = spawn_client(&path, &["--retry-ms", "60000", "hi"]);
    // A client that retries this would still be trying: the limit turns that into a failure.
    let outcome = finish(child, SLACK);
    let error =
        format!("lesson05-client: connect {}: path must be shorter than SUN_LEN\n", path.display());
    assert_eq!(outcome, (Some(1), String::new(), error));
}
