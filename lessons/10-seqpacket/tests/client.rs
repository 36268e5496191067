//! lesson10-client against the real lesson10-server: one packet per message, nothing added,
//! replies printed one a line, empty messages refused, an over-limit refusal reported.

use std::path::Path;

use assert_cmd::cargo::cargo_bin;
use uds_test_support::{DEADLINE, Server, start_in_temp_dir, temp_dir};

fn server() -> &'static Path {
    cargo_bin!("lesson10-server")
}

fn client() -> assert_cmd::Command {
    let mut cmd = assert_cmd::Command::new(cargo_bin!("lesson10-client"));
    cmd.timeout(DEADLINE);
    cmd
}

/// Each MESSAGE is one packet; each reply is printed followed by `\n`.
#[test]
fn each_message_is_one_packet_and_each_reply_one_line() {
    let (_dir, path, mut server) = start_in_temp_dir(server(), "lesson10.sock");
    let out = client().arg(&path).args(["hello", "unix domain sockets"]).output();
    let out = out.expect("run the client");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout, b"HELLO\nUNIX DOMAIN SOCKETS\n");
    server.wait_for_line("lesson10-server: connection 1: closed, packets answered: 2");
}

/// With no MESSAGE, each line of stdin is a packet without its `\n`; an empty line is not
/// sent, and the client says so on stderr.
#[test]
fn stdin_lines_are_packets_and_an_empty_line_is_not_sent() {
    let (_dir, path, mut server) = start_in_temp_dir(server(), "lesson10.sock");
    let out = client().arg(&path).write_stdin("one\n\ntwo").output().expect("run the client");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout, b"ONE\nTWO\n");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with("lesson10-client: not sent: an empty message"), "{stderr}");
    // Two packets answered: the empty line did not end the connection early.
    server.wait_for_line("lesson10-server: connection 1: closed, packets answered: 2");
}

/// An empty MESSAGE is skipped the same way; the others are still sent.
#[test]
fn an_empty_message_is_not_sent() {
    let (_dir, path, _server) = start_in_temp_dir(server(), "lesson10.sock");
    let out = client().arg(&path).args(["a", "", "b"]).output().expect("run the client");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout, b"A\nB\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr).lines().count(), 1, "{out:?}");
}

/// A message over the server's limit: the `error: ` packet goes to stderr, exit 1.
#[test]
fn a_refused_message_is_reported_and_the_exit_code_is_1() {
    let dir = temp_dir();
    let path = dir.path().join("lesson10.sock");
    let _server =
        Server::start(server(), &path, &[path.as_os_str(), "--max-packet".as_ref(), "3".as_ref()]);
    let out = client().arg(&path).args(["ab", "abcd", "never"]).output().expect("run");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(out.stdout, b"AB\n");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "error: packet of 4 bytes is over the 3-byte limit\n"
    );
}

/// No server: exit 1, one line naming the step and the path.
#[test]
fn no_server_is_one_line_naming_connect_and_the_path() {
    let dir = temp_dir();
    let path = dir.path().join("none.sock");
    let out = client().arg(&path).arg("hi").output().expect("run the client");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let want = format!("lesson10-client: connect {}: ", path.display());
    assert!(stderr.starts_with(&want) && stderr.lines().count() == 1, "{stderr}");
}
