//! Lesson 05's one idea: deadlines and limits. No client can hold the server (idle, trickling,
//! over-long lines, never reading), and no server can hang the client (not accepting, not
//! answering, not reading). Every timeout the tests rely on is set to 500 ms or less by flag; the
//! one exception is the server's fixed 1 s start-up probe.

use std::fs;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::thread::{self};
use std::time::{Duration, Instant};

use assert_cmd::cargo::cargo_bin;
use rustix::event::{PollFd, PollFlags, Timespec, poll};
use rustix::io::Errno;
use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
use rustix::process::Pid;
use uds_test_support::{ChildGuard, Conn, DEADLINE, Server, TICK, exchange, fake_server, temp_dir};

fn server() -> &'static Path {
    cargo_bin!("lesson05-server")
}

fn client() -> &'static Path {
    cargo_bin!("lesson05-client")
}

/// How much later than its timeout something may happen on a loaded 2-core CI machine and
/// still count as "at the timeout": far below anything that would mean "no timeout at all".
const SLACK: Duration = Duration::from_secs(2);

/// Start the server on `<dir>/lesson05.sock` with `extra` flags after the path.
fn start(dir: &Path, extra: &[&str]) -> (PathBuf, Server) {
    let path = dir.join("lesson05.sock");
    let mut args = vec![path.to_str().expect("a UTF-8 temp path")];
    args.extend(extra);
    let server = Server::start(server(), &path, &args);
    (path, server)
}

/// Assert that `elapsed` is at least `timeout` less a [`TICK`] (the deadline was not cut
/// short) and at most `timeout` plus [`SLACK`] (it was kept).
fn assert_near(what: &str, elapsed: Duration, timeout: Duration) {
    assert!(
        elapsed + TICK >= timeout,
        "{what} after {elapsed:?}, before its timeout of {timeout:?}"
    );
    assert!(elapsed < timeout + SLACK, "{what} after {elapsed:?}: the timeout was {timeout:?}");
}

/// A connection of the test's own, with a deadline on every read: [`DEADLINE`] unless told.
fn connect(path: &Path) -> UnixStream {
    let stream = UnixStream::connect(path).expect("connect");
    stream.set_read_timeout(Some(DEADLINE)).expect("set a read timeout");
    stream.set_write_timeout(Some(DEADLINE)).expect("set a write timeout");
    stream
}

/// Read everything up to the server's EOF; panics if it does not come within the read timeout.
fn read_to_eof(stream: &UnixStream) -> Vec<u8> {
    let mut all = Vec::new();
    (&*stream).read_to_end(&mut all).expect("read to EOF");
    all
}

/// The peak resident memory ("high-water mark") of process `pid`, in KiB, from /proc.
fn peak_memory_kib(pid: Pid) -> u64 {
    let status = fs::read_to_string(format!("/proc/{}/status", pid.as_raw_nonzero()))
        .expect("read /proc/PID/status");
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).expect("a VmHWM line");
    line.split_whitespace().nth(1).expect("a number").parse().expect("KiB")
}

/// A listening socket at `path` that never accepts, with its backlog full, so that a
/// `connect` to it can only wait. It is built with rustix: std's `bind` listens with the
/// system's maximum backlog (4096), which would take thousands of connections to fill.
struct FullBacklog {
    _listener: OwnedFd,
    _queued: Vec<OwnedFd>,
}

fn full_backlog(path: &Path) -> FullBacklog {
    let cloexec = SocketFlags::CLOEXEC;
    let listener = rustix::net::socket_with(AddressFamily::UNIX, SocketType::STREAM, cloexec, None)
        .expect("socket");
    let address = SocketAddrUnix::new(path).expect("a socket address");
    rustix::net::bind(&listener, &address).expect("bind");
    rustix::net::listen(&listener, 0).expect("listen");
    let mut queued = Vec::new();
    loop {
        let socket = nonblocking_socket();
        match rustix::net::connect(&socket, &address) {
            Ok(()) => queued.push(socket),
            Err(Errno::AGAIN) => break,
            Err(err) => panic!("connect to the listener: {err}"),
        }
        assert!(queued.len() < 64, "the backlog is still not full after 64 connections");
    }
    FullBacklog { _listener: listener, _queued: queued }
}

