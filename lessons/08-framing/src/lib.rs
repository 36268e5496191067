//! lesson08: what the server and the client agree on — where the socket lives by default, when
//! its directory can be trusted, who is at the other end of a connection, how to `connect`
//! and wait without waiting forever, and what a frame is: [`encode`], [`decode`], [`Decoder`].
//!
//! The binaries are the lesson: `src/bin/server.rs` and `src/bin/client.rs`.

use std::io::{self, ErrorKind};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::{SocketAddr, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;
use std::{env, fs};

use anyhow::{Context, bail};
use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
use rustix::net::sockopt::{Timeout, set_socket_timeout};
use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType, socket_with};
use rustix::process::getuid;

/// The file name of this lesson's socket inside [`default_socket_dir`].
pub const SOCKET_NAME: &str = "lesson08.sock";

// ANCHOR: default_dir
/// `$XDG_RUNTIME_DIR/uds-course`, else `<temp dir>/uds-course-<uid>`.
///
/// `$XDG_RUNTIME_DIR` (usually `/run/user/<uid>`) is private to the user and emptied at logout:
/// the place sockets belong. Without it, the uid in the name keeps users of a shared `/tmp`
/// from colliding by accident, and no more: anyone can create `/tmp/uds-course-1000` first,
/// own it, and put their own socket in it. So both programs check the directory with
/// [`check_private_dir`] before they use it. Only the server creates the directory.
pub fn default_socket_dir() -> PathBuf {
    match env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from) {
        Some(runtime) if runtime.is_absolute() => runtime.join("uds-course"),
        _ => env::temp_dir().join(format!("uds-course-{}", rustix::process::getuid().as_raw())),
    }
}
// ANCHOR_END: default_dir

// ANCHOR: check_dir
/// Accept `dir` only if it is a directory of ours that nobody else may enter: then nobody else
/// can reach a socket file in it, or put one there. The server checks the default directory
/// after creating it; the client checks it before connecting to a socket in it.
pub fn check_private_dir(dir: &Path) -> anyhow::Result<()> {
    let shown = dir.display();
    // Whoever made it first decided its owner and mode: check, never assume. No symlinks:
    // one could point a root-run server at a directory someone else controls.
    let meta = fs::symlink_metadata(dir).with_context(|| format!("stat {shown}"))?;
    let me = getuid().as_raw();
    if !meta.is_dir() {
        bail!("check {shown}: not a directory");
    }
    if meta.uid() != me {
        bail!("check {shown}: owned by uid {}, not by us (uid {me})", meta.uid());
    }
    if meta.mode() & 0o077 != 0 {
        bail!(
            "check {shown}: mode {:04o} lets other users in; `chmod 700 {shown}` if that is safe",
            meta.mode() & 0o7777
        );
    }
    Ok(())
}
// ANCHOR_END: check_dir

// ANCHOR: peer_credentials
/// Who is at the other end of `stream`, as the kernel recorded it at `connect` (SO_PEERCRED):
/// the peer's uid, gid and pid. Through nix: rustix 1.1's pid cannot be 0, and 0 is the pid
/// of a peer outside our PID namespace (a server in a container, its client on the host).
pub fn peer_credentials(stream: &UnixStream) -> io::Result<(u32, u32, i32)> {
    let peer = getsockopt(stream, PeerCredentials)?;
    Ok((peer.uid(), peer.gid(), peer.pid()))
}
// ANCHOR_END: peer_credentials

