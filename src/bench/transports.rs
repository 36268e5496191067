//! The two ends of a round trip or bulk measurement: a Unix stream socket, a TCP connection
//! over loopback, or a pair of pipes, between two threads of the runner or between the runner
//! and a second process (the runner itself, started as the hidden `bench-peer`).
//!
//! Both placements run the same peer code, [`serve`]: the only difference between them is
//! whether the kernel switches between two threads of one process or between two processes.
//! Partner: measure.rs, which times the traffic.

use std::ffi::OsString;
use std::fmt;
use std::fs::{self, File};
use std::io::{self, ErrorKind, Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{self, Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};

use crate::child::bail_if_interrupted;

/// How long a peer may take to connect, or to exit once its work is done.
const PEER_TIMEOUT: Duration = Duration::from_secs(10);
/// The size of one write (and read) in bulk transfers.
pub const CHUNK: usize = 64 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Unix,
    Tcp,
    Pipe,
}

impl Transport {
    pub const ALL: [Transport; 3] = [Transport::Unix, Transport::Tcp, Transport::Pipe];

    /// The name in JSON and in the hidden peer's arguments.
    pub fn id(self) -> &'static str {
        match self {
            Transport::Unix => "unix",
            Transport::Tcp => "tcp",
            Transport::Pipe => "pipe",
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Transport::Unix => "Unix",
            Transport::Tcp => "TCP",
            Transport::Pipe => "pipe",
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    Threads,
    Processes,
}

impl Placement {
    pub const ALL: [Placement; 2] = [Placement::Threads, Placement::Processes];
}

impl fmt::Display for Placement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Placement::Threads => "threads",
            Placement::Processes => "processes",
        })
    }
}

/// What the peer does with what it reads.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Role {
    /// Send every message of N bytes straight back: the far end of a round trip.
    Echo,
    /// Read N bytes, then answer with one byte: the far end of a bulk transfer.
    Sink,
}

/// The hidden `bench-peer` subcommand: the second process of a `bench` measurement.
#[derive(clap::Args)]
pub struct PeerArgs {
    role: Role,
    /// The message size (echo) or the total (sink), in bytes
    n: u64,
    /// Connect to this Unix socket; with neither --unix nor --tcp, use stdin and stdout
    #[arg(long, conflicts_with = "tcp")]
    unix: Option<PathBuf>,
    /// Connect to this TCP port on 127.0.0.1
    #[arg(long)]
    tcp: Option<u16>,
}

/// `bench-peer`: connect as told (or take stdin and stdout: a pipe pair), then serve.
pub fn peer(args: PeerArgs) -> anyhow::Result<()> {
    let conn = match (args.unix, args.tcp) {
        (Some(path), _) => Address::Unix(path).connect()?,
        (None, Some(port)) => Address::Tcp(port).connect()?,
        (None, None) => stdio()?,
    };
    serve(args.role, args.n, conn)
}

/// Where the peer connects to us.
enum Address {
    Unix(PathBuf),
    Tcp(u16),
}

impl Address {
    fn connect(&self) -> anyhow::Result<Duplex> {
        match self {
            Address::Unix(path) => {
                let stream = UnixStream::connect(path)
                    .with_context(|| format!("connect {}", path.display()))?;
                unix_duplex(stream)
            }
            Address::Tcp(port) => {
                let stream = TcpStream::connect((Ipv4Addr::LOCALHOST, *port))
                    .with_context(|| format!("connect 127.0.0.1:{port}"))?;
                tcp_duplex(stream)
            }
        }
    }

    /// The same, as `bench-peer`'s arguments.
    fn args(&self) -> [OsString; 2] {
        match self {
            Address::Unix(path) => ["--unix".into(), path.into()],
            Address::Tcp(port) => ["--tcp".into(), port.to_string().into()],
        }
    }
}

/// One end of a connection, split in two: the reading half and the writing half. A socket's
/// halves are the same socket; a pipe pair's are two pipes.
pub struct Duplex {
    pub reader: Box<dyn Read + Send>,
    pub writer: Box<dyn Write + Send>,
}

impl Duplex {
    fn new(reader: impl Read + Send + 'static, writer: impl Write + Send + 'static) -> Duplex {
        Duplex { reader: Box::new(reader), writer: Box::new(writer) }
    }
}

fn unix_duplex(stream: UnixStream) -> anyhow::Result<Duplex> {
    Ok(Duplex::new(stream.try_clone().context("duplicate the socket")?, stream))
}

/// TCP_NODELAY on both ends: without it, Nagle's algorithm may hold a small write back until
/// the previous one is acknowledged, and a round trip would measure that wait.
fn tcp_duplex(stream: TcpStream) -> anyhow::Result<Duplex> {
    stream.set_nodelay(true).context("set TCP_NODELAY")?;
    Ok(Duplex::new(stream.try_clone().context("duplicate the socket")?, stream))
}

