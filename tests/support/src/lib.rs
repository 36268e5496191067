//! uds-test-support: the helpers every lesson's tests share.
//!
//! Start a real server binary in a private temp dir and wait for its `listening on PATH` line
//! with a deadline ([`Server`]); talk to it as a real client with deadlines on every read and
//! write ([`Conn`]); read a process's CPU time, threads and open descriptors from /proc; run a
//! command as `nobody`; find outside tools. A test that cannot run here (a tool is missing, it
//! needs root, or more descriptors than RLIMIT_NOFILE allows) skips with the reason outside CI
//! and fails in CI ([`have_tool`], [`is_root`], [`allow_descriptors`]).
//! Every wait has a deadline ([`DEADLINE`]). A [`Server`] is killed when dropped, so a failing
//! test leaves nothing running, and a [`tempfile::TempDir`] removes its directory, so it leaves
//! nothing on disk.

use std::ffi::OsStr;
use std::fs::Permissions;
use std::io::{self, BufRead, BufReader, ErrorKind, Read, Write};
use std::net::Shutdown;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::io::Errno;
use rustix::net::sockopt::Timeout;
use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
use rustix::process::{Pid, Signal};
pub use tempfile::TempDir;

/// How long any test waits for something that should take milliseconds. Generous, because a
/// loaded 2-core CI machine is slow; a deadline only has to turn a hang into a failure.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// How much earlier than its timeout a socket timeout (SO_RCVTIMEO, SO_SNDTIMEO) may fire by a
/// wall clock. The kernel counts it in clock ticks (jiffies: 1 to 10 ms, by its HZ) from a tick
/// already partly gone, so a 1000 ms timeout was once seen to end after 998 ms.
pub const TICK: Duration = Duration::from_millis(10);

/// A private temp dir for one test; removed when dropped. Short, so socket paths stay far
/// below the 107-byte limit.
pub fn temp_dir() -> TempDir {
    tempfile::Builder::new().prefix("uds-test-").tempdir().expect("create a temp dir")
}

/// Leave a stale socket file at `path`, as a server that is gone leaves it: `connect` to it
/// fails with ECONNREFUSED. Made by a stream socket that is bound, never listens, and is closed.
///
/// Not by binding a `UnixListener` and dropping it: the tests of a binary run on many threads,
/// and a child another test forks at that moment holds a copy of the listener until it execs
/// (CLOEXEC closes it only then). A client that connects in that window is queued, not
/// refused, and then reset: a loaded machine showed exactly that.
pub fn stale_socket_file(path: &Path) {
    let address = SocketAddrUnix::new(path).expect("a socket address");
    let (unix, stream) = (AddressFamily::UNIX, SocketType::STREAM);
    let socket = rustix::net::socket_with(unix, stream, SocketFlags::CLOEXEC, None);
    let socket = socket.expect("a socket");
    rustix::net::bind(&socket, &address).expect("bind");
    drop(socket); // closed, never having listened
}

/// The common start: a private temp dir, `bin` listening on `<dir>/<file_name>` in it.
/// Bind all three (`let (_dir, path, server) = …`): the server is dropped (killed) first and
/// the directory last, so nothing stays on disk.
pub fn start_in_temp_dir(bin: &Path, file_name: &str) -> (TempDir, PathBuf, Server) {
    let dir = temp_dir();
    let path = dir.path().join(file_name);
    let server = Server::start_at(bin, &path);
    (dir, path, server)
}

/// A running server process: killed and reaped on drop.
pub struct Server {
    child: ChildGuard,
    /// The socket path it was started with.
    pub path: PathBuf,
    output: Arc<Mutex<String>>,
    lines: Receiver<String>,
}

impl Server {
    /// Start `bin` with `args` and wait until it prints `listening on <path>`.
    /// `path` is where the socket will be; the caller passes it in `args` (usually first).
    pub fn start<S: AsRef<OsStr>>(bin: &Path, path: &Path, args: &[S]) -> Server {
        let mut cmd = Command::new(bin);
        cmd.args(args);
        Server::start_cmd(cmd, path)
    }

    /// Start `bin <path>` and wait until it listens.
    pub fn start_at(bin: &Path, path: &Path) -> Server {
        Server::start(bin, path, &[path])
    }

    /// Start a prepared command (extra env, say) and wait until it listens on `path`.
    pub fn start_cmd(cmd: Command, path: &Path) -> Server {
        let mut server = Server::spawn_cmd(cmd, path);
        server.wait_for_line(&format!("listening on {}", path.display()));
        server
    }

