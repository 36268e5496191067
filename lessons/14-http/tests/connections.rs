//! Lesson 13's connection rules, said in HTTP: who may talk to the server (peer credentials,
//! checked per connection: 403), how many at once (`--max-connections`: 503 at once), what a
//! SIGTERM does to the connections open (the in-flight request finishes; idle ones close), and
//! an abstract name in place of a file.

mod common;

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{
    Http, client, curl, curl_as_nobody, have_curl, open_to_nobody, run_client, server, start,
};
use rustix::event::{PollFd, PollFlags, Timespec, poll};
use rustix::process::Signal;
use uds_test_support::{
    DEADLINE, Server, abstract_name, as_nobody, have_tool, is_root, runnable_by_nobody,
};

/// "At once": generous for a loaded CI machine, far below the grace periods set here.
const AT_ONCE: Duration = Duration::from_secs(2);

/// A peer whose uid is not allowed (the lesson's client run as `nobody`, the socket's mode
/// letting it connect) gets 403 and the reason as the body; the client prints it on stderr and
/// exits 1. curl as `nobody` sees the same response.
#[test]
fn a_refused_uid_gets_403_with_the_reason() {
    let Some((_shared, copy)) = runnable_by_nobody(&client()) else { return };
    let (_dir, path, mut server) = start(&["--mode", "0666"]);
    open_to_nobody(&path);
    let out = as_nobody(&copy).arg(&path).arg("hello").output().expect("run the client");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(out.stdout.is_empty(), "{:?}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(stderr, "error: uid 65534 is not allowed\n");
    server.wait_for_line_containing("refused uid 65534");
    if have_curl() {
        let reply = curl_as_nobody(&path, &["http://localhost/upper", "-d", "hi"]);
        assert_eq!((reply.status, reply.body.as_str()), (403, "error: uid 65534 is not allowed\n"));
    }
    // Root is allowed by default, on a connection of its own.
    let mut conn = Http::connect(&path);
    assert_eq!(conn.health().body, "ok");
}

/// A refused uid whose client writes its whole request, a body of 600 000 bytes, before it
/// reads (Python's `sendall`, then `recv`, as `nobody`): the 403 is decided before the body
/// is read, and the server reads and discards the rest before it closes, so the client reads
/// the 403 instead of a broken pipe.
#[test]
fn a_refused_uid_that_sends_a_whole_large_request_first_reads_the_403() {
    if !is_root()
        || !have_tool("setpriv", "apt-get install -y util-linux")
        || !have_tool("python3", "apt-get install -y python3")
    {
        return;
    }
    let (_dir, path, _server) = start(&["--mode", "0666"]);
    open_to_nobody(&path);
    let script = "import socket, sys\n\
        s = socket.socket(socket.AF_UNIX)\n\
        s.settimeout(10)\n\
        s.connect(sys.argv[1])\n\
        s.sendall(b'POST /upper HTTP/1.1\\r\\nHost: x\\r\\nContent-Length: 600000\\r\\n\\r\\n' \
        + b'a' * 600000)\n\
        reply = b''\n\
        while chunk := s.recv(65536):\n    reply += chunk\n\
        print(reply.split(b'\\r\\n')[0].decode())\n";
    // The system's python3: one on root's PATH may be out of nobody's reach (pyenv's shims
    // under /root, say).
    let out = as_nobody(Path::new("python3"))
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .args(["-c", script])
        .arg(&path)
        .output()
        .expect("run python3");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "HTTP/1.1 403 Forbidden\n", "{stderr}");
}

