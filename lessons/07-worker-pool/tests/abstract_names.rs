//! Lesson 06's one idea, still holding in lesson 07: `@name` binds a name in Linux's abstract
//! namespace. No file is created; the kernel lists the name (/proc/net/unix, `ss -xl`) while the
//! socket is open and drops it when the server exits, however it exits; the name is first come,
//! first served; and with no file mode to keep strangers out, the peer-credential check is the
//! lock.

use std::fs;
use std::io::ErrorKind;
use std::path::Path;
use std::process::{Command, Output};

use rustix::process::Signal;
use uds_test_support::{
    Conn, DEADLINE, Server, abstract_name, as_nobody, have_tool, listed_abstract_names,
    runnable_by_nobody, temp_dir, wait_until,
};

mod under_test;
use under_test::{CLIENT, SERVER};

fn server() -> &'static Path {
    under_test::server()
}

fn client() -> &'static Path {
    under_test::client()
}

/// Start the server on `@name`, in `cwd`, with `args` after the name.
fn start_in(cwd: &Path, name: &str, args: &[&str]) -> Server {
    let at = format!("@{name}");
    let mut cmd = Command::new(server());
    cmd.current_dir(cwd).arg(&at).args(args);
    Server::start_cmd(cmd, Path::new(&at))
}

fn start(name: &str) -> Server {
    start_in(&std::env::temp_dir(), name, &[])
}

/// Run `cmd` to its end, killed if it runs longer than [`DEADLINE`] (a server expected to
/// refuse to start must not hang the test).
fn run(cmd: &mut Command) -> Output {
    // Taken out of `cmd` (which callers build with `.arg()` chains): assert_cmd owns it.
    let cmd = std::mem::replace(cmd, Command::new("true"));
    let out = assert_cmd::Command::from_std(cmd).timeout(DEADLINE).output();
    out.unwrap_or_else(|err| panic!("run: {err}"))
}

fn is_listed(name: &str) -> bool {
    listed_abstract_names().iter().any(|listed| listed == name)
}

/// `@name` creates no file: the server's directory stays empty while it serves, and on exit
/// there is nothing to remove.
#[test]
fn no_file_is_created() {
    let dir = temp_dir();
    let name = abstract_name("no-file");
    let server = start_in(dir.path(), &name, &[]);
    let mut conn = Conn::try_connect_abstract(&name).expect("connect to the name");
    assert_eq!(conn.ask("no file"), "NO FILE\n");
    drop(conn);
    let entries: Vec<_> = fs::read_dir(dir.path()).expect("read the dir").collect();
    assert!(entries.is_empty(), "the server created files in its directory: {entries:?}");
    server.signal(Signal::TERM);
    let (status, output) = server.finish();
    assert_eq!(status.code(), Some(0), "{output}");
    assert!(!output.contains("removed"), "there was no file to remove:\n{output}");
}

/// A file whose name starts with `@` is written `./@name`: a path, created, served and removed
/// on exit like any other socket file.
#[test]
fn a_file_named_with_an_at_is_written_dot_slash_at() {
    let dir = temp_dir();
    let file = dir.path().join("@not-abstract");
    let mut cmd = Command::new(server());
    cmd.current_dir(dir.path()).arg("./@not-abstract");
    let server = Server::start_cmd(cmd, Path::new("./@not-abstract"));
    assert!(fs::symlink_metadata(&file).is_ok(), "./@name must create the file {file:?}");
    assert_eq!(Conn::connect(&file).ask("a file"), "A FILE\n");
    server.signal(Signal::TERM);
    let (status, output) = server.finish();
    assert_eq!(status.code(), Some(0), "{output}");
    assert!(!file.exists(), "the file must be removed on exit, as in lesson 05:\n{output}");
}

/// While the server runs, /proc/net/unix lists its name with a leading `@`.
#[test]
fn the_name_shows_in_proc_net_unix_with_an_at() {
    let name = abstract_name("listed");
    assert!(!is_listed(&name), "@{name} is listed before any server started");
    let _server = start(&name);
    assert!(is_listed(&name), "@{name} is not in /proc/net/unix");
}

/// `ss -xl` lists the listening name with its `@` too.
#[test]
fn the_name_shows_in_ss_with_an_at() {
    if !have_tool("ss", "apt-get install -y iproute2") {
        return;
    }
    let name = abstract_name("ss");
    let _server = start(&name);
    // -x Unix sockets, -l listening ones, -H no header.
    let out = run(Command::new("ss").args(["-xlH"]));
    let table = String::from_utf8_lossy(&out.stdout);
    let found = table.lines().any(|line| line.split_whitespace().any(|f| f == format!("@{name}")));
    assert!(found, "@{name} is not in `ss -xl`:\n{table}");
}

/// After a graceful exit (SIGTERM, exit 0) the kernel has dropped the name: a connect is
/// refused.
#[test]
fn the_name_is_gone_when_the_server_exits() {
    let name = abstract_name("exit");
    let mut server = start(&name);
    server.signal(Signal::TERM);
    assert_eq!(server.wait_exit().code(), Some(0), "{}", server.output());
    assert_name_is_free(&name);
}

