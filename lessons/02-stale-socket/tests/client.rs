//! Lesson 01's client behaviours, still holding in lesson 02: lesson02-client, proven against the
//! real lesson02-server and against small fake servers that misbehave on purpose.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::Shutdown;
use std::path::Path;
use std::sync::mpsc;

use assert_cmd::Command;
use assert_cmd::cargo::cargo_bin;
use uds_test_support::{
    DEADLINE, Server, fake_server, run_with_stdout_closed, stale_socket_file, start_in_temp_dir,
    temp_dir,
};

fn server() -> &'static Path {
    cargo_bin!("lesson02-server")
}

fn client() -> Command {
    let mut cmd = Command::new(cargo_bin!("lesson02-client"));
    cmd.timeout(DEADLINE);
    cmd
}

/// Each MESSAGE is one line; each reply is printed as it comes; exit 0 after the server's EOF.
#[test]
fn the_client_prints_one_reply_per_message_and_exits_0() {
    let (_dir, path, _server) = start_in_temp_dir(server(), "lesson02.sock");
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
    let (_dir, path, _server) = start_in_temp_dir(server(), "lesson02.sock");
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
    let (_dir, path, _server) = start_in_temp_dir(server(), "lesson02.sock");
    let input: String = (0..40_000).map(|i| format!("line {i} of a long input\n")).collect();
    let out = client().arg(&path).write_stdin(input.clone()).assert().success();
    assert!(out.get_output().stdout == input.to_ascii_uppercase().as_bytes(), "replies differ");
}

/// Replies are printed as they arrive, not gathered until the end: the first reply is on the
/// client's stdout while the server still holds the second one back.
#[test]
fn each_reply_is_printed_as_it_arrives() {
    let dir = temp_dir();
    let (go_on, wait) = mpsc::channel::<()>();
    let (path, fake) = fake_server(dir.path(), move |conn| {
        let mut lines = BufReader::new(&conn).lines();
        lines.next().expect("line one").expect("read");
        (&conn).write_all(b"ONE\n").expect("write");
        wait.recv_timeout(DEADLINE).expect("the test saw ONE");
        lines.next().expect("line two").expect("read");
        (&conn).write_all(b"TWO\n").expect("write");
    });
    let mut cmd = std::process::Command::new(cargo_bin!("lesson02-client"));
    cmd.arg(&path).args(["one", "two"]);
    // A client, watched like a server: each line it prints arrives on a channel.
    let mut running = Server::spawn_cmd(cmd, &path);
    running.wait_for_line("ONE");
    go_on.send(()).expect("the fake server is waiting");
    let (status, output) = running.finish();
    assert!(status.success(), "{output}");
    assert_eq!(output, "ONE\nTWO\n");
    fake.join().expect("fake server");
}

/// The default path is `$XDG_RUNTIME_DIR/uds-course/lesson02.sock`, as for the server.
#[test]
fn the_client_uses_the_default_path_when_given_none() {
    let dir = temp_dir();
    let path = dir.path().join("uds-course/lesson02.sock");
    let mut cmd = std::process::Command::new(server());
    cmd.env("XDG_RUNTIME_DIR", dir.path());
    let _server = Server::start_cmd(cmd, &path);
    client().env("XDG_RUNTIME_DIR", dir.path()).write_stdin("x\n").assert().success().stdout("X\n");
}

/// Nothing at the path: exit 1, one line naming the step and the path.
#[test]
fn nothing_at_the_path_is_a_clear_error() {
    let dir = temp_dir();
    let path = dir.path().join("lesson02.sock");
    client().arg(&path).arg("hi").assert().code(1).stdout("").stderr(format!(
        "lesson02-client: connect {}: No such file or directory (os error 2)\n",
        path.display()
    ));
}

/// A stale socket file (its server is gone) refuses connections.
#[test]
fn a_stale_socket_file_is_connection_refused() {
    let dir = temp_dir();
    let path = dir.path().join("lesson02.sock");
    stale_socket_file(&path); // a socket file whose listener is gone
    client().arg(&path).arg("hi").assert().code(1).stderr(format!(
        "lesson02-client: connect {}: Connection refused (os error 111)\n",
        path.display()
    ));
}

/// A path too long for `sun_path` is a clear error on the client's side too.
#[test]
fn a_path_of_108_bytes_is_a_clear_error() {
    let dir = temp_dir();
    let base = dir.path().as_os_str().len() + 1;
    let path = dir.path().join("s".repeat(108 - base));
    client().arg(&path).arg("hi").assert().code(1).stderr(format!(
        "lesson02-client: connect {}: path must be shorter than SUN_LEN\n",
        path.display()
    ));
}