fn nonblocking_socket() -> OwnedFd {
    let flags = SocketFlags::NONBLOCK | SocketFlags::CLOEXEC;
    rustix::net::socket_with(AddressFamily::UNIX, SocketType::STREAM, flags, None).expect("socket")
}

/// Run `bin` with `args` to the end, within [`DEADLINE`].
fn run(bin: &Path, args: &[&str]) -> Output {
    let mut cmd = assert_cmd::Command::new(bin);
    cmd.args(args).timeout(DEADLINE).output().unwrap_or_else(|e| panic!("run {bin:?}: {e}"))
}

/// Run the client on `path` with `args` to the end (within [`DEADLINE`]); its output and how
/// long it took.
fn run_client(path: &Path, args: &[&str]) -> (Output, Duration) {
    let started = Instant::now();
    let output = assert_cmd::Command::new(client())
        .arg(path)
        .args(args)
        .timeout(DEADLINE)
        .output()
        .expect("run the client");
    (output, started.elapsed())
}

/// The client on `path` with its stdin a pipe the test holds open, as at a terminal.
fn interactive_client(path: &Path, args: &[&str]) -> ChildGuard {
    let child = Command::new(client())
        .arg(path)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the client");
    ChildGuard(child)
}

fn stderr_of(child: &mut ChildGuard) -> String {
    let mut stderr = String::new();
    child.0.stderr.take().expect("piped stderr").read_to_string(&mut stderr).expect("stderr");
    stderr
}

// The server: no client can hold it.

/// A client that connects and sends nothing is answered `error: no complete line in N ms` at
/// the idle timeout, then EOF.
#[test]
fn an_idle_client_is_answered_an_error_and_closed_at_the_idle_timeout() {
    let dir = temp_dir();
    let (path, mut server) = start(dir.path(), &["--idle-timeout-ms", "300"]);
    let started = Instant::now();
    let idle = connect(&path);
    let mut reply = String::new();
    BufReader::new(&idle).read_line(&mut reply).expect("read the error line");
    assert_near("the error line came", started.elapsed(), Duration::from_millis(300));
    assert_eq!(reply, "error: no complete line in 300 ms\n");
    assert!(read_to_eof(&idle).is_empty(), "more after the error line");
    server.wait_for_line("lesson05-server: connection 1: no complete line in 300 ms; closed");
    assert_eq!(exchange(&path, b"still serving\n"), b"STILL SERVING\n");
}

/// The idle timeout is per line: a client that sends a line every 100 ms keeps its
/// connection far longer than the 500 ms timeout.
#[test]
fn a_client_that_keeps_sending_lines_is_never_idle() {
    let dir = temp_dir();
    let (path, mut server) = start(dir.path(), &["--idle-timeout-ms", "500"]);
    let mut busy = Conn::connect(&path);
    let started = Instant::now();
    for i in 0..12 {
        thread::sleep(Duration::from_millis(100));
        assert_eq!(busy.ask(&format!("line {i}")), format!("LINE {i}\n"));
    }
    assert!(started.elapsed() > Duration::from_millis(1000), "the test ran too fast to prove it");
    busy.shutdown_write();
    assert!(busy.at_eof());
    server.wait_for_line("lesson05-server: connection 1: closed, lines answered: 12");
}

/// The deadline belongs to the line, not to each `read`: a client that trickles one byte
/// every 100 ms and never a newline is closed at the 400 ms idle timeout too. (A server that
/// only sets a read timeout would wait forever: every `read` returns within 100 ms.)
#[test]
fn a_client_trickling_a_line_byte_by_byte_is_closed_at_the_idle_timeout_too() {
    let dir = temp_dir();
    let (path, _server) = start(dir.path(), &["--idle-timeout-ms", "400"]);
    let started = Instant::now();
    let trickler = connect(&path);
    let writer = trickler.try_clone().expect("clone");
    let trickle = thread::spawn(move || {
        // Until the server closes (the write fails) or the test gives up on it.
        while started.elapsed() < DEADLINE {
            if (&writer).write_all(b"x").is_err() {
                return;
            }
            thread::sleep(Duration::from_millis(100));
        }
    });
    // Longer than the trickle takes to outlast several per-read timeouts, shorter than forever.
    trickler.set_read_timeout(Some(Duration::from_millis(400) + SLACK)).expect("read timeout");
    let mut reply = String::new();
    let read = BufReader::new(&trickler).read_line(&mut reply);
    let elapsed = started.elapsed();
    read.unwrap_or_else(|e| panic!("no error line after {elapsed:?} of trickling: {e}"));
    assert_eq!(reply, "error: no complete line in 400 ms\n");
    assert_near("the error line came", elapsed, Duration::from_millis(400));
    trickle.join().expect("the trickling thread");
}