    /// Spawn without waiting for readiness (for servers expected to fail).
    pub fn spawn<S: AsRef<OsStr>>(bin: &Path, path: &Path, args: &[S]) -> Server {
        let mut cmd = Command::new(bin);
        cmd.args(args);
        Server::spawn_cmd(cmd, path)
    }

    /// Spawn a prepared command without waiting; stdin is null, stdout and stderr captured.
    pub fn spawn_cmd(mut cmd: Command, path: &Path) -> Server {
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        let output = Arc::new(Mutex::new(String::new()));
        let (tx, lines) = mpsc::channel();
        // Both pipes are drained by threads for the whole life of the process: a server
        // whose stderr pipe fills up would block, and look hung to the test.
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        for (pipe, tx) in
            [(Box::new(stdout) as Box<dyn Read + Send>, tx.clone()), (Box::new(stderr), tx)]
        {
            let output = Arc::clone(&output);
            thread::spawn(move || {
                for line in BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    output.lock().expect("output lock").push_str(&format!("{line}\n"));
                    let _ = tx.send(line); // the receiver may be gone; the log is kept anyway
                }
            });
        }
        Server { child: ChildGuard(child), path: path.to_owned(), output, lines }
    }

    /// Wait (with [`DEADLINE`]) until the server prints exactly `line` on stdout or stderr.
    pub fn wait_for_line(&mut self, line: &str) {
        self.wait_for(|l| l == line, line);
    }

    /// Wait (with [`DEADLINE`]) for a printed line that contains `needle`; returns it.
    pub fn wait_for_line_containing(&mut self, needle: &str) -> String {
        self.wait_for(|l| l.contains(needle), needle)
    }

    /// Wait (with [`DEADLINE`]) for a printed line that satisfies `wanted`, described by `what`.
    pub fn wait_for(&mut self, wanted: impl Fn(&str) -> bool, what: &str) -> String {
        let end = Instant::now() + DEADLINE;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if wanted(&line) => return line,
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => {
                    panic!(
                        "server never printed {what:?} within {DEADLINE:?}; output:\n{}",
                        self.output()
                    )
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.wait_exit();
                    panic!(
                        "server exited ({status}) without printing {what:?}; output:\n{}",
                        self.output()
                    )
                }
            }
        }
    }

    pub fn pid(&self) -> Pid {
        self.child.pid()
    }

    /// Send `signal` to the server.
    pub fn signal(&self, signal: Signal) {
        rustix::process::kill_process(self.pid(), signal).expect("kill");
    }

    /// Wait (with [`DEADLINE`]) for the server to exit; returns its status.
    pub fn wait_exit(&mut self) -> ExitStatus {
        self.child.wait_within(DEADLINE).unwrap_or_else(|| {
            panic!("server still running after {DEADLINE:?}; output:\n{}", self.output())
        })
    }

    /// The exit status if the server exits within `limit`, else `None` (it keeps running).
    pub fn wait_exit_within(&mut self, limit: Duration) -> Option<ExitStatus> {
        self.child.wait_within(limit)
    }

    /// Has the process exited already?
    pub fn has_exited(&mut self) -> bool {
        self.child.0.try_wait().expect("try_wait").is_some()
    }

    /// Everything it printed so far, stdout and stderr, line by line in arrival order.
    pub fn output(&self) -> String {
        self.output.lock().expect("output lock").clone()
    }

    /// Wait for the server to exit, then all it printed (the pipe readers have finished).
    pub fn finish(mut self) -> (ExitStatus, String) {
        let status = self.wait_exit();
        // The readers end at EOF, which comes once the process (and any child) is gone.
        let end = Instant::now() + DEADLINE;
        while Arc::strong_count(&self.output) > 1 && Instant::now() < end {
            thread::sleep(Duration::from_millis(5));
        }
        (status, self.output())
    }

    /// User + system CPU time the server has used so far.
    pub fn cpu_time(&self) -> Duration {
        cpu_time(self.pid())
    }

    /// Lower the server's RLIMIT_NOFILE so that it can open exactly `spare` more descriptors.
    /// The limit caps descriptor *numbers* and a new one takes the lowest free number, so the
    /// limit is set just past the `spare`-th free number, counting gaps below open ones.
    pub fn allow_only_more_fds(&self, spare: usize) {
        let dir = format!("/proc/{}/fd", self.pid().as_raw_nonzero());
        let open: Vec<u64> = std::fs::read_dir(dir)
            .expect("read /proc/PID/fd")
            .map(|entry| {
                entry.expect("fd entry").file_name().to_string_lossy().parse().expect("fd")
            })
            .collect();
        let (mut limit, mut free) = (0, 0);
        while free < spare {
            free += usize::from(!open.contains(&limit));
            limit += 1;
        }
        let limit = rustix::process::Rlimit { current: Some(limit), maximum: Some(limit) };
        rustix::process::prlimit(Some(self.pid()), rustix::process::Resource::Nofile, limit)
            .expect("prlimit RLIMIT_NOFILE");
    }
}

