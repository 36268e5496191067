//! lesson11: what the server and the client agree on — where the socket lives by default, when
//! its directory can be trusted, and who is at the other end of a connection.
//!
//! The binaries are the lesson: `src/bin/server.rs` and `src/bin/client.rs`.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::{env, fs};

use anyhow::{Context, bail};
use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
use rustix::process::getuid;

/// The file name of this lesson's socket inside [`default_socket_dir`].
pub const SOCKET_NAME: &str = "lesson11.sock";

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

// ANCHOR: peer_credentials
/// Who is at the other end of `stream`, as the kernel recorded it at `connect` (SO_PEERCRED):
/// the peer's uid, gid and pid. Through nix: rustix 1.1's pid cannot be 0, and 0 is the pid
/// of a peer outside our PID namespace (a server in a container, its client on the host).
pub fn peer_credentials(stream: &UnixStream) -> io::Result<(u32, u32, i32)> {
    let peer = getsockopt(stream, PeerCredentials)?;
    Ok((peer.uid(), peer.gid(), peer.pid()))
}
// ANCHOR_END: peer_credentials

// ANCHOR: log
/// `eprintln!` with the server's name in front (`lesson11-server: ...`), in one `write`.
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
