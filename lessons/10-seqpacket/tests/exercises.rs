//! Exercise checks for lesson 10 (EXERCISES.md). A plain `cargo test` skips them (`#[ignore]`);
//! `cargo run -- check 10` runs them against your binaries, `--solution` against the reference
//! ones.

use std::env;
use std::path::PathBuf;

use assert_cmd::cargo::cargo_bin;
use rustix::net::{
    AddressFamily, RecvFlags, SendFlags, SocketAddrUnix, SocketType, connect, recv, send, socket,
};
use uds_test_support::{DEADLINE, Server, temp_dir};

/// The server under test: `UDS_SERVER` (an absolute path), else this lesson's own.
fn server() -> PathBuf {
    env::var_os("UDS_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| cargo_bin!("lesson10-server").to_owned())
}

/// The client under test: `UDS_CLIENT` (an absolute path), else this lesson's own.
fn client() -> PathBuf {
    env::var_os("UDS_CLIENT")
        .map(PathBuf::from)
        .unwrap_or_else(|| cargo_bin!("lesson10-client").to_owned())
}

// Exercise 1: the client counts the answered packets.

/// With `--count`, after three messages (one of them empty, so not sent) the client ends with
/// `lesson10-client: packets answered: 2` on stderr; stdout holds only the replies.
#[test]
#[ignore = "exercise: cargo run -- check 10"]
fn ex1_count_prints_how_many_packets_were_answered() {
    let dir = temp_dir();
    let path = dir.path().join("lesson10.sock");
    let _server = Server::start(cargo_bin!("lesson10-server"), &path, &[&path]);
    let out = assert_cmd::Command::new(client())
        .timeout(DEADLINE)
        .arg("--count")
        .arg(&path)
        .args(["one", "", "two"])
        .output()
        .expect("run the client");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout, b"ONE\nTWO\n");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().last(), Some("lesson10-client: packets answered: 2"), "{stderr}");
}

/// After a refusal the count still comes, of the packets answered before it; exit 1. Without
/// `--count` nothing is added.
#[test]
#[ignore = "exercise: cargo run -- check 10"]
fn ex1_count_comes_after_a_refusal_too_and_only_when_asked() {
    let dir = temp_dir();
    let path = dir.path().join("lesson10.sock");
    let max = [path.as_os_str(), "--max-packet".as_ref(), "3".as_ref()];
    let _server = Server::start(cargo_bin!("lesson10-server"), &path, &max);
    let run = |count: bool| {
        let mut cmd = assert_cmd::Command::new(client());
        if count {
            cmd.arg("--count");
        }
        cmd.timeout(DEADLINE).arg(&path).args(["ab", "abc", "abcd"]).output().expect("run")
    };
    let out = run(true);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(out.stdout, b"AB\nABC\n");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr,
        "error: packet of 4 bytes is over the 3-byte limit\n\
         lesson10-client: packets answered: 2\n"
    );
    let out = run(false);
    assert_eq!(String::from_utf8_lossy(&out.stderr).lines().count(), 1, "{out:?}");
}

// Exercise 2: the server logs each packet's real length.

/// With `--log-sizes`, each packet is logged with its length, one over the limit with its real
/// length (what MSG_TRUNC reports), not the bytes that fit.
#[test]
#[ignore = "exercise: cargo run -- check 10"]
fn ex2_log_sizes_logs_each_packets_real_length() {
    let dir = temp_dir();
    let path = dir.path().join("lesson10.sock");
    let args = [path.as_os_str(), "--log-sizes".as_ref(), "--max-packet".as_ref(), "20".as_ref()];
    let mut server = Server::start(&server(), &path, &args);
    let conn = socket(AddressFamily::UNIX, SocketType::SEQPACKET, None).expect("socket");
    connect(&conn, &SocketAddrUnix::new(&path).expect("address")).expect("connect");
    send(&conn, b"abc", SendFlags::empty()).expect("send");
    server.wait_for_line("lesson10-server: connection 1: packet of 3 bytes");
    send(&conn, b"hello world", SendFlags::empty()).expect("send");
    server.wait_for_line("lesson10-server: connection 1: packet of 11 bytes");
    send(&conn, &[b'x'; 5000], SendFlags::empty()).expect("send");
    server.wait_for_line("lesson10-server: connection 1: packet of 5000 bytes");
}

/// Without `--log-sizes` the server logs no sizes; `--help` lists the flag.
#[test]
#[ignore = "exercise: cargo run -- check 10"]
fn ex2_without_the_flag_no_sizes_are_logged() {
    let dir = temp_dir();
    let path = dir.path().join("lesson10.sock");
    let help = assert_cmd::Command::new(server()).arg("--help").timeout(DEADLINE).output();
    let help = help.expect("run the server with --help");
    assert!(String::from_utf8_lossy(&help.stdout).contains("--log-sizes"), "{help:?}");
    let mut server = Server::start(&server(), &path, &[&path]);
    let conn = socket(AddressFamily::UNIX, SocketType::SEQPACKET, None).expect("socket");
    connect(&conn, &SocketAddrUnix::new(&path).expect("address")).expect("connect");
    send(&conn, b"abc", SendFlags::empty()).expect("send");
    // The reply read before closing: else the server's `send` may find the connection gone.
    let mut reply = [0; 10];
    assert_eq!(recv(&conn, &mut reply[..], RecvFlags::empty()).expect("recv").0, 3);
    drop(conn);
    server.wait_for_line("lesson10-server: connection 1: closed, packets answered: 1");
    assert!(!server.output().contains("bytes"), "{}", server.output());
}
