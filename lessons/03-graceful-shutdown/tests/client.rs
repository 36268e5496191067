//! lesson03-client, proven against the real server and against small fake servers that
//! misbehave on purpose.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::thread;

use assert_cmd::Command;
use assert_cmd::cargo::cargo_bin;
use uds_test_support::{DEADLINE, Server, start_in_temp_dir, temp_dir};

fn server() -> &'static Path {
    cargo_bin!("lesson03-server")
}

fn client() -> Command {
    let mut cmd = Command::new(cargo_bin!("lesson03-client"));
    cmd.timeout(DEADLINE);
    cmd
}

/// Each MESSAGE is one line; each reply is printed as it comes; exit 0 after the server's EOF.
#[test]
fn the_client_prints_one_reply_per_message_and_exits_0() {
    let (_dir, path, _server) = start_in_temp_dir(server(), "lesson03.sock");
    client()
        .arg(&path)
        .args(["hello", "unix domain sockets"])
        .assert()
        .success()
        .stdout("HELLO\nUNIX DOMAIN SOCKETS\n");
}

/// With no MESSAGE the client sends stdin's lines as typed, the last one even without `\n`.
#[test]
fn the_client_sends_stdin_when_given_no_message() {
    let (_dir, path, _server) = start_in_temp_dir(server(), "lesson03.sock");
    client()
        .arg(&path)
        .write_stdin("one\ntwo\nthree")
        .assert()
        .success()
        .stdout("ONE\nTWO\nTHREE\n");
}

/// Reading on one thread while writing on another: megabytes of input cannot deadlock the
/// client and the server on full socket buffers.
#[test]
fn the_client_reads_while_it_writes_so_a_long_input_cannot_deadlock() {
    let (_dir, path, _server) = start_in_temp_dir(server(), "lesson03.sock");
    let input: String = (0..40_000).map(|i| format!("line {i} of a long input\n")).collect();
    let out = client().arg(&path).write_stdin(input.clone()).assert().success();
    assert!(out.get_output().stdout == input.to_ascii_uppercase().as_bytes(), "replies differ");
}

/// The default path is `$XDG_RUNTIME_DIR/uds-course/lesson03.sock`, as for the server.
#[test]
fn the_client_uses_the_default_path_when_given_none() {
    let dir = temp_dir();
    let path = dir.path().join("uds-course/lesson03.sock");
    let mut cmd = std::process::Command::new(server());
    cmd.env("XDG_RUNTIME_DIR", dir.path());
    let _server = Server::start_cmd(cmd, &path);
    client().env("XDG_RUNTIME_DIR", dir.path()).write_stdin("x\n").assert().success().stdout("X\n");
}

/// Nothing at the path: exit 1, one line naming the step and the path.
#[test]
fn nothing_at_the_path_is_a_clear_error() {
    let dir = temp_dir();
    let path = dir.path().join("lesson03.sock");
    client().arg(&path).arg("hi").assert().code(1).stdout("").stderr(format!(
        "lesson03-client: connect {}: No such file or directory (os error 2)\n",
        path.display()
    ));
}

/// A stale socket file (its server is gone) refuses connections.
#[test]
fn a_stale_socket_file_is_connection_refused() {
    let dir = temp_dir();
    let path = dir.path().join("lesson03.sock");
    drop(UnixListener::bind(&path).expect("bind")); // closing a listener leaves its file
    client().arg(&path).arg("hi").assert().code(1).stderr(format!(
        "lesson03-client: connect {}: Connection refused (os error 111)\n",
        path.display()
    ));
}

/// A reply starting `error: ` goes to stderr and makes the exit code 1.
#[test]
fn an_error_reply_goes_to_stderr_and_exits_1() {
    let dir = temp_dir();
    let path = dir.path().join("fake.sock");
    let listener = UnixListener::bind(&path).expect("bind");
    let fake = thread::spawn(move || {
        let (mut conn, _) = listener.accept().expect("accept");
        conn.write_all(b"error: you are not welcome\n").expect("write");
        conn.shutdown(std::net::Shutdown::Write).expect("shutdown");
        let _ = conn.read_to_end(&mut Vec::new()); // drain, as CONTRACT.md's servers do
    });
    client()
        .arg(&path)
        .arg("hello")
        .assert()
        .code(1)
        .stdout("")
        .stderr("error: you are not welcome\n");
    fake.join().expect("fake server");
}

/// Fewer replies than lines sent is a failure, not a silent success.
#[test]
fn fewer_replies_than_lines_sent_exits_1() {
    let dir = temp_dir();
    let path = dir.path().join("fake.sock");
    let listener = UnixListener::bind(&path).expect("bind");
    let fake = thread::spawn(move || {
        let (conn, _) = listener.accept().expect("accept");
        let mut lines = BufReader::new(&conn).lines();
        let first = lines.next().expect("a line").expect("read");
        (&conn).write_all(format!("{}\n", first.to_uppercase()).as_bytes()).expect("write");
        let _ = lines.count(); // read the rest, answer nothing, close
    });
    client().arg(&path).args(["one", "two", "three"]).assert().code(1).stdout("ONE\n").stderr(
        format!(
            "lesson03-client: read {}: the server closed the connection after 1 of 3 replies\n",
            path.display()
        ),
    );
    fake.join().expect("fake server");
}
