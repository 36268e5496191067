//! Exercise checks for lesson 09 (EXERCISES.md). A plain `cargo test` skips them (`#[ignore]`);
//! `cargo run -- check 9` runs them against your binaries, `--solution` against the reference ones.

use std::env;
use std::fs;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};

use assert_cmd::cargo::cargo_bin;
use rustix::net::{RecvFlags, SocketAddrUnix, recvfrom};
use rustix::process::{Signal, kill_process};
use uds_test_support::{DEADLINE, Server, temp_dir};

/// The server under test: `UDS_SERVER` (an absolute path), else this lesson's own.
fn server() -> PathBuf {
    env::var_os("UDS_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| cargo_bin!("lesson09-server").to_owned())
}

/// The client under test: `UDS_CLIENT` (an absolute path), else this lesson's own.
fn client() -> PathBuf {
    env::var_os("UDS_CLIENT")
        .map(PathBuf::from)
        .unwrap_or_else(|| cargo_bin!("lesson09-client").to_owned())
}

// Exercise 1: the client asks the kernel for a name.

/// A socket bound to `path`, with a deadline on every receive.
fn bound(path: &Path) -> UnixDatagram {
    let socket = UnixDatagram::bind(path).expect("bind the test's socket");
    socket.set_read_timeout(Some(DEADLINE)).expect("set a read timeout");
    socket
}

/// With `--autobind`, the client's datagram comes from an abstract name of five hex digits
/// that the kernel chose (Linux autobind), a reply sent to it arrives, and the client creates
/// no file: it works even when its temp dir does not exist.
#[test]
#[ignore = "exercise: cargo run -- check 9"]
fn ex1_with_autobind_the_client_sends_from_a_kernel_chosen_name_and_creates_no_file() {
    let dir = temp_dir();
    let path = dir.path().join("fake.sock");
    // The test is the server here, so that it can see the sender's address.
    let fake = bound(&path);
    let missing = dir.path().join("no-such-dir");
    let mut cmd = assert_cmd::Command::new(client());
    cmd.env("TMPDIR", &missing).timeout(DEADLINE);
    cmd.args(["--autobind", "--timeout-ms", "2000"]).arg(&path).arg("hi");
    let run = std::thread::spawn(move || cmd.output().expect("run the client"));
    let mut buf = [0; 100];
    let (kept, _, from) = recvfrom(&fake, &mut buf[..], RecvFlags::empty())
        .expect("the client's datagram within the deadline");
    assert_eq!(&buf[..kept], b"hi");
    let from = from.and_then(|from| SocketAddrUnix::try_from(from).ok());
    let from = from.expect("the datagram has a Unix sender address");
    let name = from.abstract_name().map(<[u8]>::to_vec);
    let name = name.unwrap_or_else(|| panic!("not an abstract name: {from:?}"));
    assert!(
        name.len() == 5 && name.iter().all(u8::is_ascii_hexdigit),
        "not a name the kernel chose (five hex digits): {:?}",
        String::from_utf8_lossy(&name)
    );
    rustix::net::sendto(&fake, b"HI", rustix::net::SendFlags::empty(), &from).expect("reply");
    let out = run.join().expect("the client thread");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout, b"HI\n");
    assert!(!missing.exists());
    let left: Vec<_> = fs::read_dir(dir.path()).expect("read dir").collect();
    assert_eq!(left.len(), 1, "files beside the server's socket: {left:?}");
}

/// Without `--autobind` the client still binds a file in its temp dir, so a missing temp dir
/// is an error naming the step and the path.
#[test]
#[ignore = "exercise: cargo run -- check 9"]
fn ex1_without_autobind_the_client_still_binds_a_file_in_its_temp_dir() {
    let dir = temp_dir();
    let path = dir.path().join("fake.sock");
    let _fake = bound(&path);
    let missing = dir.path().join("no-such-dir");
    let out = assert_cmd::Command::new(client())
        .env("TMPDIR", &missing)
        .timeout(DEADLINE)
        .args(["--timeout-ms", "300"])
        .arg(&path)
        .arg("hi")
        .output()
        .expect("run the client");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let want = format!("lesson09-client: bind {}/lesson09-client-", missing.display());
    assert!(stderr.starts_with(&want), "{stderr}");
    // And `--autobind` is a flag the client knows: `--help` lists it.
    let help = assert_cmd::Command::new(client()).arg("--help").timeout(DEADLINE).output();
    let help = help.expect("run the client with --help");
    assert!(String::from_utf8_lossy(&help.stdout).contains("--autobind"), "{help:?}");
}

