//! lesson08-client: send frames to a server, print each reply as it arrives.
//!
//! The one idea: each MESSAGE is one frame, a 4-byte big-endian length and the bytes, and each
//! reply frame is printed followed by a newline. With no MESSAGE, all of stdin is ONE frame and
//! the reply is written to stdout as raw bytes, nothing added: `lesson08-client PATH < a.bin >
//! b.bin` is binary-safe. Lesson 05's `--timeout-ms` still bounds every wait.
//!
//! Run: start the server (it prints `listening on PATH`), then
//! `cargo run --bin lesson08-client -- PATH hello world`. Partner: server.rs.

use std::io::{self, ErrorKind, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use clap::Parser;
use lesson08::{
    DEFAULT_MAX_FRAME, Decoder, SOCKET_NAME, check_private_dir, connect_within, default_socket_dir,
    encode, parse_timeout_ms, timed_out,
};

/// Send frames to a lesson08-server and print its replies.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// The server's socket [default: $XDG_RUNTIME_DIR/uds-course/lesson08.sock]
    path: Option<PathBuf>,
    /// Messages to send, one frame each; with none, all of stdin is one frame
    message: Vec<String>,
    /// Give up on connect, on a write, or on a reply owed, after N ms
    #[arg(long, value_name = "N", default_value_t = 5000, value_parser = parse_timeout_ms)]
    timeout_ms: u64,
    /// The largest reply accepted: a header announcing more is an error, not an allocation
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_MAX_FRAME)]
    max_frame: usize,
}

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(err) => {
            eprintln!("lesson08-client: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<ExitCode> {
    let args = Args::parse();
    // ANCHOR: default_path
    let path = match args.path {
        // An explicit PATH is the user's choice.
        Some(path) => path,
        // A socket in a directory that someone else controls may be theirs, not our server's:
        // check the default directory as the server does.
        None => {
            let dir = default_socket_dir();
            check_private_dir(&dir)?;
            dir.join(SOCKET_NAME)
        }
    };
    // ANCHOR_END: default_path
    let timeout = Duration::from_millis(args.timeout_ms);
    // ANCHOR: connect
    // Bounded: `connect_within` also leaves `timeout` set as the limit on each write.
    let stream =
        connect_within(&path, timeout).with_context(|| format!("connect {}", path.display()))?;
    // ANCHOR_END: connect
    // And on each read: the clone below shares this socket, and so its timeouts.
    stream
        .set_read_timeout(Some(timeout))
        .with_context(|| format!("set a timeout on {}", path.display()))?;
    // Write on a second thread while this one reads. Writing everything first would deadlock on
    // a long input: the server blocks writing replies nobody reads, so it stops reading, and
    // our writes block in turn. It also makes an interactive session show each reply at once.
    let write_half = stream.try_clone().with_context(|| format!("clone {}", path.display()))?;
    // The MESSAGEs are owed their replies from the start: they are sent without waiting.
    let owed = AtomicUsize::new(args.message.len());
    let progress = Arc::new(Progress { frames: owed, done: AtomicBool::new(false) });
    let from_stdin = args.message.is_empty();
    let writer = {
        let (path, progress) = (path.clone(), Arc::clone(&progress));
        thread::Builder::new().spawn(move || send(&write_half, &args.message, &path, &progress))
    };
    let writer = writer.with_context(|| format!("spawn a writer for {}", path.display()))?;
    let mut replies = Replies { count: 0, refused: false, raw: from_stdin };
    let read = read_replies(&stream, &path, &progress, &mut replies, args.max_frame);
    if replies.refused {
        // The server's `error: ` frame, already on stderr, says why. A read or write error after
        // it (the server closed the connection) is only its echo.
        return Ok(ExitCode::FAILURE);
    }
    // A failed read (stdout closed, say) ends the conversation too; the writer ends with us.
    read?;
    // ANCHOR: closed_early
    // The server closed while we were still sending stdin: it cut us off. Don't wait for the
    // writer: it may be blocked reading the terminal, and would notice only at the end of the
    // input. Returning from `main` ends the process, and the writer with it.
    if from_stdin && !progress.done.load(Ordering::SeqCst) {
        bail!("read {}: the server closed the connection before the input ended", path.display());
    }
    // ANCHOR_END: closed_early
    let sent = writer.join().map_err(|_| anyhow!("the writer thread panicked"))??;
    if replies.count < sent {
        bail!(
            "read {}: the server closed the connection after {} of {sent} replies",
            path.display(),
            replies.count
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// How far the writer has got, for the reader to tell a server that owes us a reply from one
/// that is quietly waiting for us.
struct Progress {
    /// Frames sent or being sent: each is owed a reply.
    frames: AtomicUsize,
    /// Nothing more will be sent: the server owes us its EOF.
    done: AtomicBool,
}

impl Progress {
    /// Does the server owe us more than `replies` frames, or its EOF?
    fn owes(&self, replies: usize) -> bool {
        self.done.load(Ordering::SeqCst) || self.frames.load(Ordering::SeqCst) > replies
    }
}

/// The writer thread: send the frames, then half-close; returns how many frames it sent.
fn send(
    stream: &UnixStream,
    messages: &[String],
    path: &Path,
    progress: &Progress,
) -> anyhow::Result<usize> {
    let sent = send_frames(stream, messages, path, progress);
    // Before the half-close: the server's EOF, which it causes, must find this set.
    progress.done.store(true, Ordering::SeqCst);
    // ANCHOR: shutdown
    // Half-close: the server reads EOF, answers the rest, and closes — the EOF `run` waits
    // for. Even when sending failed (stdin unreadable, say): else both sides would wait.
    let shutdown = stream.shutdown(Shutdown::Write);
    // ANCHOR_END: shutdown
    let sent = sent?;
    shutdown.with_context(|| format!("shutdown {}", path.display()))?;
    Ok(sent)
}

// ANCHOR: send_frames
/// Send each MESSAGE as a frame, or else all of stdin as one; returns how many frames.
fn send_frames(
    mut stream: &UnixStream,
    messages: &[String],
    path: &Path,
    progress: &Progress,
) -> anyhow::Result<usize> {
    let mut send = |payload: &[u8]| {
        // The header and the payload in one buffer: one `write_all`, which writes again as
        // long as the kernel takes only part of it (a partial write), until all of it is sent.
        let frame = encode(payload).with_context(|| format!("frame for {}", path.display()))?;
        stream
            .write_all(&frame)
            .map_err(timed_out)
            .with_context(|| format!("write {}", path.display()))
    };
    if !messages.is_empty() {
        for message in messages {
            send(message.as_bytes())?;
        }
        return Ok(messages.len());
    }
    // Raw bytes, not lines: a frame carries newlines and zeros as they are.
    let mut input = Vec::new();
    io::stdin().lock().read_to_end(&mut input).context("read stdin")?;
    progress.frames.fetch_add(1, Ordering::SeqCst);
    send(&input)?;
    Ok(1)
}
// ANCHOR_END: send_frames

/// The replies read so far.
struct Replies {
    count: usize,
    /// The server answered with an `error: ` frame (printed to stderr).
    refused: bool,
    /// Write each reply as raw bytes, with no newline added (the stdin mode).
    raw: bool,
}

// ANCHOR: read_replies
/// Print each reply frame as it arrives, until the server closes the connection (EOF).
fn read_replies(
    mut stream: &UnixStream,
    path: &Path,
    progress: &Progress,
    replies: &mut Replies,
    max_frame: usize,
) -> anyhow::Result<()> {
    let mut decoder = Decoder::new(max_frame);
    let mut chunk = vec![0; 64 << 10];
    loop {
        let wanted = decoder.wanted().with_context(|| format!("read {}", path.display()))?;
        // ANCHOR: reply_timeout
        // The read timeout bounds a wait for a reply, not a wait for stdin to end: a wait that
        // began while the server owed us nothing is simply made again.
        let read = loop {
            let owed = progress.owes(replies.count);
            match stream.read(&mut chunk[..wanted.min(64 << 10)]) {
                Err(err)
                    if !owed
                        && matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                read => break read.map_err(timed_out),
            }
        };
        // ANCHOR_END: reply_timeout
        let read = read.with_context(|| format!("read {}", path.display()))?;
        if read == 0 {
            return match decoder.partial() {
                None => Ok(()), // EOF: the server closed its end
                Some(arrived) => bail!("read {}: EOF inside a frame: {arrived}", path.display()),
            };
        }
        let frames =
            decoder.push(&chunk[..read]).with_context(|| format!("read {}", path.display()))?;
        for payload in frames {
            replies.count += 1;
            // A refusal can never be an upper-cased echo: `error: ` is lower case.
            if payload.starts_with(b"error: ") {
                replies.refused = true;
                // Lost only if stderr is gone, and then nobody could read it anyway.
                let mut stderr = io::stderr();
                let _ = stderr.write_all(&payload).and_then(|()| stderr.write_all(b"\n"));
                continue;
            }
            let mut stdout = io::stdout().lock();
            stdout.write_all(&payload).context("write stdout")?;
            if !replies.raw {
                stdout.write_all(b"\n").context("write stdout")?;
            }
            stdout.flush().context("write stdout")?;
        }
    }
}
// ANCHOR_END: read_replies
