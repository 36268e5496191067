//! lesson09-server, proven with the real binary on real datagram sockets in private temp dirs:
//! boundaries kept, replies to the sender's address, an unbound sender logged, a datagram over
//! the limit detected, a full sender queue never blocking the server; socat and Python clients.

use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use assert_cmd::cargo::cargo_bin;
use rustix::net::{RecvFlags, recv};
use uds_test_support::{
    ChildGuard, DEADLINE, Server, abstract_name, have_tool, start_in_temp_dir, temp_dir,
};

fn server() -> &'static Path {
    cargo_bin!("lesson09-server")
}

/// A test's own datagram socket, bound to `name` in `dir`, with a deadline on every receive.
fn bound(dir: &Path, name: &str) -> UnixDatagram {
    let socket = UnixDatagram::bind(dir.join(name)).expect("bind the test's socket");
    socket.set_read_timeout(Some(DEADLINE)).expect("set a read timeout");
    socket
}

/// Receive one datagram whole: its bytes, checked not to be cut (MSG_TRUNC).
fn receive(socket: &UnixDatagram) -> Vec<u8> {
    let mut buf = vec![0; 70_000];
    let (kept, len) = recv(socket, &mut buf[..], RecvFlags::TRUNC).expect("receive a reply");
    assert_eq!(kept, len, "a reply was cut");
    buf.truncate(len);
    buf
}

/// One datagram comes back as one datagram, upper-cased, to the address it came from.
#[test]
fn a_datagram_is_answered_in_upper_case_to_its_senders_address() {
    let (dir, path, _server) = start_in_temp_dir(server(), "lesson09.sock");
    let me = bound(dir.path(), "me.sock");
    me.send_to(b"hello, Datagrams 123", &path).expect("send");
    assert_eq!(receive(&me), b"HELLO, DATAGRAMS 123");
}

/// 1000 small datagrams of different sizes keep their boundaries: each reply is exactly one
/// message, none merged or split — no newline or length prefix needed. At most 5 in flight,
/// under the kernel's queue of 10 datagrams.
#[test]
fn a_thousand_small_datagrams_keep_their_boundaries() {
    let (dir, path, _server) = start_in_temp_dir(server(), "lesson09.sock");
    let me = bound(dir.path(), "me.sock");
    let messages: Vec<Vec<u8>> =
        (0..1000).map(|i| format!("m{i}{}", "x".repeat(i % 37)).into_bytes()).collect();
    for chunk in messages.chunks(5) {
        for message in chunk {
            me.send_to(message, &path).expect("send");
        }
        for message in chunk {
            assert_eq!(receive(&me), message.to_ascii_uppercase());
        }
    }
}

/// A zero-length datagram is a message too: it gets a zero-length reply.
#[test]
fn a_zero_length_datagram_gets_a_zero_length_reply() {
    let (dir, path, _server) = start_in_temp_dir(server(), "lesson09.sock");
    let me = bound(dir.path(), "me.sock");
    me.send_to(b"", &path).expect("send");
    assert_eq!(receive(&me), b"");
    me.send_to(b"after", &path).expect("send");
    assert_eq!(receive(&me), b"AFTER");
}

/// A sender that never bound an address gets no reply: the server logs why and serves on.
#[test]
fn an_unbound_sender_gets_no_reply_and_the_server_logs_why() {
    let (dir, path, mut server) = start_in_temp_dir(server(), "lesson09.sock");
    let unbound = UnixDatagram::unbound().expect("an unbound socket");
    unbound.send_to(b"anyone there?", &path).expect("send");
    server.wait_for_line("lesson09-server: cannot reply: the sender has no address");
    let me = bound(dir.path(), "me.sock");
    me.send_to(b"still serving", &path).expect("send");
    assert_eq!(receive(&me), b"STILL SERVING");
}

/// A datagram over `--max-datagram` is detected by its real length (MSG_TRUNC), not cut and
/// answered as if whole; one at the limit is answered.
#[test]
fn a_datagram_over_the_limit_is_detected_not_silently_cut() {
    let dir = temp_dir();
    let path = dir.path().join("lesson09.sock");
    let _server = Server::start(
        server(),
        &path,
        &[path.as_os_str(), "--max-datagram".as_ref(), "100".as_ref()],
    );
    let me = bound(dir.path(), "me.sock");
    me.send_to(&[b'a'; 100], &path).expect("send");
    assert_eq!(receive(&me), [b'A'; 100]);
    me.send_to(&[b'a'; 5000], &path).expect("send");
    assert_eq!(receive(&me), b"error: datagram of 5000 bytes is over the 100-byte limit");
}

