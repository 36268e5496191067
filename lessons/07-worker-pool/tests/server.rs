//! Lesson 01's behaviours, still holding in lesson 07: lesson07-server, proven with the real binary
//! on real sockets in private temp dirs. Lesson 01's tests of a file already at the path are not
//! here: lesson 02 changed that behaviour, and tests/stale_socket.rs proves the new one.

use std::io::{ErrorKind, Write};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::thread;
use std::time::Duration;

use assert_cmd::Command;
use uds_test_support::{
    Conn, DEADLINE, Server, exchange, have_tool, many_clients, run_with_stdout_closed,
    start_in_temp_dir, temp_dir,
};

mod under_test;
use under_test::{SERVER, SOCKET_NAME};

fn server() -> &'static Path {
    under_test::server()
}

/// Does server log line `l` say that connection `id` has ended — closed at EOF, or cut short
/// by a read or write error?
fn connection_ended(l: &str, id: u32) -> bool {
    ["closed", "read", "write"].iter().any(|end| l.contains(&format!("connection {id}: {end}")))
}

/// A line sent comes back upper-cased, and EOF from the client ends the connection.
#[test]
fn a_line_round_trips_in_upper_case() {
    let (_dir, path, mut server) = start_in_temp_dir(server(), "lesson07.sock");
    assert_eq!(exchange(&path, b"hello\nUnix Sockets 123\n"), b"HELLO\nUNIX SOCKETS 123\n");
    server.wait_for_line(&format!("{SERVER}: connection 1: closed, lines answered: 2"));
}

/// Two clients are served at once: a silent open connection does not block another one.
#[test]
fn two_clients_are_served_at_the_same_time() {
    let (_dir, path, _server) = start_in_temp_dir(server(), "lesson07.sock");
    let mut first = Conn::connect(&path);
    let mut second = Conn::connect(&path);
    assert_eq!(second.ask("second"), "SECOND\n");
    assert_eq!(first.ask("first"), "FIRST\n");
    assert_eq!(second.ask("second again"), "SECOND AGAIN\n");
}

/// `bind` creates a socket file: type socket (`s` in `ls -l`), not a regular file.
#[test]
fn the_socket_file_is_of_type_socket() {
    let (_dir, path, _server) = start_in_temp_dir(server(), "lesson07.sock");
    let meta = std::fs::symlink_metadata(&path).expect("stat the socket file");
    assert!(meta.file_type().is_socket(), "{} is not a socket: {meta:?}", path.display());
    let ls = Command::new("ls").arg("-l").arg(&path).timeout(DEADLINE).output().expect("run ls");
    let ls = String::from_utf8_lossy(&ls.stdout);
    assert!(ls.starts_with('s'), "ls -l shows no `s`: {ls}");
}

/// The default path is `$XDG_RUNTIME_DIR/uds-course/lesson07.sock`; the server creates the dir.
#[test]
fn the_default_path_is_under_xdg_runtime_dir() {
    let dir = temp_dir();
    let path = dir.path().join(format!("uds-course/{SOCKET_NAME}"));
    let mut cmd = std::process::Command::new(server());
    cmd.env("XDG_RUNTIME_DIR", dir.path());
    let _server = Server::start_cmd(cmd, &path);
    assert_eq!(exchange(&path, b"default\n"), b"DEFAULT\n");
}

/// Without `$XDG_RUNTIME_DIR` the default is `<temp dir>/uds-course-<uid>/lesson07.sock`: the
/// uid keeps users of a shared /tmp apart.
#[test]
fn without_xdg_runtime_dir_the_default_path_is_in_the_temp_dir_with_the_uid() {
    let dir = temp_dir();
    let uid = rustix::process::getuid().as_raw();
    let path = dir.path().join(format!("uds-course-{uid}/{SOCKET_NAME}"));
    let mut cmd = std::process::Command::new(server());
    cmd.env_remove("XDG_RUNTIME_DIR").env("TMPDIR", dir.path());
    let _server = Server::start_cmd(cmd, &path);
    assert_eq!(exchange(&path, b"fallback\n"), b"FALLBACK\n");
}