/// A child process that is killed and reaped when dropped, for tests that wire its stdin,
/// stdout and stderr themselves.
pub struct ChildGuard(pub Child);

impl ChildGuard {
    pub fn pid(&self) -> Pid {
        Pid::from_child(&self.0)
    }

    /// The exit status if the process exits within `limit`, else `None` (it keeps running).
    pub fn wait_within(&mut self, limit: Duration) -> Option<ExitStatus> {
        let end = Instant::now() + limit;
        loop {
            if let Some(status) = self.0.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() >= end {
                return None;
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// Wait (with [`DEADLINE`]) for the process to exit.
    pub fn wait(&mut self) -> ExitStatus {
        self.wait_within(DEADLINE).unwrap_or_else(|| panic!("still running after {DEADLINE:?}"))
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill(); // already gone is fine
        // SIGKILL cannot be caught, but a process in an uninterruptible sleep dies only when it
        // leaves it: reap it within the deadline, and leave it behind (never panic in a drop).
        let end = Instant::now() + DEADLINE;
        while matches!(self.0.try_wait(), Ok(None)) {
            if Instant::now() >= end {
                eprintln!("process {} still not gone {DEADLINE:?} after SIGKILL", self.0.id());
                return;
            }
            thread::sleep(Duration::from_millis(1));
        }
    }
}

/// Run `cmd` with its stdout a pipe that nobody reads (as when `| head -1` has exited),
/// feeding it `stdin` from a thread; returns its exit status and its stderr.
pub fn run_with_stdout_closed(mut cmd: Command, stdin: Vec<u8>) -> (ExitStatus, String) {
    let (reader, writer) = io::pipe().expect("pipe");
    drop(reader);
    cmd.stdin(Stdio::piped()).stdout(writer).stderr(Stdio::piped());
    let mut child = ChildGuard(cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}")));
    let mut pipe = child.0.stdin.take().expect("piped stdin");
    // Stops with an error once the process exits: it need not read all of it.
    let feeder = thread::spawn(move || drop(pipe.write_all(&stdin)));
    let status = child.wait();
    // EOF comes once the process is gone, unless something it started still holds the pipe.
    let stderr = child.0.stderr.take().expect("piped stderr");
    let stderr = read_to_end_within(stderr, DEADLINE, "the process's stderr");
    join_within(feeder, DEADLINE, "the stdin feeder").expect("the stdin feeder");
    (status, String::from_utf8_lossy(&stderr).into_owned())
}

/// Read `pipe` to EOF within `limit`; panics, naming `what`, when EOF does not come in time.
fn read_to_end_within(mut pipe: impl Read + AsFd, limit: Duration, what: &str) -> Vec<u8> {
    let end = Instant::now() + limit;
    let mut all = Vec::new();
    let mut buf = [0; 8192];
    loop {
        assert!(readable_before(pipe.as_fd(), end), "no EOF on {what} within {limit:?}");
        match pipe.read(&mut buf) {
            Ok(0) => return all,
            Ok(n) => all.extend_from_slice(&buf[..n]),
            Err(err) if err.kind() == ErrorKind::Interrupted => {}
            Err(err) => panic!("read {what}: {err}"),
        }
    }
}

/// Does `fd` become readable (data, EOF or, for a listener, a client to accept) before `end`?
fn readable_before(fd: BorrowedFd<'_>, end: Instant) -> bool {
    loop {
        let left = end.saturating_duration_since(Instant::now());
        let timeout = Timespec::try_from(left).expect("a deadline fits in a timespec");
        match rustix::event::poll(
            &mut [PollFd::from_borrowed_fd(fd, PollFlags::IN)],
            Some(&timeout),
        ) {
            Ok(0) if left.is_zero() => return false,
            Ok(0) | Err(Errno::INTR) => {}
            // IN, or HUP or ERR: the read or accept that follows tells which.
            Ok(_) => return true,
            Err(err) => panic!("poll: {err}"),
        }
    }
}

/// Join `thread` within `limit`: its result, `Err` holding its panic as [`JoinHandle::join`]'s
/// does; panics, naming `what`, when it is still running at the deadline.
///
/// [`JoinHandle::join`]: thread::JoinHandle::join
fn join_within<T>(thread: thread::JoinHandle<T>, limit: Duration, what: &str) -> thread::Result<T> {
    let end = Instant::now() + limit;
    while !thread.is_finished() {
        assert!(Instant::now() < end, "{what} still running after {limit:?}");
        thread::sleep(Duration::from_millis(1));
    }
    thread.join()
}

/// User + system CPU time of process `pid`, from /proc/PID/stat.
pub fn cpu_time(pid: Pid) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid.as_raw_nonzero()))
        .expect("read /proc/PID/stat");
    // The command name (field 2) may hold spaces; fields after its closing parenthesis are
    // plain numbers: state is field 3, utime field 14, stime field 15.
    let after_name = &stat[stat.rfind(')').expect("stat has a ')'") + 2..];
    let fields: Vec<&str> = after_name.split(' ').collect();
    let ticks: u64 =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    let per_second = rustix::param::clock_ticks_per_second();
    Duration::from_millis(ticks * 1000 / per_second)
}

