//! lesson07-client: send lines to a server, print each reply as it arrives.
//!
//! The one idea: PATH may be `@name`, a name in Linux's abstract namespace, connected to as a
//! socket file is. With no file, a name nobody holds is "Connection refused", never "No such
//! file or directory". (`--timeout-ms`, from lesson 05, bounds each connect, write and reply.)
//!
//! Run: start the server (it prints `listening on PATH`), then
//! `cargo run --bin lesson07-client -- PATH hello world`, or without messages to type lines
//! (Ctrl-D to finish). Partner: server.rs.

use std::io::{self, BufRead, BufReader, ErrorKind, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use clap::Parser;
use clap::builder::{OsStringValueParser, TypedValueParser};
use lesson07::{
    Address, SOCKET_NAME, check_private_dir, connect_within, default_socket_dir, parse_timeout_ms,
    timed_out,
};

/// Send lines to a lesson07-server and print its replies.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// The server's socket, or @name (Linux) [default: $XDG_RUNTIME_DIR/uds-course/lesson07.sock]
    #[arg(value_name = "PATH", value_parser = OsStringValueParser::new().try_map(Address::parse))]
    path: Option<Address>,
    /// Lines to send; with none, each line of stdin is sent as typed
    message: Vec<String>,
    /// Give up on connect, on a write, or on a reply owed, after N ms
    #[arg(long, value_name = "N", default_value_t = 5000, value_parser = parse_timeout_ms)]
    timeout_ms: u64,
    /// When the server answers `error: busy`, try again up to N times, after 100 ms, then 200,
    /// 400... (MESSAGEs only: lines read from stdin cannot be sent again)
    #[arg(long, value_name = "N", default_value_t = 0)]
    retry_busy: u32,
}

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(err) => {
            eprintln!("lesson07-client: {err:#}");
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
            Address::File(dir.join(SOCKET_NAME))
        }
    };
    // ANCHOR_END: default_path
    let timeout = Duration::from_millis(args.timeout_ms);
    // ANCHOR: retry_busy
    // Lines from stdin are gone once read: a busy server never saw them, and we cannot send
    // them again. So only MESSAGEs are retried.
    let retries = if args.message.is_empty() { 0 } else { args.retry_busy };
    let mut pause = Duration::from_millis(100);
    for _ in 0..retries {
        match converse(&path, timeout, args.message.clone())? {
            Some(code) => return Ok(code),
            // Busy (its line is on stderr). Wait longer each time: a crowd of clients retrying
            // at a steady pace would keep a full server full.
            None => {
                thread::sleep(pause);
                pause = pause.saturating_mul(2);
            }
        }
    }
    // The last try: busy again is a refusal like any other.
    Ok(converse(&path, timeout, args.message)?.unwrap_or(ExitCode::FAILURE))
    // ANCHOR_END: retry_busy
}

/// One conversation: connect, send the MESSAGEs (or stdin), print the replies. `None` when
/// the server was busy: it said so (on stderr by now) instead of answering.
fn converse(
    path: &Address,
    timeout: Duration,
    messages: Vec<String>,
) -> anyhow::Result<Option<ExitCode>> {
    // ANCHOR: connect
    // Bounded: `connect_within` also leaves `timeout` set as the limit on each write.
    let stream =
        connect_within(path, timeout).with_context(|| format!("connect {}", path.display()))?;
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
    let owed = AtomicUsize::new(messages.len());
    let progress = Arc::new(Progress { lines: owed, done: AtomicBool::new(false) });
    let from_stdin = messages.is_empty();
    let writer = {
        let (path, progress) = (path.clone(), Arc::clone(&progress));
        thread::Builder::new().spawn(move || send(&write_half, &messages, &path, &progress))
    };
    let writer = writer.with_context(|| format!("spawn a writer for {}", path.display()))?;
    let mut replies = Replies { count: 0, refused: false, busy: false };
    let read = read_replies(&stream, path, &progress, &mut replies);
    if replies.refused {
        // The server's `error: ` line, already on stderr, says why. A read or write error after
        // it (the server closed the connection) is only its echo. Busy may pass: `run` decides.
        return Ok(if replies.busy { None } else { Some(ExitCode::FAILURE) });
    }
    // A failed read (stdout closed, say) ends the conversation too; the writer ends with us.
    read?;
    // ANCHOR: closed_early
    // The server closed while we were still sending stdin: it cut us off. Don't wait for the
    // writer: it may be blocked reading the terminal, and would notice only when the next line
    // is typed. Returning from `main` ends the process, and the writer with it.
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
    Ok(Some(ExitCode::SUCCESS))
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

/// The writer thread: send the lines, then half-close; returns how many lines it sent.
fn send(
    stream: &UnixStream,
    messages: &[String],
    path: &Address,
    progress: &Progress,
) -> anyhow::Result<usize> {
    let sent = send_lines(stream, messages, path, progress);
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

/// Send each MESSAGE as a line, or else each line of stdin as typed; returns how many lines.
fn send_lines(
    mut stream: &UnixStream,
    messages: &[String],
    path: &Address,
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

/// The replies read so far.
struct Replies {
    count: usize,
    /// The server answered with an `error: ` line (printed to stderr).
    refused: bool,
    /// That line was `error: busy...`: it may take us later.
    busy: bool,
}

// ANCHOR: read_replies
/// Print each reply line as it arrives, until the server closes the connection (EOF).
fn read_replies(
    stream: &UnixStream,
    path: &Address,
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
            replies.busy = line.starts_with(b"error: busy");
            let _ = io::stderr().write_all(&line); // ok to lose: stderr is gone
        } else {
            let mut stdout = io::stdout().lock();
            stdout.write_all(&line).and_then(|()| stdout.flush()).context("write stdout")?;
        }
    }
}
// ANCHOR_END: read_replies
