//! lesson10-server, proven with the real binary on real SOCK_SEQPACKET sockets in private temp
//! dirs: boundaries kept where a stream would merge, a packet over the limit detected, EOF, a
//! socket file; socat and Python clients.

use std::os::fd::OwnedFd;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;
use std::process::{Command, Stdio};

use assert_cmd::cargo::cargo_bin;
use rustix::net::{
    AddressFamily, RecvFlags, SendFlags, SocketAddrUnix, SocketType, connect, recv, send, socket,
    sockopt,
};
use uds_test_support::{ChildGuard, DEADLINE, Server, have_tool, start_in_temp_dir, temp_dir};

fn server() -> &'static Path {
    cargo_bin!("lesson10-server")
}

/// A SOCK_SEQPACKET connection to `path`, with a deadline on every receive.
fn connect_seqpacket(path: &Path) -> OwnedFd {
    let conn = socket(AddressFamily::UNIX, SocketType::SEQPACKET, None).expect("socket");
    let address = SocketAddrUnix::new(path).expect("a socket address");
    connect(&conn, &address).expect("connect");
    sockopt::set_socket_timeout(&conn, sockopt::Timeout::Recv, Some(DEADLINE)).expect("timeout");
    conn
}

/// Receive one packet whole: its bytes, checked not to be cut (MSG_TRUNC). Empty at EOF.
fn receive(conn: &OwnedFd) -> Vec<u8> {
    let mut buf = vec![0; 70_000];
    let (kept, len) = recv(conn, &mut buf[..], RecvFlags::TRUNC).expect("receive a reply");
    assert_eq!(kept, len, "a reply was cut");
    buf.truncate(len);
    buf
}

/// One packet comes back as one packet, upper-cased.
#[test]
fn a_packet_is_answered_with_one_packet_in_upper_case() {
    let (_dir, path, _server) = start_in_temp_dir(server(), "lesson10.sock");
    let conn = connect_seqpacket(&path);
    send(&conn, b"hello, Seqpacket 123", SendFlags::empty()).expect("send");
    assert_eq!(receive(&conn), b"HELLO, SEQPACKET 123");
}

/// Two packets sent back to back, before reading anything, arrive as two replies: a stream
/// would hand the server "onetwo" in one read.
#[test]
fn two_packets_sent_back_to_back_arrive_as_two_replies() {
    let (_dir, path, _server) = start_in_temp_dir(server(), "lesson10.sock");
    let conn = connect_seqpacket(&path);
    send(&conn, b"one", SendFlags::empty()).expect("send");
    send(&conn, b"two", SendFlags::empty()).expect("send");
    assert_eq!(receive(&conn), b"ONE");
    assert_eq!(receive(&conn), b"TWO");
}

/// 1000 packets of different sizes, 20 in flight at a time, keep their boundaries; a newline
/// inside a packet is only a byte.
#[test]
fn a_thousand_packets_keep_their_boundaries() {
    let (_dir, path, _server) = start_in_temp_dir(server(), "lesson10.sock");
    let conn = connect_seqpacket(&path);
    let messages: Vec<Vec<u8>> =
        (0..1000).map(|i| format!("m{i}\n{}", "x".repeat(i % 37)).into_bytes()).collect();
    for chunk in messages.chunks(20) {
        for message in chunk {
            send(&conn, message, SendFlags::empty()).expect("send");
        }
        for message in chunk {
            assert_eq!(receive(&conn), message.to_ascii_uppercase());
        }
    }
}

/// A packet over `--max-packet` is detected by its real length (MSG_TRUNC), not cut and
/// answered as if whole: an `error: ` packet, then the server closes the connection.
#[test]
fn a_packet_over_the_limit_is_detected_and_the_connection_closed() {
    let dir = temp_dir();
    let path = dir.path().join("lesson10.sock");
    let mut server = Server::start(
        server(),
        &path,
        &[path.as_os_str(), "--max-packet".as_ref(), "100".as_ref()],
    );
    let conn = connect_seqpacket(&path);
    send(&conn, &[b'a'; 100], SendFlags::empty()).expect("send");
    assert_eq!(receive(&conn), [b'A'; 100]);
    send(&conn, &[b'a'; 5000], SendFlags::empty()).expect("send");
    assert_eq!(receive(&conn), b"error: packet of 5000 bytes is over the 100-byte limit");
    assert_eq!(receive(&conn), b"", "no EOF after the error");
    server.wait_for_line_containing("over the 100-byte limit: closing");
    // Only that connection: the server serves on.
    let other = connect_seqpacket(&path);
    send(&other, b"next", SendFlags::empty()).expect("send");
    assert_eq!(receive(&other), b"NEXT");
}

