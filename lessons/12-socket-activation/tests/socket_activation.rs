//! Lesson 12's one idea: socket activation. A service manager — here `systemd-socket-activate`,
//! which does what systemd does for a `.socket` unit, without systemd running — binds the socket,
//! starts lesson12-server on the first connection and hands it the socket as fd 3. The server
//! serves on it, never binds, probes or unlinks, refuses a fd 3 of the wrong kind by name, and
//! without a LISTEN_PID of its own is lesson 07's server.

use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use assert_cmd::cargo::cargo_bin;
use rustix::net::{AddressFamily, SocketAddrUnix, SocketType, connect, socket};
use rustix::process::{Pid, Signal, kill_process, kill_process_group};
use tempfile::TempDir;
use uds_test_support::{Conn, Server, abstract_name, have_tool, temp_dir, wait_until};

fn server() -> &'static Path {
    cargo_bin!("lesson12-server")
}

/// Is `systemd-socket-activate` here? Outside CI its absence skips the test; in CI it fails it.
fn have_activate() -> bool {
    have_tool("systemd-socket-activate", "apt-get install -y systemd")
}

/// `systemd-socket-activate ARGS... lesson12-server SERVER_ARGS...` (with `--grace-ms 500`
/// unless they set it): the tool listens, and on the first connection (or datagram) execs the
/// server in its own place, so the child's pid is the server's from then on.
fn activate(tool_args: &[&str], server_args: &[&str]) -> Command {
    let mut cmd = Command::new("systemd-socket-activate");
    cmd.args(tool_args).arg(server()).args(server_args);
    if !server_args.contains(&"--grace-ms") {
        cmd.args(["--grace-ms", "500"]);
    }
    cmd
}

/// `activate` with `-l PATH` last among the tool's arguments, PATH in a temp dir of its own;
/// returned once the tool listens.
fn activate_in_temp_dir(tool_args: &[&str], server_args: &[&str]) -> (TempDir, PathBuf, Server) {
    let dir = temp_dir();
    let path = dir.path().join("lesson12.sock");
    let shown = path.to_string_lossy();
    let listen = [tool_args, &["-l", &shown]].concat();
    let tool = start_tool(activate(&listen, server_args), &path);
    (dir, path, tool)
}

/// Start `cmd` and wait until the tool listens on `path` (it prints `Listening on PATH as 3.`).
fn start_tool(cmd: Command, path: &Path) -> Server {
    let mut tool = Server::spawn_cmd(cmd, path);
    tool.wait_for_line(&format!("Listening on {} as 3.", path.display()));
    tool
}

fn is_socket(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok_and(|meta| meta.file_type().is_socket())
}

/// The first connection starts the server, which serves on the manager's socket and says where
/// it is bound; before that no server runs. After SIGTERM it exits 0 and leaves the file: it is
/// the manager's, and the server logs no `removed`.
#[test]
fn the_first_connection_starts_the_server_and_sigterm_leaves_the_file() {
    if !have_activate() {
        return;
    }
    let (_dir, path, mut server) = activate_in_temp_dir(&[], &[]);
    assert!(is_socket(&path));
    assert!(!server.output().contains("listening on"), "started too early:\n{}", server.output());
    let mut client = Conn::connect(&path);
    assert_eq!(client.ask("started on demand"), "STARTED ON DEMAND\n");
    server.wait_for_line(&format!("listening on {}", path.display()));
    drop(client);
    server.signal(Signal::TERM);
    let (status, output) = server.finish();
    assert_eq!(status.code(), Some(0), "{output}");
    assert!(is_socket(&path), "the manager's socket file is gone:\n{output}");
    assert!(!output.contains("removed"), "{output}");
}