/// A line longer than `--max-line` is answered `error: line longer than BYTES bytes`, then
/// EOF: the lines after it are not answered. A line of exactly BYTES bytes is fine.
#[test]
fn a_line_longer_than_max_line_is_answered_an_error_and_cut_off() {
    let dir = temp_dir();
    let (path, mut server) = start(dir.path(), &["--max-line", "16"]);
    let input = format!("{}\n{}\nnever answered\n", "a".repeat(16), "b".repeat(17));
    let reply = exchange(&path, input.as_bytes());
    let expected = format!("{}\nerror: line longer than 16 bytes\n", "A".repeat(16));
    assert_eq!(String::from_utf8_lossy(&reply), expected);
    server.wait_for_line("lesson05-server: connection 1: line longer than 16 bytes; closed");
    assert_eq!(exchange(&path, b"next\n"), b"NEXT\n");
}

/// 64 MiB without a newline to a server with `--max-line 1024`: the client gets the error
/// line, and the server's peak memory does not grow with what it was sent. A server that
/// gathers a line before looking at its length would hold all 64 MiB.
#[test]
fn a_line_without_end_cannot_grow_the_servers_memory() {
    let dir = temp_dir();
    let (path, server) = start(dir.path(), &["--max-line", "1024"]);
    assert_eq!(exchange(&path, b"warm up\n"), b"WARM UP\n");
    let before = peak_memory_kib(server.pid());
    let stream = connect(&path);
    let writer = stream.try_clone().expect("clone");
    let flood = thread::spawn(move || {
        let chunk = vec![b'x'; 1 << 20];
        for _ in 0..64 {
            // The server reads and discards for at most a second after its error line, then
            // closes: a write may fail from then on, and that is fine.
            if (&writer).write_all(&chunk).is_err() {
                return;
            }
        }
        let _ = writer.shutdown(std::net::Shutdown::Write); // ok to fail: it may be gone
    });
    // All sent (or cut off) before measuring: whatever the server kept of it, it holds now.
    flood.join().expect("the flooding thread");
    let grown = peak_memory_kib(server.pid()).saturating_sub(before);
    assert!(grown < 8 * 1024, "the server's peak memory grew by {grown} KiB");
    let mut reply = String::new();
    BufReader::new(&stream).read_line(&mut reply).expect("read the error line");
    assert_eq!(reply, "error: line longer than 1024 bytes\n");
    assert_eq!(exchange(&path, b"after the flood\n"), b"AFTER THE FLOOD\n");
}

/// 50 slow clients, each sending a line one byte every 50 ms, do not delay a fast one: each
/// of its round trips takes well under 2 s, and every slow client still gets its replies.
#[test]
fn fifty_trickling_clients_do_not_delay_a_fast_one() {
    let dir = temp_dir();
    let (path, _server) = start(dir.path(), &["--idle-timeout-ms", "500"]);
    let slow: Vec<UnixStream> = (0..50).map(|_| connect(&path)).collect();
    let writers: Vec<UnixStream> = slow.iter().map(|s| s.try_clone().expect("clone")).collect();
    // One thread drives all 50: a byte to each in turn, then a pause. "ab\n" takes 150 ms,
    // well inside the 500 ms each line is allowed.
    let trickle = thread::spawn(move || {
        for byte in b"ab\n".repeat(8) {
            for mut writer in &writers {
                writer.write_all(&[byte]).expect("trickle a byte");
            }
            thread::sleep(Duration::from_millis(50));
        }
        for writer in &writers {
            writer.shutdown(std::net::Shutdown::Write).expect("half-close");
        }
    });
    let mut slowest = Duration::ZERO;
    while !trickle.is_finished() {
        let started = Instant::now();
        assert_eq!(exchange(&path, b"fast\n"), b"FAST\n");
        slowest = slowest.max(started.elapsed());
        thread::sleep(Duration::from_millis(20));
    }
    trickle.join().expect("the trickling thread");
    assert!(slowest < SLACK, "a fast round trip took {slowest:?}");
    for (i, stream) in slow.iter().enumerate() {
        assert_eq!(read_to_eof(stream), b"AB\n".repeat(8), "slow client {i}");
    }
}

