//! lesson14-client: hyper's client over a tokio `UnixStream`, one connection kept alive for
//! every MESSAGE, each POSTed to `/upper`.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::time::Duration;

use common::{run_client, start};
use uds_test_support::{fake_server, temp_dir};

/// Each MESSAGE is POSTed and its body printed with a newline, in order, over ONE connection.
#[test]
fn the_client_posts_each_message_on_one_connection_and_prints_each_body() {
    let (_dir, path, mut server) = start(&[]);
    let path_arg = path.to_str().expect("a UTF-8 path");
    let (code, stdout, stderr) = run_client(&[path_arg, "hello", "unix domain sockets", ""]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(stdout, "HELLO\nUNIX DOMAIN SOCKETS\n\n");
    // The log says so once the connection is closed: three requests on the first connection.
    server.wait_for_line("lesson14-server: connection 1: closed, requests: 3");
    let output = server.output();
    assert_eq!(output.matches("accepted from").count(), 1, "one connection expected:\n{output}");
}

/// A response that is not 2xx: its body goes to stderr, and the exit code is 1; the bodies
/// before it were printed.
#[test]
fn a_reply_that_is_not_2xx_goes_to_stderr_and_exits_1() {
    let (_dir, path, _server) = start(&["--max-body", "3"]);
    let path_arg = path.to_str().expect("a UTF-8 path");
    let (code, stdout, stderr) = run_client(&[path_arg, "abc", "abcd", "ab"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(stdout, "ABC\n");
    assert!(stderr.starts_with("error: "), "{stderr}");
}

/// No server at the path: one line naming the step and the path, exit 1.
#[test]
fn no_server_is_a_clear_error_naming_the_path() {
    let dir = temp_dir();
    let path = dir.path().join("missing.sock");
    let shown = path.display().to_string();
    let (code, _, stderr) = run_client(&[&shown, "hello"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(
        stderr,
        format!("lesson14-client: connect {shown}: No such file or directory (os error 2)\n")
    );
}

/// A server that reads the request and never answers: `--timeout-ms` ends the wait, exit 1.
#[test]
fn a_server_that_never_answers_times_out() {
    let dir = temp_dir();
    let (path, fake) = fake_server(dir.path(), |conn| {
        let mut line = String::new();
        let _ = BufReader::new(&conn).read_line(&mut line);
        std::thread::sleep(Duration::from_secs(2));
        let _ = (&conn).write_all(b"");
    });
    let shown = path.display().to_string();
    let (code, _, stderr) = run_client(&["--timeout-ms", "300", &shown, "hello"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("timed out"), "{stderr}");
    fake.join().expect("the fake server");
}