/// How many threads process `pid` runs now, as /proc/PID/status `Threads:` counts them (the
/// main thread included). An error once the process is gone: never a count of 0.
pub fn thread_count(pid: Pid) -> io::Result<usize> {
    let status = std::fs::read_to_string(format!("/proc/{}/status", pid.as_raw_nonzero()))?;
    let line = status.lines().find_map(|line| line.strip_prefix("Threads:"));
    let count = line.and_then(|count| count.trim().parse().ok());
    count.ok_or_else(|| io::Error::new(ErrorKind::InvalidData, "no Threads: line in status"))
}

/// How many descriptors process `pid` holds open now (the entries of /proc/PID/fd): each
/// connection a server has accepted and not yet closed is one. An error once the process is
/// gone: never a count of 0.
pub fn open_fd_count(pid: Pid) -> io::Result<usize> {
    Ok(std::fs::read_dir(format!("/proc/{}/fd", pid.as_raw_nonzero()))?.count())
}

/// Can this test process, and each child it starts from now on, open `wanted` descriptors?
/// A soft RLIMIT_NOFILE below that is raised to the hard limit (children inherit it; other
/// tests in this process only gain). When the hard limit is below it too, the test cannot run
/// here: false, skipping with the reason outside CI; in CI it fails (see [`have_tool`]).
pub fn allow_descriptors(wanted: u64) -> bool {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    // `None` is RLIM_INFINITY.
    let enough = |n: Option<u64>| n.is_none_or(|n| n >= wanted);
    if enough(limit.current) {
        return true;
    }
    if enough(limit.maximum) {
        let raised = Rlimit { current: limit.maximum, maximum: limit.maximum };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => return true,
            Err(err) => eprintln!("raise RLIMIT_NOFILE to its hard limit: {err}"),
        }
    }
    let (soft, hard) = (limit.current.unwrap_or(u64::MAX), limit.maximum.unwrap_or(u64::MAX));
    let why = format!(
        "this test needs {wanted} descriptors and RLIMIT_NOFILE allows {soft} (hard limit \
         {hard}): raise it, e.g. `ulimit -n {wanted}` as root"
    );
    cannot_run(in_ci(), &why, &why)
}

/// A client connection made by the test itself, with a deadline on every read and write.
pub struct Conn {
    stream: UnixStream,
    reader: BufReader<UnixStream>,
}

impl Conn {
    /// Connect to `path`; panics with the error if it fails.
    pub fn connect(path: &Path) -> Conn {
        Conn::try_connect(path).unwrap_or_else(|e| panic!("connect {}: {e}", path.display()))
    }

    /// Connect to `path`, within [`DEADLINE`] (see [`connect_within`]).
    pub fn try_connect(path: &Path) -> io::Result<Conn> {
        Conn::new(connect_within(&SocketAddrUnix::new(path)?, DEADLINE)?)
    }