/// Our stdin and stdout as plain files: `io::stdout()` would buffer lines, and with the echo's
/// binary messages a line buffer flushes at random places.
fn stdio() -> anyhow::Result<Duplex> {
    let input = io::stdin().as_fd().try_clone_to_owned().context("duplicate stdin")?;
    let output = io::stdout().as_fd().try_clone_to_owned().context("duplicate stdout")?;
    Ok(Duplex::new(File::from(input), File::from(output)))
}

/// The peer's side of every measurement, in a thread or in a process.
fn serve(role: Role, n: u64, conn: Duplex) -> anyhow::Result<()> {
    match role {
        Role::Echo => echo(usize::try_from(n).context("message size")?, conn),
        Role::Sink => sink(n, conn),
    }
}

/// Sends each `size`-byte message back as soon as it is complete, until EOF.
fn echo(size: usize, mut conn: Duplex) -> anyhow::Result<()> {
    let mut message = vec![0; size];
    while read_message(&mut conn.reader, &mut message)? {
        conn.writer.write_all(&message).context("write the echo")?;
    }
    Ok(())
}

/// Fills `buf`; false at EOF before its first byte (the measuring side has finished).
fn read_message(reader: &mut dyn Read, buf: &mut [u8]) -> anyhow::Result<bool> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) if filled == 0 => return Ok(false),
            Ok(0) => bail!("read: EOF in the middle of a message"),
            Ok(n) => filled += n,
            Err(err) if err.kind() == ErrorKind::Interrupted => {}
            Err(err) => return Err(err).context("read a message"),
        }
    }
    Ok(true)
}

/// Reads `total` bytes in [`CHUNK`]s, then answers one byte: the measuring side stops its
/// clock when that byte arrives, so the time covers the last byte read, not just written.
fn sink(total: u64, mut conn: Duplex) -> anyhow::Result<()> {
    let mut buf = vec![0; CHUNK];
    let mut received = 0;
    while received < total {
        match conn.reader.read(&mut buf).context("read bulk data")? {
            0 => bail!("read: EOF after {received} of {total} bytes"),
            n => received += n as u64,
        }
    }
    conn.writer.write_all(&[1]).context("write the acknowledgement")
}

/// A connection to a peer that echoes or sinks; [`Link::finish`] closes it and collects the
/// peer's result. Dropped instead (on an error), it still ends the peer.
pub struct Link {
    pub conn: Duplex,
    peer: Peer,
}

enum Peer {
    Thread(Option<JoinHandle<anyhow::Result<()>>>),
    Process(PeerProcess),
}

/// Connects this process to a new peer over `transport`. Socket files go in `dir`.
pub fn link(
    transport: Transport,
    placement: Placement,
    role: Role,
    n: u64,
    dir: &Path,
    interrupted: &AtomicBool,
) -> anyhow::Result<Link> {
    match transport {
        Transport::Unix => {
            let path = dir.join("peer.sock");
            let listener =
                UnixListener::bind(&path).with_context(|| format!("bind {}", path.display()))?;
            listener.set_nonblocking(true).context("make the listener non-blocking")?;
            let mut peer = Peer::start(placement, role, n, Address::Unix(path.clone()))?;
            let accepted = accept(&mut peer, interrupted, || {
                let (stream, _) = listener.accept()?;
                stream.set_nonblocking(false).map(|()| stream)
            });
            // The connection no longer needs the name: remove it, so the next link can bind.
            fs::remove_file(&path).with_context(|| format!("remove {}", path.display()))?;
            let stream = accepted?;
            Ok(Link { conn: unix_duplex(stream)?, peer })
        }
        Transport::Tcp => {
            let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("bind 127.0.0.1")?;
            listener.set_nonblocking(true).context("make the listener non-blocking")?;
            let port = listener.local_addr().context("the listener's port")?.port();
            let mut peer = Peer::start(placement, role, n, Address::Tcp(port))?;
            let stream = accept(&mut peer, interrupted, || {
                let (stream, _) = listener.accept()?;
                stream.set_nonblocking(false).map(|()| stream)
            })?;
            Ok(Link { conn: tcp_duplex(stream)?, peer })
        }
        Transport::Pipe => pipe_link(placement, role, n),
    }
}

/// Pipes carry one direction each, so a round trip needs two: ours to the peer, and back.
/// Between processes they are the peer's stdin and stdout.
fn pipe_link(placement: Placement, role: Role, n: u64) -> anyhow::Result<Link> {
    match placement {
        Placement::Threads => {
            let (peer_reader, writer) = io::pipe().context("create a pipe")?;
            let (reader, peer_writer) = io::pipe().context("create a pipe")?;
            let peer = Peer::thread(role, n, move || Ok(Duplex::new(peer_reader, peer_writer)))?;
            Ok(Link { conn: Duplex::new(reader, writer), peer })
        }
        Placement::Processes => {
            let mut process = PeerProcess::spawn(role, n, &[])?;
            let writer = process.child.stdin.take().context("take the peer's stdin")?;
            let reader = process.child.stdout.take().context("take the peer's stdout")?;
            Ok(Link { conn: Duplex::new(reader, writer), peer: Peer::Process(process) })
        }
    }
}

