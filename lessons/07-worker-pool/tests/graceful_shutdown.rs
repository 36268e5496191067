//! Lesson 03's one idea, still holding in lesson 07: SIGINT and SIGTERM stop lesson07-server
//! gracefully, and it removes its socket file — only its own — on the way out.

use std::fs;
use std::io::{ErrorKind, Read};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::thread;
use std::time::Duration;

use assert_cmd::Command;
use rustix::process::Signal;
mod common;

use common::{AT_ONCE, a_second_signal_exits_1_at_once, an_in_flight_connection_completes_after};
use uds_test_support::{Conn, DEADLINE, Server, exchange, run_with_stdout_closed, temp_dir};

mod under_test;
use under_test::SERVER;

fn server() -> &'static Path {
    under_test::server()
}

/// Start the server with a grace period of `grace_ms`.
fn start(path: &Path, grace_ms: u64) -> Server {
    common::start(server(), path, grace_ms)
}

/// SIGTERM: the in-flight connection completes, the file is removed, exit code 0.
#[test]
fn sigterm_lets_the_in_flight_client_finish_then_removes_the_file_and_exits_0() {
    an_in_flight_connection_completes_after(server(), Signal::TERM, "SIGTERM");
}

/// SIGINT (Ctrl-C): the same as SIGTERM.
#[test]
fn sigint_lets_the_in_flight_client_finish_then_removes_the_file_and_exits_0() {
    an_in_flight_connection_completes_after(server(), Signal::INT, "SIGINT");
}

/// With no client, a signal stops the server at once: `accept` is woken, not left blocked
/// until a next client happens to connect.
#[test]
fn an_idle_server_stops_at_once_on_sigterm() {
    let dir = temp_dir();
    let path = dir.path().join("lesson07.sock");
    let mut server = start(&path, 60_000);
    server.signal(Signal::TERM);
    // Milliseconds when `accept` is woken; a missed wake-up waits for a client forever.
    let status = server.wait_exit_within(AT_ONCE);
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{}", server.output());
    assert!(!path.exists());
}

/// A second signal during the grace period removes the file and exits 1 at once, without
/// waiting for the open connection or the (minute-long) grace period.
#[test]
fn a_second_signal_removes_the_file_and_exits_1_at_once() {
    a_second_signal_exits_1_at_once(server(), Signal::INT, "SIGINT");
}

/// The grace period bounds the wait: a client that never finishes is cut off, and the server
/// still removes its file and exits 0.
#[test]
fn the_grace_period_cuts_off_a_client_that_never_finishes() {
    let dir = temp_dir();
    let path = dir.path().join("lesson07.sock");
    let server = start(&path, 300);
    let mut client = Conn::connect(&path);
    assert_eq!(client.ask("idle from now on"), "IDLE FROM NOW ON\n");
    server.signal(Signal::TERM);
    let (status, output) = server.finish();
    assert_eq!(status.code(), Some(0), "{output}");
    assert!(output.contains("grace period over; cutting off open connections: 1"), "{output}");
    assert!(!path.exists());
    assert!(client.at_eof(), "the cut-off client should read EOF");
}

/// While the server waits out the grace period it sleeps: next to no CPU time.
#[test]
fn the_grace_period_is_not_a_busy_loop() {
    let dir = temp_dir();
    let path = dir.path().join("lesson07.sock");
    let mut server = start(&path, 60_000);
    let mut client = Conn::connect(&path);
    assert_eq!(client.ask("wait for me"), "WAIT FOR ME\n");
    server.signal(Signal::TERM);
    server.wait_for_line_containing("waiting up to 60000 ms for open connections: 1");
    let before = server.cpu_time();
    thread::sleep(Duration::from_millis(500));
    let used = server.cpu_time() - before;
    assert!(used < Duration::from_millis(100), "{used:?} of CPU in 500 ms of waiting");
    client.shutdown_write();
    assert!(client.at_eof());
    assert_eq!(server.finish().0.code(), Some(0));
}