    /// Connect to the abstract name `name` (Linux; written `@name` on command lines).
    pub fn try_connect_abstract(name: &str) -> io::Result<Conn> {
        Conn::new(connect_within(&SocketAddrUnix::new_abstract_name(name.as_bytes())?, DEADLINE)?)
    }

    fn new(stream: UnixStream) -> io::Result<Conn> {
        stream.set_read_timeout(Some(DEADLINE))?;
        stream.set_write_timeout(Some(DEADLINE))?;
        let reader = BufReader::new(stream.try_clone()?);
        Ok(Conn { stream, reader })
    }

    /// Write raw bytes.
    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write to the server");
    }

    /// Read one reply line (with its `\n`); panics on EOF or after the deadline.
    pub fn recv_line(&mut self) -> String {
        let mut line = String::new();
        let n = self.reader.read_line(&mut line).expect("read a reply line");
        assert!(n > 0, "the server closed the connection instead of replying");
        line
    }

    /// Send `line` plus `\n`, return the reply line.
    pub fn ask(&mut self, line: &str) -> String {
        self.send(format!("{line}\n").as_bytes());
        self.recv_line()
    }

    /// Half-close: no more from us.
    pub fn shutdown_write(&self) {
        self.stream.shutdown(Shutdown::Write).expect("shutdown(Write)");
    }

    /// Read what is left up to the server's EOF.
    pub fn read_to_end(&mut self) -> Vec<u8> {
        let mut rest = Vec::new();
        self.reader.read_to_end(&mut rest).expect("read to EOF");
        rest
    }

    /// Does the server close the connection (EOF) without sending more?
    pub fn at_eof(&mut self) -> bool {
        self.read_to_end().is_empty()
    }

    /// The underlying socket, for tests that need more control.
    pub fn stream(&self) -> &UnixStream {
        &self.stream
    }
}

/// A stream socket connected to `address` within `limit`. `connect` to a listener whose backlog
/// is full waits until it accepts, for ever with std's `UnixStream::connect`; the send timeout,
/// set before `connect`, bounds that wait too (it then fails with EAGAIN: here TimedOut).
fn connect_within(address: &SocketAddrUnix, limit: Duration) -> io::Result<UnixStream> {
    let (unix, stream) = (AddressFamily::UNIX, SocketType::STREAM);
    let socket = rustix::net::socket_with(unix, stream, SocketFlags::CLOEXEC, None)?;
    rustix::net::sockopt::set_socket_timeout(&socket, Timeout::Send, Some(limit))?;
    match rustix::net::connect(&socket, address) {
        Ok(()) => Ok(UnixStream::from(socket)),
        Err(Errno::AGAIN) => Err(io::Error::new(
            ErrorKind::TimedOut,
            format!("the listener's backlog stayed full for {limit:?}"),
        )),
        Err(err) => Err(err.into()),
    }
}

/// Send `input` on a new connection, half-close, and return everything the server sent back.
pub fn exchange(path: &Path, input: &[u8]) -> Vec<u8> {
    let mut conn = Conn::connect(path);
    conn.send(input);
    conn.shutdown_write();
    conn.read_to_end()
}

/// `clients` connections at once, each sending `lines` distinct mixed-case lines and checking
/// that every reply comes back intact, upper-cased and in order.
pub fn many_clients(path: &Path, clients: usize, lines: usize) {
    // Every client connects before any sends: all of them really are open at the same time.
    let conns: Vec<Conn> = (0..clients).map(|_| Conn::connect(path)).collect();
    let workers: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(c, mut conn)| {
            thread::spawn(move || {
                let sent: Vec<String> =
                    (0..lines).map(|l| format!("client {c} says line {l} of {lines}\n")).collect();
                conn.send(sent.concat().as_bytes());
                conn.shutdown_write();
                let got = String::from_utf8(conn.read_to_end()).expect("replies are UTF-8");
                let want: String = sent.concat().to_ascii_uppercase();
                assert_eq!(got, want, "client {c}: replies differ from the lines sent");
            })
        })
        .collect();
    // Every read and write in a worker has a deadline, so each join ends.
    for worker in workers {
        worker.join().expect("a client thread failed (see its panic above)");
    }
}