/// After SIGKILL the name is gone too, so a new server binds it at once: nothing stale is
/// left behind, unlike lesson 02's socket file.
#[test]
fn the_name_is_gone_after_sigkill_and_a_new_server_binds_it_at_once() {
    let name = abstract_name("kill");
    let mut server = start(&name);
    server.signal(Signal::KILL);
    server.wait_exit();
    assert_name_is_free(&name);
    // What lesson 02 had to probe for with a file: here there is nothing stale to remove.
    let mut again = start(&name);
    assert_eq!(Conn::try_connect_abstract(&name).expect("connect").ask("again"), "AGAIN\n");
    again.signal(Signal::TERM);
    assert_eq!(again.wait_exit().code(), Some(0), "{}", again.output());
}

/// The kernel drops a name when the last socket bound to it closes; nobody can connect.
fn assert_name_is_free(name: &str) {
    wait_until(&format!("@{name} leaves /proc/net/unix"), || !is_listed(name));
    let err = Conn::try_connect_abstract(name).err().expect("a connect to a free name fails");
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "{err}");
}

/// A second server on a name in use fails with `Address already in use`, saying a running
/// process holds the name; the first server keeps serving.
#[test]
fn a_second_server_on_the_name_fails_clearly_and_the_first_keeps_serving() {
    let name = abstract_name("twice");
    let _first = start(&name);
    let out = run(Command::new(server()).arg(format!("@{name}")));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr, format!("{SERVER}: bind @{name}: Address already in use (os error 98)\n"));
    let mut conn = Conn::try_connect_abstract(&name).expect("the first server still listens");
    assert_eq!(conn.ask("still here"), "STILL HERE\n");
}

/// The client reaches a server by `@name`; a name nobody holds is `Connection refused`, never
/// `No such file or directory`.
#[test]
fn the_client_connects_to_a_name_and_a_free_name_is_refused() {
    let name = abstract_name("client");
    let _server = start(&name);
    let at = format!("@{name}");
    let out = run(Command::new(client()).args([&at, "hello", "abstract"]));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "HELLO\nABSTRACT\n");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // With no file, "nobody listens here" is ECONNREFUSED, never ENOENT.
    let free = format!("@{}", abstract_name("free"));
    let out = run(Command::new(client()).args([&free, "hello"]));
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!("{CLIENT}: connect {free}: Connection refused (os error 111)\n")
    );
}

/// `--mode` or `--group` with an abstract name is a usage error (exit 2), and nothing is
/// bound: there is no file to give a mode or a group to.
#[test]
fn a_mode_or_a_group_for_a_name_is_an_error() {
    for flag in [["--mode", "0666"], ["--group", "0"]] {
        let name = abstract_name("mode");
        let out = run(Command::new(server()).arg(format!("@{name}")).args(flag));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flag:?}: {stderr}");
        assert!(
            stderr.starts_with(
                "error: an abstract name (@name) has no file, so no --mode or --group"
            ),
            "{flag:?}: {stderr}"
        );
        assert!(!is_listed(&name), "{flag:?}: @{name} was bound anyway");
    }
}

/// The client's `@` alone: there is no name to connect to. (The server's `@` is exercise 1.)
#[test]
fn an_at_alone_is_a_usage_error() {
    let out = run(Command::new(client()).args(["@", "hello"]));
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("`@` needs a name after it"), "{stderr}");
}

/// A name of 108 bytes does not fit in `sun_path` after the leading NUL: a clear error that
/// names it.
#[test]
fn a_name_too_long_for_sun_path_is_refused_before_bind() {
    // sun_path holds 108 bytes; an abstract name uses them all but the leading NUL.
    let name = "n".repeat(108);
    let out = run(Command::new(server()).arg(format!("@{name}")));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.starts_with(&format!("{SERVER}: bind @{name}: ")), "{stderr}");
    assert!(stderr.contains("shorter than SUN_LEN"), "{stderr}");
}

// ---- the credential check is the lock ----

/// `nobody` reaches an abstract name (no file mode stands in the way) and is refused by the
/// credential check, with the uid error line and exit 1; the server keeps serving.
#[test]
fn nobody_reaches_the_name_and_is_refused_by_the_credential_check() {
    let Some((_dir, bin)) = runnable_by_nobody(client()) else { return };
    let name = abstract_name("nobody");
    let mut server = start(&name);
    let out = run(as_nobody(&bin).args([format!("@{name}"), "let me in".into()]));
    assert_eq!(String::from_utf8_lossy(&out.stderr), "error: uid 65534 is not allowed\n");
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty(), "{}", String::from_utf8_lossy(&out.stdout));
    server.wait_for_line_containing("refused uid 65534");
    let mut conn = Conn::try_connect_abstract(&name).expect("connect as ourselves");
    assert_eq!(conn.ask("still serving"), "STILL SERVING\n");
}

/// `--allow-uid 65534` lets `nobody` in to an abstract name: the credential check, not a file
/// mode, decides.
#[test]
fn allow_uid_lets_nobody_in_to_a_name() {
    let Some((_dir, bin)) = runnable_by_nobody(client()) else { return };
    let name = abstract_name("allowed");
    let _server = start_in(&std::env::temp_dir(), &name, &["--allow-uid", "65534"]);
    let out = run(as_nobody(&bin).args([format!("@{name}"), "hello".into()]));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "HELLO\n");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}
