//! Exercise checks for lesson 01 (EXERCISES.md). A plain `cargo test` skips them (`#[ignore]`);
//! `cargo run -- check 1` runs them against your binaries, `--solution` against the reference ones.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command as StdCommand;
use std::thread;
use std::time::{Duration, Instant};

use assert_cmd::Command;
use assert_cmd::cargo::cargo_bin;
use uds_test_support::{
    Conn, DEADLINE, Server, exchange, have_tool, stale_socket_file, start_in_temp_dir, temp_dir,
};

/// The server under test: `UDS_SERVER` (an absolute path), else this lesson's own.
fn server() -> PathBuf {
    env::var_os("UDS_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| cargo_bin!("lesson01-server").to_owned())
}

/// The client under test: `UDS_CLIENT` (an absolute path), else this lesson's own.
fn client() -> PathBuf {
    env::var_os("UDS_CLIENT")
        .map(PathBuf::from)
        .unwrap_or_else(|| cargo_bin!("lesson01-client").to_owned())
}

// Exercise 1: `quit` ends the conversation.

/// `quit` is answered `BYE` and the server closes first: the line after it is never answered,
/// the client reads EOF without having half-closed, and the next client is served as before.
#[test]
#[ignore = "exercise: cargo run -- check 1"]
fn ex1_quit_is_answered_bye_and_the_server_closes_the_connection() {
    let (_dir, path, mut server) = start_in_temp_dir(&server(), "lesson01.sock");
    let mut conn = Conn::connect(&path);
    // One write: the server reads all of it at once, so nothing is left unread in its socket
    // when it closes (unread data would turn our EOF into "Connection reset by peer").
    conn.send(b"hello\nquit\nnever answered\n");
    assert_eq!(conn.recv_line(), "HELLO\n");
    assert_eq!(conn.recv_line(), "BYE\n", "`quit` should be answered BYE");
    // No shutdown_write: this EOF can only come from the server closing on its own.
    let rest = conn.read_to_end();
    assert!(
        rest.is_empty(),
        "after BYE the server should close the connection, but it sent {:?}",
        String::from_utf8_lossy(&rest)
    );
    assert_eq!(exchange(&path, b"after\n"), b"AFTER\n", "the next client is served as before");
    assert!(!server.has_exited(), "`quit` ends one connection, not the server");
}

/// Only the exact line `quit` counts: `QUIT` and `quitter` are echoed like any other line.
#[test]
#[ignore = "exercise: cargo run -- check 1"]
fn ex1_only_the_exact_line_quit_ends_the_conversation() {
    let (_dir, path, _server) = start_in_temp_dir(&server(), "lesson01.sock");
    let mut conn = Conn::connect(&path);
    assert_eq!(conn.ask("QUIT"), "QUIT\n", "compare before upper-casing: `QUIT` is not `quit`");
    assert_eq!(conn.ask("quitter"), "QUITTER\n", "`quitter` is not the line `quit`");
    assert_eq!(conn.ask("quit"), "BYE\n");
    assert!(conn.at_eof(), "after BYE the server should close the connection");
}

/// A last line `quit` without a newline (the client half-closed after it) counts too.
#[test]
#[ignore = "exercise: cargo run -- check 1"]
fn ex1_quit_without_a_newline_counts_too() {
    let (_dir, path, _server) = start_in_temp_dir(&server(), "lesson01.sock");
    assert_eq!(String::from_utf8_lossy(&exchange(&path, b"hello\nquit")), "HELLO\nBYE\n");
}

// Exercise 2: the client waits for the server.

/// `--wait-ms 3000`, nothing at the path yet, a server started there 300 ms later: the client
/// keeps retrying, gets its replies and exits 0.
#[test]
#[ignore = "exercise: cargo run -- check 1"]
fn ex2_the_client_waits_for_a_server_that_starts_later() {
    let dir = temp_dir();
    let path = dir.path().join("lesson01.sock");
    let mut cmd = StdCommand::new(client());
    cmd.arg("--wait-ms").arg("3000").arg(&path).args(["hello", "late server"]);
    // A client, watched like a server: everything it prints is collected, and it is killed
    // on drop if it hangs.
    let running = Server::spawn_cmd(cmd, &path);
    thread::sleep(Duration::from_millis(300));
    let _server = Server::start_at(&server(), &path);
    let (status, output) = running.finish();
    assert!(status.success(), "the client should wait for the server ({status}):\n{output}");
    assert_eq!(output, "HELLO\nLATE SERVER\n");
}

/// Run the client with `--wait-ms 200` against `path`, where no server will ever be: it exits
/// 1 with `error` (the last connect error), after really waiting about 200 ms.
fn gives_up_after_its_wait(path: &Path, error: &str) {
    let start = Instant::now();
    // The timeout: a client that never gives up fails here instead of hanging the test.
    Command::new(client())
        .arg("--wait-ms")
        .arg("200")
        .arg(path)
        .arg("hi")
        .timeout(DEADLINE)
        .assert()
        .code(1)
        .stdout("")
        .stderr(format!("lesson01-client: connect {}: {error}\n", path.display()));
    let took = start.elapsed();
    // ~200 ms, with a little slack for a loop that sleeps 50 ms at a time and counts sleeps.
    assert!(took >= Duration::from_millis(180), "exited after {took:?}: it did not wait 200 ms");
}

/// No server ever comes: after `--wait-ms 200` the client fails as it does without the flag,
/// with ENOENT (no socket file) — and not before it has waited.
#[test]
#[ignore = "exercise: cargo run -- check 1"]
fn ex2_with_no_server_the_client_gives_up_after_its_wait_with_no_such_file() {
    let dir = temp_dir();
    gives_up_after_its_wait(
        &dir.path().join("lesson01.sock"),
        "No such file or directory (os error 2)",
    );
}

/// A stale socket file (its listener is gone, the file stays): ECONNREFUSED is retried too,
/// and after `--wait-ms 200` the client fails with it.
#[test]
#[ignore = "exercise: cargo run -- check 1"]
fn ex2_a_stale_socket_file_is_retried_then_connection_refused() {
    let dir = temp_dir();
    let path = dir.path().join("lesson01.sock");
    stale_socket_file(&path); // a socket file whose listener is gone
    gives_up_after_its_wait(&path, "Connection refused (os error 111)");
}

/// Any other connect error cannot mend by waiting and fails at once, even with a long wait:
/// here the path's parent is a regular file (ENOTDIR).
#[test]
#[ignore = "exercise: cargo run -- check 1"]
fn ex2_other_connect_errors_fail_at_once_despite_the_wait() {
    let dir = temp_dir();
    let parent = dir.path().join("a-file");
    std::fs::write(&parent, "not a directory").expect("write a regular file");
    let path = parent.join("lesson01.sock");
    let start = Instant::now();
    Command::new(client())
        .arg("--wait-ms")
        .arg("5000")
        .arg(&path)
        .arg("hi")
        .timeout(DEADLINE)
        .assert()
        .code(1)
        .stdout("")
        .stderr(format!(
            "lesson01-client: connect {}: Not a directory (os error 20)\n",
            path.display()
        ));
    let took = start.elapsed();
    assert!(took < Duration::from_millis(2500), "took {took:?}: ENOTDIR should not be retried");
}

// Exercise 3: who is calling?

/// The server's log lines for connection `id`, once it has logged that connection closed.
fn log_of_connection(server: &mut Server, id: u32, lines_answered: u32) -> Vec<String> {
    let closed =
        format!("lesson01-server: connection {id}: closed, lines answered: {lines_answered}");
    server.wait_for_line(&closed);
    let prefix = format!("lesson01-server: connection {id}: ");
    server.output().lines().filter(|l| l.starts_with(&prefix)).map(str::to_owned).collect()
}

/// A client that did not bind (std's `UnixStream::connect`, as almost every client) has no
/// address: the server logs `from an unnamed socket`, right after `accepted`.
#[test]
#[ignore = "exercise: cargo run -- check 1"]
fn ex3_a_client_that_did_not_bind_is_logged_as_unnamed() {
    let (_dir, path, mut server) = start_in_temp_dir(&server(), "lesson01.sock");
    assert_eq!(exchange(&path, b"anyone there?\n"), b"ANYONE THERE?\n");
    assert_eq!(
        log_of_connection(&mut server, 1, 1),
        [
            "lesson01-server: connection 1: accepted",
            "lesson01-server: connection 1: from an unnamed socket",
            "lesson01-server: connection 1: closed, lines answered: 1",
        ],
        "full output:\n{}",
        server.output()
    );
}

/// A client that bound its socket to a path before connecting (Python, here) is logged with
/// that path, right after `accepted`.
#[test]
#[ignore = "exercise: cargo run -- check 1"]
fn ex3_a_client_that_bound_a_path_is_logged_with_it() {
    if !have_tool("python3", "apt-get install -y python3") {
        return;
    }
    let (dir, path, mut server) = start_in_temp_dir(&server(), "lesson01.sock");
    let caller = dir.path().join("caller.sock");
    let script = r#"
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(sys.argv[1])
s.connect(sys.argv[2])
s.sendall(b"who am i\n")
s.shutdown(socket.SHUT_WR)
reply = b""
while chunk := s.recv(4096):
    reply += chunk
sys.stdout.write(reply.decode())
"#;
    Command::new("python3")
        .args(["-c", script])
        .arg(&caller)
        .arg(&path)
        .timeout(DEADLINE)
        .assert()
        .success()
        .stdout("WHO AM I\n");
    assert_eq!(
        log_of_connection(&mut server, 1, 1),
        [
            "lesson01-server: connection 1: accepted".to_owned(),
            format!("lesson01-server: connection 1: from {}", caller.display()),
            "lesson01-server: connection 1: closed, lines answered: 1".to_owned(),
        ],
        "full output:\n{}",
        server.output()
    );
}
