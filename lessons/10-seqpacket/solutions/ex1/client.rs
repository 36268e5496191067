//! lesson10-client (exercise 1's solution: `--count`): send each message as one packet, print each reply packet as it arrives.
//!
//! The one idea: on a SOCK_SEQPACKET connection one `send` is one message: nothing is added to
//! mark where it ends (no newline, no length), and one `recv` gets one reply, whole. The only
//! message that cannot be sent is the empty one: a zero-length packet reads as EOF.
//!
//! Run: start the server (it prints `listening on PATH`), then
//! `cargo run --bin lesson10-client -- PATH hello world`, or without messages to type lines
//! (Ctrl-D to finish). Partner: server.rs.

use std::io::{self, BufRead, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Parser;
use lesson10::{SOCKET_NAME, default_socket_dir};
use rustix::net::{
    AddressFamily, RecvFlags, SendFlags, Shutdown, SocketAddrUnix, SocketType, connect, recv, send,
    shutdown, socket,
};

/// Send packets to a lesson10-server and print its replies.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// The server's socket [default: $XDG_RUNTIME_DIR/uds-course/lesson10.sock]
    path: Option<PathBuf>,
    /// Messages to send, one packet each; with none, each line of stdin (without its newline)
    message: Vec<String>,
    /// At the end, print on stderr how many packets the server answered
    #[arg(long)]
    count: bool,
}

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(err) => {
            eprintln!("lesson10-client: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<ExitCode> {
    let args = Args::parse();
    let path = args.path.unwrap_or_else(|| default_socket_dir().join(SOCKET_NAME));
    // ANCHOR: connect
    // A stream's `connect`, on a SOCK_SEQPACKET socket: std has no type for it.
    let connect_err = || format!("connect {}", path.display());
    let address = SocketAddrUnix::new(&path).with_context(connect_err)?;
    let conn =
        socket(AddressFamily::UNIX, SocketType::SEQPACKET, None).with_context(connect_err)?;
    connect(&conn, &address).with_context(connect_err)?;
    // ANCHOR_END: connect
    let mut client = Client { conn, path: &path, answered: 0 };
    let code = converse(&mut client, &args.message)?;
    if args.count {
        // Counted even after a refusal: the packets before it were answered.
        eprintln!("lesson10-client: packets answered: {}", client.answered);
    }
    Ok(code)
}

/// Send each MESSAGE, or else each line of stdin, until the server refuses one.
fn converse(client: &mut Client, messages: &[String]) -> anyhow::Result<ExitCode> {
    if !messages.is_empty() {
        for message in messages {
            if !client.ask(message.as_bytes())? {
                return Ok(ExitCode::FAILURE);
            }
        }
    } else {
        let mut stdin = io::stdin().lock();
        let mut line = Vec::new();
        while stdin.read_until(b'\n', &mut line).context("read stdin")? > 0 {
            // The packet is the line without its newline: the boundary needs no marker.
            let message = line.strip_suffix(b"\n").unwrap_or(&line);
            if !client.ask(message)? {
                return Ok(ExitCode::FAILURE);
            }
            line.clear();
        }
    }
    // As lesson 01's client: half-close, then wait for the server's EOF. Once we exit, the
    // server is done with this connection (a script may stop it the moment we exit).
    let shown = client.path.display();
    shutdown(&client.conn, Shutdown::Write).with_context(|| format!("shutdown {shown}"))?;
    recv(&client.conn, &mut [0; 1], RecvFlags::empty()).with_context(|| format!("recv {shown}"))?;
    Ok(ExitCode::SUCCESS)
}

/// The connection, the path to name in errors, and how many packets were answered.
struct Client<'a> {
    conn: OwnedFd,
    path: &'a Path,
    answered: u64,
}

impl Client<'_> {
    // ANCHOR: ask
    /// Send `message` as one packet and print the reply packet; false if the server refused
    /// it with an `error: ` packet (printed to stderr), after which it closes the connection.
    fn ask(&mut self, message: &[u8]) -> anyhow::Result<bool> {
        let path = self.path.display();
        // ANCHOR: empty
        if message.is_empty() {
            // The server would read a zero-length packet as EOF, the end of the connection.
            eprintln!(
                "lesson10-client: not sent: an empty message (a zero-length packet reads as \
                 the end of the connection)"
            );
            return Ok(true);
        }
        // ANCHOR_END: empty
        // One `send`, one packet: all of `message` or an error (EMSGSIZE when it is larger
        // than the socket's send buffer), never a part of it.
        send(&self.conn, message, SendFlags::empty()).with_context(|| format!("send {path}"))?;
        // A reply is as long as the message, or a short `error: ` packet.
        let mut reply = vec![0; message.len().max(200)];
        let (kept, len) = recv(&self.conn, &mut reply[..], RecvFlags::TRUNC)
            .with_context(|| format!("recv {path}"))?;
        if len == 0 {
            bail!("recv {path}: the server closed the connection");
        }
        if len > kept {
            bail!("recv {path}: a reply of {len} bytes, longer than the message");
        }
        let reply = &reply[..kept];
        // A refusal can never be an upper-cased echo: `error: ` is lower case.
        if reply.starts_with(b"error: ") {
            let mut stderr = io::stderr().lock();
            let _ = stderr.write_all(reply).and_then(|()| stderr.write_all(b"\n")); // ok to lose
            return Ok(false);
        }
        self.answered += 1;
        let mut stdout = io::stdout().lock();
        stdout
            .write_all(reply)
            .and_then(|()| stdout.write_all(b"\n"))
            .and_then(|()| stdout.flush())
            .context("write stdout")?;
        Ok(true)
    }
    // ANCHOR_END: ask
}