// Exercise 2: the server's counters on SIGUSR1.

/// After three answered datagrams and one from an unbound sender, SIGUSR1 makes the server log
/// `lesson09-server: stats: 4 received, 3 answered, 1 not answered`, and it serves on.
#[test]
#[ignore = "exercise: cargo run -- check 9"]
fn ex2_sigusr1_logs_the_servers_counters_and_it_serves_on() {
    let dir = temp_dir();
    let path = dir.path().join("lesson09.sock");
    let mut server = Server::start(&server(), &path, &[&path]);
    let me = bound(&dir.path().join("me.sock"));
    for message in ["one", "two", "three"] {
        me.send_to(message.as_bytes(), &path).expect("send");
        let mut buf = [0; 100];
        let n = me.recv(&mut buf).expect("a reply");
        assert_eq!(&buf[..n], message.to_ascii_uppercase().as_bytes());
    }
    let unbound = UnixDatagram::unbound().expect("an unbound socket");
    unbound.send_to(b"four", &path).expect("send");
    server.wait_for_line("lesson09-server: cannot reply: the sender has no address");
    kill_process(server.pid(), Signal::USR1).expect("send SIGUSR1");
    server.wait_for_line("lesson09-server: stats: 4 received, 3 answered, 1 not answered");
    assert!(!server.has_exited(), "the server exited after SIGUSR1:\n{}", server.output());
    me.send_to(b"five", &path).expect("send");
    let mut buf = [0; 100];
    let n = me.recv(&mut buf).expect("a reply after SIGUSR1");
    assert_eq!(&buf[..n], b"FIVE");
    // The reply may arrive before the server has counted it; the log line about a second
    // unbound datagram comes after, as the server handles one datagram at a time.
    unbound.send_to(b"six", &path).expect("send");
    server.wait_for(
        |line| line == "lesson09-server: cannot reply: the sender has no address",
        "a second `cannot reply` line",
    );
    kill_process(server.pid(), Signal::USR1).expect("send SIGUSR1");
    server.wait_for_line("lesson09-server: stats: 6 received, 4 answered, 2 not answered");
}

/// An over-limit datagram answered with its `error: ` line counts as answered; a reply dropped
/// on a full queue counts as not answered.
#[test]
#[ignore = "exercise: cargo run -- check 9"]
fn ex2_error_replies_are_answered_and_dropped_replies_are_not() {
    let dir = temp_dir();
    let path = dir.path().join("lesson09.sock");
    let mut server = Server::start(
        &server(),
        &path,
        &[path.as_os_str(), "--max-datagram".as_ref(), "4".as_ref()],
    );
    let me = bound(&dir.path().join("me.sock"));
    me.send_to(b"too long", &path).expect("send");
    let mut buf = [0; 100];
    let n = me.recv(&mut buf).expect("a reply");
    assert!(buf[..n].starts_with(b"error: "), "{:?}", String::from_utf8_lossy(&buf[..n]));
    let silent = bound(&dir.path().join("silent.sock"));
    for _ in 0..30 {
        silent.send_to(b"x", &path).expect("send");
    }
    let full =
        format!("cannot reply: {}: its queue is full", dir.path().join("silent.sock").display());
    server.wait_for_line_containing(&full);
    // Every datagram has been handled once the last one's reply was dropped or sent.
    std::thread::sleep(std::time::Duration::from_millis(200));
    kill_process(server.pid(), Signal::USR1).expect("send SIGUSR1");
    let stats = server.wait_for_line_containing("lesson09-server: stats: ");
    let tail = stats.split("stats: ").nth(1).unwrap_or_default();
    let counts: Vec<u64> = tail
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().expect("a count"))
        .collect();
    assert_eq!(counts.len(), 3, "{stats}");
    let (received, answered, not_answered) = (counts[0], counts[1], counts[2]);
    assert_eq!(received, 31, "{stats}");
    assert_eq!(received, answered + not_answered, "{stats}");
    assert!(not_answered >= 1 && answered >= 2, "{stats}");
}