/// The default limit is 65536 bytes: 65536 are answered, 65537 are not.
#[test]
fn the_default_limit_is_65536_bytes() {
    let (dir, path, _server) = start_in_temp_dir(server(), "lesson09.sock");
    let me = bound(dir.path(), "me.sock");
    me.send_to(&vec![b'z'; 65536], &path).expect("send");
    assert_eq!(receive(&me), vec![b'Z'; 65536]);
    me.send_to(&vec![b'z'; 65537], &path).expect("send");
    assert_eq!(receive(&me), b"error: datagram of 65537 bytes is over the 65536-byte limit");
}

/// A sender that never reads fills its queue: its replies are dropped and logged, and the
/// server goes on serving everyone else at once (MSG_DONTWAIT: it never blocks on one sender).
#[test]
fn a_full_sender_queue_drops_the_reply_and_never_blocks_the_server() {
    let (dir, path, mut server) = start_in_temp_dir(server(), "lesson09.sock");
    let silent = bound(dir.path(), "silent.sock");
    let silent_path = dir.path().join("silent.sock");
    for _ in 0..30 {
        silent.send_to(b"never read", &path).expect("send");
    }
    server.wait_for_line(&format!(
        "lesson09-server: cannot reply: {}: its queue is full",
        silent_path.display()
    ));
    let me = bound(dir.path(), "me.sock");
    me.send_to(b"me too", &path).expect("send");
    assert_eq!(receive(&me), b"ME TOO");
}

/// `bind` creates a socket file, as for a stream socket; a file already there makes `bind`
/// fail as in lesson 01: exit 1, one line naming the step and the path.
#[test]
fn the_socket_file_is_a_socket_and_an_existing_file_makes_bind_fail() {
    let (_dir, path, _server) = start_in_temp_dir(server(), "lesson09.sock");
    let meta = std::fs::symlink_metadata(&path).expect("stat the socket file");
    assert!(meta.file_type().is_socket(), "not a socket: {meta:?}");
    let mut second = Server::spawn(server(), &path, &[&path]);
    let want = format!("lesson09-server: bind {}: Address already in use", path.display());
    second.wait_for_line_containing(&want);
    assert_eq!(second.wait_exit().code(), Some(1));
}

/// `@name` binds a Linux abstract name: no file, and replies reach a client bound to one too.
#[test]
fn an_abstract_name_works_for_server_and_sender() {
    let name = abstract_name("dgram");
    let at = PathBuf::from(format!("@{name}"));
    let _server = Server::start(server(), &at, &[&at]);
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::SocketAddr;
    let mine = abstract_name("me");
    let me = UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(&mine).expect("a name"))
        .expect("bind an abstract name");
    me.set_read_timeout(Some(DEADLINE)).expect("set a read timeout");
    let to = SocketAddr::from_abstract_name(&name).expect("a name");
    me.send_to_addr(b"abstract", &to).expect("send");
    assert_eq!(receive(&me), b"ABSTRACT");
}

/// socat with `UNIX-SENDTO:PATH,bind=Q` (a bound sender) gets the reply.
#[test]
fn socat_with_a_bound_address_gets_the_reply() {
    if !have_tool("socat", "apt-get install socat") {
        return;
    }
    let (dir, path, _server) = start_in_temp_dir(server(), "lesson09.sock");
    let bind = dir.path().join("socat.sock");
    let mut cmd = Command::new("socat");
    cmd.args(["-t", "2", "-"])
        .arg(format!("UNIX-SENDTO:{},bind={}", path.display(), bind.display()))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    let out = output_within(cmd, b"from socat");
    assert_eq!(out, b"FROM SOCAT");
}

/// Python's `socket.SOCK_DGRAM`, bound to a path, gets the reply.
#[test]
fn a_python_sock_dgram_client_gets_the_reply() {
    if !have_tool("python3", "apt-get install python3") {
        return;
    }
    let (dir, path, _server) = start_in_temp_dir(server(), "lesson09.sock");
    let script = "import socket, sys\n\
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n\
        s.bind(sys.argv[2]); s.settimeout(5)\n\
        s.sendto(b'from python', sys.argv[1])\n\
        sys.stdout.buffer.write(s.recv(100))\n";
    let mut cmd = Command::new("python3");
    cmd.arg("-c").arg(script).arg(&path).arg(dir.path().join("py.sock"));
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped());
    assert_eq!(output_within(cmd, b""), b"FROM PYTHON");
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
