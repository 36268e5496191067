//! Exercise checks for lesson 04 (EXERCISES.md). A plain `cargo test` skips them (`#[ignore]`);
//! `cargo run -- check 4` runs them against your binaries, `--solution` against the reference ones.

use std::env;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use assert_cmd::cargo::cargo_bin;
use uds_test_support::{ChildGuard, DEADLINE, Server, temp_dir};

/// The server under test: `UDS_SERVER` (an absolute path), else this lesson's own.
fn server() -> PathBuf {
    env::var_os("UDS_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| cargo_bin!("lesson04-server").to_owned())
}

/// The client under test: `UDS_CLIENT` (an absolute path), else this lesson's own.
fn client() -> PathBuf {
    env::var_os("UDS_CLIENT")
        .map(PathBuf::from)
        .unwrap_or_else(|| cargo_bin!("lesson04-client").to_owned())
}

fn my_uid() -> u32 {
    rustix::process::getuid().as_raw()
}

// Exercise 1: the client checks who the server is.

/// With `--server-uid` set to the uid the server really runs as, the client talks as usual.
#[test]
#[ignore = "exercise: cargo run -- check 4"]
fn ex1_the_client_talks_to_a_server_of_the_expected_uid() {
    let dir = temp_dir();
    let path = dir.path().join("lesson04.sock");
    let _server = Server::start_at(&server(), &path);
    assert_cmd::Command::new(client())
        .args(["--server-uid", &my_uid().to_string()])
        .arg(&path)
        .arg("hello")
        .timeout(DEADLINE)
        .assert()
        .code(0)
        .stdout("HELLO\n");
}

/// With any other uid the client refuses, names the path and both uids, exits 1, and sends
/// nothing: the server answers no line.
#[test]
#[ignore = "exercise: cargo run -- check 4"]
fn ex1_the_client_refuses_a_server_of_another_uid_and_sends_nothing() {
    let dir = temp_dir();
    let path = dir.path().join("lesson04.sock");
    let mut server = Server::start_at(&server(), &path);
    let other = my_uid() + 4242;
    assert_cmd::Command::new(client())
        .args(["--server-uid", &other.to_string()])
        .arg(&path)
        .arg("secret")
        .timeout(DEADLINE)
        .assert()
        .code(1)
        .stdout("")
        .stderr(format!(
            "lesson04-client: check {}: the server is uid {}, not {other}\n",
            path.display(),
            my_uid()
        ));
    server.wait_for_line("lesson04-server: connection 1: closed, lines answered: 0");
}

// Exercise 2: the log names the peer's program.

/// The accept line ends with the client's program name in parentheses, read for the pid the
/// kernel reported: `... pid P (lesson04-client)`.
#[test]
#[ignore = "exercise: cargo run -- check 4"]
fn ex2_the_log_names_the_peers_program() {
    let dir = temp_dir();
    let path = dir.path().join("lesson04.sock");
    let mut server = Server::start_at(&server(), &path);
    // The lesson's own client, kept connected (stdin open) while the server looks it up.
    let mut child = ChildGuard(
        Command::new(cargo_bin!("lesson04-client"))
            .arg(&path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the client"),
    );
    let pid = child.pid().as_raw_nonzero();
    let line = server.wait_for_line_containing("connection 1: accepted");
    assert!(line.ends_with(&format!(" pid {pid} (lesson04-client)")), "the log line: {line}");
    let mut stdin = child.0.stdin.take().expect("the client's stdin");
    writeln!(stdin, "still served").expect("type a line");
    let mut reply = String::new();
    let stdout = child.0.stdout.take().expect("the client's stdout");
    BufReader::new(stdout).read_line(&mut reply).expect("read the reply");
    assert_eq!(reply, "STILL SERVED\n");
}

/// Another program shows under its own name: socat connecting shows as `(socat)`.
#[test]
#[ignore = "exercise: cargo run -- check 4"]
fn ex2_another_program_shows_under_its_own_name() {
    if !uds_test_support::have_tool("socat", "apt-get install -y socat") {
        return;
    }
    let dir = temp_dir();
    let path = dir.path().join("lesson04.sock");
    let mut server = Server::start_at(&server(), &path);
    let target = format!("UNIX-CONNECT:{}", path.display());
    let started = Command::new("socat")
        .args(["-", &target])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start socat");
    let mut socat = ChildGuard(started);
    let line = server.wait_for_line_containing("connection 1: accepted");
    assert!(line.ends_with(" (socat)"), "the log line: {line}");
    drop(socat.0.stdin.take());
    assert!(socat.wait().success());
}