/// A second signal during the grace period exits 1 at once, as in lesson 07 — and still leaves
/// the manager's file where it is.
#[test]
fn a_second_signal_exits_1_and_leaves_the_file_too() {
    if !have_activate() {
        return;
    }
    let (_dir, path, mut server) = activate_in_temp_dir(&[], &["--grace-ms", "60000"]);
    let mut client = Conn::connect(&path);
    assert_eq!(client.ask("hold on"), "HOLD ON\n");
    server.signal(Signal::TERM);
    server.wait_for_line("lesson12-server: SIGTERM: shutting down");
    server.signal(Signal::INT);
    let (status, output) = server.finish();
    assert_eq!(status.code(), Some(1), "{output}");
    assert!(output.contains("lesson12-server: SIGINT again: exiting now\n"), "{output}");
    assert!(is_socket(&path), "the manager's socket file is gone:\n{output}");
}

// ANCHOR: restarter
/// The socket outlives each server, as under systemd. `systemd-socket-activate -l PATH` holds
/// the socket and, on the first connection, execs this shell in its place, fd 3 included; the
/// shell keeps fd 3 open for good (the manager's copy) and, each time a server exits, starts a
/// new `systemd-socket-activate` on the inherited socket, which waits for the next connection
/// and execs a new server. `launcher PID` names each server's pid before it starts.
const RESTARTER: &str = r#"
while :; do
    sh -c 'echo "launcher $$"; LISTEN_PID=$$ exec systemd-socket-activate "$@"' sh "$@"
    echo "server exited with $?"
done
"#;
// ANCHOR_END: restarter

/// The restarter and every server it starts, in a process group of their own: all killed on
/// drop, not only the first. Its socket is `path`, in a temp dir of its own.
struct Manager {
    tool: Server,
    path: PathBuf,
    _dir: TempDir,
}

impl Manager {
    fn start() -> Manager {
        let dir = temp_dir();
        let path = dir.path().join("lesson12.sock");
        let mut cmd = Command::new("systemd-socket-activate");
        cmd.arg("-l").arg(&path).args(["sh", "-c", RESTARTER, "sh"]);
        cmd.arg(server()).args(["--grace-ms", "60000"]).process_group(0);
        Manager { tool: start_tool(cmd, &path), path, _dir: dir }
    }

    /// A client whose first line, `line`, a server started for it answers; and that server's
    /// pid.
    fn first_client(&mut self, line: &str) -> (Conn, Pid) {
        let mut client = Conn::connect(&self.path);
        assert_eq!(client.ask(line), format!("{}\n", line.to_uppercase()));
        let pid = self.next_launcher();
        self.tool.wait_for_line(&format!("listening on {}", self.path.display()));
        (client, pid)
    }

    /// The pid of the next server it starts, once it has started it.
    fn next_launcher(&mut self) -> Pid {
        let line = self.tool.wait_for(|line| line.starts_with("launcher "), "launcher PID");
        let pid = line.trim_start_matches("launcher ").parse().expect("a pid");
        Pid::from_raw(pid).expect("not 0")
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        let _ = kill_process_group(self.tool.pid(), Signal::KILL); // ok to fail: gone already
    }
}

/// After SIGTERM the server exits 0 and the file stays; the next connection starts a new server
/// (a new process, counting its connections from 1), on the same socket, and it answers.
#[test]
fn after_sigterm_the_next_connection_starts_a_new_server() {
    if !have_activate() {
        return;
    }
    let mut manager = Manager::start();
    let (first, first_pid) = manager.first_client("first");
    drop(first);
    kill_process(first_pid, Signal::TERM).expect("SIGTERM the first server");
    manager.tool.wait_for_line("server exited with 0");
    assert!(is_socket(&manager.path), "the socket file is gone:\n{}", manager.tool.output());
    // The restarter waits for a connection; no server runs until one comes.
    let (_second, second_pid) = manager.first_client("second");
    assert_ne!(first_pid, second_pid);
    let exe = fs::read_link(format!("/proc/{}/exe", second_pid.as_raw_nonzero()));
    assert_eq!(exe.expect("the second server runs").as_path(), server());
    // Each server counts from 1. (Its log is on stderr, read apart from stdout: wait for it.)
    let accepted = || manager.tool.output().matches("connection 1: accepted").count();
    wait_until("each server logged its connection 1", || accepted() == 2);
}