// ANCHOR: bounded_connect
/// `connect` to the socket file at `path`, giving up after `timeout` with a `timed out` error.
/// The timeout stays set on the stream as its send timeout: it bounds every write too.
///
/// On Linux `UnixStream::connect` can wait forever: while a server's accept queue (its
/// backlog) is full, `connect` sleeps until the server accepts someone, and a hung server
/// never does (macOS and the BSDs refuse at once instead). std has no
/// `connect_timeout` for Unix sockets. The recipe that works for TCP — a non-blocking
/// `connect`, then poll(2) until the socket is writable — does not work here: on Linux a
/// non-blocking `connect` to a full Unix listener fails at once with EAGAIN and leaves nothing
/// in progress (a second try fails the same way), and poll reports the unconnected socket
/// writable straight away. What works is the kernel's own wait with a bound: a blocking socket
/// whose send timeout (SO_SNDTIMEO) is set *before* `connect`. Then `connect` sleeps until the
/// server makes room or the timeout passes, and fails with EAGAIN.
pub fn connect_within(path: &Path, timeout: Duration) -> io::Result<UnixStream> {
    // std's own check of the path first, so that a path too long for `sun_path` is reported as
    // `UnixStream::connect` reports it: "path must be shorter than SUN_LEN".
    SocketAddr::from_pathname(path)?;
    let address = SocketAddrUnix::new(path)?;
    let socket = socket_with(AddressFamily::UNIX, SocketType::STREAM, SocketFlags::CLOEXEC, None)?;
    set_socket_timeout(&socket, Timeout::Send, Some(timeout))?;
    rustix::net::connect(&socket, &address).map_err(|errno| timed_out(errno.into()))?;
    Ok(UnixStream::from(socket))
}

/// Say `timed out` when a socket timeout expired. std reports it as WouldBlock (EAGAIN,
/// "Resource temporarily unavailable"), which reads like a bug in the program; on a blocking
/// socket EAGAIN means exactly that the timeout passed.
pub fn timed_out(err: io::Error) -> io::Error {
    match err.kind() {
        ErrorKind::WouldBlock | ErrorKind::TimedOut => {
            io::Error::new(ErrorKind::TimedOut, "timed out")
        }
        _ => err,
    }
}
// ANCHOR_END: bounded_connect

/// clap's parser for a timeout in milliseconds: at least 1. A zero timeout means "no timeout"
/// to the kernel, and std refuses to set one, so 0 is a usage error rather than a surprise.
pub fn parse_timeout_ms(text: &str) -> Result<u64, String> {
    match text.parse::<u64>() {
        Ok(0) => Err("a timeout of 0 ms is not a timeout; use 1 or more".to_owned()),
        Ok(ms) => Ok(ms),
        Err(_) => Err(format!("`{text}` is not a number of milliseconds")),
    }
}

// ANCHOR: frame
/// A frame is a 4-byte big-endian length N, then N bytes: tokio-util's `LengthDelimitedCodec`
/// default layout, and Python's `struct.pack('>I', n)`.
pub const HEADER: usize = 4;

/// The default `--max-frame`: 8 MiB, `LengthDelimitedCodec`'s default `max_frame_length`.
pub const DEFAULT_MAX_FRAME: usize = 8 << 20;

/// The header for a payload of `len` bytes. A payload of 4 GiB or more has no length that fits:
/// an error, never a length cut down to 32 bits.
pub fn header(len: usize) -> io::Result<[u8; HEADER]> {
    let len = u32::try_from(len)
        .map_err(|_| io::Error::new(ErrorKind::InvalidInput, "a frame holds less than 4 GiB"))?;
    Ok(len.to_be_bytes())
}

/// `payload` as one frame: its length, then itself, in one buffer for one `write_all`.
pub fn encode(payload: &[u8]) -> io::Result<Vec<u8>> {
    let mut frame = Vec::with_capacity(HEADER + payload.len());
    frame.extend_from_slice(&header(payload.len())?);
    frame.extend_from_slice(payload);
    Ok(frame)
}
// ANCHOR_END: frame

// ANCHOR: decode
/// What the bytes at the front of a buffer are.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// A whole frame: its payload, and how many bytes of the buffer it took (header included).
    Frame { payload: &'a [u8], consumed: usize },
    /// Not a whole frame yet: `needed` more bytes complete the header or the payload.
    Incomplete { needed: usize },
}

/// A header announced more than the cap.
#[derive(Debug, PartialEq, Eq)]
pub struct TooLong {
    pub len: u64,
    pub max: usize,
}

impl std::fmt::Display for TooLong {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "frame of {} bytes is over the {}-byte limit", self.len, self.max)
    }
}

impl std::error::Error for TooLong {}