/// A server whose stdout nobody reads fails with one line naming stdout, not a panic.
#[test]
fn a_closed_stdout_is_a_clear_error() {
    let dir = temp_dir();
    let mut cmd = std::process::Command::new(server());
    cmd.arg(dir.path().join("lesson07.sock"));
    let (status, stderr) = run_with_stdout_closed(cmd, Vec::new());
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert_eq!(stderr, format!("{SERVER}: write stdout: Broken pipe (os error 32)\n"));
}

/// A missing parent directory is a one-line error naming the step and the path.
#[test]
fn a_missing_parent_directory_is_a_clear_error() {
    let dir = temp_dir();
    let path = dir.path().join("no/such/dir/lesson07.sock");
    Command::new(server()).arg(&path).timeout(DEADLINE).assert().code(1).stderr(format!(
        "{SERVER}: bind {}: No such file or directory (os error 2)\n",
        path.display()
    ));
    assert!(
        !dir.path().join("no").exists(),
        "the server must not create an explicit path's parent"
    );
}

/// A path of 108 bytes does not fit in `sun_path` (107 bytes and a NUL): a clear error.
#[test]
fn a_path_of_108_bytes_is_a_clear_error() {
    let dir = temp_dir();
    let base = dir.path().as_os_str().len() + 1;
    let path = dir.path().join("s".repeat(108 - base));
    assert_eq!(path.as_os_str().len(), 108);
    Command::new(server())
        .arg(&path)
        .timeout(DEADLINE)
        .assert()
        .code(1)
        .stderr(format!("{SERVER}: bind {}: path must be shorter than SUN_LEN\n", path.display()));
}

/// Bad usage exits 2 with clap's message.
#[test]
fn an_unknown_flag_is_a_usage_error() {
    Command::new(server()).arg("--no-such-flag").timeout(DEADLINE).assert().code(2);
}

/// 200 clients at once, 50 lines each: every reply intact and in order.
#[test]
fn two_hundred_concurrent_clients_get_every_line_back_in_order() {
    let (_dir, path, _server) = start_in_temp_dir(server(), "lesson07.sock");
    many_clients(&path, 200, 50);
}

/// A last line without a newline is answered when the client half-closes.
#[test]
fn a_last_line_without_newline_is_answered_at_eof() {
    let (_dir, path, _server) = start_in_temp_dir(server(), "lesson07.sock");
    assert_eq!(exchange(&path, b"first\nno newline"), b"FIRST\nNO NEWLINE\n");
}

/// Bytes that are not UTF-8 pass through; only ASCII letters change.
#[test]
fn bytes_that_are_not_utf8_come_back_with_only_ascii_upper_cased() {
    let (_dir, path, _server) = start_in_temp_dir(server(), "lesson07.sock");
    assert_eq!(exchange(&path, b"caf\xc3\xa9 \xff ok\n"), b"CAF\xc3\xa9 \xff OK\n");
}

/// A client that disconnects in the middle of a line ends only its own connection.
#[test]
fn a_client_that_vanishes_mid_line_hurts_no_one() {
    let (_dir, path, mut server) = start_in_temp_dir(server(), "lesson07.sock");
    let mut bystander = Conn::connect(&path);
    let mut vanishing = UnixStream::connect(&path).expect("connect");
    vanishing.write_all(b"half a li").expect("write half a line");
    drop(vanishing);
    // Not just accepted: the server has read to EOF and ended that connection.
    server.wait_for(|l| connection_ended(l, 2), "connection 2 ends");
    assert_eq!(bystander.ask("still here"), "STILL HERE\n");
    assert_eq!(exchange(&path, b"newcomer\n"), b"NEWCOMER\n");
    assert!(!server.has_exited());
}