/// Is `tool` on PATH? Outside CI a missing tool skips the test (returns false, with the install
/// command on stderr); in CI (`CI` set) it fails the test, since CI installs every tool.
pub fn have_tool(tool: &str, install: &str) -> bool {
    let found = std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(tool).is_file()));
    found
        || cannot_run(
            in_ci(),
            &format!("{tool} is missing in CI; install it: {install}"),
            &format!("{tool} is not installed; install it with: {install}"),
        )
}

/// Is this test running as root? The one gate of every root-only test (switching to `nobody`,
/// chown): outside CI, when not root, it returns false and the test skips with the reason on
/// stderr; in CI (`CI` set) it fails the test, since CI runs as root (CONTRACT.md "CI").
pub fn is_root() -> bool {
    let euid = rustix::process::geteuid();
    euid.is_root()
        || cannot_run(
            in_ci(),
            &format!(
                "this test needs root, and CI runs it as uid {}: run CI as root (CONTRACT.md \
                 \"CI\"), or unset CI to skip the root-only tests",
                euid.as_raw()
            ),
            "this test needs root (it switches to the user nobody)",
        )
}

/// A test that cannot run here: in CI (`ci`) it fails with `fail`, since CI provides every tool
/// and runs as root; outside CI it is skipped — false, and `skip` on stderr (cargo shows it
/// with `-- --nocapture`).
fn cannot_run(ci: bool, fail: &str, skip: &str) -> bool {
    assert!(!ci, "{fail}");
    eprintln!("skipped: {skip}");
    false
}

/// Is this a CI run? `CI` set to anything but empty, `0` or `false`, as CI services set it.
fn in_ci() -> bool {
    is_ci(std::env::var("CI").ok().as_deref())
}

/// Does `CI` with this value (`None`: unset) mean a CI run?
fn is_ci(value: Option<&str>) -> bool {
    value.is_some_and(|ci| !matches!(ci, "" | "0" | "false"))
}

/// `cmd` run as user `nobody` (CONTRACT.md "Tests"): setpriv execs, so the pid is the command's.
pub fn as_nobody(program: &Path) -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"]).arg(program);
    cmd
}

/// For a test that runs `program` as `nobody` (see [`as_nobody`]): a temp dir `nobody` can
/// enter (mode 0755), holding a copy of `program` `nobody` can run (the target dir may be
/// private to root). `None`, and the test skips, when not root or without setpriv (outside CI:
/// in CI either fails the test, see [`is_root`] and [`have_tool`]).
pub fn runnable_by_nobody(program: &Path) -> Option<(TempDir, PathBuf)> {
    if !is_root() || !have_tool("setpriv", "apt-get install -y util-linux") {
        return None;
    }
    let dir = temp_dir();
    std::fs::set_permissions(dir.path(), Permissions::from_mode(0o755)).expect("chmod 755");
    let copy = dir.path().join(program.file_name().expect("a program's file name"));
    // A hard link if it can (same file system): a copy is a file open for writing, and a
    // process another test thread forks meanwhile inherits that descriptor until it execs —
    // running the copy in that window fails with ETXTBSY ("Text file busy").
    if std::fs::hard_link(program, &copy).is_err() {
        std::fs::copy(program, &copy).expect("copy the program");
    }
    Some((dir, copy))
}

/// A fake server at `<dir>/fake.sock` that accepts one client and hands the connection to
/// `conversation` on its own thread: a server that misbehaves on purpose. Join it to see its
/// panics. Every wait has a deadline: it panics when no client connects within [`DEADLINE`],
/// the connection has read and write timeouts of [`DEADLINE`], and [`FakeServer::join`] waits as
/// long for the conversation to end.
pub fn fake_server(
    dir: &Path,
    conversation: impl FnOnce(UnixStream) + Send + 'static,
) -> (PathBuf, FakeServer) {
    fake_server_within(dir, DEADLINE, conversation)
}

/// [`fake_server`] with `limit` for every wait instead of [`DEADLINE`].
fn fake_server_within(
    dir: &Path,
    limit: Duration,
    conversation: impl FnOnce(UnixStream) + Send + 'static,
) -> (PathBuf, FakeServer) {
    let path = dir.join("fake.sock");
    let listener = UnixListener::bind(&path).expect("bind");
    let shown = path.display().to_string();
    let client_by = Instant::now() + limit;
    let thread = thread::spawn(move || {
        let came = readable_before(listener.as_fd(), client_by);
        assert!(came, "fake server at {shown}: no client connected within {limit:?}");
        let (conn, _) = listener.accept().expect("accept");
        conn.set_read_timeout(Some(limit)).expect("set a read timeout");
        conn.set_write_timeout(Some(limit)).expect("set a write timeout");
        conversation(conn);
    });
    (path, FakeServer { thread, limit, client_by })
}

