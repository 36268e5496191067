//! lesson10-server: a SOCK_SEQPACKET server: each packet answered with one packet, upper-cased.
//!
//! The one idea: a seqpacket socket is connected like a stream (`listen`, `accept`, a thread
//! per client, EOF when the client goes) and bounded like a datagram (each `send` arrives as
//! one `recv`, never merged with the next or split). No newline marks where a message ends:
//! the kernel keeps the boundary. std has no type for it, so rustix makes the socket.
//!
//! Run: `cargo run --bin lesson10-server` prints `listening on PATH`; then, in another terminal,
//! `cargo run --bin lesson10-client -- PATH hello` or `socat - UNIX-CONNECT:PATH,type=5`.
//! Partner: client.rs.

use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use std::{fs, thread};

use anyhow::Context;
use clap::Parser;
use lesson10::{SOCKET_NAME, default_socket_dir, log};
use rustix::net::{
    AddressFamily, RecvFlags, SendFlags, SocketAddrUnix, SocketType, accept, bind, listen, recv,
    send, socket,
};

/// Answer each packet a client sends with one packet, in ASCII upper case.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Where to create the socket [default: $XDG_RUNTIME_DIR/uds-course/lesson10.sock]
    path: Option<PathBuf>,
    /// The longest packet answered; a longer one gets an `error: ` packet and the connection
    /// is closed
    #[arg(long, value_name = "BYTES", default_value_t = 65536)]
    max_packet: usize,
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
    // std's UnixListener is SOCK_STREAM only: rustix makes the SOCK_SEQPACKET socket, then
    // the same three steps as std does for a stream. `bind` creates the socket file, as in
    // lesson 01, and fails the same way if anything exists at `path`. rustix sets close-on-exec.
    let address = SocketAddrUnix::new(&path).with_context(|| format!("bind {}", path.display()))?;
    let listener = socket(AddressFamily::UNIX, SocketType::SEQPACKET, None)
        .with_context(|| format!("socket {}", path.display()))?;
    bind(&listener, &address).with_context(|| format!("bind {}", path.display()))?;
    // Up to 128 connections may wait for `accept` (the kernel caps it at somaxconn).
    listen(&listener, 128).with_context(|| format!("listen {}", path.display()))?;
    // ANCHOR_END: bind
    // The line that scripts and tests wait for. writeln!, not println!, which would panic
    // if nobody reads our stdout.
    let mut stdout = io::stdout();
    writeln!(stdout, "listening on {}", path.display())
        .and_then(|()| stdout.flush())
        .context("write stdout")?;
    // ANCHOR: accept_loop
    for id in 1.. {
        match accept(&listener) {
            Ok(conn) => {
                let max = args.max_packet;
                // Builder, not thread::spawn: spawn panics when the OS refuses a thread.
                if let Err(err) = thread::Builder::new().spawn(move || serve(id, conn, max)) {
                    log!("connection {id}: spawn: {err}");
                }
            }
            Err(err) => {
                // Out of file descriptors (EMFILE) the client stays queued, so `accept` fails
                // again at once: a bare `continue` here would spin a core. Wait instead.
                log!("accept: {err}");
                thread::sleep(Duration::from_millis(100));
            }
        }
    }
    // ANCHOR_END: accept_loop
    Ok(())
}

// ANCHOR: serve
/// One client's connection, on its own thread: whatever goes wrong ends only this connection.
fn serve(id: u64, conn: OwnedFd, max: usize) {
    log!("connection {id}: accepted");
    match answer_packets(&conn, max) {
        Ok(n) => log!("connection {id}: closed, packets answered: {n}"),
        Err(err) => log!("connection {id}: {err:#}"),
    }
} // dropping `conn` closes the connection: the client reads EOF

/// Answer each packet until EOF (the client closed or shut down its end); returns how many.
fn answer_packets(conn: &OwnedFd, max: usize) -> anyhow::Result<u64> {
    // One buffer of the limit's size: a packet that fits arrives whole in one `recv`.
    let mut packet = vec![0; max];
    let mut packets = 0;
    loop {
        // ANCHOR: recv
        // TRUNC: `len` is the packet's real length even when only `kept` bytes fit. Without
        // it a longer packet would be cut to the buffer silently, and its rest thrown away.
        let (kept, len) = recv(conn, &mut packet[..], RecvFlags::TRUNC).context("recv")?;
        // ANCHOR_END: recv
        // ANCHOR: eof
        // Zero bytes is EOF: the client closed. A zero-length packet reads the same, so no
        // client can send one and be answered (the client refuses to send it).
        if len == 0 {
            return Ok(packets);
        }
        // ANCHOR_END: eof
        // ANCHOR: too_long
        if len > kept {
            let error = format!("error: packet of {len} bytes is over the {max}-byte limit");
            send(conn, error.as_bytes(), SendFlags::empty()).context("send")?;
            anyhow::bail!("a packet of {len} bytes, over the {max}-byte limit: closing");
        }
        // ANCHOR_END: too_long
        let reply = &mut packet[..kept];
        reply.make_ascii_uppercase();
        // One `send`, one packet: the reply keeps its boundary as the request did.
        send(conn, reply, SendFlags::empty()).context("send")?;
        packets += 1;
    }
}
// ANCHOR_END: serve