/// The shutdown(2) trap: lesson 07 woke its `accept` by shutting down the listening socket. On
/// the manager's socket that would refuse every later client, for good. Here a client that
/// connects while the server shuts down waits in the manager's queue and is answered by the
/// next server: not one connection is refused across the restart.
#[test]
fn a_client_that_connects_during_shutdown_is_answered_by_the_next_server() {
    if !have_activate() {
        return;
    }
    let mut manager = Manager::start();
    let (mut in_flight, first_pid) = manager.first_client("before");
    kill_process(first_pid, Signal::TERM).expect("SIGTERM the first server");
    manager.tool.wait_for_line("lesson12-server: SIGTERM: shutting down");
    let connected = Conn::try_connect(&manager.path);
    let mut queued = connected.expect("connect while the server shuts down");
    queued.send(b"queued\n");
    // The first server still serves the client it had, and exits once it leaves.
    assert_eq!(in_flight.ask("during"), "DURING\n");
    in_flight.shutdown_write();
    assert!(in_flight.at_eof());
    manager.tool.wait_for_line("server exited with 0");
    assert_eq!(queued.recv_line(), "QUEUED\n");
    assert_ne!(manager.next_launcher(), first_pid);
}

/// `-l @name`: the server says `listening on @name`, and serves the abstract name.
#[test]
fn an_abstract_name_is_served_and_shown_with_an_at() {
    if !have_activate() {
        return;
    }
    let name = abstract_name("activated");
    let at = format!("@{name}");
    let mut server = start_tool(activate(&["-l", &at], &[]), Path::new(&at));
    let mut client = Conn::try_connect_abstract(&name).expect("connect to the name");
    assert_eq!(client.ask("by name"), "BY NAME\n");
    server.wait_for_line(&format!("listening on {at}"));
}

/// With two sockets (`-l` twice: `LISTEN_FDS=2`, fds 3 and 4) the server serves on the first.
#[test]
fn with_listen_fds_2_the_server_serves_on_fd_3() {
    if !have_activate() {
        return;
    }
    let dir = temp_dir();
    let (first, second) = (dir.path().join("first.sock"), dir.path().join("second.sock"));
    let (first_shown, second_shown) = (first.to_string_lossy(), second.to_string_lossy());
    let mut tool = start_tool(activate(&["-l", &first_shown, "-l", &second_shown], &[]), &first);
    tool.wait_for_line(&format!("Listening on {} as 4.", second.display()));
    assert_eq!(Conn::connect(&first).ask("first of two"), "FIRST OF TWO\n");
    tool.wait_for_line(&format!("listening on {}", first.display()));
}

/// The manager cleared close-on-exec on fd 3 so that it would survive the exec of the server;
/// the server sets it again: O_CLOEXEC (octal 02000000) in the flags of /proc/PID/fdinfo/3.
#[test]
fn fd_3_of_an_activated_server_is_close_on_exec() {
    if !have_activate() {
        return;
    }
    let (_dir, path, mut server) = activate_in_temp_dir(&[], &[]);
    let mut client = Conn::connect(&path);
    assert_eq!(client.ask("cloexec"), "CLOEXEC\n");
    server.wait_for_line(&format!("listening on {}", path.display()));
    let fdinfo = format!("/proc/{}/fdinfo/3", server.pid().as_raw_nonzero());
    let info = fs::read_to_string(&fdinfo).expect("read fdinfo of fd 3");
    let flags = info.lines().find_map(|line| line.strip_prefix("flags:")).expect("a flags line");
    let flags = u32::from_str_radix(flags.trim(), 8).expect("octal flags");
    assert_ne!(flags & 0o2000000, 0, "fd 3 is inheritable: {fdinfo}:\n{info}");
}