/// A client that writes but never reads blocks only its own thread: once both socket buffers
/// are full the server waits on that one client, and everyone else is still served.
#[test]
fn a_client_that_never_reads_hurts_no_one() {
    let (_dir, path, mut server) = start_in_temp_dir(server(), "lesson07.sock");
    let mut greedy = UnixStream::connect(&path).expect("connect");
    greedy.set_write_timeout(Some(Duration::from_millis(200))).expect("set a write timeout");
    let line = [b"x".repeat(1023), b"\n".to_vec()].concat();
    let mut written = 0usize;
    let full = loop {
        match greedy.write(&line) {
            Ok(n) => written += n,
            // A signal to this test process (another test's child exiting) ends a write that has
            // a timeout with EINTR, whatever SA_RESTART says: try again.
            Err(err) if err.kind() == ErrorKind::Interrupted => {}
            Err(err) if matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                break true;
            }
            Err(err) => panic!("write to the server: {err}"),
        }
        if written > 256 << 20 {
            break false;
        }
    };
    assert!(full, "wrote {written} bytes without the buffers filling: is anyone reading them?");
    assert_eq!(exchange(&path, b"not stuck\n"), b"NOT STUCK\n");
    drop(greedy);
    server.wait_for(|l| connection_ended(l, 1), "connection 1 ends");
    assert_eq!(exchange(&path, b"after\n"), b"AFTER\n");
}

/// Out of file descriptors, `accept` fails (EMFILE) again and again. The server logs it and
/// backs off instead of spinning a core, and serves again once descriptors are free.
#[test]
fn accept_errors_back_off_and_the_server_recovers() {
    let (_dir, path, mut server) = start_in_temp_dir(server(), "lesson07.sock");
    server.allow_only_more_fds(4);
    // connect succeeds even when the server cannot accept: the kernel queues the client.
    let flood: Vec<Conn> = (0..30).map(|_| Conn::connect(&path)).collect();
    server
        .wait_for_line_containing(&format!("{SERVER}: accept: Too many open files (os error 24)"));
    let before = server.cpu_time();
    thread::sleep(Duration::from_secs(1));
    let used = server.cpu_time() - before;
    // A spinning accept loop burns close to the whole second; backing off uses next to nothing.
    assert!(used < Duration::from_millis(250), "{used:?} of CPU in 1 s of EMFILE: a busy loop");
    drop(flood);
    assert_eq!(exchange(&path, b"served again\n"), b"SERVED AGAIN\n");
}

/// socat, an outside client, gets the same replies.
#[test]
fn socat_gets_upper_case_replies() {
    if !have_tool("socat", "apt-get install -y socat") {
        return;
    }
    let (_dir, path, _server) = start_in_temp_dir(server(), "lesson07.sock");
    Command::new("socat")
        .arg("-")
        .arg(format!("UNIX-CONNECT:{}", path.display()))
        .write_stdin("hello\nfrom socat\n")
        .timeout(DEADLINE)
        .assert()
        .success()
        .stdout("HELLO\nFROM SOCAT\n");
}

/// netcat-openbsd with `-N` (half-close at EOF) gets the same replies.
#[test]
fn nc_gets_upper_case_replies() {
    if !have_tool("nc", "apt-get install -y netcat-openbsd") {
        return;
    }
    let (_dir, path, _server) = start_in_temp_dir(server(), "lesson07.sock");
    Command::new("nc")
        .arg("-NU")
        .arg(&path)
        .write_stdin("from nc\n")
        .timeout(DEADLINE)
        .assert()
        .success()
        .stdout("FROM NC\n");
}

/// Python's `socket` module gets the same replies.
#[test]
fn python_gets_upper_case_replies() {
    if !have_tool("python3", "apt-get install -y python3") {
        return;
    }
    let (_dir, path, _server) = start_in_temp_dir(server(), "lesson07.sock");
    let script = r#"
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
s.sendall(b"from python\nsecond line\n")
s.shutdown(socket.SHUT_WR)
reply = b""
while chunk := s.recv(4096):
    reply += chunk
sys.stdout.write(reply.decode())
"#;
    Command::new("python3")
        .args(["-c", script])
        .arg(&path)
        .timeout(DEADLINE)
        .assert()
        .success()
        .stdout("FROM PYTHON\nSECOND LINE\n");
}
