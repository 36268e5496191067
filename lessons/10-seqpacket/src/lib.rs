//! lesson10: what the server and the client agree on — where the socket lives by default.
//!
//! The binaries are the lesson: `src/bin/server.rs` and `src/bin/client.rs`.

use std::env;
use std::path::PathBuf;

/// The file name of this lesson's socket inside [`default_socket_dir`].
pub const SOCKET_NAME: &str = "lesson10.sock";

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