/// The server exits 1, and its last words (after the tool's, if any) are the one line that
/// names what fd 3 is.
fn assert_refused_as(server: Server, kind: &str) {
    let (status, output) = server.finish();
    assert_eq!(status.code(), Some(1), "{output}");
    let line =
        format!("lesson12-server: take fd 3: it is {kind}, not a listening Unix stream socket");
    assert!(output.ends_with(&format!("{line}\n")), "{output}");
}

/// A `ListenDatagram=` socket (`-d`; the tool starts the server on the first datagram).
#[test]
fn a_datagram_socket_at_fd_3_is_refused() {
    if !have_activate() {
        return;
    }
    let (_dir, path, server) = activate_in_temp_dir(&["-d"], &[]);
    UnixDatagram::unbound().and_then(|s| s.send_to(b"hi\n", &path)).expect("send a datagram");
    assert_refused_as(server, "a datagram socket");
}

/// A `ListenSequentialPacket=` socket (`--seqpacket`).
#[test]
fn a_seqpacket_socket_at_fd_3_is_refused() {
    if !have_activate() {
        return;
    }
    let (_dir, path, server) = activate_in_temp_dir(&["--seqpacket"], &[]);
    let client = socket(AddressFamily::UNIX, SocketType::SEQPACKET, None).expect("socket");
    let address = SocketAddrUnix::new(path.as_path()).expect("address");
    connect(&client, &address).expect("connect to the seqpacket socket");
    assert_refused_as(server, "a seqpacket socket");
}

/// `sh -c 'LISTEN_PID=$$ LISTEN_FDS=1 exec SERVER' 3<...`: the shell's pid becomes the server's,
/// and fd 3 is whatever the redirection `fd3` (`3<FILE`, `3<&-`) makes it.
fn with_fd3(fd3: &str, server_args: &[&str]) -> Command {
    with_env_and_fd3("LISTEN_PID=$$ LISTEN_FDS=1", fd3, server_args)
}

/// `with_fd3` with the assignments `env` (`$$` is the server's pid) in place of the usual two.
fn with_env_and_fd3(env: &str, fd3: &str, server_args: &[&str]) -> Command {
    let script = format!(r#"{env} exec "$0" "$@" {fd3}"#);
    let mut cmd = Command::new("sh");
    cmd.args(["-c", &script]).arg(server()).args(server_args);
    cmd
}

/// A LISTEN_PID or LISTEN_FDS that is set but no number is a broken unit or script: exit 1 and
/// say which (as sd_listen_fds(3) returns -EINVAL), rather than quietly bind a socket of our own.
#[test]
fn a_listen_pid_or_listen_fds_that_is_not_a_number_is_an_error() {
    let dir = temp_dir();
    let path = dir.path().join("lesson12.sock");
    let shown = path.to_string_lossy();
    for (env, line) in [
        ("LISTEN_PID=$$ LISTEN_FDS=two", "LISTEN_FDS=two: not a number"),
        ("LISTEN_PID=me LISTEN_FDS=1", "LISTEN_PID=me: not a number"),
        ("LISTEN_PID=$$ LISTEN_FDS=", "LISTEN_FDS=: not a number"),
    ] {
        let cmd = with_env_and_fd3(env, "3</dev/null", &[&shown]);
        let (status, output) = Server::spawn_cmd(cmd, &path).finish();
        assert_eq!(status.code(), Some(1), "{env}: {output}");
        assert_eq!(output, format!("lesson12-server: take fd 3: {line}\n"), "{env}");
        assert!(!path.exists(), "{env}: bound a socket of its own");
    }
}

/// A file at fd 3 (a `.socket` unit with `ListenFIFO=`-style mistakes, or a stray redirection)
/// is named, and left as it was.
#[test]
fn a_regular_file_at_fd_3_is_refused_and_left_untouched() {
    let dir = temp_dir();
    let file = dir.path().join("not-a-socket.txt");
    fs::write(&file, "keep me\n").expect("write the file");
    // `3<>`: open for writing too, so that a server that wrote to fd 3 would be caught.
    let server = Server::spawn_cmd(with_fd3(&format!("3<>'{}'", file.display()), &[]), &file);
    assert_refused_as(server, "a regular file");
    assert_eq!(fs::read_to_string(&file).expect("read the file"), "keep me\n");
}

/// /dev/null is not a socket; a LISTEN_FDS with nothing at fd 3 is reported, not trusted.
#[test]
fn not_a_socket_or_nothing_at_fd_3_is_refused() {
    let nowhere = Path::new("/dev/null");
    let server = Server::spawn_cmd(with_fd3("3</dev/null", &[]), nowhere);
    assert_refused_as(server, "not a socket");
    let (status, output) = Server::spawn_cmd(with_fd3("3<&-", &[]), nowhere).finish();
    assert_eq!(status.code(), Some(1), "{output}");
    assert_eq!(output, "lesson12-server: take fd 3: LISTEN_FDS is set, but fd 3 is not open\n");
}

/// Python puts a socket at fd 3 (`os.dup2`), sets LISTEN_PID to its own pid and execs the
/// server: a TCP listener (`ListenStream=8080`), and a Unix stream socket nobody listened on.
const PUT_AT_FD_3: &str = r#"
import os, socket, sys
if sys.argv[1] == "inet":
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    s.listen()
else:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
os.dup2(s.fileno(), 3)
os.set_inheritable(3, True)
os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS="1")
os.execv(sys.argv[2], sys.argv[2:])
"#;

