//! Lesson 13's one idea: a connection costs a task, not a thread. 10 000 clients connected and
//! idle at once are all held open by lesson13-server, which runs its two runtime workers, its
//! main thread and at most a few threads of tokio's blocking pool: no more than 16 in all, far
//! below one per connection; each of them is still served afterwards. (Lesson 07's behaviour
//! suite runs against this server in behaviour.rs.)

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use assert_cmd::cargo::cargo_bin;
use lesson13::{Address, connect_within};
use uds_test_support::{
    DEADLINE, Server, allow_descriptors, open_fd_count, temp_dir, thread_count, wait_until,
};

/// Far below one per connection, with room for a few threads tokio may start of its own (its
/// blocking pool): the N + 4 bound of lesson 07 is not promised here (CONTRACT.md "13 async").
const MOST_THREADS: usize = 16;

#[test]
fn ten_thousand_idle_connections_cost_tasks_not_threads() {
    const CLIENTS: usize = 10_000;
    // Here, the clients' ends; in the server (which inherits the limit), the accepted ones.
    if !allow_descriptors(CLIENTS as u64 + 200) {
        return;
    }
    let dir = temp_dir();
    let path: PathBuf = dir.path().join("lesson13.sock");
    let limit = (CLIENTS + 100).to_string();
    let args = [path.as_os_str(), "--workers".as_ref(), "2".as_ref()];
    let more = ["--max-connections", &limit, "--idle-timeout-ms", "60000"];
    let args: Vec<_> = args.into_iter().chain(more.iter().map(|arg| arg.as_ref())).collect();
    let server = Server::start(cargo_bin!("lesson13-server"), &path, &args);
    let pid = server.pid();
    let idle_fds = open_fd_count(pid).expect("the server's descriptors");
    let idle_threads = thread_count(pid).expect("the server's threads");
    let address = Address::File(path.clone());
    // Plain streams, one descriptor each (a `Conn` holds two): 10 000 fit in this process.
    let conns: Vec<UnixStream> = (0..CLIENTS)
        .map(|i| connect_within(&address, DEADLINE).unwrap_or_else(|e| panic!("connect {i}: {e}")))
        .collect();
    wait_until("the server holds all 10 000 connections", || {
        open_fd_count(pid).is_ok_and(|fds| fds >= idle_fds + CLIENTS)
    });
    let threads = thread_count(pid).expect("the server's threads");
    assert!(
        threads <= MOST_THREADS,
        "{threads} threads (at the start: {idle_threads}) for {CLIENTS} connections"
    );
    // Each one is a live connection with a task behind it: a sample of them, the last too, asks.
    for (i, conn) in
        conns.iter().enumerate().step_by(997).chain([(CLIENTS - 1, &conns[CLIENTS - 1])])
    {
        assert_eq!(ask(conn, &format!("client {i}")), format!("CLIENT {i}\n"));
    }
}

/// Send `line` on `stream` and read the reply line, within [`DEADLINE`].
fn ask(mut stream: &UnixStream, line: &str) -> String {
    stream.set_read_timeout(Some(DEADLINE)).expect("set a read timeout");
    stream.write_all(format!("{line}\n").as_bytes()).expect("write a line");
    let mut reply = String::new();
    BufReader::new(stream).read_line(&mut reply).expect("read the reply");
    reply
}
