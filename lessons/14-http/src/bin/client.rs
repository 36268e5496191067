//! lesson14-client: POST each message to a lesson14-server, print each response's body.
//!
//! The one idea: HTTP over a Unix socket, from the client's side. hyper's client speaks
//! HTTP/1.1 over any connected stream; here it is a tokio `UnixStream`, one connection kept
//! alive for every request. The same code talks to Docker's `/var/run/docker.sock`. The URL's
//! host is only a `Host` header: the socket's path is the address. (`--timeout-ms`, from
//! lesson 05, bounds `connect` and each request.)
//!
//! Run: start the server (it prints `listening on PATH`), then
//! `cargo run --bin lesson14-client -- PATH hello world`. Partner: server.rs.

use std::io::{self, Write};
use std::os::unix::net::UnixStream;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::builder::{OsStringValueParser, TypedValueParser};
use clap::{CommandFactory, Parser};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1;
use hyper::header::{CONTENT_TYPE, HOST};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use lesson14::{
    Address, SOCKET_NAME, check_private_dir, connect_within, default_socket_dir, parse_timeout_ms,
};

/// POST each message to a lesson14-server's `/upper` and print the bodies of its responses.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// The server's socket, or @name (Linux) [default: $XDG_RUNTIME_DIR/uds-course/lesson14.sock]
    #[arg(value_name = "PATH", value_parser = OsStringValueParser::new().try_map(Address::parse))]
    path: Option<Address>,
    /// Messages to send, each the body of a request of its own (one at least)
    #[arg(value_name = "MESSAGE")]
    message: Vec<String>,
    /// Give up on connect, or on a response owed, after N ms
    #[arg(long, value_name = "N", default_value_t = 5000, value_parser = parse_timeout_ms)]
    timeout_ms: u64,
}

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(err) => {
            eprintln!("lesson14-client: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<ExitCode> {
    let args = Args::parse();
    // clap cannot require MESSAGE after an optional PATH: `client hello` is PATH `hello`.
    if args.message.is_empty() {
        let mut usage = Args::command().bin_name("lesson14-client");
        usage.error(clap::error::ErrorKind::MissingRequiredArgument, "no MESSAGE to send").exit();
    }
    // ANCHOR: default_path
    let path = match args.path {
        // An explicit PATH is the user's choice.
        Some(path) => path,
        // A socket in a directory that someone else controls may be theirs, not our server's:
        // check the default directory as the server does.
        None => {
            let dir = default_socket_dir();
            check_private_dir(&dir)?;
            Address::File(dir.join(SOCKET_NAME))
        }
    };
    // ANCHOR_END: default_path
    let timeout = Duration::from_millis(args.timeout_ms);
    // ANCHOR: connect
    // Bounded: on Linux a `connect` to a server whose backlog is full waits; this gives up.
    let stream =
        connect_within(&path, timeout).with_context(|| format!("connect {}", path.display()))?;
    // ANCHOR_END: connect
    // ANCHOR: runtime
    // One connection and one request at a time: a runtime on this thread is all it takes.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_io().enable_time().build();
    let runtime = runtime.context("start the runtime")?;
    runtime.block_on(post_each(stream, &path, &args.message, timeout))
    // ANCHOR_END: runtime
}

/// POST each message in turn on the one connection and print each response's body; a response
/// that is not a success ends the conversation, its body on stderr.
async fn post_each(
    stream: UnixStream,
    path: &Address,
    messages: &[String],
    timeout: Duration,
) -> anyhow::Result<ExitCode> {
    let shown = path.display();
    // ANCHOR: handshake
    // tokio takes the connected socket over, and waits on it without blocking the thread.
    stream.set_nonblocking(true).with_context(|| format!("set up {shown}"))?;
    let stream = tokio::net::UnixStream::from_std(stream);
    let stream = stream.with_context(|| format!("set up {shown}"))?;
    // HTTP/1.1 on the stream: `sender` hands requests over; `connection` reads and writes the
    // bytes, as a task of its own, until `sender` is dropped.
    let handshake = http1::handshake(TokioIo::new(stream)).await;
    let (mut sender, connection) = handshake.with_context(|| format!("connect {shown}"))?;
    tokio::spawn(connection);
    // ANCHOR_END: handshake
    for message in messages {
        // ANCHOR: request
        // The host is only a header here (HTTP/1.1 requires one): the socket is the address.
        let request = Request::post("/upper")
            .header(HOST, "localhost")
            .header(CONTENT_TYPE, "text/plain")
            .body(Full::new(Bytes::from(message.clone())))
            .with_context(|| format!("POST {shown}"))?;
        let exchange = async {
            sender.ready().await?; // the previous response is done: the connection is free
            let response = sender.send_request(request).await?;
            let status = response.status();
            Ok::<_, hyper::Error>((status, response.into_body().collect().await?.to_bytes()))
        };
        let (status, body) = match tokio::time::timeout(timeout, exchange).await {
            Ok(exchanged) => exchanged.with_context(|| format!("POST {shown}"))?,
            Err(_elapsed) => bail!("POST {shown}: timed out"),
        };
        // ANCHOR_END: request
        if !status.is_success() {
            refused(status, &body);
            return Ok(ExitCode::FAILURE);
        }
        let mut stdout = io::stdout().lock();
        stdout
            .write_all(&body)
            .and_then(|()| stdout.write_all(b"\n"))
            .and_then(|()| stdout.flush())
            .context("write stdout")?;
    }
    Ok(ExitCode::SUCCESS)
}

/// A response that is not a success: its body (the server's `error: ` line) on stderr, or the
/// status when it has none (hyper's own 431, for one).
fn refused(status: StatusCode, body: &[u8]) {
    let mut stderr = io::stderr().lock();
    let _ = match body {
        [] => writeln!(stderr, "error: {status}"),
        body => stderr.write_all(body), // ok to lose: stderr is gone
    };
}
