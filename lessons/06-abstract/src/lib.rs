//! lesson06: what the server and the client agree on — where the socket lives by default, when
//! its directory can be trusted, who is at the other end of a connection, and how to `connect`
//! and wait without waiting forever.
//!
//! The binaries are the lesson: `src/bin/server.rs` and `src/bin/client.rs`.

use std::ffi::OsString;
use std::io::{self, ErrorKind};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::{SocketAddr, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;
use std::{env, fs};

use anyhow::{Context, bail};
#[cfg(target_os = "linux")]
use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
use rustix::net::sockopt::{Timeout, set_socket_timeout};
use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType, socket_with};
use rustix::process::getuid;

/// The file name of this lesson's socket inside [`default_socket_dir`].
pub const SOCKET_NAME: &str = "lesson06.sock";

// ANCHOR: default_dir
/// `$XDG_RUNTIME_DIR/uds-course`, else `<temp dir>/uds-course-<uid>`.
///
/// `$XDG_RUNTIME_DIR` (usually `/run/user/<uid>`) is private to the user and emptied at logout:
/// the place sockets belong. Without it, the uid in the name keeps users of a shared `/tmp`
/// from colliding by accident, and no more: anyone can create `/tmp/uds-course-1000` first,
/// own it, and put their own socket in it. So both programs check the directory with
/// [`check_private_dir`] before they use it. Only the server creates the directory.
pub fn default_socket_dir() -> PathBuf {
    match env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from) {
        Some(runtime) if runtime.is_absolute() => runtime.join("uds-course"),
        _ => env::temp_dir().join(format!("uds-course-{}", rustix::process::getuid().as_raw())),
    }
}
// ANCHOR_END: default_dir

// ANCHOR: check_dir
/// Accept `dir` only if it is a directory of ours that nobody else may enter: then nobody else
/// can reach a socket file in it, or put one there. The server checks the default directory
/// after creating it; the client checks it before connecting to a socket in it.
pub fn check_private_dir(dir: &Path) -> anyhow::Result<()> {
    let shown = dir.display();
    // Whoever made it first decided its owner and mode: check, never assume. No symlinks:
    // one could point a root-run server at a directory someone else controls.
    let meta = fs::symlink_metadata(dir).with_context(|| format!("stat {shown}"))?;
    let me = getuid().as_raw();
    if !meta.is_dir() {
        bail!("check {shown}: not a directory");
    }
    if meta.uid() != me {
        bail!("check {shown}: owned by uid {}, not by us (uid {me})", meta.uid());
    }
    if meta.mode() & 0o077 != 0 {
        bail!(
            "check {shown}: mode {:04o} lets other users in; `chmod 700 {shown}` if that is safe",
            meta.mode() & 0o7777
        );
    }
    Ok(())
}
// ANCHOR_END: check_dir

// ANCHOR: address
/// Where a server listens and a client connects: a socket file, or a name in Linux's abstract
/// namespace, written `@name` (the bytes after the `@`; no NUL is added).
#[derive(Clone, Debug)]
pub enum Address {
    File(PathBuf),
    Abstract(Vec<u8>),
}

impl Address {
    /// clap's parser for PATH: `@name` is the abstract name `name`; anything else is a path.
    /// A file whose name starts with `@` is written `./@name`.
    pub fn parse(text: OsString) -> Result<Address, String> {
        match text.as_encoded_bytes().strip_prefix(b"@") {
            Some([]) => Err("`@` needs a name after it, like `@lesson06`".to_owned()),
            Some(name) => Ok(Address::Abstract(name.to_vec())),
            None => Ok(Address::File(PathBuf::from(text))),
        }
    }

    /// The address as std's `bind_addr` takes it. std checks the length: a path or a name too
    /// long for `sun_path` (108 bytes) fails here.
    pub fn socket_addr(&self) -> io::Result<SocketAddr> {
        match self {
            Address::File(path) => SocketAddr::from_pathname(path),
            #[cfg(target_os = "linux")]
            Address::Abstract(name) => {
                use std::os::linux::net::SocketAddrExt;
                SocketAddr::from_abstract_name(name)
            }
            #[cfg(not(target_os = "linux"))]
            Address::Abstract(_) => Err(linux_only()),
        }
    }

    /// The path, or `@name`, as messages show it: `display()`, as for a `Path`.
    pub fn display(&self) -> String {
        match self {
            Address::File(path) => path.display().to_string(),
            Address::Abstract(name) => format!("@{}", name.escape_ascii()),
        }
    }
}
// ANCHOR_END: address

