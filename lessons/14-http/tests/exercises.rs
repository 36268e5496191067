//! Exercise checks for lesson 14 (EXERCISES.md). A plain `cargo test` skips them (`#[ignore]`);
//! `cargo run -- check 14` runs them against your binaries, `--solution` against the reference
//! ones (common::server and common::client read UDS_SERVER and UDS_CLIENT).

mod common;

use common::{curl, curl_as_nobody, have_curl, open_to_nobody, run_client, start};
use uds_test_support::is_root;

// Exercise 1: `GET /whoami`.

/// `GET /whoami` answers the peer's uid and gid as the kernel told them: root's here.
#[test]
#[ignore = "exercise: cargo run -- check 14"]
fn ex1_whoami_answers_the_peers_uid_and_gid() {
    if !have_curl() {
        return;
    }
    let (_dir, path, _server) = start(&[]);
    let me = (rustix::process::getuid().as_raw(), rustix::process::getgid().as_raw());
    let reply = curl(&path, &["http://localhost/whoami"]);
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.body, format!("uid {} gid {}\n", me.0, me.1));
    let post = curl(&path, &["http://localhost/whoami", "-d", "x"]);
    assert_eq!((post.status, post.header("allow")), (405, Some("GET")), "{post:?}");
}

/// The uid is the peer's, not the server's: curl run as `nobody` (let in with `--allow-uid`)
/// is told `uid 65534 gid 65534`.
#[test]
#[ignore = "exercise: cargo run -- check 14"]
fn ex1_whoami_tells_nobody_it_is_nobody() {
    if !have_curl() || !is_root() {
        return;
    }
    let (_dir, path, _server) = start(&["--mode", "0666", "--allow-uid", "65534"]);
    open_to_nobody(&path);
    let reply = curl_as_nobody(&path, &["http://localhost/whoami"]);
    assert_eq!((reply.status, reply.body.as_str()), (200, "uid 65534 gid 65534\n"), "{reply:?}");
}

// Exercise 2: `POST /lower`.

/// `POST /lower` answers its body in ASCII lower case; `/upper` still upper-cases.
#[test]
#[ignore = "exercise: cargo run -- check 14"]
fn ex2_lower_answers_the_body_lower_cased() {
    if !have_curl() {
        return;
    }
    let (_dir, path, _server) = start(&[]);
    let reply = curl(&path, &["http://localhost/lower", "-d", "Hello, Unix Domain SOCKETS"]);
    assert_eq!((reply.status, reply.body.as_str()), (200, "hello, unix domain sockets"));
    assert_eq!(reply.header("content-type"), Some("text/plain"), "{reply:?}");
    let upper = curl(&path, &["http://localhost/upper", "-d", "still upper"]);
    assert_eq!(upper.body, "STILL UPPER");
}

/// `/lower` keeps `/upper`'s rules: 405 with `Allow: POST` for another method, 413 past
/// `--max-body`, chunked or not.
#[test]
#[ignore = "exercise: cargo run -- check 14"]
fn ex2_lower_keeps_the_rules_of_upper() {
    if !have_curl() {
        return;
    }
    let (_dir, path, _server) = start(&["--max-body", "4"]);
    let get = curl(&path, &["http://localhost/lower"]);
    assert_eq!((get.status, get.header("allow")), (405, Some("POST")), "{get:?}");
    assert_eq!(curl(&path, &["http://localhost/lower", "-d", "ABCD"]).body, "abcd");
    let over = curl(&path, &["http://localhost/lower", "-d", "ABCDE"]);
    assert_eq!(over.status, 413, "{over:?}");
    let chunked = ["-H", "Transfer-Encoding: chunked", "http://localhost/lower", "-d", "ABCDE"];
    assert_eq!(curl(&path, &chunked).status, 413);
}

// Exercise 3: the client's `--get`.

/// `--get /health` sends `GET /health` and prints the body, `ok`, and a newline; no MESSAGE
/// is needed.
#[test]
#[ignore = "exercise: cargo run -- check 14"]
fn ex3_get_prints_the_body_of_a_get() {
    let (_dir, path, mut server) = start(&[]);
    let shown = path.to_str().expect("a UTF-8 path");
    let (code, stdout, stderr) = run_client(&["--get", "/health", shown]);
    assert_eq!((code, stdout.as_str()), (Some(0), "ok\n"), "{stderr}");
    server.wait_for_line("lesson14-server: connection 1: GET /health: 200 OK");
}

/// A GET answered with an error status: the body on stderr, exit 1, nothing on stdout.
#[test]
#[ignore = "exercise: cargo run -- check 14"]
fn ex3_get_of_a_missing_path_exits_1_with_the_error() {
    let (_dir, path, _server) = start(&[]);
    let shown = path.to_str().expect("a UTF-8 path");
    let (code, stdout, stderr) = run_client(&["--get", "/nothing", shown]);
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!((stdout.as_str(), stderr.as_str()), ("", "error: no such path: /nothing\n"));
}
