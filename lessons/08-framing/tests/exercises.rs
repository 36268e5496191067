//! Exercise checks for lesson 08 (EXERCISES.md). A plain `cargo test` skips them (`#[ignore]`);
//! `cargo run -- check 8` runs them against your binaries, `--solution` against the reference ones.

mod common;

use std::env;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use assert_cmd::cargo::cargo_bin;
use common::{frame, read_frame};
use uds_test_support::{Conn, Server, temp_dir};

/// The server under test: `UDS_SERVER` (an absolute path), else this lesson's own.
fn server() -> PathBuf {
    env::var_os("UDS_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| cargo_bin!("lesson08-server").to_owned())
}

/// The client under test: `UDS_CLIENT` (an absolute path), else this lesson's own.
fn client() -> PathBuf {
    env::var_os("UDS_CLIENT")
        .map(PathBuf::from)
        .unwrap_or_else(|| cargo_bin!("lesson08-client").to_owned())
}

/// Start the server under test on `path` with `extra` flags after the path. As shipped it
/// does not know `--max-total`: it exits 2 with clap's message, and this panics with it.
fn start(path: &Path, extra: &[&str]) -> Server {
    let mut args = vec![path.to_str().expect("a UTF-8 temp path")];
    args.extend(extra);
    Server::start(&server(), path, &args)
}

/// Run the client under test with `args`, `stdin` as its input.
fn run_client(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(client())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the client");
    let mut input = child.stdin.take().expect("piped stdin");
    input.write_all(stdin).expect("write the client's stdin");
    drop(input);
    child.wait_with_output().expect("the client's output")
}

// Exercise 1: the client shows replies in hex.

#[test]
#[ignore = "exercise: cargo run -- check 8"]
fn ex1_hex_prints_each_reply_as_lowercase_hex_and_a_newline() {
    let dir = temp_dir();
    let path = dir.path().join("lesson08.sock");
    let _server = start(&path, &[]);
    let at = path.to_str().expect("a UTF-8 temp path");
    let output = run_client(&["--hex", at, "hi", "a\u{1b}\n", ""], b"");
    assert!(output.status.success(), "{output:?}");
    assert_eq!(String::from_utf8_lossy(&output.stdout), "4849\n411b0a\n\n");
}

#[test]
#[ignore = "exercise: cargo run -- check 8"]
fn ex1_hex_shows_a_binary_reply_from_stdin() {
    let dir = temp_dir();
    let path = dir.path().join("lesson08.sock");
    let _server = start(&path, &[]);
    let at = path.to_str().expect("a UTF-8 temp path");
    let output = run_client(&[at, "--hex"], &[0, 0xff, b'z', b'\n']);
    assert!(output.status.success(), "{output:?}");
    assert_eq!(String::from_utf8_lossy(&output.stdout), "00ff5a0a\n");
}

// Exercise 2: a limit on what one connection may send in all.

#[test]
#[ignore = "exercise: cargo run -- check 8"]
fn ex2_a_connection_past_its_total_gets_an_error_frame_and_is_closed() {
    let dir = temp_dir();
    let path = dir.path().join("lesson08.sock");
    let mut server = start(&path, &["--max-total", "10"]);
    let mut conn = Conn::connect(&path);
    conn.send(&frame(b"hello"));
    assert_eq!(read_frame(conn.stream()), b"HELLO");
    conn.send(&frame(b"world"));
    assert_eq!(read_frame(conn.stream()), b"WORLD", "exactly 10 bytes in all is allowed");
    conn.send(&frame(b"!"));
    let reply = read_frame(conn.stream());
    assert_eq!(String::from_utf8_lossy(&reply), "error: connection total over 10 bytes");
    assert!(conn.at_eof(), "the server closes after the error frame");
    server.wait_for_line_containing("connection 1: connection total over 10 bytes; closed");
}

#[test]
#[ignore = "exercise: cargo run -- check 8"]
fn ex2_each_connection_starts_its_total_from_zero() {
    let dir = temp_dir();
    let path = dir.path().join("lesson08.sock");
    let _server = start(&path, &["--max-total", "8"]);
    for _ in 0..3 {
        let mut conn = Conn::connect(&path);
        conn.send(&frame(b"8 bytes!"));
        assert_eq!(read_frame(conn.stream()), b"8 BYTES!");
    }
}