/// Past `--max-connections` a new connection is answered 503 with `error: busy...` at once,
/// before it sends a request; the connections held meanwhile are served, and once one closes
/// there is room again.
#[test]
fn past_max_connections_a_client_gets_503_at_once_while_held_ones_are_served() {
    let (_dir, path, _server) = start(&["--max-connections", "2"]);
    let mut first = Http::connect(&path);
    let mut second = Http::connect(&path);
    assert_eq!(first.health().body, "ok");
    assert_eq!(second.health().body, "ok");
    // Sends nothing: the answer cannot be waiting for a request.
    let started = Instant::now();
    let mut third = Http::connect(&path);
    third.stream.set_read_timeout(Some(AT_ONCE)).expect("set a read timeout");
    let busy = third.reply();
    assert!(started.elapsed() < AT_ONCE);
    assert_eq!(busy.status, 503, "{busy:?}");
    assert!(busy.body.starts_with("error: busy"), "{busy:?}");
    assert!(third.closed_within(DEADLINE), "the busy connection stayed open");
    if have_curl() {
        let reply = curl(&path, &["http://localhost/upper", "-d", "hi"]);
        assert_eq!(reply.status, 503, "{reply:?}");
        assert!(reply.body.starts_with("error: busy"), "{reply:?}");
    }
    assert_eq!(first.health().body, "ok");
    assert_eq!(second.health().body, "ok");
    drop(first);
    // The server notices the close and makes room; the next client is served.
    let end = Instant::now() + DEADLINE;
    loop {
        let mut next = Http::connect(&path);
        if next.health().status == 200 {
            break;
        }
        assert!(Instant::now() < end, "no room after a held connection closed");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A client that sends request after request and never reads a response: once the socket's
/// buffers are full the server's write waits for room, and after `--idle-timeout-ms` of that
/// (hyper has no write timeout: the server's own) the connection is closed. With
/// `--max-connections 1` the next client is then served, not answered 503.
#[test]
fn a_client_that_never_reads_is_closed_after_the_idle_timeout_and_frees_its_slot() {
    let idle = Duration::from_millis(500);
    let (_dir, path, _server) = start(&["--idle-timeout-ms", "500", "--max-connections", "1"]);
    let greedy = UnixStream::connect(&path).expect("connect");
    greedy.set_write_timeout(Some(Duration::from_millis(200))).expect("set a write timeout");
    let body = "a".repeat(64 << 10);
    let request = format!("POST /upper HTTP/1.1\r\nHost: x\r\nContent-Length: 65536\r\n\r\n{body}");
    let mut written = 0usize;
    // Until our write times out (the server stopped reading: its responses have no room) or
    // fails (the server already closed).
    while let Ok(n) = (&greedy).write(request.as_bytes()) {
        written += n;
        assert!(written < 256 << 20, "wrote {written} bytes and the buffers are not full");
    }
    let stalled = Instant::now();
    let mut hangup = [PollFd::new(&greedy, PollFlags::empty())];
    let timeout = Timespec::try_from(idle + AT_ONCE).expect("a timeout");
    let _ = poll(&mut hangup, Some(&timeout));
    let waited = stalled.elapsed();
    assert!(hangup[0].revents().contains(PollFlags::HUP), "still open after {waited:?}");
    let end = Instant::now() + AT_ONCE;
    loop {
        let mut next = Http::connect(&path);
        let status = next.health().status;
        if status == 200 {
            break;
        }
        assert!(Instant::now() < end, "{status}: the closed connection's slot was not freed");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A client that writes its whole request before it reads (as many do), with a body over
/// `--max-body`: the 413 is decided from the Content-Length, and the body is never read. The
/// server shuts down its side and reads and discards the rest before it closes, so the client's
/// write completes and it reads the 413; a plain close would make its write fail (EPIPE) or
/// its read a reset.
#[test]
fn a_client_that_sends_a_whole_oversized_request_before_reading_gets_the_413() {
    let (_dir, path, _server) = start(&["--max-body", "1000"]);
    let head = "POST /upper HTTP/1.1\r\nHost: x\r\nContent-Length: 600000\r\n\r\n";
    let request = [head.as_bytes(), &[b'a'; 600_000]].concat();
    for i in 0..5 {
        let mut conn = Http::connect(&path);
        if let Err(err) = conn.stream.write_all(&request) {
            panic!("request {i}: the server closed before reading it: {err}");
        }
        assert_eq!(conn.reply().status, 413, "request {i}");
    }
}

/// SIGTERM while a slow chunked upload is in flight, a keep-alive connection is idle between
/// requests and another has sent nothing yet: the idle ones are closed at once, the upload
/// finishes and gets its 200, then the server removes its socket and exits 0.
#[test]
fn sigterm_finishes_an_in_flight_request_and_closes_idle_connections_at_once() {
    let (_dir, path, mut server) = start(&["--grace-ms", "60000"]);
    let mut idle = Http::connect(&path);
    assert_eq!(idle.health().body, "ok");
    let mut fresh = Http::connect(&path);
    let mut upload = Http::connect(&path);
    let head = "POST /upper HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n";
    upload.send(format!("{head}Expect: 100-continue\r\n\r\n").as_bytes());
    // hyper's go-ahead comes once the service reads the body: the request is in flight.
    assert_eq!(upload.reply().status, 100);
    upload.send(b"6\r\nin fli\r\n");
    server.signal(Signal::TERM);
    server.wait_for_line("lesson14-server: SIGTERM: shutting down");
    assert!(idle.closed_within(AT_ONCE), "the idle keep-alive connection stayed open");
    assert!(fresh.closed_within(AT_ONCE), "the connection with no request stayed open");
    upload.send(b"3\r\nght\r\n0\r\n\r\n");
    let reply = upload.reply();
    assert_eq!((reply.status, reply.body.as_str()), (200, "IN FLIGHT"), "{reply:?}");
    assert_eq!(reply.header("connection"), Some("close"), "{reply:?}");
    assert!(upload.closed_within(AT_ONCE));
    let (status, output) = server.finish();
    assert_eq!(status.code(), Some(0), "{output}");
    assert!(!path.exists(), "the socket file is still there:\n{output}");
}

/// A request that is already in the socket when SIGTERM comes is answered, even when the
/// connection's task had not run yet: the server is stopped (SIGSTOP) while twenty clients
/// connect and send a complete request, then gets SIGTERM and SIGCONT, so it accepts them and
/// sees the signal in one go. Every connection it accepted gets its 200; the others, still
/// queued when the acceptor stopped, are reset with the listening socket. Which comes first
/// is the runtime's choice, so five rounds (with tokio-util's `run_until_cancelled`, which
/// returns at once on a token already cancelled, about half of them failed).
#[test]
fn sigterm_answers_requests_already_sent_on_connections_just_accepted() {
    for round in 1..=5 {
        let (_dir, path, server) = start(&["--workers", "1", "--grace-ms", "60000"]);
        // Serve one first: the runtime is up and waiting in `accept`.
        assert_eq!(Http::connect(&path).health().body, "ok");
        server.signal(Signal::STOP);
        let mut conns: Vec<Http> = (0..20).map(|_| Http::connect(&path)).collect();
        for conn in &mut conns {
            conn.send(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n");
        }
        server.signal(Signal::TERM);
        server.signal(Signal::CONT);
        let replies = conns.iter_mut().map(Http::try_reply);
        let answered = replies.filter(|reply| reply.as_ref().is_some_and(|r| r.status == 200));
        let answered = answered.count();
        let (status, output) = server.finish();
        assert_eq!(status.code(), Some(0), "{output}");
        // Not counting the first connection.
        let accepted = output.matches(": accepted from uid").count() - 1;
        assert_eq!(answered, accepted, "round {round}: {accepted} accepted:\n{output}");
    }
}

/// Lesson 06's abstract names still work: HTTP on `@name`, reached by the lesson's client and
/// by curl's `--abstract-unix-socket`.
#[test]
fn an_abstract_name_serves_http_to_curl_and_the_client() {
    let name = abstract_name("http");
    let at = format!("@{name}");
    let _server = Server::start(&server(), Path::new(&at), &[&at]);
    let (code, stdout, stderr) = run_client(&[at.as_str(), "by name"]);
    assert_eq!((code, stdout.as_str()), (Some(0), "BY NAME\n"), "{stderr}");
    if have_curl() {
        let max_time = DEADLINE.as_secs().to_string();
        let out = Command::new("curl")
            .args(["-sS", "--max-time", &max_time, "--abstract-unix-socket", &name])
            .args(["http://localhost/upper", "-d", "by name"])
            .output()
            .expect("run curl");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "BY NAME", "{out:?}");
    }
}
