//! lesson04-client: send lines to a server, print each reply as it arrives.
//!
//! The one idea, from this side: trust the default directory only if it is ours. With no PATH
//! the client checks, as the server does, that the directory belongs to its uid and is closed
//! to others (`check_private_dir` in lib.rs) before it connects: a socket in a directory
//! someone else controls may be theirs. An explicit PATH is the user's choice, not checked.
//! The rest is lesson 01's client; a uid the server refuses gets its `error: ` line, exit 1.
//!
//! Run: start the server (it prints `listening on PATH`), then
//! `cargo run --bin lesson04-client -- PATH hello world`, or without messages to type lines
//! (Ctrl-D to finish). Partner: server.rs.

use std::io::{self, BufRead, BufReader, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;

use anyhow::{Context, anyhow, bail};
use clap::Parser;
use lesson04::{SOCKET_NAME, check_private_dir, default_socket_dir, peer_credentials};

/// Send lines to a lesson04-server and print its replies.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// The server's socket [default: $XDG_RUNTIME_DIR/uds-course/lesson04.sock]
    path: Option<PathBuf>,
    /// Lines to send; with none, each line of stdin is sent as typed
    message: Vec<String>,
    /// Talk only to a server running as this uid (checked with SO_PEERCRED)
    #[arg(long, value_name = "UID")]
    server_uid: Option<u32>,
}

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(err) => {
            eprintln!("lesson04-client: {err:#}");
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
    // ANCHOR: connect
    let stream =
        UnixStream::connect(&path).with_context(|| format!("connect {}", path.display()))?;
    // ANCHOR_END: connect
    // Credentials work both ways: the kernel recorded who called `listen` on the other end, so
    // a process that grabbed the path before the real server cannot pass for it.
    if let Some(expected) = args.server_uid {
        let (uid, _gid, _pid) =
            peer_credentials(&stream).with_context(|| format!("check {}", path.display()))?;
        if uid != expected {
            bail!("check {}: the server is uid {uid}, not {expected}", path.display());
        }
    }
    // Write on a second thread while this one reads. Writing everything first would deadlock on
    // a long input: the server blocks writing replies nobody reads, so it stops reading, and
    // our writes block in turn. It also makes an interactive session show each reply at once.
    let write_half = stream.try_clone().with_context(|| format!("clone {}", path.display()))?;
    // Set by the writer once it has sent all it will send.
    let done = Arc::new(AtomicBool::new(false));
    let from_stdin = args.message.is_empty();
    let writer = {
        let (path, done) = (path.clone(), Arc::clone(&done));
        thread::Builder::new().spawn(move || send(&write_half, &args.message, &path, &done))
    };
    let writer = writer.with_context(|| format!("spawn a writer for {}", path.display()))?;
    let mut replies = Replies { count: 0, refused: false };
    let read = read_replies(&stream, &path, &mut replies);
    if replies.refused {
        // The server's `error: ` line, already on stderr, says why. A read or write error after
        // it (the server closed the connection) is only its echo.
        return Ok(ExitCode::FAILURE);
    }
    // A failed read (stdout closed, say) ends the conversation too; the writer ends with us.
    read?;
    // ANCHOR: closed_early
    // The server closed while we were still sending stdin: it cut us off. Don't wait for the
    // writer: it may be blocked reading the terminal, and would notice only when the next line
    // is typed. Returning from `main` ends the process, and the writer with it.
    if from_stdin && !done.load(Ordering::SeqCst) {
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

/// The writer thread: send the lines, then half-close; returns how many lines it sent.
fn send(
    stream: &UnixStream,
    messages: &[String],
    path: &Path,
    done: &AtomicBool,
) -> anyhow::Result<usize> {
    let sent = send_lines(stream, messages, path);
    // Before the half-close: the server's EOF, which it causes, must find this set.
    done.store(true, Ordering::SeqCst);
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
fn send_lines(mut stream: &UnixStream, messages: &[String], path: &Path) -> anyhow::Result<usize> {
    let write_err = || format!("write {}", path.display());
    if !messages.is_empty() {
        for message in messages {
            stream.write_all(format!("{message}\n").as_bytes()).with_context(write_err)?;
        }
        return Ok(messages.len());
    }
    let mut stdin = io::stdin().lock();
    let mut line = Vec::new();
    let mut sent = 0;
    while stdin.read_until(b'\n', &mut line).context("read stdin")? > 0 {
        stream.write_all(&line).with_context(write_err)?;
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
}

// ANCHOR: read_replies
/// Print each reply line as it arrives, until the server closes the connection (EOF).
fn read_replies(stream: &UnixStream, path: &Path, replies: &mut Replies) -> anyhow::Result<()> {
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    loop {
        line.clear();
        let read = reader.read_until(b'\n', &mut line);
        if read.with_context(|| format!("read {}", path.display()))? == 0 {
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
