//! Exercise checks for lesson 07 (EXERCISES.md). A plain `cargo test` skips them (`#[ignore]`);
//! `cargo run -- check 7` runs them against your binaries, `--solution` against the reference ones.

use std::env;
use std::ffi::OsStr;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use assert_cmd::cargo::cargo_bin;
use rustix::process::getuid;
use uds_test_support::{
    ChildGuard, Conn, DEADLINE, Server, abstract_name, as_nobody, runnable_by_nobody, temp_dir,
};

/// The server under test: `UDS_SERVER` (an absolute path), else this lesson's own.
fn server() -> PathBuf {
    env::var_os("UDS_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| cargo_bin!("lesson12-server").to_owned())
}

/// The client under test: `UDS_CLIENT` (an absolute path), else this lesson's own.
fn client() -> PathBuf {
    env::var_os("UDS_CLIENT")
        .map(PathBuf::from)
        .unwrap_or_else(|| cargo_bin!("lesson12-client").to_owned())
}

/// How much later than it should something may happen on a loaded machine and still count as
/// "at once" or "after the pause".
const SLACK: Duration = Duration::from_secs(2);

// Exercise 1: one user may not take every connection.

/// How soon a busy server must have said so: it answers at accept, without waiting on anyone.
const BUSY_WITHIN: Duration = Duration::from_secs(1);

/// Start the server under test on `path` with `extra` flags after the path. As shipped it
/// does not know `--max-per-uid`: it exits 2 with clap's message, and this panics with it.
fn start(path: &Path, extra: &[&str]) -> Server {
    let mut args = vec![path.to_str().expect("a UTF-8 temp path")];
    args.extend(extra);
    Server::start(&server(), path, &args)
}

/// Send `line` on `conn` and read the reply line. A failed write is no failure here: a server
/// that turns us away may have closed before our line arrived, and its `error: ` line is still
/// there to read.
fn reply(conn: &mut Conn, line: &str) -> String {
    let mut stream = conn.stream();
    let _ = stream.write_all(format!("{line}\n").as_bytes());
    conn.recv_line()
}

/// A new connection that is served: `line` comes back upper-cased. It stays open (held) for
/// as long as the caller keeps it.
fn served(mut conn: Conn, line: &str) -> Conn {
    let want = format!("{}\n", line.to_ascii_uppercase());
    assert_eq!(reply(&mut conn, line), want, "not served");
    conn
}

/// A new connection, refused at once: the server says `want` without waiting for a line
/// from us, within [`BUSY_WITHIN`], and closes.
fn refused_busy(conn: Conn, want: &str) {
    let started = Instant::now();
    conn.stream().set_read_timeout(Some(BUSY_WITHIN)).expect("set a read timeout");
    let mut reader = BufReader::new(conn.stream());
    let mut line = String::new();
    if let Err(err) = reader.read_line(&mut line) {
        panic!(
            "the server said nothing within {BUSY_WITHIN:?} ({err}): the connection was \
             taken (queued or served), not answered {want:?}"
        );
    }
    let waited = started.elapsed();
    assert_eq!(line, want, "the answer to a connection past the limit");
    assert!(waited < BUSY_WITHIN, "answered after {waited:?}, not at once");
    let mut rest = Vec::new();
    let end = reader.read_to_end(&mut rest);
    assert!(matches!(end, Ok(0)), "not closed after the busy line: {end:?}, then {rest:?}");
}

/// A new connection to `path` served with `line`, trying again while the server still says
/// busy, for up to [`SLACK`]: a connection that just closed gives its place back a moment after
/// its client reads EOF (the worker closes the stream, then drops the rest of the job).
fn served_soon(path: &Path, line: &str) -> Conn {
    let end = Instant::now() + SLACK;
    loop {
        let mut conn = Conn::connect(path);
        let reply = reply(&mut conn, line);
        if !reply.starts_with("error: busy") {
            assert_eq!(reply, format!("{}\n", line.to_ascii_uppercase()), "not served");
            return conn;
        }
        assert!(Instant::now() < end, "still {reply:?} {SLACK:?} after a connection closed");
        thread::sleep(Duration::from_millis(10));
    }
}

/// With `--max-per-uid 2`, a uid's two held connections are served and its third is answered
/// `error: busy: uid U has 2 connections` at once, closed and logged; the two are still served;
/// once one of them closes, the uid gets a connection again.
#[test]
#[ignore = "exercise: cargo run -- check 7"]
fn ex1_a_uid_at_its_limit_is_answered_busy_until_one_of_its_connections_closes() {
    let dir = temp_dir();
    let path = dir.path().join("lesson12.sock");
    let mut server = start(&path, &["--max-per-uid", "2", "--workers", "4"]);
    // Every connection the test makes is its own uid's: 0 when run as root, as CI is.
    let uid = getuid().as_raw();
    let mut first = served(Conn::connect(&path), "first");
    let mut second = served(Conn::connect(&path), "second");
    refused_busy(Conn::connect(&path), &format!("error: busy: uid {uid} has 2 connections\n"));
    server.wait_for_line(&format!(
        "lesson12-server: connection 3: busy: uid {uid} has 2 connections"
    ));
    assert_eq!(first.ask("still served"), "STILL SERVED\n");
    // A clean close: our EOF, then the server's.
    second.shutdown_write();
    assert!(second.at_eof(), "more from the server after our EOF");
    let mut fourth = served_soon(&path, "fourth");
    assert_eq!(fourth.ask("and again"), "AND AGAIN\n");
}

/// `--max-per-uid 5` lets a uid hold exactly 5 connections (the 6th is busy); without the flag
/// there is no limit: a 6th is served as well.
#[test]
#[ignore = "exercise: cargo run -- check 7"]
fn ex1_max_per_uid_n_allows_exactly_n_and_without_it_there_is_no_limit() {
    let uid = getuid().as_raw();
    for limited in [true, false] {
        let dir = temp_dir();
        let path = dir.path().join("lesson12.sock");
        let flags: &[&str] = if limited { &["--max-per-uid", "5"] } else { &[] };
        let _server = start(&path, flags);
        // Held open while the sixth connects.
        let _held: Vec<Conn> =
            (1..=5).map(|n| served(Conn::connect(&path), &format!("held {n}"))).collect();
        if limited {
            refused_busy(
                Conn::connect(&path),
                &format!("error: busy: uid {uid} has 5 connections\n"),
            );
        } else {
            served(Conn::connect(&path), "a sixth, with no --max-per-uid");
        }
    }
}

/// The limit is per uid: while root (the test) holds its 2 connections and is answered busy,
/// `nobody` (allowed with `--allow-uid 65534`) is served. Needs root to switch to `nobody`:
/// skipped outside CI when not root.
#[test]
#[ignore = "exercise: cargo run -- check 7"]
fn ex1_another_uid_is_served_while_one_uid_is_at_its_limit() {
    // The lesson's client, run as `nobody`: this exercise changes only the server.
    let Some((_bin_dir, bin)) = runnable_by_nobody(&client()) else { return };
    // An abstract name: no file mode or directory keeps `nobody` out, only the credential check.
    let name = abstract_name("per-uid");
    let at = format!("@{name}");
    let flags = [&at, "--max-per-uid", "2", "--workers", "4", "--allow-uid", "65534"];
    let mut server = Server::start(&server(), Path::new(&at), &flags);
    let connect = || Conn::try_connect_abstract(&name).expect("connect to the name");
    let _first = served(connect(), "first");
    let _second = served(connect(), "second");
    refused_busy(connect(), "error: busy: uid 0 has 2 connections\n");
    let mut as_nobody = as_nobody(&bin);
    as_nobody.args([at.as_str(), "hello from nobody"]);
    let out = assert_cmd::Command::from_std(as_nobody).timeout(DEADLINE).output();
    let out = out.unwrap_or_else(|err| panic!("run the client as nobody: {err}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "HELLO FROM NOBODY\n", "stderr: {stderr}");
    assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
    server.wait_for_line_containing("accepted from uid 65534");
}

// Exercise 2: the client tries a busy server again.

/// What a lesson 07 server answers past `--max-connections`.
const BUSY: &str = "error: busy, try again later\n";

/// A fake lesson 07 server at `<dir>/busy.sock`: its first `busy` connections are answered
/// [`BUSY`] at once and closed without reading, as the real server does when it is full; the
/// ones after are served (each line upper-cased, then EOF at the client's EOF). It notes when
/// it accepted each. It stops when told to or dropped, and after [`DEADLINE`] in any case;
/// every read and write has that deadline too.
struct BusyServer {
    path: PathBuf,
    accepted: Arc<Mutex<Vec<Instant>>>,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl BusyServer {
    fn start(dir: &Path, busy: usize) -> BusyServer {
        let path = dir.join("busy.sock");
        let listener = UnixListener::bind(&path).expect("bind");
        // Non-blocking, so that the thread sees `stop` however many clients come.
        listener.set_nonblocking(true).expect("a non-blocking listener");
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (times, stopped) = (Arc::clone(&accepted), Arc::clone(&stop));
        let thread = thread::spawn(move || {
            let end = Instant::now() + DEADLINE;
            while !stopped.load(Ordering::SeqCst) && Instant::now() < end {
                let conn = match listener.accept() {
                    Ok((conn, _)) => conn,
                    Err(err) if err.kind() == ErrorKind::WouldBlock => {
                        thread::sleep(Duration::from_millis(2));
                        continue;
                    }
                    Err(err) => panic!("fake server: accept: {err}"),
                };
                let n = {
                    let mut times = times.lock().expect("the accept times");
                    times.push(Instant::now());
                    times.len()
                };
                // Linux's accept(2) does not pass O_NONBLOCK on; some systems do.
                conn.set_nonblocking(false).expect("a blocking connection");
                conn.set_read_timeout(Some(DEADLINE)).expect("set a read timeout");
                conn.set_write_timeout(Some(DEADLINE)).expect("set a write timeout");
                if n <= busy {
                    // Gone already is fine: the client may not wait for the line.
                    let _ = (&conn).write_all(BUSY.as_bytes());
                } else {
                    upper_case_until_eof(&conn);
                }
            }
        });
        BusyServer { path, accepted, stop, thread: Some(thread) }
    }

    /// Stop the fake and return when it accepted each connection; its panic, if any, is ours.
    fn stop(mut self) -> Vec<Instant> {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take()
            && let Err(panic) = thread.join()
        {
            std::panic::resume_unwind(panic);
        }
        self.accepted.lock().expect("the accept times").clone()
    }
}

impl Drop for BusyServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join(); // a failing test is already on its way out: no second panic
        }
    }
}

/// Serve one connection as the lesson's server does: each line back upper-cased, until EOF.
fn upper_case_until_eof(conn: &UnixStream) {
    let mut reader = BufReader::new(conn);
    let mut line = Vec::new();
    while reader.read_until(b'\n', &mut line).expect("fake server: read") > 0 {
        line.make_ascii_uppercase();
        (&*conn).write_all(&line).expect("fake server: write");
        line.clear();
    }
}

/// Run the client under test with `args`, `stdin` as its input; wait (with [`DEADLINE`]) for
/// it to exit. Its exit code, stdout and stderr.
fn run_client(args: &[&OsStr], stdin: &[u8]) -> (Option<i32>, String, String) {
    let child = Command::new(client())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the client");
    let mut child = ChildGuard(child);
    let mut input = child.0.stdin.take().expect("piped stdin");
    // A few bytes: the pipe holds them all, so this never waits on the client.
    input.write_all(stdin).expect("write the client's stdin");
    drop(input);
    let status = child
        .wait_within(DEADLINE)
        .unwrap_or_else(|| panic!("the client {args:?} was still running after {DEADLINE:?}"));
    let read = |pipe: &mut dyn Read| {
        let mut text = String::new();
        pipe.read_to_string(&mut text).expect("read the client's output");
        text
    };
    let stdout = read(child.0.stdout.as_mut().expect("piped stdout"));
    let stderr = read(child.0.stderr.as_mut().expect("piped stderr"));
    (status.code(), stdout, stderr)
}

/// The pauses between one connection and the next.
fn pauses(accepted: &[Instant]) -> Vec<Duration> {
    accepted.windows(2).map(|pair| pair[1] - pair[0]).collect()
}

/// `--retry-busy 3` against a server busy twice: the client connects three times, pausing
/// at least 100 ms and then at least 200 ms (not much more), and is served: `HELLO`, exit 0.
#[test]
#[ignore = "exercise: cargo run -- check 7"]
fn ex2_the_client_tries_a_busy_server_again_and_is_served() {
    let dir = temp_dir();
    let fake = BusyServer::start(dir.path(), 2);
    let args = [fake.path.as_os_str(), "--retry-busy".as_ref(), "3".as_ref(), "hello".as_ref()];
    let (code, stdout, stderr) = run_client(&args, b"");
    let accepted = fake.stop();
    assert_eq!((code, stdout.as_str()), (Some(0), "HELLO\n"), "stderr: {stderr}");
    assert_eq!(accepted.len(), 3, "connections: two busy, then one served");
    let pauses = pauses(&accepted);
    let (first, second) = (pauses[0], pauses[1]);
    assert!(first >= Duration::from_millis(100), "tried again after {first:?}, not 100 ms");
    assert!(second >= Duration::from_millis(200), "then after {second:?}: 200 ms, doubled");
    assert!(second < Duration::from_millis(200) + SLACK, "then after {second:?}: 200 ms");
}

/// `--retry-busy 1` against a server busy twice: two connections, then the client gives up as
/// the lesson's does at once: the busy line on stderr, nothing on stdout, exit 1.
#[test]
#[ignore = "exercise: cargo run -- check 7"]
fn ex2_after_n_retries_the_client_gives_up_with_the_busy_line() {
    let dir = temp_dir();
    let fake = BusyServer::start(dir.path(), 2);
    let args = [fake.path.as_os_str(), "--retry-busy".as_ref(), "1".as_ref(), "hello".as_ref()];
    let (code, stdout, stderr) = run_client(&args, b"");
    let accepted = fake.stop();
    assert_eq!((code, stdout.as_str()), (Some(1), ""), "stderr: {stderr}");
    assert!(stderr.ends_with(BUSY), "stderr must end with {BUSY:?}: {stderr:?}");
    assert_eq!(accepted.len(), 2, "connections: the first try and one retry");
    let pause = pauses(&accepted)[0];
    assert!(pause >= Duration::from_millis(100), "tried again after {pause:?}, not 100 ms");
}

/// Lines from stdin are not retried, whatever `--retry-busy` says: they were read, and cannot
/// be sent again. One connection, the busy line on stderr, exit 1.
#[test]
#[ignore = "exercise: cargo run -- check 7"]
fn ex2_lines_from_stdin_are_never_retried() {
    let dir = temp_dir();
    let fake = BusyServer::start(dir.path(), 1);
    let args = [fake.path.as_os_str(), "--retry-busy".as_ref(), "3".as_ref()];
    let (code, stdout, stderr) = run_client(&args, b"typed once\n");
    let accepted = fake.stop();
    assert_eq!((code, stdout.as_str()), (Some(1), ""), "stderr: {stderr}");
    assert!(stderr.ends_with(BUSY), "stderr must end with {BUSY:?}: {stderr:?}");
    assert_eq!(accepted.len(), 1, "connections: stdin must not be retried");
}
