//! lesson05-client: send lines to a server, print each reply as it arrives.
//!
//! The one idea: the client never hangs. `--timeout-ms` bounds `connect` (a server that does
//! not accept), each write (a server that does not read) and each wait for a reply (a server
//! that does not answer); when one passes the client says `timed out` and exits 1. Typing at
//! the terminal, it also notices at once when the server closes the connection early.
//!
//! A client is `connect` to the socket file's path, then plain reads and writes. When it has
//! nothing more to send it *half-closes* (`shutdown(Write)`: "no more from me, but I am still
//! listening"); the server reads EOF, answers what is left and closes, and the client reads
//! EOF in turn.
//!
//! Run: start the server (it prints `listening on PATH`), then
//! `cargo run --bin lesson05-client -- PATH hello world`, or without messages to type lines
//! (Ctrl-D to finish). Partner: server.rs.

use std::io::{self, BufRead, BufReader, ErrorKind, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{self, ExitCode};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use clap::Parser;
use lesson05::{SOCKET_NAME, connect_within, default_socket_dir, parse_timeout_ms, timed_out};

/// Send lines to a lesson05-server and print its replies.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// The server's socket [default: $XDG_RUNTIME_DIR/uds-course/lesson05.sock]
    path: Option<PathBuf>,
    /// Lines to send; with none, each line of stdin is sent as typed
    message: Vec<String>,
    /// Give up on connect, on a write, or on a reply owed, after N ms
    #[arg(long, value_name = "N", default_value_t = 5000, value_parser = parse_timeout_ms)]
    timeout_ms: u64,
    /// While nobody listens at PATH (no socket file yet, or a stale one), try again every
    /// 50 ms for up to N ms
    #[arg(long, value_name = "N", default_value_t = 0)]
    retry_ms: u64,
}

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(err) => {
            eprintln!("lesson05-client: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<ExitCode> {
    let args = Args::parse();
    let path = args.path.unwrap_or_else(|| default_socket_dir().join(SOCKET_NAME));
    let timeout = Duration::from_millis(args.timeout_ms);
    // ANCHOR: connect
    // Bounded: `connect_within` also leaves `timeout` set as the limit on each write.
    let retry = Duration::from_millis(args.retry_ms);
    let stream = connect_retrying(&path, timeout, retry)
        .with_context(|| format!("connect {}", path.display()))?;
    // ANCHOR_END: connect
    // And on each read: the clone below shares this socket, and so its timeouts.
    stream
        .set_read_timeout(Some(timeout))
        .with_context(|| format!("set a timeout on {}", path.display()))?;
    // Read on a second thread while this one writes. Writing everything first would deadlock on
    // a long input: the server blocks writing replies nobody reads, so it stops reading, and
    // our writes block in turn. It also makes an interactive session show each reply at once.
    let read_half = stream.try_clone().with_context(|| format!("clone {}", path.display()))?;
    let reader_path = path.clone();
    // The MESSAGEs are owed their replies from the start: they are sent without waiting.
    let owed = AtomicUsize::new(args.message.len());
    let progress = Arc::new(Progress { lines: owed, done: AtomicBool::new(false) });
    let reader_progress = Arc::clone(&progress);
    let from_stdin = args.message.is_empty();
    let reader = thread::Builder::new()
        .spawn(move || print_replies(read_half, &reader_path, &reader_progress, from_stdin))
        .with_context(|| format!("spawn a reader for {}", path.display()))?;
    let sent = send_lines(&stream, &args.message, &path, &progress);
    // Before the half-close: the server's EOF, which it causes, must find this set.
    progress.done.store(true, Ordering::SeqCst);
    // ANCHOR: shutdown
    // Half-close: the server reads EOF, answers the rest, and closes — our reader's EOF.
    let shutdown = stream.shutdown(Shutdown::Write);
    // ANCHOR_END: shutdown
    let replies = reader.join().map_err(|_| anyhow!("the reader thread panicked"))?;
    if replies.refused {
        // The server's `error: ` line, already on stderr, says why. A write error after it
        // (EPIPE: the server closed the connection) is only its echo.
        return Ok(ExitCode::FAILURE);
    }
    // The reader's failure first: when it stops (stdout closed, say), our writes fail too.
    if let Some(err) = replies.failed {
        return Err(err);
    }
    let sent = sent?;
    shutdown.with_context(|| format!("shutdown {}", path.display()))?;
    if replies.count < sent {
        bail!(
            "read {}: the server closed the connection after {} of {sent} replies",
            path.display(),
            replies.count
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `connect_within`, tried again every 50 ms for up to `retry` while nobody listens at `path`:
/// no socket file yet (ENOENT) or a stale one (ECONNREFUSED), as while a server (re)starts.
/// Other errors are returned at once: waiting does not fix a path that is too long or a
/// permission we lack, and `timed out` has already waited.
fn connect_retrying(path: &Path, timeout: Duration, retry: Duration) -> io::Result<UnixStream> {
    let give_up = Instant::now() + retry;
    loop {
        match connect_within(path, timeout) {
            Err(err)
                if matches!(err.kind(), ErrorKind::NotFound | ErrorKind::ConnectionRefused) =>
            {
                let left = give_up.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(err);
                }
                // A pause, not a spin: a loop without a sleep would burn a core for the whole
                // wait, as the seeds' accept loop does on EMFILE.
                thread::sleep(left.min(Duration::from_millis(50)));
            }
            connected => return connected,
        }
    }
}

/// How far the writer has got, for the reader to tell a server that owes us a reply from one
/// that is quietly waiting for us.
struct Progress {
    /// Lines sent or being sent: each is owed a reply.
    lines: AtomicUsize,
    /// Nothing more will be sent: the server owes us its EOF.
    done: AtomicBool,
}

impl Progress {
    /// Does the server owe us more than `replies` lines, or its EOF?
    fn owes(&self, replies: usize) -> bool {
        self.done.load(Ordering::SeqCst) || self.lines.load(Ordering::SeqCst) > replies
    }
}

/// Send each MESSAGE as a line, or else each line of stdin as typed; returns how many lines.
fn send_lines(
    mut stream: &UnixStream,
    messages: &[String],
    path: &Path,
    progress: &Progress,
) -> anyhow::Result<usize> {
    let mut send = |line: &[u8]| {
        stream
            .write_all(line)
            .map_err(timed_out)
            .with_context(|| format!("write {}", path.display()))
    };
    if !messages.is_empty() {
        for message in messages {
            send(format!("{message}\n").as_bytes())?;
        }
        return Ok(messages.len());
    }
    let mut stdin = io::stdin().lock();
    let mut line = Vec::new();
    let mut sent = 0;
    while stdin.read_until(b'\n', &mut line).context("read stdin")? > 0 {
        progress.lines.fetch_add(1, Ordering::SeqCst);
        send(&line)?;
        line.clear();
        sent += 1;
    }
    Ok(sent)
}

/// What the reader thread saw.
struct Replies {
    count: usize,
    /// The server answered with an `error: ` line (printed to stderr).
    refused: bool,
    /// Reading stopped on this error instead of the server's EOF.
    failed: Option<anyhow::Error>,
}

/// Print each reply line as it arrives, until the server closes the connection (EOF).
fn print_replies(
    stream: UnixStream,
    path: &Path,
    progress: &Progress,
    from_stdin: bool,
) -> Replies {
    let mut replies = Replies { count: 0, refused: false, failed: None };
    if let Err(err) = read_replies(&stream, path, progress, &mut replies) {
        // Stop our writer too: after this its next write fails at once, instead of blocking
        // on a server that waits for us to read replies we no longer read.
        let _ = stream.shutdown(Shutdown::Both); // ok to fail: the connection may be gone
        replies.failed = Some(err);
    }
    // ANCHOR: closed_early
    // The server has closed before we finished sending: it cut us off (a limit, a refusal).
    // The writer may be blocked reading the terminal, and would notice only when the next line
    // is typed and its write fails. The conversation is over, so end it from here, with the
    // same message and exit code the main thread would give. Every reply is already printed and
    // flushed, and `process::exit` skips only destructors that have nothing left to do.
    if from_stdin && !progress.done.load(Ordering::SeqCst) {
        if let Some(err) = &replies.failed {
            eprintln!("lesson05-client: {err:#}");
        } else if !replies.refused {
            eprintln!(
                "lesson05-client: read {}: the server closed the connection before the input ended",
                path.display()
            );
        }
        process::exit(1);
    }
    // ANCHOR_END: closed_early
    replies
}

// ANCHOR: read_replies
fn read_replies(
    stream: &UnixStream,
    path: &Path,
    progress: &Progress,
    replies: &mut Replies,
) -> anyhow::Result<()> {
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    loop {
        line.clear();
        // ANCHOR: reply_timeout
        // The read timeout bounds a wait for a reply, not a pause at the keyboard. A wait that
        // began while the server owed us nothing says only that the user had not typed yet:
        // wait again (bytes of a reply read so far stay in `line`). So a typed line's reply
        // gets at least the full timeout, and at most twice it.
        let read = loop {
            let owed = progress.owes(replies.count);
            match reader.read_until(b'\n', &mut line) {
                Err(err)
                    if !owed
                        && matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                read => break read.map_err(timed_out),
            }
        };
        // ANCHOR_END: reply_timeout
        if read.with_context(|| format!("read {}", path.display()))? == 0 && line.is_empty() {
            return Ok(()); // EOF: the server closed its end
        }
        if !line.ends_with(b"\n") {
            bail!("read {}: the server closed the connection mid-reply", path.display());
        }
        replies.count += 1;
        // A refusal can never be an upper-cased echo: `error: ` is lower case.
        if line.starts_with(b"error: ") {
            replies.refused = true;
            let _ = io::stderr().write_all(&line); // ok to lose: stderr is gone
        } else {
            let mut stdout = io::stdout().lock();
            stdout.write_all(&line).and_then(|()| stdout.flush()).context("write stdout")?;
        }
    }
}
// ANCHOR_END: read_replies