/// A reply starting `error: ` goes to stderr and makes the exit code 1.
#[test]
fn an_error_reply_goes_to_stderr_and_exits_1() {
    let dir = temp_dir();
    let (path, fake) = fake_server(dir.path(), |mut conn| {
        conn.write_all(b"error: you are not welcome\n").expect("write");
        conn.shutdown(Shutdown::Write).expect("shutdown");
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

/// A refusal takes precedence over the write error after it: the server answers `error: `
/// and closes without reading, so the client's writes fail with EPIPE — and it reports only
/// the server's line.
#[test]
fn an_error_reply_takes_precedence_over_the_broken_pipe_after_it() {
    let dir = temp_dir();
    let (path, fake) = fake_server(dir.path(), |mut conn| {
        conn.write_all(b"error: go away\n").expect("write");
    });
    let input = "a line the server will never read\n".repeat(100_000);
    client().arg(&path).write_stdin(input).assert().code(1).stdout("").stderr("error: go away\n");
    fake.join().expect("fake server");
}

/// Fewer replies than lines sent is a failure, not a silent success.
#[test]
fn fewer_replies_than_lines_sent_exits_1() {
    let dir = temp_dir();
    let (path, fake) = fake_server(dir.path(), |conn| {
        let mut lines = BufReader::new(&conn).lines();
        let first = lines.next().expect("a line").expect("read");
        (&conn).write_all(format!("{}\n", first.to_uppercase()).as_bytes()).expect("write");
        let _ = lines.count(); // read the rest, answer nothing, close
    });
    client().arg(&path).args(["one", "two", "three"]).assert().code(1).stdout("ONE\n").stderr(
        format!(
            "lesson02-client: read {}: the server closed the connection after 1 of 3 replies\n",
            path.display()
        ),
    );
    fake.join().expect("fake server");
}

/// A reply cut off by the server closing mid-line is an error, not a reply.
#[test]
fn a_reply_cut_off_mid_line_exits_1() {
    let dir = temp_dir();
    let (path, fake) = fake_server(dir.path(), |mut conn| {
        let _ = BufReader::new(&conn).lines().count(); // read up to the client's half-close
        conn.write_all(b"ONE\nTW").expect("write");
    });
    client().arg(&path).args(["one", "two"]).assert().code(1).stdout("ONE\n").stderr(format!(
        "lesson02-client: read {}: the server closed the connection mid-reply\n",
        path.display()
    ));
    fake.join().expect("fake server");
}

/// When the client's own stdout closes (`| head -1`), it stops at once with one line naming
/// stdout: it does not keep sending to a server that is waiting for it to read.
#[test]
fn a_closed_stdout_stops_the_client_with_a_clear_error() {
    let (_dir, path, _server) = start_in_temp_dir(server(), "lesson02.sock");
    let mut cmd = std::process::Command::new(cargo_bin!("lesson02-client"));
    cmd.arg(&path);
    // Far more than the socket buffers hold: the client has to stop, not wait.
    let input = b"a line nobody reads\n".repeat(200_000);
    let (status, stderr) = run_with_stdout_closed(cmd, input);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert_eq!(stderr, "lesson02-client: write stdout: Broken pipe (os error 32)\n");
}

/// The client started with its stdin open and nothing typed yet, as at a terminal.
fn client_at_a_terminal(path: &Path) -> uds_test_support::ChildGuard {
    let child = std::process::Command::new(cargo_bin!("lesson02-client"))
        .arg(path)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start the client");
    uds_test_support::ChildGuard(child)
}

/// When the server refuses and closes first, the client prints the `error: ` line and exits 1
/// at once, though its stdin is still open: it does not wait for a line nobody may type.
#[test]
fn the_client_exits_when_the_server_closes_first_while_stdin_is_open() {
    let dir = temp_dir();
    let (path, fake) = fake_server(dir.path(), |mut conn| {
        conn.write_all(b"error: go away\n").expect("write");
    });
    let mut child = client_at_a_terminal(&path);
    let _stdin = child.0.stdin.take().expect("the client's stdin"); // open, and nothing typed
    let status = child.wait_within(DEADLINE).expect("the client is still waiting for stdin");
    let mut stderr = String::new();
    child.0.stderr.take().expect("stderr").read_to_string(&mut stderr).expect("read stderr");
    assert_eq!((status.code(), stderr.as_str()), (Some(1), "error: go away\n"));
    fake.join().expect("fake server");
}

/// When the server closes first without a word, after answering the one line typed so far,
/// the client says so and exits 1 at once, though its stdin is still open.
#[test]
fn the_client_exits_when_the_server_closes_first_without_a_word() {
    let dir = temp_dir();
    let (path, fake) = fake_server(dir.path(), |conn| {
        let mut line = String::new();
        BufReader::new(&conn).read_line(&mut line).expect("read a line");
        (&conn).write_all(line.to_uppercase().as_bytes()).expect("write");
    });
    let mut child = client_at_a_terminal(&path);
    let mut stdin = child.0.stdin.take().expect("the client's stdin");
    writeln!(stdin, "only one").expect("type a line");
    let status = child.wait_within(DEADLINE).expect("the client is still waiting for stdin");
    let mut out = String::new();
    child.0.stdout.take().expect("stdout").read_to_string(&mut out).expect("read stdout");
    assert_eq!(out, "ONLY ONE\n");
    let mut stderr = String::new();
    child.0.stderr.take().expect("stderr").read_to_string(&mut stderr).expect("read stderr");
    let expected = format!(
        "lesson02-client: read {}: the server closed the connection before the input ended\n",
        path.display()
    );
    assert_eq!((status.code(), stderr), (Some(1), expected));
    drop(stdin);
    fake.join().expect("fake server");
}
