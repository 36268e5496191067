//! Exercise checks for lesson 11 (EXERCISES.md). A plain `cargo test` skips them (`#[ignore]`);
//! `cargo run -- check 11` runs them against your binaries, `--solution` against the reference
//! ones.

mod common;

use std::env;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::Duration;

use assert_cmd::cargo::cargo_bin;
use common::{HELLO, ROOM_FOR_ONE, ask, assert_refused, connect, receive, serve_files};
use std::io::Write;
use uds_test_support::DEADLINE;

/// The server under test: `UDS_SERVER` (an absolute path), else this lesson's own.
fn server() -> PathBuf {
    env::var_os("UDS_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| cargo_bin!("lesson11-server").to_owned())
}

/// The client under test: `UDS_CLIENT` (an absolute path), else this lesson's own.
fn client() -> PathBuf {
    env::var_os("UDS_CLIENT")
        .map(PathBuf::from)
        .unwrap_or_else(|| cargo_bin!("lesson11-client").to_owned())
}

// Exercise 1: the client prints the file's size and inode, from the descriptor.

/// With `--stat`, the client prints `NAME: SIZE bytes, inode INO` of the file it received —
/// the inode of the file in the server's directory — and not the file's bytes.
#[test]
#[ignore = "exercise: cargo run -- check 11"]
fn ex1_stat_prints_the_size_and_inode_of_the_received_file() {
    let served = serve_files(cargo_bin!("lesson11-server"), &[]);
    let inode = fs::metadata(served.files.join("hello.txt")).expect("stat").ino();
    let out = assert_cmd::Command::new(client())
        .args(["--stat".as_ref(), served.path.as_os_str(), "hello.txt".as_ref()])
        .timeout(DEADLINE)
        .output()
        .expect("run the client");
    assert!(out.status.success(), "{out:?}");
    let expected = format!("hello.txt: {} bytes, inode {inode}\n", HELLO.len());
    assert_eq!(String::from_utf8_lossy(&out.stdout), expected);
}

/// Without `--stat` the file's bytes are printed as before; a refusal is still exit 1.
#[test]
#[ignore = "exercise: cargo run -- check 11"]
fn ex1_without_the_flag_the_file_is_printed_and_refusals_still_exit_1() {
    let served = serve_files(cargo_bin!("lesson11-server"), &[]);
    let run = |args: &[&str]| {
        let mut cmd = assert_cmd::Command::new(client());
        cmd.args(args).arg(&served.path).arg("hello.txt").timeout(DEADLINE);
        cmd.output().expect("run the client")
    };
    let help = assert_cmd::Command::new(client()).arg("--help").timeout(DEADLINE).output();
    let help = help.expect("run the client with --help");
    assert!(String::from_utf8_lossy(&help.stdout).contains("--stat"), "{help:?}");
    let out = run(&[]);
    assert_eq!((out.status.code(), out.stdout.as_slice()), (Some(0), HELLO.as_bytes()));
    fs::remove_file(served.files.join("hello.txt")).expect("remove hello.txt");
    let out = run(&["--stat"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("error: open hello.txt"), "{out:?}");
}

// Exercise 2: the server hands out regular files only.

/// A directory in DIR is refused: `error: sub is not a regular file`, no descriptor, and the
/// server goes on serving regular files.
#[test]
#[ignore = "exercise: cargo run -- check 11"]
fn ex2_a_directory_is_refused() {
    let served = serve_files(&server(), &[]);
    fs::create_dir(served.files.join("sub")).expect("mkdir sub");
    assert_refused(&ask(&served.path, b"sub\n", ROOM_FOR_ONE), "sub is not a regular file");
    assert_eq!(ask(&served.path, b"hello.txt\n", ROOM_FOR_ONE).read_file(), HELLO);
}

/// A FIFO in DIR is refused at once, with no writer in sight: the open must not wait for one.
#[test]
#[ignore = "exercise: cargo run -- check 11"]
fn ex2_a_fifo_is_refused_without_waiting_for_a_writer() {
    let served = serve_files(&server(), &[]);
    let fifo = served.files.join("fifo");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &fifo,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
        0,
    )
    .expect("mkfifo");
    let mut stream = connect(&served.path);
    // Not the usual deadline: a server stuck in `open` would be a failure, not a slow pass.
    stream.set_read_timeout(Some(Duration::from_secs(2))).expect("set a read timeout");
    stream.write_all(b"fifo\n").expect("send the request");
    assert_refused(&receive(&stream, ROOM_FOR_ONE), "fifo is not a regular file");
}
