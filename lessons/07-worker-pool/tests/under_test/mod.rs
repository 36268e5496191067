//! The programs under test. Lesson 13 is lesson 07's server on tokio, with the same command
//! line, messages and exit codes, so lesson 07's behaviour tests are one suite for both: each
//! file names its binaries and log prefixes from here, and here the package that compiles the
//! file decides. Compiled in lesson07 they are lesson07-server and lesson07-client; included by
//! lesson 13's tests/behaviour.rs, lesson13-server and lesson13-client.
//!
//! Where the two differ by design (threads, a queue, the umask), a test says so with
//! [`ON_TOKIO`], and each side asserts its own behaviour.
#![allow(dead_code)] // each test file uses the part it needs

use std::path::Path;

/// `lesson07` or `lesson13`: the package these tests are compiled in.
const LESSON: &str = env!("CARGO_PKG_NAME");

/// The server's name, which starts each of its log lines and error messages.
pub const SERVER: &str = concat!(env!("CARGO_PKG_NAME"), "-server");

/// The client's name, which starts each of its error messages.
pub const CLIENT: &str = concat!(env!("CARGO_PKG_NAME"), "-client");

/// The file name of the default socket (CONTRACT.md: `lessonNN.sock`).
pub const SOCKET_NAME: &str = concat!(env!("CARGO_PKG_NAME"), ".sock");

/// True for lesson 13: a task per connection, not a job for one of `--workers` threads. So no
/// connection waits for a worker, and the N + 4 thread bound does not apply (CONTRACT.md "13
/// async": `--workers` sizes tokio's runtime, whose blocking pool may add threads); the mode of
/// the socket file is set between `bind` and `listen`, with no umask.
pub const ON_TOKIO: bool = matches!(LESSON.as_bytes(), b"lesson13");

pub fn server() -> &'static Path {
    assert_cmd::cargo::cargo_bin!(concat!(env!("CARGO_PKG_NAME"), "-server"))
}

pub fn client() -> &'static Path {
    assert_cmd::cargo::cargo_bin!(concat!(env!("CARGO_PKG_NAME"), "-client"))
}