/// The default limit is 65536 bytes: 65536 are answered, 65537 are not.
#[test]
fn the_default_limit_is_65536_bytes() {
    let (_dir, path, _server) = start_in_temp_dir(server(), "lesson10.sock");
    let conn = connect_seqpacket(&path);
    send(&conn, &vec![b'z'; 65536], SendFlags::empty()).expect("send");
    assert_eq!(receive(&conn), vec![b'Z'; 65536]);
    send(&conn, &vec![b'z'; 65537], SendFlags::empty()).expect("send");
    assert_eq!(receive(&conn), b"error: packet of 65537 bytes is over the 65536-byte limit");
}

/// A zero-length packet reads as EOF: the server ends the connection, and logs it as closed.
#[test]
fn a_zero_length_packet_reads_as_the_end_of_the_connection() {
    let (_dir, path, mut server) = start_in_temp_dir(server(), "lesson10.sock");
    let conn = connect_seqpacket(&path);
    send(&conn, b"first", SendFlags::empty()).expect("send");
    assert_eq!(receive(&conn), b"FIRST");
    send(&conn, b"", SendFlags::empty()).expect("send");
    assert_eq!(receive(&conn), b"", "the server did not close");
    server.wait_for_line("lesson10-server: connection 1: closed, packets answered: 1");
}

/// `bind` creates a socket file; a file already there makes `bind` fail as in lesson 01: exit 1,
/// one line naming the step and the path.
#[test]
fn the_socket_file_is_a_socket_and_an_existing_file_makes_bind_fail() {
    let (_dir, path, _server) = start_in_temp_dir(server(), "lesson10.sock");
    let meta = std::fs::symlink_metadata(&path).expect("stat the socket file");
    assert!(meta.file_type().is_socket());
    let out = assert_cmd::Command::new(server()).arg(&path).timeout(DEADLINE).output();
    let out = out.expect("run a second server");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let want = format!("lesson10-server: bind {}: ", path.display());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with(&want) && stderr.ends_with('\n'), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

/// A stream client cannot connect: the socket type is part of the address's contract.
#[test]
fn a_stream_client_is_refused() {
    let (_dir, path, _server) = start_in_temp_dir(server(), "lesson10.sock");
    assert!(std::os::unix::net::UnixStream::connect(&path).is_err());
}

/// socat with `UNIX-CONNECT:PATH,type=5` (5 is SOCK_SEQPACKET) gets the reply.
#[test]
fn socat_with_type_5_gets_the_reply() {
    if !have_tool("socat", "apt-get install socat") {
        return;
    }
    let (_dir, path, _server) = start_in_temp_dir(server(), "lesson10.sock");
    let mut cmd = Command::new("socat");
    cmd.args(["-t", "2", "-"])
        .arg(format!("UNIX-CONNECT:{},type=5", path.display()))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    assert_eq!(output_within(cmd, b"from socat"), b"FROM SOCAT");
}

/// Python's `socket.SOCK_SEQPACKET`: two sends, two replies.
#[test]
fn a_python_sock_seqpacket_client_gets_two_replies() {
    if !have_tool("python3", "apt-get install python3") {
        return;
    }
    let (_dir, path, _server) = start_in_temp_dir(server(), "lesson10.sock");
    let script = "import socket, sys\n\
        s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)\n\
        s.settimeout(5); s.connect(sys.argv[1])\n\
        s.send(b'from'); s.send(b'python')\n\
        sys.stdout.buffer.write(s.recv(100) + b'|' + s.recv(100))\n";
    let mut cmd = Command::new("python3");
    cmd.arg("-c").arg(script).arg(&path);
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped());
    assert_eq!(output_within(cmd, b""), b"FROM|PYTHON");
}

/// Run `cmd` with `input` on its stdin; its stdout, after it exited within the deadline.
fn output_within(mut cmd: Command, input: &[u8]) -> Vec<u8> {
    use std::io::{Read, Write};
    let mut child = ChildGuard(cmd.spawn().expect("spawn"));
    let mut stdin = child.0.stdin.take().expect("stdin is piped");
    stdin.write_all(input).expect("write stdin");
    drop(stdin);
    let status = child.wait();
    assert!(status.success(), "{cmd:?}: {status}");
    let mut out = Vec::new();
    child.0.stdout.take().expect("stdout is piped").read_to_end(&mut out).expect("read stdout");
    out
}