/// Waits for the peer to connect: a non-blocking `accept` and a short sleep, so that a peer
/// that died, a deadline or Ctrl-C ends the wait instead of hanging it. `accept` returns the
/// accepted socket made blocking again, as the measurements expect.
fn accept<S>(
    peer: &mut Peer,
    interrupted: &AtomicBool,
    mut accept: impl FnMut() -> io::Result<S>,
) -> anyhow::Result<S> {
    let deadline = Instant::now() + PEER_TIMEOUT;
    loop {
        match accept() {
            Ok(stream) => return Ok(stream),
            Err(err) if err.kind() == ErrorKind::WouldBlock => {}
            Err(err) => return Err(err).context("accept the peer"),
        }
        peer.check_running()?;
        bail_if_interrupted(interrupted)?;
        if Instant::now() > deadline {
            bail!("the peer did not connect within {PEER_TIMEOUT:?}");
        }
        thread::sleep(Duration::from_millis(1));
    }
}

impl Link {
    /// Closes our end (the peer reads EOF and ends) and returns the peer's own result.
    pub fn finish(self) -> anyhow::Result<()> {
        let Link { conn, mut peer } = self;
        drop(conn);
        peer.wait()
    }
}

impl Peer {
    /// A thread of ours, or a process, that connects to `address` and serves.
    fn start(placement: Placement, role: Role, n: u64, address: Address) -> anyhow::Result<Peer> {
        match placement {
            Placement::Threads => Peer::thread(role, n, move || address.connect()),
            Placement::Processes => PeerProcess::spawn(role, n, &address.args()).map(Peer::Process),
        }
    }

    fn thread(
        role: Role,
        n: u64,
        connect: impl FnOnce() -> anyhow::Result<Duplex> + Send + 'static,
    ) -> anyhow::Result<Peer> {
        let handle = thread::Builder::new()
            .name("bench-peer".into())
            .spawn(move || serve(role, n, connect()?))
            .context("spawn the peer thread")?;
        Ok(Peer::Thread(Some(handle)))
    }

    fn check_running(&mut self) -> anyhow::Result<()> {
        match self {
            Peer::Thread(Some(handle)) if !handle.is_finished() => Ok(()),
            // It ended without connecting: `wait` has its error.
            Peer::Thread(_) => Err(self.wait().err().unwrap_or_else(|| anyhow!("peer ended"))),
            Peer::Process(process) => match process.child.try_wait().context("wait")? {
                None => Ok(()),
                Some(status) => bail!("the peer process exited before it connected ({status})"),
            },
        }
    }

    fn wait(&mut self) -> anyhow::Result<()> {
        match self {
            Peer::Thread(handle) => match handle.take().map(JoinHandle::join) {
                Some(Ok(result)) => result.context("the peer thread"),
                Some(Err(_)) => bail!("the peer thread panicked"),
                None => Ok(()),
            },
            Peer::Process(process) => process.wait(),
        }
    }
}

/// The runner started again as `bench-peer`; dropping the guard kills and reaps it.
struct PeerProcess {
    child: process::Child,
}

impl PeerProcess {
    /// `uds-course bench-peer ROLE N ADDRESS...`; with no address, its stdin and stdout are
    /// pipes to us. Its stderr is ours, so its errors show.
    fn spawn(role: Role, n: u64, address: &[OsString]) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("find the runner's own executable")?;
        let role = match role {
            Role::Echo => "echo",
            Role::Sink => "sink",
        };
        let pipes = || if address.is_empty() { Stdio::piped() } else { Stdio::null() };
        let child = Command::new(&exe)
            .args(["bench-peer", role, &n.to_string()])
            .args(address)
            .stdin(pipes())
            .stdout(pipes())
            .spawn()
            .with_context(|| format!("spawn {} bench-peer", exe.display()))?;
        Ok(PeerProcess { child })
    }

    /// Waits for the exit that EOF causes, up to [`PEER_TIMEOUT`]; a failure is an error.
    fn wait(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + PEER_TIMEOUT;
        while Instant::now() < deadline {
            match self.child.try_wait().context("wait for the peer process")? {
                Some(status) if status.success() => return Ok(()),
                Some(status) => bail!("the peer process failed ({status})"),
                None => thread::sleep(Duration::from_millis(1)),
            }
        }
        bail!("the peer process did not exit within {PEER_TIMEOUT:?}")
    }
}

impl Drop for PeerProcess {
    fn drop(&mut self) {
        // Already reaped after a successful `wait`: then kill fails harmlessly. Nowhere to
        // report anything from here.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
