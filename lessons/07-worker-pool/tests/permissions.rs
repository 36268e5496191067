//! Lesson 04's one idea, still holding in lesson 07: who may connect to lesson07-server. The file
//! system decides first (the socket file's mode, set by the umask before `bind`, in a private
//! directory); then the server checks the peer's credentials (SO_PEERCRED). Tests that need another
//! user run as root and switch the client to `nobody`; when not root they skip with the reason
//! outside CI, and fail in CI, which runs as root.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use tempfile::TempDir;
use uds_test_support::{
    ChildGuard, DEADLINE, Server, as_nobody, exchange, have_tool, is_root, runnable_by_nobody,
    temp_dir,
};

mod under_test;
use under_test::{CLIENT, ON_TOKIO, SERVER, SOCKET_NAME};

fn server() -> &'static Path {
    under_test::server()
}

fn client() -> &'static Path {
    under_test::client()
}

/// The permission bits of `path`, without the file type.
fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path).expect("stat").mode() & 0o7777
}

/// A temp dir `nobody` can enter with a copy of the client it can run; `None`: skip.
fn shared_dir() -> Option<(TempDir, PathBuf)> {
    runnable_by_nobody(client())
}

/// The uid or gid `id` prints for `nobody` (`-u`) or `nogroup` (`-g`).
fn nobody_id(flag: &str) -> u32 {
    let out = Command::new("id").args([flag, "nobody"]).output().expect("run id");
    String::from_utf8_lossy(&out.stdout).trim().parse().expect("a numeric id")
}

/// Run the copied client as `nobody` (group `nogroup`) with `args`; its exit code and stderr.
fn nobody_client(bin: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let out = assert_cmd::Command::from_std(as_nobody(bin))
        .args(args)
        .timeout(DEADLINE)
        .output()
        .expect("run the client as nobody");
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    (out.status.code(), text(&out.stdout), text(&out.stderr))
}

/// A runtime dir whose `uds-course` directory is private (0700) but owned by `nobody` (root
/// only: chown); the directory and nobody's uid.
fn default_dir_owned_by_nobody() -> (TempDir, PathBuf, u32) {
    let runtime = temp_dir();
    let dir = runtime.path().join("uds-course");
    fs::create_dir(&dir).expect("mkdir");
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).expect("chmod 700");
    let nobody = nobody_id("-u");
    std::os::unix::fs::chown(&dir, Some(nobody), None).expect("chown to nobody");
    (runtime, dir, nobody)
}

/// The default directory is created 0700 and the socket file in it is born 0600.
#[test]
fn the_default_dir_is_0700_and_the_socket_file_0600() {
    let runtime = temp_dir();
    let path = runtime.path().join(format!("uds-course/{SOCKET_NAME}"));
    let mut cmd = Command::new(server());
    cmd.env("XDG_RUNTIME_DIR", runtime.path());
    let _server = Server::start_cmd(cmd, &path);
    assert_eq!(mode(path.parent().unwrap()), 0o700, "the default directory");
    assert_eq!(mode(&path), 0o600, "the socket file");
    assert_eq!(exchange(&path, b"mine\n"), b"MINE\n");
}

/// An existing default directory that others can enter is refused, not silently used.
#[test]
fn a_default_dir_open_to_others_is_refused() {
    let runtime = temp_dir();
    let dir = runtime.path().join("uds-course");
    fs::create_dir(&dir).expect("mkdir");
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).expect("chmod 755");
    assert_cmd::Command::new(server())
        .env("XDG_RUNTIME_DIR", runtime.path())
        .timeout(DEADLINE)
        .assert()
        .code(1)
        .stderr(format!(
            "{SERVER}: check {d}: mode 0755 lets other users in; `chmod 700 {d}` if that \
             is safe\n",
            d = dir.display()
        ));
    assert!(!dir.join(SOCKET_NAME).exists());
}

