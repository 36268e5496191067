//! Lesson 04's locks, now guarding what the server hands out. Run as root, with the client
//! switched to `nobody`: a root-only file `cat` cannot open reaches `nobody` through the
//! descriptor once the server allows its uid; a uid it does not allow gets an error and no
//! descriptor; the socket file's mode still keeps others out. When not root these skip with the
//! reason outside CI, and fail in CI.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Output;

use assert_cmd::cargo::cargo_bin;
use common::{Served, serve_files_in};
use uds_test_support::{DEADLINE, as_nobody, runnable_by_nobody};

fn server() -> &'static Path {
    cargo_bin!("lesson11-server")
}

/// `nobody`'s uid, as the server's log and refusals name it.
const NOBODY: &str = "65534";

/// A server whose temp dir `nobody` can enter, with a copy of the client it can run, `args`
/// added; `None` (skip) when not root. `files/secret.txt` is root's, mode 0600.
fn served_to_nobody(args: &[&str]) -> Option<(Served, std::path::PathBuf)> {
    let (dir, client) = runnable_by_nobody(cargo_bin!("lesson11-client"))?;
    let served = serve_files_in(dir, server(), args);
    fs::set_permissions(&served.files, fs::Permissions::from_mode(0o755)).expect("chmod 755");
    let secret = served.files.join("secret.txt");
    fs::write(&secret, "root's eyes only\n").expect("write the secret");
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o600)).expect("chmod 600");
    Some((served, client))
}

/// Run `program` as `nobody` with `args`.
fn as_nobody_run(program: &Path, args: &[&std::ffi::OsStr]) -> Output {
    let mut cmd = assert_cmd::Command::from_std(as_nobody(program));
    cmd.args(args).timeout(DEADLINE).output().expect("run as nobody")
}

/// `cat` as `nobody` cannot open root's 0600 file; the client as `nobody`, allowed by
/// `--allow-uid`, prints it: the server opened it, and handed over the open file.
#[test]
fn nobody_prints_a_root_only_file_that_cat_cannot_open() {
    let Some((served, client)) = served_to_nobody(&["--mode", "0666", "--allow-uid", NOBODY])
    else {
        return;
    };
    let secret = served.files.join("secret.txt");
    let cat = as_nobody_run(Path::new("cat"), &[secret.as_os_str()]);
    assert_eq!(cat.status.code(), Some(1), "{cat:?}");
    let denied = format!("cat: {}: Permission denied\n", secret.display());
    assert_eq!(String::from_utf8_lossy(&cat.stderr), denied);
    let out = as_nobody_run(&client, &[served.path.as_os_str(), "secret.txt".as_ref()]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "root's eyes only\n");
}

/// A uid the server does not allow gets `error: uid N is not allowed` and no descriptor (the
/// client would report one that came with an error), exit 1; the server logs it.
#[test]
fn a_refused_uid_gets_an_error_and_no_descriptor() {
    let Some((mut served, client)) = served_to_nobody(&["--mode", "0666"]) else { return };
    let out = as_nobody_run(&client, &[served.path.as_os_str(), "hello.txt".as_ref()]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(out.stdout, b"");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!("error: uid {NOBODY} is not allowed\n")
    );
    served.server.wait_for_line(&format!("lesson11-server: connection 1: refused uid {NOBODY}"));
}

/// The socket file is still born 0600: another uid cannot even connect, allowed or not.
#[test]
fn another_uid_cannot_connect_to_a_0600_socket() {
    let Some((served, client)) = served_to_nobody(&["--allow-uid", NOBODY]) else { return };
    assert_eq!(fs::metadata(&served.path).expect("stat").permissions().mode() & 0o777, 0o600);
    let out = as_nobody_run(&client, &[served.path.as_os_str(), "secret.txt".as_ref()]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let denied = format!(
        "lesson11-client: connect {}: Permission denied (os error 13)\n",
        served.path.display()
    );
    assert_eq!(String::from_utf8_lossy(&out.stderr), denied);
}