/// If the socket file was replaced (removed, and the path bound by someone else) the server
/// leaves the new file alone: it removes only the inode it bound.
#[test]
fn the_guard_leaves_a_socket_file_that_is_no_longer_the_one_it_bound() {
    let dir = temp_dir();
    let path = dir.path().join("lesson07.sock");
    let server = start(&path, 60_000);
    fs::remove_file(&path).expect("remove the server's socket file");
    let _newcomer = UnixListener::bind(&path).expect("bind the path again");
    let inode = fs::metadata(&path).expect("stat").ino();
    server.signal(Signal::TERM);
    let (status, output) = server.finish();
    assert_eq!(status.code(), Some(0), "{output}");
    assert_eq!(fs::metadata(&path).expect("the newcomer's file").ino(), inode, "{output}");
    assert!(output.contains("is no longer our socket; left in place"), "{output}");
}

/// SIGKILL cannot be caught: the file stays. Lesson 02's start-up recovers it.
#[test]
fn after_sigkill_the_file_stays_and_the_next_start_recovers_it() {
    let dir = temp_dir();
    let path = dir.path().join("lesson07.sock");
    let mut killed = start(&path, 60_000);
    killed.signal(Signal::KILL);
    killed.wait_exit();
    assert!(path.exists(), "SIGKILL runs no cleanup: the file should stay");
    let _next = start(&path, 60_000);
    assert_eq!(exchange(&path, b"recovered\n"), b"RECOVERED\n");
}

/// The grace period is 5000 ms unless `--grace-ms` says otherwise.
#[test]
fn the_grace_period_defaults_to_5000_ms() {
    let help = Command::new(server()).arg("--help").timeout(DEADLINE).output().expect("--help");
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("--grace-ms <N>") && help.contains("[default: 5000]"), "{help}");
}

/// A client still queued (connected, never accepted) when the signal comes is not served, and
/// does not wait out the grace period either: it is reset as soon as accepting stops.
#[test]
fn a_client_still_queued_at_the_signal_is_not_served_and_not_kept_waiting() {
    let dir = temp_dir();
    let path = dir.path().join("lesson07.sock");
    let mut server = start(&path, 60_000);
    // One descriptor to spare: the in-flight client gets it, the next one stays queued.
    server.allow_only_more_fds(1);
    let mut in_flight = Conn::connect(&path);
    assert_eq!(in_flight.ask("in flight"), "IN FLIGHT\n");
    let mut queued = UnixStream::connect(&path).expect("connect: queued by the kernel");
    server.wait_for_line_containing("accept: Too many open files");
    server.signal(Signal::TERM);
    server.wait_for_line(&format!("{SERVER}: SIGTERM: shutting down"));
    // The grace period is a minute and the in-flight client is still open; the queued client
    // must hear within seconds that it will not be served.
    queued.set_read_timeout(Some(AT_ONCE)).expect("set a read timeout");
    let mut reply = Vec::new();
    match queued.read_to_end(&mut reply) {
        Ok(_) => assert!(reply.is_empty(), "a queued client was served: {reply:?}"),
        Err(err) => assert_eq!(err.kind(), ErrorKind::ConnectionReset, "{err}"),
    }
    assert_eq!(in_flight.ask("still served"), "STILL SERVED\n");
    in_flight.shutdown_write();
    assert!(in_flight.at_eof());
    assert_eq!(server.finish().0.code(), Some(0));
}

/// The guard removes the socket file on an error path too: here the server cannot print its
/// `listening on` line, so it fails with one line on stderr — and its file is gone.
#[test]
fn the_guard_removes_the_file_when_the_server_fails_after_bind() {
    let dir = temp_dir();
    let path = dir.path().join("lesson07.sock");
    let mut cmd = std::process::Command::new(server());
    cmd.arg(&path);
    let (status, stderr) = run_with_stdout_closed(cmd, Vec::new());
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert_eq!(stderr, format!("{SERVER}: write stdout: Broken pipe (os error 32)\n"));
    assert!(!path.exists(), "the guard left the socket file behind");
}