/// The frame at the front of `buf`, if it is all there. A pure function: no I/O, no
/// allocation, any bytes in — so a test (or a fuzzer) can feed it anything. The length is
/// checked against `max_frame` as soon as the header is complete, before anyone allocates a
/// byte for the payload: the cap is to frames what `--max-line` was to lines.
pub fn decode(buf: &[u8], max_frame: usize) -> Result<Decoded<'_>, TooLong> {
    let Some((header, rest)) = buf.split_first_chunk::<HEADER>() else {
        return Ok(Decoded::Incomplete { needed: HEADER - buf.len() });
    };
    let len = u32::from_be_bytes(*header);
    // u64: on a 32-bit machine a u32 length need not fit a usize.
    match usize::try_from(len) {
        Ok(len) if len <= max_frame => match rest.get(..len) {
            Some(payload) => Ok(Decoded::Frame { payload, consumed: HEADER + len }),
            None => Ok(Decoded::Incomplete { needed: len - rest.len() }),
        },
        _ => Err(TooLong { len: u64::from(len), max: max_frame }),
    }
}
// ANCHOR_END: decode

// ANCHOR: decoder
/// Reassembles frames from bytes as they arrive, split anywhere: one byte at a time, a header
/// across two reads, a frame and a half in one. It never holds more than one frame: read at
/// most [`Decoder::wanted`] bytes, and its buffer stays within the cap plus the header.
pub struct Decoder {
    buf: Vec<u8>,
    max_frame: usize,
}

impl Decoder {
    pub fn new(max_frame: usize) -> Decoder {
        Decoder { buf: Vec::new(), max_frame }
    }

    /// How many bytes the frame being read still lacks (at least 1).
    pub fn wanted(&self) -> Result<usize, TooLong> {
        match decode(&self.buf, self.max_frame)? {
            Decoded::Incomplete { needed } => Ok(needed),
            Decoded::Frame { .. } => Ok(1), // never: `push` takes every whole frame out
        }
    }

    /// Add `bytes`; returns the frames they complete, in order. An over-long header is an
    /// error before its payload is stored.
    pub fn push(&mut self, mut bytes: &[u8]) -> Result<Vec<Vec<u8>>, TooLong> {
        let mut frames = Vec::new();
        loop {
            match decode(&self.buf, self.max_frame)? {
                // The buffer is this one frame (the server's case: it reads no more than the
                // frame lacks): hand the buffer itself over, minus its header, not a copy.
                Decoded::Frame { consumed, .. } if consumed == self.buf.len() => {
                    let mut frame = std::mem::take(&mut self.buf);
                    frame.drain(..HEADER);
                    frames.push(frame);
                }
                Decoded::Frame { payload, consumed } => {
                    frames.push(payload.to_vec());
                    self.buf.drain(..consumed);
                }
                Decoded::Incomplete { .. } if bytes.is_empty() => return Ok(frames),
                Decoded::Incomplete { needed } => {
                    let take = needed.min(bytes.len());
                    // The header is checked: room for exactly this frame, no doubling past it.
                    if self.buf.len() >= HEADER {
                        self.buf.reserve_exact(needed);
                    }
                    self.buf.extend_from_slice(&bytes[..take]);
                    bytes = &bytes[take..];
                }
            }
        }
    }

    /// At EOF: `None` if it fell between frames (a normal close), else what arrived of the
    /// partial frame, as the server logs it.
    pub fn partial(&self) -> Option<String> {
        match self.buf.split_first_chunk::<HEADER>() {
            _ if self.buf.is_empty() => None,
            None => Some(format!("{} of {HEADER} header bytes arrived", self.buf.len())),
            Some((header, rest)) => {
                let len = u32::from_be_bytes(*header);
                Some(format!("{} of {len} payload bytes arrived", rest.len()))
            }
        }
    }

    /// The bytes this decoder has allocated: what the property test holds to the cap.
    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }
}
// ANCHOR_END: decoder

// ANCHOR: log
/// `eprintln!` with the server's name in front (`lesson08-server: ...`), in one `write`.
/// `eprintln!` itself writes each piece of its line separately (stderr has no buffer): nine
/// system calls for lesson 04's `accepted from` line, more than serving a client's line costs.
/// A write to stderr that fails is not a reason to stop serving, so it is ignored.
#[macro_export]
macro_rules! log {
    ($($arg:tt)*) => {{
        let line = format!("{}-server: {}\n", env!("CARGO_PKG_NAME"), format_args!($($arg)*));
        let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
    }};
}
// ANCHOR_END: log
