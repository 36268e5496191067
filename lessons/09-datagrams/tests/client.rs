//! lesson09-client, proven against the real server on real sockets: replies printed one per
//! line, stdin lines sent without their newline, its own socket file gone afterwards (on
//! success, on error and on Ctrl-C), and `--no-bind` showing the unbound-sender gotcha.

use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use assert_cmd::cargo::cargo_bin;
use rustix::process::{Pid, Signal, kill_process};
use uds_test_support::{ChildGuard, DEADLINE, Server, start_in_temp_dir, temp_dir, wait_until};

fn server() -> &'static Path {
    cargo_bin!("lesson09-server")
}

/// The client, with its temp dir (where it binds its own address) set to `tmp`.
fn client(tmp: &Path) -> assert_cmd::Command {
    let mut cmd = assert_cmd::Command::new(cargo_bin!("lesson09-client"));
    cmd.env("TMPDIR", tmp).timeout(DEADLINE);
    cmd
}

/// The entries of `dir`: where the client's socket file would be left behind.
fn entries(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .expect("read the client's temp dir")
        .map(|entry| entry.expect("an entry").file_name().to_string_lossy().into_owned())
        .collect()
}

/// Each MESSAGE is one datagram; each reply is printed followed by a newline; exit 0; and the
/// client's own socket file is gone afterwards.
#[test]
fn each_message_is_answered_and_the_clients_file_is_gone_afterwards() {
    let (_dir, path, _server) = start_in_temp_dir(server(), "lesson09.sock");
    let tmp = temp_dir();
    let out = client(tmp.path()).arg(&path).args(["hello", "", "two words"]).output().expect("run");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout, b"HELLO\n\nTWO WORDS\n");
    assert_eq!(entries(tmp.path()), Vec::<String>::new());
}

/// With no MESSAGE each stdin line is one datagram without its `\n`; a `\r` before it is kept.
#[test]
fn stdin_lines_are_sent_without_their_newline_and_a_carriage_return_is_kept() {
    let (_dir, path, _server) = start_in_temp_dir(server(), "lesson09.sock");
    let tmp = temp_dir();
    let out = client(tmp.path()).arg(&path).write_stdin("one\r\ntwo\nlast").output().expect("run");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout, b"ONE\r\nTWO\nLAST\n");
}

/// An `error: ` reply goes to stderr and the exit code is 1.
#[test]
fn an_error_reply_goes_to_stderr_with_exit_1() {
    let dir = temp_dir();
    let path = dir.path().join("lesson09.sock");
    let args = [path.as_os_str(), "--max-datagram".as_ref(), "3".as_ref()];
    let _server = Server::start(server(), &path, &args);
    let out = client(dir.path()).arg(&path).arg("toolong").output().expect("run");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("error: datagram of 7 bytes is over the 3-byte limit"), "{stderr}");
}

/// With no server, the client fails with one line naming the step and path, and still leaves
/// no socket file of its own behind.
#[test]
fn with_no_server_it_fails_in_one_line_and_leaves_no_file() {
    let dir = temp_dir();
    let path = dir.path().join("absent.sock");
    let tmp = temp_dir();
    let out = client(tmp.path()).arg(&path).arg("hi").output().expect("run");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let want = format!("lesson09-client: connect {}: No such file or directory", path.display());
    assert!(stderr.starts_with(&want), "{stderr}");
    assert_eq!(entries(tmp.path()), Vec::<String>::new());
}

/// Ctrl-C (SIGINT) while the client waits for stdin: exit 130 and its socket file removed.
#[test]
fn ctrl_c_exits_130_and_removes_the_clients_file() {
    let (_dir, path, _server) = start_in_temp_dir(server(), "lesson09.sock");
    let tmp = temp_dir();
    let mut cmd = Command::new(cargo_bin!("lesson09-client"));
    cmd.env("TMPDIR", tmp.path()).arg(&path);
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::null());
    let mut child = ChildGuard(cmd.spawn().expect("spawn the client"));
    let mut stdin = child.0.stdin.take().expect("stdin is piped");
    stdin.write_all(b"first\n").expect("write stdin");
    wait_until("the client has bound its socket file", || entries(tmp.path()).len() == 1);
    let pid = Pid::from_child(&child.0);
    kill_process(pid, Signal::INT).expect("send SIGINT");
    assert_eq!(child.wait().code(), Some(130));
    assert_eq!(entries(tmp.path()), Vec::<String>::new());
    drop(stdin);
}

/// `--no-bind`: the datagram arrives but the server cannot answer; the server logs why and the
/// client exits 1 after its timeout, saying so.
#[test]
fn an_unbound_client_gets_no_reply_and_says_why() {
    let (_dir, path, mut server) = start_in_temp_dir(server(), "lesson09.sock");
    let tmp = temp_dir();
    let out = client(tmp.path())
        .args(["--no-bind", "--timeout-ms", "300"])
        .arg(&path)
        .arg("hello")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("could not reply to an unbound client"), "{stderr}");
    server.wait_for_line("lesson09-server: cannot reply: the sender has no address");
    assert_eq!(entries(tmp.path()), Vec::<String>::new());
}
