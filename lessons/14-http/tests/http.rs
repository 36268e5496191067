//! The one idea: HTTP/1.1 on the Unix socket. curl (`--unix-socket`) is the outside client; a
//! bare connection does what curl will not (hold a connection idle, stop in the middle of a body).

mod common;

use std::time::{Duration, Instant};

use common::{Http, curl, have_curl, start};
use uds_test_support::wait_until;

/// What `curl -d` sends and the server answers, upper-cased, as `text/plain`.
#[test]
fn curl_gets_the_body_upper_cased() {
    if !have_curl() {
        return;
    }
    let (_dir, path, _server) = start(&[]);
    let reply = curl(&path, &["http://localhost/upper", "-d", "hello, unix domain sockets"]);
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.body, "HELLO, UNIX DOMAIN SOCKETS");
    assert_eq!(reply.header("content-type"), Some("text/plain"), "{reply:?}");
}

/// `GET /health` answers exactly `ok`; the host name in the URL is only the Host header.
#[test]
fn get_health_answers_exactly_ok() {
    if !have_curl() {
        return;
    }
    let (_dir, path, _server) = start(&[]);
    for url in ["http://localhost/health", "http://any-name-at-all/health"] {
        let reply = curl(&path, &[url]);
        assert_eq!((reply.status, reply.body.as_str()), (200, "ok"), "{url}: {reply:?}");
        assert_eq!(reply.header("content-type"), Some("text/plain"), "{reply:?}");
    }
}

/// A path the server has no route for is 404; the server keeps serving.
#[test]
fn an_unknown_path_is_404() {
    if !have_curl() {
        return;
    }
    let (_dir, path, _server) = start(&[]);
    for url in ["http://localhost/", "http://localhost/upper/more", "http://localhost/nothing"] {
        assert_eq!(curl(&path, &[url]).status, 404, "{url}");
    }
    assert_eq!(curl(&path, &["http://localhost/health"]).body, "ok");
}

/// Another method on a known path is 405, and `Allow` names the one that works.
#[test]
fn another_method_on_a_known_path_is_405_with_allow() {
    if !have_curl() {
        return;
    }
    let (_dir, path, _server) = start(&[]);
    let get_upper = curl(&path, &["http://localhost/upper"]);
    assert_eq!((get_upper.status, get_upper.header("allow")), (405, Some("POST")), "{get_upper:?}");
    let post_health = curl(&path, &["http://localhost/health", "-d", "x"]);
    assert_eq!((post_health.status, post_health.header("allow")), (405, Some("GET")));
    let delete = curl(&path, &["-X", "DELETE", "http://localhost/upper"]);
    assert_eq!((delete.status, delete.header("allow")), (405, Some("POST")), "{delete:?}");
}

/// A body of `--max-body` bytes is answered; one byte more is 413, told by its Content-Length
/// before the body is read.
#[test]
fn a_body_over_max_body_is_413_by_its_content_length() {
    if !have_curl() {
        return;
    }
    let (_dir, path, _server) = start(&["--max-body", "1000"]);
    let fits = "a".repeat(1000);
    let reply = curl(&path, &["http://localhost/upper", "-d", &fits]);
    assert_eq!((reply.status, reply.body), (200, fits.to_uppercase()));
    let over = "a".repeat(1001);
    let reply = curl(&path, &["http://localhost/upper", "-d", &over]);
    assert_eq!(reply.status, 413, "{reply:?}");
    assert!(reply.body.starts_with("error: "), "{reply:?}");
    // Announced, never sent: the answer comes before a single byte of the body.
    let mut conn = Http::connect(&path);
    conn.send(b"POST /upper HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5000000\r\n\r\n");
    assert_eq!(conn.reply().status, 413);
}

/// A chunked body carries no length: the server counts while it reads, and answers 413 as soon
/// as the count passes `--max-body`, without waiting for the end of the body.
#[test]
fn a_chunked_body_over_max_body_is_413_while_it_is_read() {
    let (_dir, path, _server) = start(&["--max-body", "1000"]);
    let mut conn = Http::connect(&path);
    conn.send(b"POST /upper HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n");
    let chunk = format!("1f4\r\n{}\r\n", "a".repeat(500)); // 0x1f4 = 500 bytes
    conn.send(chunk.as_bytes());
    conn.send(chunk.as_bytes());
    conn.send(chunk.as_bytes()); // 1500 bytes so far, and the body has not ended
    let reply = conn.reply();
    assert_eq!(reply.status, 413, "{reply:?}");
    // curl's chunked upload, under and over the limit.
    if !have_curl() {
        return;
    }
    let chunked = ["-H", "Transfer-Encoding: chunked", "http://localhost/upper"];
    let fits = curl(&path, &[&chunked[..], &["-d", &"b".repeat(1000)]].concat());
    assert_eq!((fits.status, fits.body), (200, "B".repeat(1000)));
    let over = curl(&path, &[&chunked[..], &["-d", &"b".repeat(1001)]].concat());
    assert_eq!(over.status, 413, "{over:?}");
}