/// An existing default directory owned by someone else is refused (root only: chown).
#[test]
fn a_default_dir_owned_by_another_user_is_refused() {
    if !is_root() {
        return;
    }
    let (runtime, dir, nobody) = default_dir_owned_by_nobody();
    assert_cmd::Command::new(server())
        .env("XDG_RUNTIME_DIR", runtime.path())
        .timeout(DEADLINE)
        .assert()
        .code(1)
        .stderr(format!(
            "{SERVER}: check {}: owned by uid {nobody}, not by us (uid 0)\n",
            dir.display()
        ));
}

/// `--mode` sets the socket file's mode; a mode that is not octal is a usage error.
#[test]
fn mode_sets_the_socket_files_mode() {
    let dir = temp_dir();
    let path = dir.path().join("lesson07.sock");
    let _server =
        Server::start(server(), &path, &[path.as_os_str(), "--mode".as_ref(), "640".as_ref()]);
    assert_eq!(mode(&path), 0o640);
    assert_cmd::Command::new(server())
        .args(["--mode", "0999"])
        .arg(&path)
        .timeout(DEADLINE)
        .assert()
        .code(2)
        .stderr(predicates::str::contains("`0999` is not a file mode in octal"));
}

/// The mode is set race-free, before anyone can connect; this test catches a window in the
/// system calls, where timing cannot hide it. Lesson 07 sets the umask before `bind` (std's
/// `bind` also listens), and nothing chmods the socket afterwards: a chmod after `bind` (the
/// common tutorial pattern) leaves a window in which anyone can connect. On tokio (lesson 13)
/// the socket is bound, chmod-ed, and only then listens — and the umask, per process and so
/// unsafe once the runtime's threads run, is never touched.
#[test]
fn the_mode_is_final_before_anyone_can_connect() {
    if !have_tool("strace", "apt-get install -y strace") {
        return;
    }
    let dir = temp_dir();
    let path = dir.path().join("lesson07.sock");
    let trace = dir.path().join("trace.txt");
    let mut cmd = Command::new("strace");
    cmd.args(["-f", "-e", "trace=umask,bind,listen,chmod,fchmod,fchmodat", "-o"])
        .arg(&trace)
        .arg(server())
        .arg(&path);
    let mut strace = Server::start_cmd(cmd, &path);
    // Killing strace would only detach it, and leave the server running: stop the server
    // itself (strace's child), and strace exits with it.
    let server = Tracee(tracee_of(strace.pid()));
    drop(server);
    strace.wait_exit();
    let trace = fs::read_to_string(&trace).expect("read the trace");
    let calls: Vec<&str> = trace
        .lines()
        .filter_map(|line| line.split_once(' ').map(|(_pid, call)| call.trim_start()))
        .filter(|call| !call.starts_with("+++") && !call.starts_with("---"))
        .collect();
    let position = |prefix: &str| calls.iter().position(|call| call.starts_with(prefix));
    let bind = position("bind(").unwrap_or_else(|| panic!("no bind:\n{trace}"));
    if ON_TOKIO {
        let listen = position("listen(").unwrap_or_else(|| panic!("no listen:\n{trace}"));
        let chmod = position("chmod(").unwrap_or_else(|| panic!("no chmod:\n{trace}"));
        assert!(bind < chmod && chmod < listen, "bind, chmod, then listen:\n{trace}");
        assert!(calls[chmod].contains(", 0600)"), "chmod to 0600:\n{trace}");
        let no_umask = calls.iter().all(|call| !call.starts_with("umask("));
        assert!(no_umask, "the umask is per process: not with the runtime's threads:\n{trace}");
        let late = calls[listen..].iter().any(|call| call.contains("chmod"));
        assert!(!late, "the socket's mode must not be changed after listen:\n{trace}");
        return;
    }
    let umask = position("umask(0177)").unwrap_or_else(|| panic!("no umask(0177):\n{trace}"));
    assert!(umask < bind, "umask must come before bind:\n{trace}");
    assert!(
        calls.iter().all(|call| !call.contains("chmod")),
        "the socket's mode must not be changed after bind:\n{trace}"
    );
}

