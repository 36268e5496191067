//! lesson09-client: send datagrams to a server, print each reply.
//!
//! Exercise 1 (reference solution): `--autobind` binds a kernel-chosen abstract name.
//!
//! The one idea: a datagram client has no connection to read replies from. The server answers
//! each datagram by sending one back *to the address it came from*, so the client must bind an
//! address of its own first — here a socket file in the temp dir, removed when the client ends
//! (also on error and on Ctrl-C). `--no-bind` leaves it out, to show what happens then.
//!
//! Run: start the server (it prints `listening on PATH`), then
//! `cargo run --bin lesson09-client -- PATH hello world`, or without messages to type lines
//! (Ctrl-D to finish). Partner: server.rs.

use std::io::{self, BufRead, Write};
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::process::{self, ExitCode};
use std::time::Duration;
use std::{env, fs, thread};

use anyhow::{Context, bail};
use clap::Parser;
use lesson09::{SOCKET_NAME, address, default_socket_dir};
use rustix::io::Errno;
use rustix::net::{RecvFlags, SocketAddrUnix, recv};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

/// The longest reply kept: the server's default limit. A longer one is an error, never cut.
const MAX_REPLY: usize = 65536;

/// Send datagrams to a lesson09-server and print its replies.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// The server's socket (`@name`: a Linux abstract name)
    /// [default: $XDG_RUNTIME_DIR/uds-course/lesson09.sock]
    path: Option<PathBuf>,
    /// Datagrams to send; with none, each line of stdin is sent (without its newline)
    message: Vec<String>,
    /// Send from an unbound socket: the server cannot reply (the classic mistake, on purpose)
    #[arg(long)]
    no_bind: bool,
    /// Bind an abstract name the kernel chooses (Linux autobind) instead of a file: nothing to
    /// remove afterwards
    #[arg(long, conflicts_with = "no_bind")]
    autobind: bool,
    /// How long to wait for each reply
    #[arg(long, value_name = "N", default_value_t = 5000)]
    timeout_ms: u64,
}

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(err) => {
            eprintln!("lesson09-client: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<ExitCode> {
    let args = Args::parse();
    let path = args.path.unwrap_or_else(|| default_socket_dir().join(SOCKET_NAME));
    // ANCHOR: bind
    // Our own address, where the server's replies will come. A file in the temp dir (TMPDIR
    // honoured) with our pid in its name; `OwnFile` removes it when `run` returns, on error
    // too, and the signal thread removes it on Ctrl-C.
    let (socket, _own_file) = if args.no_bind {
        (UnixDatagram::unbound().context("socket")?, None)
    } else if args.autobind {
        // An address of family AF_UNIX and nothing else: Linux picks a free abstract name
        // (five hex digits). No file, so nothing to remove, even after SIGKILL.
        let socket = UnixDatagram::unbound().context("socket")?;
        rustix::net::bind(&socket, &SocketAddrUnix::new_unnamed()).context("bind (autobind)")?;
        (socket, None)
    } else {
        let own = env::temp_dir().join(format!("lesson09-client-{}.sock", process::id()));
        remove_on_signal(own.clone())?;
        let socket = UnixDatagram::bind(&own).with_context(|| format!("bind {}", own.display()))?;
        (socket, Some(OwnFile(own)))
    };
    // ANCHOR_END: bind
    // ANCHOR: connect
    // `connect` on a datagram socket makes no connection: it sets where `send` goes, and makes
    // the kernel drop datagrams from anyone else. It fails if nothing is bound at `path`.
    let server = address(&path).with_context(|| format!("connect {}", path.display()))?;
    socket.connect_addr(&server).with_context(|| format!("connect {}", path.display()))?;
    // ANCHOR_END: connect
    socket
        .set_read_timeout(Some(Duration::from_millis(args.timeout_ms.max(1))))
        .with_context(|| format!("set a timeout on {}", path.display()))?;
    let client = Client { socket, path, no_bind: args.no_bind, timeout_ms: args.timeout_ms };
    if !args.message.is_empty() {
        for message in &args.message {
            if !client.ask(message.as_bytes())? {
                return Ok(ExitCode::FAILURE);
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    let mut stdin = io::stdin().lock();
    let mut line = Vec::new();
    while stdin.read_until(b'\n', &mut line).context("read stdin")? > 0 {
        // The newline ends the line, and is not part of the message: a datagram has its own
        // end. A `\r` before it is the message's, and is sent.
        if line.ends_with(b"\n") {
            line.pop();
        }
        if !client.ask(&line)? {
            return Ok(ExitCode::FAILURE);
        }
        line.clear();
    }
    Ok(ExitCode::SUCCESS)
}

/// A socket file this client created, removed when dropped.
struct OwnFile(PathBuf);

impl Drop for OwnFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0); // ok to fail: nothing else can be done about it
    }
}

// ANCHOR: signal
/// On Ctrl-C (SIGINT) or SIGTERM, remove `own` and exit 128 + the signal: a `Drop` would not
/// run, as the signal ends the process wherever it is. Installed before `bind`, so the file
/// never exists without someone to remove it.
fn remove_on_signal(own: PathBuf) -> anyhow::Result<()> {
    let mut signals = Signals::new([SIGINT, SIGTERM]).context("install signal handlers")?;
    thread::Builder::new()
        .spawn(move || {
            if let Some(signal) = signals.forever().next() {
                let _ = fs::remove_file(&own); // ok to fail: we are leaving anyway
                process::exit(128 + signal);
            }
        })
        .context("spawn the signal thread")?;
    Ok(())
}
// ANCHOR_END: signal

/// The socket, the server's path, and how to explain a missing reply.
struct Client {
    socket: UnixDatagram,
    path: PathBuf,
    no_bind: bool,
    timeout_ms: u64,
}

impl Client {
    // ANCHOR: ask
    /// Send `message` as one datagram and print the reply; false when it was an `error: `.
    fn ask(&self, message: &[u8]) -> anyhow::Result<bool> {
        let path = self.path.display();
        // One datagram, exactly these bytes: its boundary is the message's end.
        self.socket.send(message).with_context(|| format!("send {path}"))?;
        let mut reply = vec![0; MAX_REPLY];
        let len = loop {
            match recv(&self.socket, &mut reply[..], RecvFlags::TRUNC) {
                Ok((_, len)) => break len,
                Err(Errno::INTR) => continue,
                Err(Errno::AGAIN) if self.no_bind => bail!(
                    "recv {path}: no reply within {} ms: the server could not reply to an \
                     unbound client (it has no address to send to)",
                    self.timeout_ms
                ),
                Err(Errno::AGAIN) => bail!("recv {path}: timed out"),
                Err(err) => return Err(err).with_context(|| format!("recv {path}")),
            }
        };
        if len > MAX_REPLY {
            bail!("recv {path}: a reply of {len} bytes is over the {MAX_REPLY}-byte limit");
        }
        reply.truncate(len);
        if reply.starts_with(b"error: ") {
            eprintln!("{}", String::from_utf8_lossy(&reply));
            return Ok(false);
        }
        // The datagram is the reply; the newline is only for the terminal.
        reply.push(b'\n');
        let mut stdout = io::stdout().lock();
        stdout.write_all(&reply).and_then(|()| stdout.flush()).context("write stdout")?;
        Ok(true)
    }
    // ANCHOR_END: ask
}
