//! Exercise checks for lesson 12 (EXERCISES.md). A plain `cargo test` skips them (`#[ignore]`);
//! `cargo run -- check 12` runs them against your binaries, `--solution` against the reference
//! ones.

use std::env;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use assert_cmd::cargo::cargo_bin;
use rustix::process::Signal;
use tempfile::TempDir;
use uds_test_support::{Conn, DEADLINE, Server, abstract_name, have_tool, temp_dir};

/// The server under test: `UDS_SERVER` (an absolute path), else this lesson's own.
fn server() -> PathBuf {
    env::var_os("UDS_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| cargo_bin!("lesson12-server").to_owned())
}

/// Is `systemd-socket-activate` here? Outside CI its absence skips the check; in CI it fails.
fn have_activate() -> bool {
    have_tool("systemd-socket-activate", "apt-get install -y systemd")
}

/// The next notification the server sends to `socket`, within [`DEADLINE`].
fn notification(socket: &UnixDatagram) -> String {
    socket.set_read_timeout(Some(DEADLINE)).expect("set a timeout");
    let mut buf = [0; 4096];
    match socket.recv(&mut buf) {
        Ok(n) => String::from_utf8_lossy(&buf[..n]).into_owned(),
        Err(err) => panic!("no notification within {DEADLINE:?}: {err}"),
    }
}

// Exercise 1: tell the service manager we are ready (sd_notify).

/// Under `systemd-socket-activate -E NOTIFY_SOCKET=...`, the server started by the first
/// connection sends exactly `READY=1` to the notify socket, and still answers the client.
#[test]
#[ignore = "exercise: cargo run -- check 12"]
fn ex1_an_activated_server_sends_ready_1_to_notify_socket() {
    if !have_activate() {
        return;
    }
    let dir = temp_dir();
    let path = dir.path().join("lesson12.sock");
    let notify_path = dir.path().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).expect("bind the notify socket");
    let mut cmd = Command::new("systemd-socket-activate");
    cmd.arg("-l").arg(&path).arg(format!("--setenv=NOTIFY_SOCKET={}", notify_path.display()));
    cmd.arg(server()).args(["--grace-ms", "500"]);
    let mut tool = Server::spawn_cmd(cmd, &path);
    tool.wait_for_line(&format!("Listening on {} as 3.", path.display()));
    let mut client = Conn::connect(&path);
    assert_eq!(client.ask("ready?"), "READY?\n");
    assert_eq!(notification(&notify), "READY=1", "output:\n{}", tool.output());
}

/// Started without a manager, with `NOTIFY_SOCKET=@name` (an abstract name, as the protocol
/// allows): `READY=1` once it listens, then `STOPPING=1` on SIGTERM; it exits 0.
#[test]
#[ignore = "exercise: cargo run -- check 12"]
fn ex1_stopping_1_follows_on_sigterm_and_an_abstract_notify_socket_works() {
    let dir = temp_dir();
    let path = dir.path().join("lesson12.sock");
    let name = abstract_name("notify");
    let address = SocketAddr::from_abstract_name(&name).expect("an abstract address");
    let notify = UnixDatagram::bind_addr(&address).expect("bind the notify name");
    let mut cmd = Command::new(server());
    cmd.arg(&path).args(["--grace-ms", "500"]).env("NOTIFY_SOCKET", format!("@{name}"));
    let server = Server::start_cmd(cmd, &path);
    assert_eq!(notification(&notify), "READY=1", "output:\n{}", server.output());
    server.signal(Signal::TERM);
    assert_eq!(notification(&notify), "STOPPING=1", "output:\n{}", server.output());
    let (status, output) = server.finish();
    assert_eq!(status.code(), Some(0), "{output}");
}

// Exercise 2: Accept=yes, a server for each connection.

/// `systemd-socket-activate -a -l PATH SERVER ARGS...`, listening, in a temp dir of its own.
fn accept_yes(args: &[&str]) -> (TempDir, PathBuf, Server) {
    let dir = temp_dir();
    let path = dir.path().join("lesson12.sock");
    let mut cmd = Command::new("systemd-socket-activate");
    cmd.arg("-a").arg("-l").arg(&path).arg(server()).args(args);
    let mut tool = Server::spawn_cmd(cmd, &path);
    tool.wait_for_line(&format!("Listening on {} as 3.", path.display()));
    (dir, path, tool)
}

/// Wait until the tool reports that one of the servers it started exited 0.
fn wait_for_an_exit_0(tool: &mut Server) {
    let exited = |line: &str| line.starts_with("Child ") && line.ends_with(" died with code 0");
    tool.wait_for(exited, "Child PID died with code 0");
}

/// `systemd-socket-activate -a` accepts each connection itself and starts a server for it,
/// with the connection as fd 3. Two clients at once are each answered; each server exits 0
/// when its client leaves (the tool logs `Child PID died with code 0`).
#[test]
#[ignore = "exercise: cargo run -- check 12"]
fn ex2_with_accept_yes_each_connection_gets_a_server_that_exits_0() {
    if !have_activate() {
        return;
    }
    let (_dir, path, mut tool) = accept_yes(&[]);
    let mut first = Conn::connect(&path);
    let mut second = Conn::connect(&path);
    assert_eq!(first.ask("one"), "ONE\n", "output:\n{}", tool.output());
    assert_eq!(second.ask("two"), "TWO\n", "output:\n{}", tool.output());
    assert_eq!(first.ask("one again"), "ONE AGAIN\n");
    for mut client in [first, second] {
        client.shutdown_write();
        assert!(client.at_eof());
    }
    wait_for_an_exit_0(&mut tool);
    wait_for_an_exit_0(&mut tool);
}

/// The one-connection server keeps lesson 07's limits: a client that sends nothing is told
/// `error: no complete line in 300 ms` and its server exits 0.
#[test]
#[ignore = "exercise: cargo run -- check 12"]
fn ex2_a_per_connection_server_keeps_the_idle_timeout() {
    if !have_activate() {
        return;
    }
    let (_dir, path, mut tool) = accept_yes(&["--idle-timeout-ms", "300"]);
    let mut quiet = Conn::connect(&path);
    quiet.stream().set_read_timeout(Some(Duration::from_secs(5))).expect("set a timeout");
    assert_eq!(quiet.recv_line(), "error: no complete line in 300 ms\n", "{}", tool.output());
    assert!(quiet.at_eof());
    drop(quiet);
    wait_for_an_exit_0(&mut tool);
}