/// A client that sends and never reads its replies fills both socket buffers; then the
/// server's write times out (the idle timeout, 300 ms), the connection ends and the thread is
/// free — while the client is still connected. Others are served all along.
#[test]
fn a_client_that_never_reads_is_cut_off_by_the_write_timeout() {
    let dir = temp_dir();
    let (path, mut server) = start(dir.path(), &["--idle-timeout-ms", "300"]);
    let greedy = connect(&path);
    greedy.set_write_timeout(Some(Duration::from_millis(200))).expect("set a write timeout");
    let line = [b"x".repeat(1023), b"\n".to_vec()].concat();
    let mut written = 0usize;
    loop {
        match (&greedy).write(&line) {
            Ok(n) => written += n,
            // A signal to this test process (another test's child exiting) ends a write that has
            // a timeout with EINTR, whatever SA_RESTART says: try again.
            Err(err) if err.kind() == ErrorKind::Interrupted => {}
            // Full (our write timed out), or already cut off by the server: either way, done.
            Err(err) if err.kind() == ErrorKind::WouldBlock => break,
            Err(err)
                if matches!(err.kind(), ErrorKind::BrokenPipe | ErrorKind::ConnectionReset) =>
            {
                break;
            }
            Err(err) => panic!("write to the server: {err}"),
        }
        assert!(written < 256 << 20, "wrote {written} bytes without the buffers filling");
    }
    assert_eq!(exchange(&path, b"not stuck\n"), b"NOT STUCK\n");
    server.wait_for_line("lesson05-server: connection 1: write: timed out");
    assert_eq!(exchange(&path, b"after\n"), b"AFTER\n");
    drop(greedy);
}

/// A client that reads its replies slowly but steadily (64 KiB every 100 ms) is cut off at the
/// idle timeout (300 ms) once one reply (1 MiB) takes longer than that to go out: the deadline
/// covers each exchange, a line in and its reply out. A timeout on each `write` would not do:
/// each wait for room is short, so the connection would be held for as long as the client
/// likes. Others are served meanwhile.
#[test]
fn a_client_that_reads_too_slowly_is_cut_off_at_the_idle_timeout() {
    let dir = temp_dir();
    let args = ["--idle-timeout-ms", "300", "--max-line", "2000000"];
    let (path, mut server) = start(dir.path(), &args);
    let slow = connect(&path);
    let line = [b"x".repeat(1 << 20), b"\n".to_vec()].concat().repeat(5);
    let writer = slow.try_clone().expect("clone the connection");
    // Its own thread: once the replies back up the server stops reading, and this blocks. It
    // ends with an error (EPIPE, a reset) when the server cuts the connection.
    let sender = thread::spawn(move || drop((&writer).write_all(&line)));
    let started = Instant::now();
    let (stop, stopped) = mpsc::channel::<()>();
    let reader = thread::spawn(move || {
        let mut chunk = vec![0; 64 << 10];
        while stopped.recv_timeout(Duration::from_millis(100)).is_err() {
            if matches!((&slow).read(&mut chunk), Ok(0) | Err(_)) {
                break;
            }
        }
    });
    assert_eq!(exchange(&path, b"meanwhile\n"), b"MEANWHILE\n");
    server.wait_for_line("lesson05-server: connection 1: write: timed out");
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_millis(300) + SLACK, "cut off after {elapsed:?}");
    drop(stop);
    reader.join().expect("the slow reader");
    sender.join().expect("the sender");
}

/// `--idle-timeout-ms` defaults to 30000 and `--max-line` to 65536.
#[test]
fn the_limits_default_to_30000_ms_and_65536_bytes() {
    let help = run(server(), &["--help"]);
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("--idle-timeout-ms <N>") && help.contains("[default: 30000]"), "{help}");
    assert!(help.contains("--max-line <BYTES>") && help.contains("[default: 65536]"), "{help}");
    let help = run(client(), &["--help"]);
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("--timeout-ms <N>") && help.contains("[default: 5000]"), "{help}");
}