/// A running [`fake_server`]: its thread.
pub struct FakeServer {
    thread: thread::JoinHandle<()>,
    limit: Duration,
    /// When it gives up waiting for a client.
    client_by: Instant,
}

impl FakeServer {
    /// Wait for the conversation to end, up to [`DEADLINE`] past the fake server's own deadline
    /// for a client (so a fake server nobody connected to says so): `Err` holds its panic, as
    /// [`JoinHandle::join`]'s does; panics when it is still going at the deadline.
    ///
    /// [`JoinHandle::join`]: thread::JoinHandle::join
    pub fn join(self) -> thread::Result<()> {
        let from = self.client_by.saturating_duration_since(Instant::now());
        // At least 2 s for the conversation: a thread that panics first prints its message (and
        // with RUST_BACKTRACE set, a backtrace, which takes its time on a loaded machine).
        let limit = self.limit.max(Duration::from_secs(2));
        join_within(self.thread, from + limit, "the fake server's conversation")
    }
}

/// An abstract name (without its `@`) that no other test uses, in this process or another
/// test binary running at the same time: the namespace is shared by the whole network namespace.
pub fn abstract_name(label: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("uds-test-{}-{n}-{label}", std::process::id())
}

/// The abstract names (without `@`) that /proc/net/unix lists: every socket bound to one.
pub fn listed_abstract_names() -> Vec<String> {
    let table = std::fs::read_to_string("/proc/net/unix").expect("read /proc/net/unix");
    // Columns: Num RefCount Protocol Flags Type St Inode Path; the path is `@name` for an
    // abstract name (its NUL bytes shown as `@` too).
    table
        .lines()
        .skip(1)
        .filter_map(|line| line.split_whitespace().nth(7)?.strip_prefix('@').map(str::to_owned))
        .collect()
}

