//! Exercise checks for lesson 02 (EXERCISES.md). A plain `cargo test` skips them (`#[ignore]`);
//! `cargo run -- check 2` runs them against your binaries, `--solution` against the reference ones.

use std::env;
use std::fs::{self, File};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use assert_cmd::Command;
use assert_cmd::cargo::cargo_bin;
use rustix::fs::FlockOperation;
use rustix::io::Errno;
use rustix::process::Signal;
use uds_test_support::{
    DEADLINE, Server, exchange, stale_socket_file, start_in_temp_dir, temp_dir,
};

fn server() -> PathBuf {
    env::var_os("UDS_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| cargo_bin!("lesson02-server").to_owned())
}

fn client() -> Command {
    let bin = env::var_os("UDS_CLIENT")
        .map(PathBuf::from)
        .unwrap_or_else(|| cargo_bin!("lesson02-client").to_owned());
    let mut cmd = Command::new(bin);
    cmd.timeout(DEADLINE);
    cmd
}

/// `PATH.lock`: the socket path with `.lock` appended to its file name.
fn lock_path(path: &Path) -> PathBuf {
    let mut lock = path.as_os_str().to_owned();
    lock.push(".lock");
    PathBuf::from(lock)
}

/// Take the lock as another server would: the open file holds it; `WOULDBLOCK` if it is held.
fn try_lock(lock: &Path) -> Result<File, Errno> {
    let file = File::options()
        .write(true)
        .create(true)
        .truncate(false)
        .open(lock)
        .unwrap_or_else(|e| panic!("open {}: {e}", lock.display()));
    rustix::fs::flock(&file, FlockOperation::NonBlockingLockExclusive).map(|()| file)
}

/// While someone else holds `PATH.lock`, the server touches nothing: it exits 1 with the lock
/// message, and the stale socket file it would otherwise remove is still there.
#[test]
#[ignore = "exercise: cargo run -- check 2"]
fn ex1_a_server_that_finds_the_lock_held_exits_1_and_leaves_the_stale_file() {
    let dir = temp_dir();
    let path = dir.path().join("lesson02.sock");
    let lock = lock_path(&path);
    stale_socket_file(&path);
    let inode = fs::symlink_metadata(&path).expect("stat the stale file").ino();
    let _held = try_lock(&lock).expect("the test takes the lock");
    let mut server = Server::spawn(&server(), &path, &[&path]);
    // Its first line tells at once: `listening on` means it went ahead without the lock.
    let first = server.wait_for(
        |l| l.starts_with("listening on ") || l.starts_with("lesson02-server: "),
        "`listening on` or an error",
    );
    let expected = format!("lesson02-server: lock {}: another server holds it", lock.display());
    assert_eq!(first, expected, "output:\n{}", server.output());
    let (status, output) = server.finish();
    assert_eq!(status.code(), Some(1), "{output}");
    assert_eq!(output, format!("{expected}\n"));
    let meta = fs::symlink_metadata(&path).expect("the stale socket file is gone");
    assert!(meta.file_type().is_socket() && meta.ino() == inode, "the stale file was replaced");
}

/// A running server holds `PATH.lock` (mode 0600) for its whole life: the test cannot take
/// it, nor can a second server, which leaves the file and the lock alone. Once the server is
/// killed the kernel drops the lock, and the next server starts over what was left behind.
#[test]
#[ignore = "exercise: cargo run -- check 2"]
fn ex1_a_running_server_holds_the_lock_until_it_exits() {
    let dir = temp_dir();
    let path = dir.path().join("lesson02.sock");
    let lock = lock_path(&path);
    let mut first = Server::start_at(&server(), &path);
    let meta = fs::symlink_metadata(&lock)
        .unwrap_or_else(|e| panic!("no lock file {}: {e}", lock.display()));
    assert!(meta.is_file(), "{} is not a regular file", lock.display());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600, "the lock file's mode");
    let taken = try_lock(&lock).map(drop);
    assert_eq!(taken, Err(Errno::WOULDBLOCK), "the test took the lock while the server runs");
    // A second server: refused with the lesson's message (a live server answers its knock).
    let inode = fs::symlink_metadata(&path).expect("stat the socket file").ino();
    Command::new(server()).arg(&path).timeout(DEADLINE).assert().code(1).stdout("").stderr(
        format!("lesson02-server: probe {}: is in use by a running server\n", path.display()),
    );
    let taken = try_lock(&lock).map(drop);
    assert_eq!(taken, Err(Errno::WOULDBLOCK), "after a second server the lock is free: deleted?");
    assert_eq!(fs::symlink_metadata(&path).expect("stat").ino(), inode, "the socket was replaced");
    assert_eq!(exchange(&path, b"still mine\n"), b"STILL MINE\n");
    // SIGKILL: no clean-up at all, yet the lock is free; a stale socket and the lock file stay.
    first.signal(Signal::KILL);
    first.wait_exit();
    assert!(lock.exists(), "the lock file is gone");
    let _next = Server::start_at(&server(), &path);
    assert_eq!(exchange(&path, b"next\n"), b"NEXT\n");
}

/// A running server: `live` on stdout, exit 0 — and the probe sends no line: the server logs
/// the connection as closed with no line answered.
#[test]
#[ignore = "exercise: cargo run -- check 2"]
fn ex2_probe_reports_a_running_server_as_live_and_sends_nothing() {
    let (_dir, path, mut server) = start_in_temp_dir(&server(), "lesson02.sock");
    client().arg("--probe").arg(&path).assert().code(0).stdout("live\n");
    server.wait_for_line("lesson02-server: connection 1: closed, lines answered: 0");
}

/// A socket file nobody listens on: `stale`, exit 1, and the file is left where it is.
#[test]
#[ignore = "exercise: cargo run -- check 2"]
fn ex2_probe_reports_a_socket_file_without_a_server_as_stale() {
    let dir = temp_dir();
    let path = dir.path().join("lesson02.sock");
    stale_socket_file(&path);
    client().arg("--probe").arg(&path).assert().code(1).stdout("stale\n");
    assert!(path.exists(), "the probe removed the stale file");
}

/// Nothing at the path: `missing`, exit 1.
#[test]
#[ignore = "exercise: cargo run -- check 2"]
fn ex2_probe_reports_an_empty_path_as_missing() {
    let dir = temp_dir();
    let path = dir.path().join("lesson02.sock");
    client().arg("--probe").arg(&path).assert().code(1).stdout("missing\n");
}

/// A regular file or a directory: `not-a-socket`, exit 1, left untouched.
#[test]
#[ignore = "exercise: cargo run -- check 2"]
fn ex2_probe_reports_a_regular_file_or_a_directory_as_not_a_socket() {
    let dir = temp_dir();
    let file = dir.path().join("lesson02.sock");
    fs::write(&file, "precious data").expect("write a regular file");
    client().arg("--probe").arg(&file).assert().code(1).stdout("not-a-socket\n");
    assert_eq!(fs::read_to_string(&file).expect("read it back"), "precious data");
    let subdir = dir.path().join("dir.sock");
    fs::create_dir(&subdir).expect("mkdir");
    client().arg("--probe").arg(&subdir).assert().code(1).stdout("not-a-socket\n");
}