/// A timeout of 0 ms would mean "no timeout" to the kernel: it is a usage error (exit 2).
#[test]
fn a_timeout_of_0_ms_is_a_usage_error() {
    let dir = temp_dir();
    let path = dir.path().join("lesson05.sock");
    for (bin, flag) in [(server(), "--idle-timeout-ms"), (client(), "--timeout-ms")] {
        let out = run(bin, &[flag, "0", path.to_str().expect("a UTF-8 temp path")]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{bin:?} {flag} 0: {stderr}");
        assert!(stderr.contains("a timeout of 0 ms is not a timeout"), "{stderr}");
    }
    assert!(!path.exists());
}

/// Lesson 02's probe has a deadline: a live server that does not accept (its backlog full)
/// is given about a second, then the new server refuses to start and leaves its file alone.
#[test]
fn the_probe_gives_up_on_a_server_that_does_not_accept_and_leaves_its_file() {
    let dir = temp_dir();
    let path = dir.path().join("lesson05.sock");
    let _hung = full_backlog(&path);
    let inode = fs::metadata(&path).expect("stat").ino();
    let started = Instant::now();
    let out = run(server(), &[path.to_str().expect("a UTF-8 temp path")]);
    assert_near("the server gave up", started.elapsed(), Duration::from_millis(1000));
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "lesson05-server: probe {}: is in use by a running server (it did not accept within \
             1000 ms)\n",
            path.display()
        )
    );
    assert_eq!(fs::metadata(&path).expect("stat").ino(), inode, "the socket file was replaced");
}

// The client: no server can hang it.

/// What `connect_within`'s comment says about Linux: a non-blocking `connect` to a listener
/// whose backlog is full fails at once with EAGAIN (not EINPROGRESS, as TCP would), a second
/// try fails the same way, and poll(2) reports the unconnected socket writable at once, so it
/// cannot be used to wait for room.
#[test]
fn a_nonblocking_connect_to_a_full_backlog_fails_at_once_and_poll_cannot_wait_for_it() {
    let dir = temp_dir();
    let path = dir.path().join("full.sock");
    let _hung = full_backlog(&path);
    let address = SocketAddrUnix::new(&path).expect("a socket address");
    let socket = nonblocking_socket();
    assert_eq!(rustix::net::connect(&socket, &address), Err(Errno::AGAIN));
    assert_eq!(rustix::net::connect(&socket, &address), Err(Errno::AGAIN), "a second try");
    let mut fds = [PollFd::new(&socket, PollFlags::OUT)];
    let timeout = Timespec { tv_sec: 0, tv_nsec: 300_000_000 };
    let started = Instant::now();
    assert_eq!(poll(&mut fds, Some(&timeout)), Ok(1));
    assert!(fds[0].revents().contains(PollFlags::OUT), "{:?}", fds[0].revents());
    assert!(started.elapsed() < Duration::from_millis(300), "poll waited: it would work");
    assert_eq!(rustix::net::connect(&socket, &address), Err(Errno::AGAIN), "after the poll");
}

/// A server whose backlog is full never accepts: the client gives up at its timeout,
/// `connect PATH: timed out`, exit 1.
#[test]
fn a_client_facing_a_full_backlog_exits_1_connect_timed_out() {
    let dir = temp_dir();
    let path = dir.path().join("full.sock");
    let _hung = full_backlog(&path);
    let (out, elapsed) = run_client(&path, &["--timeout-ms", "300", "hello"]);
    assert_near("the client gave up", elapsed, Duration::from_millis(300));
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(out.stdout, b"");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!("lesson05-client: connect {}: timed out\n", path.display())
    );
}