/// The default `--max-body` is 1048576 bytes (1 MiB).
#[test]
fn the_default_max_body_is_one_mebibyte() {
    let (_dir, path, _server) = start(&[]);
    for (length, status) in [(1_048_576, 200), (1_048_577, 413)] {
        let mut conn = Http::connect(&path);
        let head = format!("POST /upper HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n\r\n");
        conn.send(head.as_bytes());
        if status == 200 {
            conn.send(&vec![b'a'; length]);
        }
        let reply = conn.reply();
        assert_eq!(reply.status, status, "{length} bytes: {}", reply.head);
    }
}

/// A request line or a header line longer than `--max-line` is 431, with the reason; lines up
/// to the limit are served.
#[test]
fn a_line_over_max_line_is_431() {
    if !have_curl() {
        return;
    }
    let (_dir, path, _server) = start(&["--max-line", "200"]);
    // `X-Pad: ` and the value: 7 + 193 = 200 bytes, not counting the line's CRLF.
    let fits = format!("X-Pad: {}", "p".repeat(193));
    let reply = curl(&path, &["http://localhost/health", "-H", &fits]);
    assert_eq!(reply.status, 200, "{reply:?}");
    let over = format!("X-Pad: {}", "p".repeat(194));
    let reply = curl(&path, &["http://localhost/health", "-H", &over]);
    assert_eq!(reply.status, 431, "{reply:?}");
    assert_eq!(reply.body, "error: a header line is longer than 200 bytes\n");
    // The request line: `GET /health?QUERY HTTP/1.1`.
    let query = "q".repeat(200);
    let reply = curl(&path, &[&format!("http://localhost/health?{query}")]);
    assert_eq!(reply.status, 431, "{reply:?}");
    assert_eq!(reply.body, "error: the request line is longer than 200 bytes\n");
}

/// The request line is measured as it was sent: an absolute-form target (`GET http://host/...`,
/// as a client talking to a proxy sends it) counts whole, scheme and host included.
#[test]
fn an_absolute_form_request_line_is_measured_whole() {
    let (_dir, path, _server) = start(&["--max-line", "200"]);
    // `GET ` + `/health?` and 170 bytes of query + ` HTTP/1.1`: 191 bytes from the path on,
    // and 16 more for `http://localhost`: 207.
    let target = format!("http://localhost/health?{}", "q".repeat(170));
    let mut conn = Http::connect(&path);
    conn.send(format!("GET {target} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes());
    let reply = conn.reply();
    assert_eq!(reply.status, 431, "{reply:?}");
    assert_eq!(reply.body, "error: the request line is longer than 200 bytes\n");
}

/// A head too big as a whole (many lines each under the limit) is refused by hyper, 431 too,
/// before it could fill the server's memory.
#[test]
fn a_head_too_big_as_a_whole_is_431() {
    let (_dir, path, _server) = start(&["--max-line", "100"]);
    let mut conn = Http::connect(&path);
    let mut head = String::from("GET /health HTTP/1.1\r\nHost: localhost\r\n");
    for n in 0..200 {
        head.push_str(&format!("X-Pad-{n}: {}\r\n", "p".repeat(80)));
    }
    // Sent without its final empty line: the answer cannot be waiting for the end of the head.
    conn.send(head.as_bytes());
    let reply = conn.reply();
    assert_eq!(reply.status, 431, "{reply:?}");
}

/// A keep-alive connection serves request after request; once idle for `--idle-timeout-ms` it
/// is closed, and not before. A connection that never sends a request is closed the same way.
#[test]
fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let idle = Duration::from_millis(500);
    let (_dir, path, server) = start(&["--idle-timeout-ms", "500"]);
    let mut kept = Http::connect(&path);
    let silent = Http::connect(&path);
    let since = Instant::now();
    for _ in 0..3 {
        assert_eq!(kept.health().body, "ok");
    }
    let idle_from = Instant::now();
    assert!(kept.closed_within(Duration::from_secs(5)), "the idle connection stayed open");
    let waited = idle_from.elapsed();
    assert!(waited >= idle - Duration::from_millis(50), "closed after {waited:?}, idle {idle:?}");
    let mut silent = silent;
    assert!(silent.closed_within(Duration::from_secs(5)), "the silent connection stayed open");
    assert!(since.elapsed() >= idle - Duration::from_millis(50));
    // Closed for being idle, and said so (in either order): the kept one after three requests.
    let why = "no request in 500 ms, closed; requests:";
    let logged = [format!("connection 1: {why} 3\n"), format!("connection 2: {why} 0\n")];
    wait_until("both closes are logged", || logged.iter().all(|l| server.output().contains(l)));
}