/// The one child of `pid` (strace's traced server), from /proc.
fn tracee_of(pid: rustix::process::Pid) -> rustix::process::Pid {
    let raw = pid.as_raw_nonzero();
    let children = fs::read_to_string(format!("/proc/{raw}/task/{raw}/children"))
        .expect("read strace's children");
    let child = children.split_whitespace().next().expect("strace has a child").parse();
    rustix::process::Pid::from_raw(child.expect("a pid")).expect("a nonzero pid")
}

/// A traced server, stopped with SIGTERM (a graceful shutdown) when dropped, also when a test
/// fails: nothing else would stop it.
struct Tracee(rustix::process::Pid);

impl Drop for Tracee {
    fn drop(&mut self) {
        let _ = rustix::process::kill_process(self.0, rustix::process::Signal::TERM);
    }
}

/// Another uid cannot connect to a 0600 socket: "Permission denied", naming the path.
#[test]
fn another_uid_gets_permission_denied_naming_the_path() {
    let Some((dir, bin)) = shared_dir() else { return };
    let path = dir.path().join("lesson07.sock");
    let _server = Server::start_at(server(), &path);
    let shown = path.to_str().unwrap();
    let (code, stdout, stderr) = nobody_client(&bin, &[shown, "hello"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(stdout, "");
    assert_eq!(stderr, format!("{CLIENT}: connect {shown}: Permission denied (os error 13)\n"));
}

/// With `--mode 0666` the file lets anyone connect, so the credential check must refuse them:
/// `error: uid N is not allowed`, exit 1; the server logs it and keeps serving its own user.
#[test]
fn with_mode_0666_another_uid_is_refused_by_its_credentials() {
    let Some((dir, bin)) = shared_dir() else { return };
    let path = dir.path().join("lesson07.sock");
    let mut server =
        Server::start(server(), &path, &[path.as_os_str(), "--mode".as_ref(), "0666".as_ref()]);
    let nobody = nobody_id("-u");
    let (code, stdout, stderr) = nobody_client(&bin, &[path.to_str().unwrap(), "hello"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(stdout, "");
    assert_eq!(stderr, format!("error: uid {nobody} is not allowed\n"));
    server.wait_for_line(&format!("{SERVER}: connection 1: refused uid {nobody}"));
    assert_eq!(exchange(&path, b"still serving\n"), b"STILL SERVING\n");
}

/// A server in a PID namespace of its own, as in a container, is told pid 0 for a client
/// outside it: that client is served and logged with pid 0, and the allow-list still holds.
#[test]
fn a_server_in_its_own_pid_namespace_serves_clients_outside_it() {
    let Some((dir, bin)) = shared_dir() else { return };
    if !have_tool("unshare", "apt-get install -y util-linux") {
        return;
    }
    let path = dir.path().join("lesson07.sock");
    // --kill-child: when the test kills `unshare`, the server inside dies with it.
    let mut cmd = Command::new("unshare");
    cmd.args(["--pid", "--fork", "--kill-child"]).arg(server()).arg(&path).args(["--mode", "0666"]);
    let mut server = Server::start_cmd(cmd, &path);
    assert_eq!(exchange(&path, b"from the host\n"), b"FROM THE HOST\n");
    server.wait_for_line_containing("pid 0 (outside this PID namespace)");
    let nobody = nobody_id("-u");
    let (code, stdout, stderr) = nobody_client(&bin, &[path.to_str().unwrap(), "hello"]);
    assert_eq!((code, stdout.as_str()), (Some(1), ""), "{stderr}");
    assert_eq!(stderr, format!("error: uid {nobody} is not allowed\n"));
}

/// A client in a PID namespace of its own is served, and refused by its uid as any other.
#[test]
fn a_client_in_its_own_pid_namespace_is_served_and_checked() {
    let Some((dir, bin)) = shared_dir() else { return };
    if !have_tool("unshare", "apt-get install -y util-linux") {
        return;
    }
    let path = dir.path().join("lesson07.sock");
    let _server =
        Server::start(server(), &path, &[path.as_os_str(), "--mode".as_ref(), "0666".as_ref()]);
    let in_namespace = |cmd: Command| {
        let mut unshare = Command::new("unshare");
        unshare
            .args(["--pid", "--fork", "--kill-child"])
            .arg(cmd.get_program())
            .args(cmd.get_args());
        let out = assert_cmd::Command::from_std(unshare)
            .args([path.to_str().unwrap(), "hello"])
            .timeout(DEADLINE)
            .output()
            .expect("run the client in a new PID namespace");
        let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
        (out.status.code(), text(&out.stdout), text(&out.stderr))
    };
    let (code, stdout, stderr) = in_namespace(Command::new(client()));
    assert_eq!((code, stdout.as_str()), (Some(0), "HELLO\n"), "{stderr}");
    let (code, _, stderr) = in_namespace(as_nobody(&bin));
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(stderr, format!("error: uid {} is not allowed\n", nobody_id("-u")));
}

/// The `error: ` line is written in one `write`, so a client that reads once gets all of it
/// (`writeln!` on a socket writes each piece of the format on its own).
#[test]
fn a_refusal_is_written_in_one_piece() {
    let Some((dir, bin)) = shared_dir() else { return };
    if !have_tool("strace", "apt-get install -y strace") {
        return;
    }
    let path = dir.path().join("lesson07.sock");
    let trace = dir.path().join("trace.txt");
    let mut cmd = Command::new("strace");
    cmd.args(["-f", "-e", "trace=write,sendto,sendmsg", "-o"])
        .arg(&trace)
        .arg(server())
        .arg(&path)
        .args(["--mode", "0666"]);
    let mut strace = Server::start_cmd(cmd, &path);
    let server = Tracee(tracee_of(strace.pid()));
    let (code, _, stderr) = nobody_client(&bin, &[path.to_str().unwrap(), "hello"]);
    assert_eq!(code, Some(1), "{stderr}");
    drop(server);
    strace.wait_exit();
    let trace = fs::read_to_string(&trace).expect("read the trace");
    let line = format!(r#""error: uid {} is not allowed\n""#, nobody_id("-u"));
    assert!(trace.lines().any(|call| call.contains(&line)), "no single write of {line}:\n{trace}");
}

/// With the socket file open to all (`--mode 0666`) and `flag ID` given, `nobody` gets in.
fn nobody_is_let_in_by(flag: &str, id: u32) {
    let Some((dir, bin)) = shared_dir() else { return };
    let path = dir.path().join("lesson07.sock");
    let id = id.to_string();
    let args = [path.as_os_str(), "--mode".as_ref(), "0666".as_ref(), flag.as_ref(), id.as_ref()];
    let _server = Server::start(server(), &path, &args);
    let (code, stdout, stderr) = nobody_client(&bin, &[path.to_str().unwrap(), "hello"]);
    assert_eq!((code, stdout.as_str()), (Some(0), "HELLO\n"), "{stderr}");
}

/// `--allow-uid` lets that uid in.
#[test]
fn allow_uid_lets_that_uid_in() {
    nobody_is_let_in_by("--allow-uid", nobody_id("-u"));
}

/// `--allow-gid` lets peers of that group in.
#[test]
fn allow_gid_lets_that_group_in() {
    nobody_is_let_in_by("--allow-gid", nobody_id("-g"));
}

/// `--group GID` gives the socket file to that group with mode 0660, and lets its members in:
/// through the file's group bits, then through the credential check.
#[test]
fn group_gives_the_file_to_the_group_and_lets_its_members_in() {
    let Some((dir, bin)) = shared_dir() else { return };
    let path = dir.path().join("lesson07.sock");
    let nogroup = nobody_id("-g");
    let group = nogroup.to_string();
    let _server =
        Server::start(server(), &path, &[path.as_os_str(), "--group".as_ref(), group.as_ref()]);
    let meta = fs::symlink_metadata(&path).expect("stat");
    assert_eq!((meta.gid(), meta.mode() & 0o7777), (nogroup, 0o660));
    let (code, stdout, stderr) = nobody_client(&bin, &[path.to_str().unwrap(), "hello"]);
    assert_eq!((code, stdout.as_str()), (Some(0), "HELLO\n"), "{stderr}");
}

/// The server logs the peer's uid, gid and pid, and the pid is the client process's own.
#[test]
fn the_peer_uid_gid_and_real_pid_are_logged() {
    let dir = temp_dir();
    let path = dir.path().join("lesson07.sock");
    let mut server = Server::start_at(server(), &path);
    let mut child = ChildGuard(
        Command::new(client())
            .arg(&path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the client"),
    );
    let (uid, gid) = (rustix::process::getuid().as_raw(), rustix::process::getgid().as_raw());
    let logged = format!(
        "{SERVER}: connection 1: accepted from uid {uid} gid {gid} pid {}",
        child.pid().as_raw_nonzero()
    );
    // A prefix: exercise 2 adds the program's name to this line.
    server.wait_for(|line| line == logged || line.starts_with(&format!("{logged} ")), &logged);
    // The client is really connected and served: one line there and back, then EOF.
    let mut stdin = child.0.stdin.take().expect("the client's stdin");
    writeln!(stdin, "who am i").expect("type a line");
    let mut reply = String::new();
    let stdout = child.0.stdout.take().expect("the client's stdout");
    BufReader::new(stdout).read_line(&mut reply).expect("read the reply");
    assert_eq!(reply, "WHO AM I\n");
    drop(stdin);
    assert!(child.wait().success());
}

/// Run the client with no PATH and `runtime` as XDG_RUNTIME_DIR, whose `uds-course` directory
/// fails the check, and a listener of the test's own in it: the client exits 1 with `message`
/// on stderr, and never connects.
fn assert_the_client_refuses_the_default_dir(runtime: &TempDir, message: String) {
    let dir = runtime.path().join("uds-course");
    let listener = std::os::unix::net::UnixListener::bind(dir.join("lesson07.sock"));
    let listener = listener.expect("bind a socket in the default directory");
    listener.set_nonblocking(true).expect("set non-blocking");
    assert_cmd::Command::new(client())
        .env("XDG_RUNTIME_DIR", runtime.path())
        .write_stdin("hello\n")
        .timeout(DEADLINE)
        .assert()
        .code(1)
        .stdout("")
        .stderr(message);
    let connected = listener.accept();
    assert!(
        connected.as_ref().is_err_and(|e| e.kind() == std::io::ErrorKind::WouldBlock),
        "the client connected: {connected:?}"
    );
}

/// With no PATH the client checks the default directory as the server does: one that other
/// users can enter is refused before `connect`.
#[test]
fn the_client_refuses_a_default_dir_open_to_others() {
    let runtime = temp_dir();
    let dir = runtime.path().join("uds-course");
    fs::create_dir(&dir).expect("mkdir");
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).expect("chmod 755");
    let message = format!(
        "{CLIENT}: check {d}: mode 0755 lets other users in; `chmod 700 {d}` if that is \
         safe\n",
        d = dir.display()
    );
    assert_the_client_refuses_the_default_dir(&runtime, message);
}

/// With no PATH the client refuses a default directory owned by someone else, who could have
/// put any socket in it (root only: chown).
#[test]
fn the_client_refuses_a_default_dir_owned_by_another_user() {
    if !is_root() {
        return;
    }
    let (runtime, dir, nobody) = default_dir_owned_by_nobody();
    let message =
        format!("{CLIENT}: check {}: owned by uid {nobody}, not by us (uid 0)\n", dir.display());
    assert_the_client_refuses_the_default_dir(&runtime, message);
}
