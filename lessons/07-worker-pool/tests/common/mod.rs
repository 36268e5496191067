//! Lesson 03's shutdown scenarios, for graceful_shutdown.rs in lesson 07. Each takes the server
//! binary: in lesson 03 the exercise checks also run them, against UDS_SERVER.

use std::io::ErrorKind;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use rustix::process::Signal;
use uds_test_support::{Conn, Server, temp_dir};

use super::under_test::SERVER;

/// "At once", generously for a loaded CI machine, and far below the minute-long grace periods
/// these tests set: a server that waits for the grace period or a client cannot pass.
pub const AT_ONCE: Duration = Duration::from_secs(2);

/// Start `bin` on `path` with a grace period of `grace_ms`.
pub fn start(bin: &Path, path: &Path, grace_ms: u64) -> Server {
    let grace = grace_ms.to_string();
    Server::start(bin, path, &[path.as_os_str(), "--grace-ms".as_ref(), grace.as_ref()])
}

/// Signal the server (`name`, as it logs it) while a client is mid-conversation: the client
/// still gets its replies, new clients are refused, and once the client closes the file is
/// gone and the exit code 0.
pub fn an_in_flight_connection_completes_after(bin: &Path, signal: Signal, name: &str) {
    let dir = temp_dir();
    let path = dir.path().join("lesson07.sock");
    // A grace period far longer than the test: the client's close, not the clock, ends it.
    let mut server = start(bin, &path, 60_000);
    let mut client = Conn::connect(&path);
    assert_eq!(client.ask("before"), "BEFORE\n");
    server.signal(signal);
    server.wait_for_line(&format!("{SERVER}: {name}: shutting down"));
    let refused = UnixStream::connect(&path).expect_err("a new client during the grace period");
    assert_eq!(refused.kind(), ErrorKind::ConnectionRefused, "{refused}");
    assert_eq!(client.ask("during the grace period"), "DURING THE GRACE PERIOD\n");
    client.shutdown_write();
    assert!(client.at_eof());
    let (status, output) = server.finish();
    assert_eq!(status.code(), Some(0), "{output}");
    assert!(!path.exists(), "the socket file is still there:\n{output}");
    assert!(output.ends_with(&format!("{SERVER}: removed {}\n", path.display())), "{output}");
}

/// SIGTERM, then `second` (named `name`) during the grace period: the file is removed and the
/// exit code is 1 at once, without waiting for the open connection or the grace period.
pub fn a_second_signal_exits_1_at_once(bin: &Path, second: Signal, name: &str) {
    let dir = temp_dir();
    let path = dir.path().join("lesson07.sock");
    let mut server = start(bin, &path, 60_000);
    let mut client = Conn::connect(&path);
    assert_eq!(client.ask("hold on"), "HOLD ON\n");
    server.signal(Signal::TERM);
    server.wait_for_line(&format!("{SERVER}: SIGTERM: shutting down"));
    server.signal(second);
    let status = server.wait_exit_within(AT_ONCE);
    let (_, output) = server.finish();
    let ended = status.map_or("still running".to_owned(), |s| s.to_string());
    assert_eq!(status.and_then(|s| s.code()), Some(1), "{ended}; output:\n{output}");
    assert!(!path.exists(), "the socket file is still there:\n{output}");
    assert!(output.contains(&format!("{SERVER}: {name} again: exiting now\n")), "{output}");
}
