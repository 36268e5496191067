//! lesson03: what the server and the client agree on — where the socket lives by default.
//!
//! The binaries are the lesson: `src/bin/server.rs` and `src/bin/client.rs`.

use std::env;
use std::path::PathBuf;

/// The file name of this lesson's socket inside [`default_socket_dir`].
pub const SOCKET_NAME: &str = "lesson03.sock";

// ANCHOR: default_dir
/// `$XDG_RUNTIME_DIR/uds-course`, else `<temp dir>/uds-course-<uid>`.
///
/// `$XDG_RUNTIME_DIR` (usually `/run/user/<uid>`) is private to the user and emptied at logout:
/// the place sockets belong. Without it, the uid in the name keeps users of a shared `/tmp`
/// from colliding by accident, and no more: anyone can create `/tmp/uds-course-1000` first,
/// own it, and put their own socket in it (lesson 04 checks the directory's owner and mode).
/// Only the server creates the directory.
pub fn default_socket_dir() -> PathBuf {
    match env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from) {
        Some(runtime) if runtime.is_absolute() => runtime.join("uds-course"),
        _ => env::temp_dir().join(format!("uds-course-{}", rustix::process::getuid().as_raw())),
    }
}
// ANCHOR_END: default_dir

// ANCHOR: log
/// `eprintln!` with the server's name in front (`lesson03-server: ...`), in one `write`.
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
