//! Exercise checks for lesson 06 (EXERCISES.md). A plain `cargo test` skips them (`#[ignore]`);
//! `cargo run -- check 6` runs them against your binaries, `--solution` against the reference ones.

use std::env;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use assert_cmd::cargo::cargo_bin;
use rustix::process::Signal;
use uds_test_support::{
    ChildGuard, Conn, DEADLINE, Server, abstract_name, listed_abstract_names, temp_dir, wait_until,
};

/// The server under test: `UDS_SERVER` (an absolute path), else this lesson's own.
fn server() -> PathBuf {
    env::var_os("UDS_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| cargo_bin!("lesson06-server").to_owned())
}

/// The client under test: `UDS_CLIENT` (an absolute path), else this lesson's own.
fn client() -> PathBuf {
    env::var_os("UDS_CLIENT")
        .map(PathBuf::from)
        .unwrap_or_else(|| cargo_bin!("lesson06-client").to_owned())
}

/// Does /proc/net/unix list a socket bound to the abstract name `name` (without its `@`)?
fn is_listed(name: &str) -> bool {
    listed_abstract_names().iter().any(|listed| listed == name)
}

/// Run the client under test with `args` and no stdin; wait (with [`DEADLINE`]) for it to
/// exit. Its exit code, stdout and stderr. `XDG_RUNTIME_DIR` is an empty private directory,
/// so a client that tried its default socket would fail.
fn run_client(args: &[&str]) -> (Option<i32>, String, String) {
    let runtime = temp_dir();
    let child = Command::new(client())
        .args(args)
        .env("XDG_RUNTIME_DIR", runtime.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the client");
    let mut child = ChildGuard(child);
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

// Exercise 1: let the kernel choose the name.

/// Start the server under test with `@` alone; returns it and the name it says it chose
/// (without the `@`), once it listens.
fn start_autobound() -> (Server, String) {
    let mut cmd = Command::new(server());
    cmd.arg("@");
    // Readiness is `listening on @XXXXX`, a name only the server knows: wait for the prefix.
    let mut server = Server::spawn_cmd(cmd, Path::new("@"));
    let line = server.wait_for(|line| line.starts_with("listening on "), "listening on @XXXXX");
    let name = line.strip_prefix("listening on @").unwrap_or_default().to_owned();
    let hex = |byte: u8| byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte);
    assert!(
        name.len() == 5 && name.bytes().all(hex),
        "`@` alone must print `listening on @` and the kernel's name, five hex digits \
         (^listening on @[0-9a-f]{{5}}$); it printed {line:?}"
    );
    (server, name)
}

/// `@` alone makes the kernel choose the name (autobind): the server prints it, the kernel
/// lists it, a client reaches the server by it, and it is gone when the server exits.
#[test]
#[ignore = "exercise: cargo run -- check 6"]
fn ex1_an_at_alone_listens_on_a_name_the_kernel_chose() {
    let (server, name) = start_autobound();
    assert!(is_listed(&name), "@{name} is not in /proc/net/unix");
    let at = format!("@{name}");
    let (code, stdout, stderr) = run_client(&[&at, "hello", "autobind"]);
    assert_eq!((code, stdout.as_str()), (Some(0), "HELLO\nAUTOBIND\n"), "client: {stderr}");
    let mut conn = Conn::try_connect_abstract(&name).expect("connect to the name");
    assert_eq!(conn.ask("again"), "AGAIN\n");
    drop(conn);
    server.signal(Signal::TERM);
    let (status, output) = server.finish();
    assert_eq!(status.code(), Some(0), "{output}");
    wait_until(&format!("@{name} leaves /proc/net/unix"), || !is_listed(&name));
}

/// Each autobind gets a name of its own: two servers started with `@` never collide.
#[test]
#[ignore = "exercise: cargo run -- check 6"]
fn ex1_two_servers_started_with_an_at_alone_get_different_names() {
    let (_first, first) = start_autobound();
    let (_second, second) = start_autobound();
    assert_ne!(first, second, "two servers were given the same name");
    for name in [&first, &second] {
        let mut conn = Conn::try_connect_abstract(name).expect("connect to each name");
        assert_eq!(conn.ask("mine"), "MINE\n", "@{name}");
    }
}

/// Solving the exercise changes nothing else: `@name` still binds exactly that name.
#[test]
#[ignore = "exercise: cargo run -- check 6"]
fn ex1_a_named_server_still_binds_its_own_name() {
    let name = abstract_name("named");
    let at = format!("@{name}");
    let _server = Server::start(&server(), Path::new(&at), &[&at]);
    assert!(is_listed(&name), "@{name} is not in /proc/net/unix");
    let mut conn = Conn::try_connect_abstract(&name).expect("connect to the name");
    assert_eq!(conn.ask("named"), "NAMED\n");
}

// Exercise 2: list the names that are listening.

/// Start the server under test on the abstract name `name`.
fn start_named(name: &str) -> Server {
    let at = format!("@{name}");
    Server::start(&server(), Path::new(&at), &[&at])
}

/// `lesson06-client --list`: exit 0, nothing on stderr; its lines.
fn list() -> Vec<String> {
    let (code, stdout, stderr) = run_client(&["--list"]);
    assert_eq!(code, Some(0), "--list must exit 0; stderr: {stderr}");
    assert_eq!(stderr, "", "--list wrote to stderr");
    stdout.lines().map(str::to_owned).collect()
}

/// `--list` prints each listening abstract name once, as `@name`, sorted: a name with an open
/// connection (whose accepted socket carries the same name) is not listed twice, and a socket
/// file is not listed at all. It connects to nothing: there is no default socket to reach.
#[test]
#[ignore = "exercise: cargo run -- check 6"]
fn ex2_list_prints_each_listening_name_once_sorted() {
    let (a, b) = (abstract_name("list-a"), abstract_name("list-b"));
    let _server_a = start_named(&a);
    let _server_b = start_named(&b);
    let dir = temp_dir();
    let file = dir.path().join("lesson06.sock");
    let _file_server = Server::start_at(&server(), &file);
    // An accepted connection is a second socket under the name @a, not a listener.
    let mut conn = Conn::try_connect_abstract(&a).expect("connect to @a");
    assert_eq!(conn.ask("connected"), "CONNECTED\n");

    let lines = list();
    for name in [&a, &b] {
        let at = format!("@{name}");
        let times = lines.iter().filter(|line| **line == at).count();
        assert_eq!(times, 1, "{at} listed {times} times, not once:\n{}", lines.join("\n"));
    }
    let file = file.to_str().expect("a UTF-8 temp path");
    assert!(
        lines.iter().all(|line| line.starts_with('@') && !line.contains(file)),
        "only `@name` lines, no socket file ({file}):\n{}",
        lines.join("\n")
    );
    assert!(
        lines.windows(2).all(|pair| pair[0] < pair[1]),
        "not sorted, or a name twice:\n{}",
        lines.join("\n")
    );
}

/// A name is listed only while its server listens.
#[test]
#[ignore = "exercise: cargo run -- check 6"]
fn ex2_a_stopped_server_is_no_longer_listed() {
    let name = abstract_name("stopped");
    let at = format!("@{name}");
    let server = start_named(&name);
    assert!(list().contains(&at), "{at} is listening but not listed");
    server.signal(Signal::TERM);
    let (status, output) = server.finish();
    assert_eq!(status.code(), Some(0), "{output}");
    wait_until(&format!("{at} leaves /proc/net/unix"), || !is_listed(&name));
    assert!(!list().contains(&at), "{at} is listed after its server exited");
}