#[test]
fn a_tcp_listener_or_a_socket_that_is_not_listening_at_fd_3_is_refused() {
    if !have_tool("python3", "apt-get install -y python3") {
        return;
    }
    for (which, kind) in
        [("inet", "an AF_INET socket"), ("unix", "a stream socket that is not listening")]
    {
        let mut cmd = Command::new("python3");
        cmd.args(["-c", PUT_AT_FD_3, which]).arg(server());
        assert_refused_as(Server::spawn_cmd(cmd, Path::new(which)), kind);
    }
}

/// `--mode` and `--group` set what the manager already set: a usage error, exit 2.
#[test]
fn mode_or_group_with_an_activated_socket_is_a_usage_error() {
    if !have_activate() {
        return;
    }
    let (_dir, path, server) = activate_in_temp_dir(&[], &["--mode", "0660"]);
    let _knock = UnixStream::connect(&path).expect("connect: starts the server");
    let (status, output) = server.finish();
    assert_eq!(status.code(), Some(2), "{output}");
    assert!(output.contains("the service manager made this socket, so no --mode"), "{output}");
}

/// LISTEN_PID names another process (here pid 1): the variables are not for us, so fd 3 is not
/// looked at (a file here), and the server binds its own socket as lesson 07 does — and removes
/// it on SIGTERM.
#[test]
fn with_another_process_s_listen_pid_the_server_binds_its_own() {
    let dir = temp_dir();
    let path = dir.path().join("lesson12.sock");
    let file = dir.path().join("fd3.txt");
    fs::write(&file, "not for us\n").expect("write the file");
    let script = format!(r#"LISTEN_PID=1 LISTEN_FDS=1 exec "$0" "$@" 3<'{}'"#, file.display());
    let mut cmd = Command::new("sh");
    cmd.args(["-c", &script]).arg(server()).arg(&path);
    let server = Server::start_cmd(cmd, &path);
    assert!(is_socket(&path));
    assert_eq!(Conn::connect(&path).ask("own socket"), "OWN SOCKET\n");
    server.signal(Signal::TERM);
    let (status, output) = server.finish();
    assert_eq!(status.code(), Some(0), "{output}");
    assert!(!path.exists(), "lesson 07 removes its own socket file:\n{output}");
    let refused = UnixStream::connect(&path).expect_err("nobody listens");
    assert_eq!(refused.kind(), ErrorKind::NotFound);
}
