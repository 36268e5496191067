//! Lesson 02's one idea, still holding in lesson 07: lesson07-server removes a stale socket file,
//! and nothing else.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use assert_cmd::Command;
use rustix::process::Signal;
use uds_test_support::{DEADLINE, Server, as_nobody, exchange, runnable_by_nobody, temp_dir};

mod under_test;
use under_test::SERVER;

fn server() -> &'static Path {
    under_test::server()
}

/// A server killed with SIGKILL leaves a stale file; the next start removes it and binds.
#[test]
fn a_stale_socket_is_removed_and_bind_succeeds() {
    let dir = temp_dir();
    let path = dir.path().join("lesson07.sock");
    let mut killed = Server::start_at(server(), &path);
    killed.signal(Signal::KILL);
    killed.wait_exit();
    assert!(path.exists(), "SIGKILL leaves the socket file behind");
    let _restarted = Server::start_at(server(), &path);
    assert_eq!(exchange(&path, b"back again\n"), b"BACK AGAIN\n");
}

/// A live server at the path is not stolen: the second server refuses to start, and the first
/// keeps its socket file (the same inode) and keeps serving.
#[test]
fn a_live_server_is_not_stolen() {
    let dir = temp_dir();
    let path = dir.path().join("lesson07.sock");
    let _live = Server::start_at(server(), &path);
    let inode = fs::metadata(&path).expect("stat").ino();
    Command::new(server())
        .arg(&path)
        .timeout(DEADLINE)
        .assert()
        .code(1)
        .stdout("")
        .stderr(format!("{SERVER}: probe {}: is in use by a running server\n", path.display()));
    assert_eq!(fs::metadata(&path).expect("stat").ino(), inode, "the socket file was replaced");
    assert_eq!(exchange(&path, b"still mine\n"), b"STILL MINE\n");
}

/// A regular file at the path is refused and left exactly as it was.
#[test]
fn a_regular_file_is_refused_and_left_untouched() {
    let dir = temp_dir();
    let path = dir.path().join("lesson07.sock");
    fs::write(&path, "precious data").expect("write a regular file");
    Command::new(server())
        .arg(&path)
        .timeout(DEADLINE)
        .assert()
        .code(1)
        .stderr(format!("{SERVER}: probe {}: not a socket; left untouched\n", path.display()));
    assert_eq!(fs::read_to_string(&path).expect("read it back"), "precious data");
}

/// A directory at the path is refused and left as it was.
#[test]
fn a_directory_is_refused_and_left_untouched() {
    let dir = temp_dir();
    let path = dir.path().join("lesson07.sock");
    fs::create_dir(&path).expect("mkdir");
    fs::write(path.join("inside"), "x").expect("write inside");
    Command::new(server())
        .arg(&path)
        .timeout(DEADLINE)
        .assert()
        .code(1)
        .stderr(format!("{SERVER}: probe {}: not a socket; left untouched\n", path.display()));
    assert!(path.join("inside").exists());
}

/// A probe that fails for another reason (here: another user's socket, Permission denied)
/// is reported, and nothing is removed. Root only: it runs the server as `nobody`.
#[test]
fn a_probe_error_other_than_refused_removes_nothing() {
    // The server binary, where `nobody` can run it, in a directory `nobody` can enter.
    let Some((dir, bin)) = runnable_by_nobody(server()) else { return };
    let path = dir.path().join("lesson07.sock");
    let mut killed = Server::start_at(server(), &path);
    killed.signal(Signal::KILL);
    killed.wait_exit();
    // connect needs write permission on the socket file: without it, nobody gets EACCES.
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod the socket");
    let mut as_nobody = Command::from_std(as_nobody(&bin));
    as_nobody
        .arg(&path)
        .timeout(DEADLINE)
        .assert()
        .code(1)
        .stderr(format!("{SERVER}: probe {}: Permission denied (os error 13)\n", path.display()));
    assert!(path.exists(), "the socket file was removed");
}
