//! lesson09-server: bind a datagram socket, answer each datagram in upper case.
//!
//! The one idea: a `SOCK_DGRAM` socket has no connections. There is no `listen` and no
//! `accept`: one socket receives every client's datagrams, each with its sender's address,
//! and each datagram arrives whole or not at all, so no line framing is needed. A reply is a
//! datagram sent *to that address* — which is why a client must bind one to get an answer.
//!
//! Run: `cargo run --bin lesson09-server` prints `listening on PATH`; then, in another terminal,
//! `cargo run --bin lesson09-client -- PATH hello` or
//! `socat - UNIX-SENDTO:PATH,bind=/tmp/me.sock`. Partner: client.rs.

use std::fs;
use std::io::{self, Write};
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use lesson09::{SOCKET_NAME, address, default_socket_dir, log};
use rustix::io::Errno;
use rustix::net::{RecvFlags, SendFlags, SocketAddrUnix, recvfrom, sendto};

/// Answer each datagram with one datagram: the same bytes in ASCII upper case.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Where to bind (`@name`: a Linux abstract name)
    /// [default: $XDG_RUNTIME_DIR/uds-course/lesson09.sock]
    path: Option<PathBuf>,
    /// The longest datagram answered; a longer one is answered with an `error: ` datagram
    #[arg(long, value_name = "BYTES", default_value_t = 65536)]
    max_datagram: usize,
}

fn main() -> ExitCode {
    if let Err(err) = run() {
        log!("{err:#}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

fn run() -> anyhow::Result<()> {
    let args = Args::parse();
    let path = match args.path {
        Some(path) => path,
        None => {
            let dir = default_socket_dir();
            fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
            dir.join(SOCKET_NAME)
        }
    };
    // ANCHOR: bind
    // `bind` creates the socket file, as in lesson 01 — and that is all: a datagram socket has
    // no `listen` (nothing to queue: there are no connections) and no `accept`. Once bound, it
    // receives. A file already at `path` still makes `bind` fail with "Address already in use".
    let addr = address(&path).with_context(|| format!("bind {}", path.display()))?;
    let socket =
        UnixDatagram::bind_addr(&addr).with_context(|| format!("bind {}", path.display()))?;
    // ANCHOR_END: bind
    // The line that scripts and tests wait for, as in every lesson, though nothing "listens".
    // writeln!, not println!, which would panic if nobody reads our stdout.
    let mut stdout = io::stdout();
    writeln!(stdout, "listening on {}", path.display())
        .and_then(|()| stdout.flush())
        .context("write stdout")?;
    // ANCHOR: receive
    // One buffer for every datagram: BYTES is all we keep. RecvFlags::TRUNC makes the kernel
    // return the datagram's real length even when it did not fit; std's `recv_from` returns
    // only what fitted, and a cut datagram would look like a whole one.
    let mut buf = vec![0; args.max_datagram];
    loop {
        let (kept, len, from) = match recvfrom(&socket, &mut buf[..], RecvFlags::TRUNC) {
            Ok(received) => received,
            Err(Errno::INTR) => continue,
            Err(err) => return Err(err).with_context(|| format!("recv {}", path.display())),
        };
        // ANCHOR_END: receive
        // ANCHOR: sender
        // The sender's address is where the reply goes. A client that never bound one sends
        // from an unnamed socket: its datagram arrives, but there is nowhere to answer it.
        let sender = from.and_then(|from| SocketAddrUnix::try_from(from).ok());
        let Some(sender) = sender.filter(|sender| !sender.is_unnamed()) else {
            log!("cannot reply: the sender has no address");
            continue;
        };
        // ANCHOR_END: sender
        let reply = if len > args.max_datagram {
            let limit = args.max_datagram;
            log!("{}: datagram of {len} bytes is over the limit", show(&sender));
            format!("error: datagram of {len} bytes is over the {limit}-byte limit").into_bytes()
        } else {
            buf[..kept].to_ascii_uppercase()
        };
        // ANCHOR: reply
        // DONTWAIT: a client that sends but never reads fills its own receive queue; a blocking
        // send would then stop the server for everyone. Drop that one reply instead.
        match sendto(&socket, &reply, SendFlags::DONTWAIT, &sender) {
            Ok(_) => {}
            Err(Errno::AGAIN) => {
                log!("cannot reply: {}: its queue is full", show(&sender));
            }
            // The sender is gone (its file removed: ENOENT; closed: ECONNREFUSED): its loss.
            Err(err) => {
                let err = io::Error::from(err);
                log!("cannot reply: {}: {err}", show(&sender));
            }
        }
        // ANCHOR_END: reply
    }
}

/// A sender's address as the log shows it: its path, or `@name` for an abstract one (a client
/// that asked for autobind gets a name of five hex digits).
fn show(addr: &SocketAddrUnix) -> String {
    if let Some(path) = addr.path_bytes() {
        return String::from_utf8_lossy(path).into_owned();
    }
    match addr.abstract_name() {
        Some(name) => format!("@{}", String::from_utf8_lossy(name)),
        None => "(unnamed)".to_owned(),
    }
}