// ANCHOR: linux_only
// ANCHOR: peer_credentials
/// Who is at the other end of `stream`, as the kernel recorded it at `connect` (SO_PEERCRED):
/// the peer's uid, gid and pid. Through nix: rustix 1.1's pid cannot be 0, and 0 is the pid
/// of a peer outside our PID namespace (a server in a container, its client on the host).
#[cfg(target_os = "linux")]
pub fn peer_credentials(stream: &UnixStream) -> io::Result<(u32, u32, i32)> {
    let peer = getsockopt(stream, PeerCredentials)?;
    Ok((peer.uid(), peer.gid(), peer.pid()))
}
// ANCHOR_END: peer_credentials

/// Elsewhere the lesson compiles, and says why it cannot run.
#[cfg(not(target_os = "linux"))]
pub fn peer_credentials(_stream: &UnixStream) -> io::Result<(u32, u32, i32)> {
    Err(linux_only())
}

pub fn linux_only() -> io::Error {
    let message = "abstract names and SO_PEERCRED are Linux's; this lesson runs on Linux only";
    io::Error::new(ErrorKind::Unsupported, message)
}
// ANCHOR_END: linux_only

// ANCHOR: bounded_connect
/// `connect` to the socket file at `path`, giving up after `timeout` with a `timed out` error.
/// The timeout stays set on the stream as its send timeout: it bounds every write too.
///
/// On Linux `UnixStream::connect` can wait forever: while a server's accept queue (its
/// backlog) is full, `connect` sleeps until the server accepts someone, and a hung server
/// never does (macOS and the BSDs refuse at once instead). std has no
/// `connect_timeout` for Unix sockets. The recipe that works for TCP — a non-blocking
/// `connect`, then poll(2) until the socket is writable — does not work here: on Linux a
/// non-blocking `connect` to a full Unix listener fails at once with EAGAIN and leaves nothing
/// in progress (a second try fails the same way), and poll reports the unconnected socket
/// writable straight away. What works is the kernel's own wait with a bound: a blocking socket
/// whose send timeout (SO_SNDTIMEO) is set *before* `connect`. Then `connect` sleeps until the
/// server makes room or the timeout passes, and fails with EAGAIN.
pub fn connect_within(path: &Address, timeout: Duration) -> io::Result<UnixStream> {
    // std's own check of the path first, so that a path too long for `sun_path` is reported as
    // `UnixStream::connect` reports it: "path must be shorter than SUN_LEN".
    path.socket_addr()?;
    let address = match path {
        Address::File(path) => SocketAddrUnix::new(path.as_path())?,
        #[cfg(target_os = "linux")]
        Address::Abstract(name) => SocketAddrUnix::new_abstract_name(name)?,
        #[cfg(not(target_os = "linux"))]
        Address::Abstract(_) => return Err(linux_only()),
    };
    let socket = socket_with(AddressFamily::UNIX, SocketType::STREAM, SocketFlags::CLOEXEC, None)?;
    set_socket_timeout(&socket, Timeout::Send, Some(timeout))?;
    rustix::net::connect(&socket, &address).map_err(|errno| timed_out(errno.into()))?;
    Ok(UnixStream::from(socket))
}

/// Say `timed out` when a socket timeout expired. std reports it as WouldBlock (EAGAIN,
/// "Resource temporarily unavailable"), which reads like a bug in the program; on a blocking
/// socket EAGAIN means exactly that the timeout passed.
pub fn timed_out(err: io::Error) -> io::Error {
    match err.kind() {
        ErrorKind::WouldBlock | ErrorKind::TimedOut => {
            io::Error::new(ErrorKind::TimedOut, "timed out")
        }
        _ => err,
    }
}
// ANCHOR_END: bounded_connect

/// clap's parser for a timeout in milliseconds: at least 1. A zero timeout means "no timeout"
/// to the kernel, and std refuses to set one, so 0 is a usage error rather than a surprise.
pub fn parse_timeout_ms(text: &str) -> Result<u64, String> {
    match text.parse::<u64>() {
        Ok(0) => Err("a timeout of 0 ms is not a timeout; use 1 or more".to_owned()),
        Ok(ms) => Ok(ms),
        Err(_) => Err(format!("`{text}` is not a number of milliseconds")),
    }
}

// ANCHOR: log
/// `eprintln!` with the server's name in front (`lesson06-server: ...`), in one `write`.
/// `eprintln!` itself writes each piece of its line separately (stderr has no buffer): nine
/// system calls for lesson 04's `accepted from` line, more than serving a client's line costs.
/// A write to stderr that fails is not a reason to stop serving, so it is ignored.
#[macro_export]
macro_rules! log {
    ($($arg:tt)*) => {{
        let line = format!("{}-server: {}\n", env!("CARGO_PKG_NAME"), format_args!($($arg)*));
        let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
    }};
}
// ANCHOR_END: log