/// Wait (with [`DEADLINE`]) until `condition` holds; panics with `what` when it never does.
pub fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let end = Instant::now() + DEADLINE;
    while !condition() {
        assert!(Instant::now() < end, "timed out after {DEADLINE:?} waiting until {what}");
        thread::sleep(Duration::from_millis(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// cpu_time counts CPU the process burns, not wall time. Measured on child processes: this
    /// test binary runs other tests on other threads at the same time.
    #[test]
    fn cpu_time_grows_while_busy_not_while_asleep() {
        let spawn = |program: &str, args: &[&str]| {
            ChildGuard(Command::new(program).args(args).spawn().expect("spawn a child"))
        };
        let sleeper = spawn("sleep", &["10"]);
        let spinner = spawn("sh", &["-c", "while :; do :; done"]);
        thread::sleep(Duration::from_millis(200));
        let slept = cpu_time(sleeper.pid());
        assert!(slept < Duration::from_millis(100), "sleeping used {slept:?} of CPU");
        // Until 200 ms of CPU are used: on a loaded machine that takes longer, never less.
        wait_until("the spinner has used 200 ms of CPU", || {
            cpu_time(spinner.pid()) >= Duration::from_millis(200)
        });
    }

    /// A fake server nobody connects to fails at its deadline, saying so, instead of waiting in
    /// `accept` for ever.
    #[test]
    fn a_fake_server_nobody_connects_to_fails_at_its_deadline() {
        let dir = temp_dir();
        let limit = Duration::from_millis(200);
        let started = Instant::now();
        let (_path, fake) = fake_server_within(dir.path(), limit, |_| panic!("nobody connected"));
        let panic = fake.join().expect_err("a fake server with no client fails");
        let elapsed = started.elapsed();
        let message = panic.downcast_ref::<String>().expect("a panic with a message");
        assert!(message.contains("no client connected within 200ms"), "{message}");
        assert!(elapsed >= limit && elapsed < DEADLINE, "failed after {elapsed:?}");
    }

    /// A fake server hands the one client that connects to the conversation.
    #[test]
    fn a_fake_server_hands_its_client_to_the_conversation() {
        let dir = temp_dir();
        let (path, fake) = fake_server(dir.path(), |conn| {
            let mut line = String::new();
            BufReader::new(&conn).read_line(&mut line).expect("read a line");
            (&conn).write_all(line.to_uppercase().as_bytes()).expect("write");
        });
        assert_eq!(Conn::connect(&path).ask("fake"), "FAKE\n");
        fake.join().expect("the conversation");
    }

    /// Joining a fake server whose conversation outlasts the deadline fails instead of waiting.
    #[test]
    #[should_panic(expected = "the fake server's conversation still running after")]
    fn joining_a_fake_server_still_talking_at_its_deadline_fails() {
        let dir = temp_dir();
        let limit = Duration::from_millis(200);
        let (path, fake) = fake_server_within(dir.path(), limit, |_| thread::sleep(DEADLINE));
        let _conn = Conn::connect(&path);
        let _ = fake.join();
    }

    /// A connect to a listener whose backlog stays full gives up at the deadline (TimedOut),
    /// where std's `UnixStream::connect` would wait for ever.
    #[test]
    fn a_connect_to_a_full_backlog_times_out() {
        let dir = temp_dir();
        let address = SocketAddrUnix::new(dir.path().join("full.sock")).expect("an address");
        let (unix, stream) = (AddressFamily::UNIX, SocketType::STREAM);
        let listener = rustix::net::socket_with(unix, stream, SocketFlags::CLOEXEC, None);
        let listener = listener.expect("a socket");
        rustix::net::bind(&listener, &address).expect("bind");
        rustix::net::listen(&listener, 0).expect("listen"); // never accepts
        let limit = Duration::from_millis(200);
        let mut queued = Vec::new();
        let (err, elapsed) = loop {
            let started = Instant::now();
            match connect_within(&address, limit) {
                Ok(conn) if queued.len() < 10 => queued.push(conn),
                Ok(_) => panic!("11 connections to a backlog of 0"),
                Err(err) => break (err, started.elapsed()),
            }
        };
        assert_eq!(err.kind(), ErrorKind::TimedOut, "{err}");
        assert!(elapsed + TICK >= limit && elapsed < DEADLINE, "gave up after {elapsed:?}");
    }

    /// thread_count and open_fd_count read a live process (`sleep` runs one thread and holds its
    /// standard streams open) and are errors, not 0, once it is gone.
    #[test]
    fn thread_and_descriptor_counts_are_read_from_proc_and_fail_for_a_process_gone() {
        let mut sleep = Command::new("sleep");
        sleep.arg("10").stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
        let mut sleeper = ChildGuard(sleep.spawn().expect("spawn sleep"));
        let pid = sleeper.pid();
        assert_eq!(thread_count(pid).expect("the thread count"), 1);
        assert!(open_fd_count(pid).expect("the descriptor count") >= 3);
        sleeper.0.kill().expect("kill");
        sleeper.wait();
        assert!(thread_count(pid).is_err(), "a thread count for a process gone");
        assert!(open_fd_count(pid).is_err(), "a descriptor count for a process gone");
    }

    /// A test process may always open as many descriptors as it already holds.
    #[test]
    fn allow_descriptors_grants_what_the_limit_already_allows() {
        assert!(allow_descriptors(3));
    }

    /// `CI` means a CI run when set to anything but empty, `0` or `false`.
    #[test]
    fn in_ci_is_any_ci_value_but_empty_0_or_false() {
        for unset in [None, Some(""), Some("0"), Some("false")] {
            assert!(!is_ci(unset), "CI={unset:?} is not a CI run");
        }
        for set in [Some("true"), Some("1"), Some("yes")] {
            assert!(is_ci(set), "CI={set:?} is a CI run");
        }
    }

    /// Outside CI a test that cannot run here (not root, a tool missing) is skipped.
    #[test]
    fn outside_ci_a_test_that_cannot_run_is_skipped() {
        assert!(!cannot_run(false, "fails in CI", "skips outside CI"));
    }

    /// In CI a test that cannot run here fails with the reason: CI runs as root with every tool.
    #[test]
    #[should_panic(expected = "this test needs root, and CI runs it as uid 1000")]
    fn in_ci_a_test_that_cannot_run_fails() {
        cannot_run(true, "this test needs root, and CI runs it as uid 1000", "skipped");
    }

    /// as_nobody really switches the user (root only).
    #[test]
    fn as_nobody_runs_the_command_as_nobody() {
        if !is_root() || !have_tool("setpriv", "apt-get install -y util-linux") {
            return;
        }
        let out = as_nobody(Path::new("/usr/bin/id")).arg("-un").output().expect("run id");
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "nobody");
    }
}