/// A server that accepts but never answers: the client gives up waiting for the reply at its
/// timeout, `read PATH: timed out`, exit 1.
#[test]
fn a_client_facing_a_server_that_never_answers_exits_1_read_timed_out() {
    let dir = temp_dir();
    let (done, wait) = mpsc::channel::<()>();
    let (path, fake) = fake_server(dir.path(), move |conn| {
        // Hold the connection, silent, until the test is over.
        let _ = wait.recv_timeout(DEADLINE);
        drop(conn);
    });
    let (out, elapsed) = run_client(&path, &["--timeout-ms", "300", "hello"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!("lesson05-client: read {}: timed out\n", path.display())
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(out.stdout, b"");
    assert_near("the client gave up", elapsed, Duration::from_millis(300));
    // Only now: had the client never connected, the fake server would still be in `accept`.
    done.send(()).expect("the fake server is waiting");
    fake.join().expect("fake server");
}

/// A server that accepts but never reads: once the buffers are full the client's write
/// blocks, and it gives up (`timed out`, exit 1) instead of blocking for good.
#[test]
fn a_client_facing_a_server_that_never_reads_gives_up() {
    let dir = temp_dir();
    let (done, wait) = mpsc::channel::<()>();
    let (path, fake) = fake_server(dir.path(), move |conn| {
        let _ = wait.recv_timeout(DEADLINE);
        drop(conn);
    });
    let started = Instant::now();
    let out = assert_cmd::Command::new(client())
        .args(["--timeout-ms", "300"])
        .arg(&path)
        .write_stdin(b"more than the socket buffers hold\n".repeat(200_000))
        .timeout(DEADLINE)
        .output()
        .expect("run the client");
    let elapsed = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let shown = path.display();
    assert!(
        stderr == format!("lesson05-client: write {shown}: timed out\n")
            || stderr == format!("lesson05-client: read {shown}: timed out\n"),
        "{stderr}"
    );
    // The write times out, then the wait for the replies the server owes.
    assert!(elapsed < Duration::from_millis(2 * 300) + SLACK, "gave up after {elapsed:?}");
    done.send(()).expect("the fake server is waiting");
    fake.join().expect("fake server");
}

/// At a terminal the timeout bounds the wait for a reply, not the user's pauses: a client
/// with a 100 ms timeout survives a 400 ms pause between lines.
#[test]
fn an_interactive_client_may_pause_longer_than_its_timeout() {
    let dir = temp_dir();
    let (path, _server) = start(dir.path(), &[]);
    let mut child = interactive_client(&path, &["--timeout-ms", "100"]);
    let mut stdin = child.0.stdin.take().expect("the client's stdin");
    let mut stdout = BufReader::new(child.0.stdout.take().expect("the client's stdout"));
    let mut reply = String::new();
    for line in ["first", "after a pause"] {
        writeln!(stdin, "{line}").expect("type a line");
        reply.clear();
        stdout.read_line(&mut reply).expect("read the reply");
        assert_eq!(reply, format!("{}\n", line.to_uppercase()));
        thread::sleep(Duration::from_millis(400));
    }
    drop(stdin);
    let status = child.wait();
    assert!(status.success(), "{status}: {}", stderr_of(&mut child));
}

/// At a terminal, when the server closes an idle connection, the client says so and exits 1
/// at once, without waiting for the next line to be typed.
#[test]
fn an_interactive_client_exits_at_once_when_the_server_closes_its_idle_connection() {
    let dir = temp_dir();
    let (path, _server) = start(dir.path(), &["--idle-timeout-ms", "300"]);
    let started = Instant::now();
    let mut child = interactive_client(&path, &["--timeout-ms", "100"]);
    let _stdin = child.0.stdin.take().expect("the client's stdin"); // open, and nothing typed
    let status = child.wait_within(Duration::from_millis(300) + SLACK);
    let status = status.unwrap_or_else(|| panic!("still running after {:?}", started.elapsed()));
    assert_eq!(status.code(), Some(1));
    assert_eq!(stderr_of(&mut child), "error: no complete line in 300 ms\n");
}

/// At a terminal, when the server closes the connection without a word, the client says so
/// and exits 1 at once, after printing the replies it got.
#[test]
fn an_interactive_client_exits_at_once_when_the_server_closes_without_a_word() {
    let dir = temp_dir();
    let (path, fake) = fake_server(dir.path(), |conn| {
        let mut line = String::new();
        BufReader::new(&conn).read_line(&mut line).expect("read a line");
        (&conn).write_all(line.to_uppercase().as_bytes()).expect("write");
    });
    let mut child = interactive_client(&path, &[]);
    let mut stdin = child.0.stdin.take().expect("the client's stdin");
    writeln!(stdin, "only one").expect("type a line");
    let status = child.wait_within(SLACK).expect("the client is still running");
    assert_eq!(status.code(), Some(1));
    let mut stdout = String::new();
    child.0.stdout.take().expect("stdout").read_to_string(&mut stdout).expect("stdout");
    assert_eq!(stdout, "ONLY ONE\n");
    assert_eq!(
        stderr_of(&mut child),
        format!(
            "lesson05-client: read {}: the server closed the connection before the input ended\n",
            path.display()
        )
    );
    drop(stdin);
    fake.join().expect("fake server");
}
