//! The book's claims about the kernel and std, checked on this machine: each test proves one
//! sentence the background chapters or the lessons' text rely on (Linux behaviour).
//!
//! Each uses its own temp dir or abstract name, sets a read timeout wherever it reads, and
//! leaves nothing behind.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::net::Shutdown;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};

use rustix::fs::Mode;
use rustix::net::{AddressFamily, SocketAddrUnix, SocketType};
use uds_test_support::{DEADLINE, abstract_name, temp_dir};

/// ENXIO's number on Linux: "No such device or address".
const ENXIO: i32 = 6;

/// An unbound stream socket, made with rustix: std's types bind or connect as they are made.
fn socket() -> std::os::fd::OwnedFd {
    rustix::net::socket(AddressFamily::UNIX, SocketType::STREAM, None).expect("socket")
}

/// Proves the lifecycle chapter's "before `listen`, a `connect` is refused": a socket bound to
/// the path but not listening refuses, as a stale file does; after `listen` it accepts. So a
/// mode set between `bind` and `listen` (tokio's `UnixSocket`) leaves no window.
#[test]
fn a_socket_bound_but_not_listening_refuses_connect_until_it_listens() {
    let dir = temp_dir();
    let path = dir.path().join("bound.sock");
    let server = socket();
    rustix::net::bind(&server, &SocketAddrUnix::new(&path).expect("address")).expect("bind");
    let err = UnixStream::connect(&path).expect_err("connect before listen");
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "{err}");
    rustix::net::listen(&server, 1).expect("listen");
    UnixStream::connect(&path).expect("connect after listen");
}

/// Proves "a stale socket file refuses": the listener is dropped, its file stays (std never
/// unlinks it), and a `connect` to it fails with ECONNREFUSED.
#[test]
fn a_stale_socket_file_stays_and_refuses_connect() {
    let dir = temp_dir();
    let path = dir.path().join("stale.sock");
    drop(UnixListener::bind(&path).expect("bind"));
    assert!(path.exists(), "dropping the listener removed its file");
    let err = UnixStream::connect(&path).expect_err("connect to a stale file");
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "{err}");
}

/// Proves "`open(2)` on a socket file fails with ENXIO", for reading and for writing, whether
/// a server listens on it or the file is stale.
#[test]
fn opening_a_socket_file_fails_with_enxio_live_or_stale() {
    let dir = temp_dir();
    let path = dir.path().join("app.sock");
    let assert_enxio = |state: &str| {
        let read = File::open(&path).expect_err("open for reading");
        let write = OpenOptions::new().write(true).open(&path).expect_err("open for writing");
        for err in [read, write] {
            assert_eq!(err.raw_os_error(), Some(ENXIO), "{state}: {err}");
        }
    };
    let listener = UnixListener::bind(&path).expect("bind");
    assert_enxio("live");
    drop(listener);
    assert_enxio("stale");
}

/// Proves "an abstract name is freed when the last descriptor of its bound socket closes", in
/// a process that goes on running, and even while a connection accepted from it stays open.
#[test]
fn an_abstract_name_is_freed_when_the_last_descriptor_of_its_socket_closes() {
    let name = SocketAddr::from_abstract_name(abstract_name("freed")).expect("name");
    let listener = UnixListener::bind_addr(&name).expect("bind");
    let second = listener.try_clone().expect("clone");
    let client = UnixStream::connect_addr(&name).expect("connect");
    let (accepted, _) = listener.accept().expect("accept");
    drop(listener);
    let err = UnixListener::bind_addr(&name).expect_err("bind while a descriptor is open");
    assert_eq!(err.kind(), ErrorKind::AddrInUse, "{err}");
    drop(second);
    UnixListener::bind_addr(&name).expect("bind again once the socket is closed");
    drop((client, accepted));
}

/// Proves lesson 03's "clients still queued when the listener closes": their first read fails
/// with ECONNRESET, and the next one reads EOF.
#[test]
fn a_client_queued_when_the_listener_closes_reads_econnreset_then_eof() {
    let dir = temp_dir();
    let path = dir.path().join("closing.sock");
    let listener = UnixListener::bind(&path).expect("bind");
    let mut queued = UnixStream::connect(&path).expect("connect");
    queued.set_read_timeout(Some(DEADLINE)).expect("read timeout");
    drop(listener);
    let err = queued.read(&mut [0; 16]).expect_err("the first read");
    assert_eq!(err.kind(), ErrorKind::ConnectionReset, "{err}");
    assert_eq!(queued.read(&mut [0; 16]).expect("the second read"), 0, "EOF");
}

/// Proves "EPIPE follows any close by the peer, or its shutdown for reading": the peer read
/// everything first, and a write fails with EPIPE (BrokenPipe), as an error, the process alive.
#[test]
fn a_write_after_the_peer_closed_with_nothing_unread_fails_with_epipe() {
    let (mut ours, mut theirs) = UnixStream::pair().expect("socketpair");
    theirs.set_read_timeout(Some(DEADLINE)).expect("read timeout");
    ours.write_all(b"hello\n").expect("the first write");
    theirs.read_exact(&mut [0; 6]).expect("the peer reads it all");
    theirs.shutdown(Shutdown::Read).expect("shutdown(Read)");
    let err = ours.write_all(b"again\n").expect_err("a write after the peer's shutdown(Read)");
    assert_eq!(err.kind(), ErrorKind::BrokenPipe, "{err}");
    drop(theirs);
    let err = ours.write_all(b"again\n").expect_err("a write after the close");
    assert_eq!(err.kind(), ErrorKind::BrokenPipe, "{err}");
}

/// Proves "`fchmod` on the socket before `bind` sets the file's mode" (Linux): `bind` creates
/// the file with the socket's own mode minus the umask, so no process-wide umask is needed.
#[test]
fn fchmod_on_the_socket_before_bind_sets_the_mode_of_the_file_bind_creates() {
    let dir = temp_dir();
    let path = dir.path().join("private.sock");
    let server = socket();
    rustix::fs::fchmod(&server, Mode::from_raw_mode(0o600)).expect("fchmod");
    rustix::net::bind(&server, &SocketAddrUnix::new(&path).expect("address")).expect("bind");
    // The umask can only take bits away, and a usual one (022, 002, 077) takes none of 0600's.
    let mode = fs::symlink_metadata(&path).expect("stat").permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "mode {mode:o}");
}
