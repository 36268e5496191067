//! lesson03-server: lesson 02's server, and a graceful shutdown on SIGINT and SIGTERM.
//! Reference solution of exercise 2 (EXERCISES.md).
//!
//! The one idea: asked to stop (SIGINT from Ctrl-C, SIGTERM from `kill`), the server stops
//! accepting, lets the connections it accepted finish within `--grace-ms`, removes its socket
//! file only if it is still ours, and exits 0. A second signal exits 1 at once.
//!
//! Run: `cargo run --bin lesson03-server` prints `listening on PATH`; then, in another terminal,
//! `cargo run --bin lesson03-client -- PATH hello` or `nc -NU PATH`. Partner: client.rs.

use std::io::{self, BufRead, BufReader, ErrorKind, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{self, ExitCode};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;
use std::{fs, thread};

use anyhow::{Context, bail};
use clap::Parser;
use lesson03::{SOCKET_NAME, default_socket_dir, log};
use signal_hook::consts::{SIGINT, SIGTERM, SIGUSR1};
use signal_hook::iterator::Signals;

/// Answer each line a client sends with the same line in ASCII upper case.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Where to create the socket [default: $XDG_RUNTIME_DIR/uds-course/lesson03.sock]
    path: Option<PathBuf>,
    /// After SIGINT or SIGTERM, how long accepted connections may take to finish
    #[arg(long, value_name = "N", default_value_t = 5000)]
    grace_ms: u64,
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
    remove_stale_socket(&path)?;
    // ANCHOR: bind
    // `bind` creates the socket file; std then calls `listen`, so clients can queue up until
    // we `accept` them. If anything exists at `path` — even the socket file of a server that
    // died — `bind` fails with "Address already in use".
    let listener = UnixListener::bind(&path).with_context(|| format!("bind {}", path.display()))?;
    // ANCHOR_END: bind
    // ANCHOR: guard
    let socket_file = Arc::new(SocketFile::bound_at(&path)?);
    let _remove_on_exit = RemoveOnDrop(Arc::clone(&socket_file));
    // ANCHOR_END: guard
    // 0 while serving; then the signal that asked us to stop.
    let stop_signal = Arc::new(AtomicI32::new(0));
    // Each connection holds a clone of `serving` until it closes (as mini-redis waits): nothing is
    // sent, but `all_closed` reports Disconnected once the last, with the only `Sender`, is gone.
    let (sender, all_closed) = mpsc::channel::<()>();
    let serving = Arc::new(sender);
    // Before `listening on`: a signal that arrives once we are ready must find its handler.
    handle_signals(&listener, &socket_file, &stop_signal, Arc::downgrade(&serving))?;
    // The line that scripts and tests wait for. writeln!, not println!, which would panic
    // if nobody reads our stdout.
    let mut stdout = io::stdout();
    writeln!(stdout, "listening on {}", path.display())
        .and_then(|()| stdout.flush())
        .context("write stdout")?;
    // ANCHOR: accept_loop
    for id in 1.. {
        let accepted = listener.accept();
        // After the first signal `accept` fails (its socket was shut down) or hands us a
        // client that was still queued: either way, we are done accepting.
        if stop_signal.load(Ordering::SeqCst) != 0 {
            break;
        }
        match accepted {
            Ok((stream, _addr)) => {
                // Owned by the closure: gone when `serve` returns or panics, or if the spawn fails.
                let serving = Arc::clone(&serving);
                // Builder, not thread::spawn: spawn panics when the OS refuses a thread.
                let spawned = thread::Builder::new().spawn(move || {
                    serve(id, &stream);
                    // Uncounted before closing: a client that has read EOF is never waited for.
                    drop(serving);
                    drop(stream); // closes the connection: the client reads EOF
                });
                if let Err(err) = spawned {
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
    // Close the listening socket: clients still queued in it get a reset now, instead of
    // waiting out the grace period for an `accept` that will never come.
    drop(listener);
    log!("{}: shutting down", signal_name(stop_signal.load(Ordering::SeqCst)));
    // ANCHOR: grace
    let grace = Duration::from_millis(args.grace_ms);
    // Drop our own handle: from now on the strong count is the open connections, and
    // `recv_timeout` returns Disconnected when the last goes — a sleep, never a busy loop.
    let open = Arc::downgrade(&serving);
    drop(serving);
    let still_open = open.strong_count();
    if still_open > 0 {
        log!("waiting up to {} ms for open connections: {still_open}", grace.as_millis());
    }
    if let Err(RecvTimeoutError::Timeout) = all_closed.recv_timeout(grace) {
        log!("grace period over; cutting off open connections: {}", open.strong_count());
    }
    // ANCHOR_END: grace
    if socket_file.remove() {
        log!("removed {}", path.display());
    }
    Ok(())
}

// ANCHOR: remove_stale
/// Remove the socket file at `path` if it is stale; refuse if a live server owns it.
///
/// Deleting whatever is at the path before binding would steal the path from a server that
/// is still running (its clients could no longer reach it; it would never know) and delete
/// a regular file that was put there by mistake. So look first, then knock.
fn remove_stale_socket(path: &Path) -> anyhow::Result<()> {
    // symlink_metadata, not metadata: a symlink is not followed, and not ours to remove.
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(err) if err.kind() == ErrorKind::NotFound => return Ok(()), // nothing there
        Err(err) => return Err(err).with_context(|| format!("stat {}", path.display())),
    };
    if !meta.file_type().is_socket() {
        bail!("probe {}: not a socket; left untouched", path.display());
    }
    // On Linux a live server whose backlog is full makes this connect wait, not fail, until
    // it gets round to accepting; lesson 05 puts a deadline on connect.
    match UnixStream::connect(path) {
        Ok(_) => bail!("probe {}: is in use by a running server", path.display()),
        // ECONNREFUSED: nobody listens on the file any more, on Linux the mark of a stale one
        // (macOS and the BSDs refuse a live server whose backlog is full, too).
        Err(err) if err.kind() == ErrorKind::ConnectionRefused => {
            // Two servers started at the same instant can both find the file stale, and the
            // second then removes the first one's fresh socket. A lock file held with flock(2)
            // closes that window; starting one server per path is the simpler rule.
            fs::remove_file(path).with_context(|| format!("remove stale {}", path.display()))
        }
        // Permission denied, say: we cannot tell whether it is stale, so we touch nothing.
        Err(err) => Err(err).with_context(|| format!("probe {}", path.display())),
    }
}
// ANCHOR_END: remove_stale

// ANCHOR: socket_file
/// The socket file this server bound, known by device and inode as well as by path: once
/// it is gone (someone removed it, a new server bound the path) a file at that path is not
/// ours to delete.
struct SocketFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
    /// Held while removing, so a second caller waits for the first to finish.
    removed: Mutex<bool>,
}

impl SocketFile {
    fn bound_at(path: &Path) -> anyhow::Result<SocketFile> {
        let meta =
            fs::symlink_metadata(path).with_context(|| format!("stat {}", path.display()))?;
        let (dev, ino) = (meta.dev(), meta.ino());
        Ok(SocketFile { path: path.to_owned(), dev, ino, removed: Mutex::new(false) })
    }

    /// Remove the file if it is still the one we bound; true if this call removed it. Two
    /// threads may ask at once (the main thread, a second signal): the second waits, then finds
    /// nothing left to do — so `process::exit` cannot cut the first one short.
    fn remove(&self) -> bool {
        let mut removed = self.removed.lock().unwrap_or_else(PoisonError::into_inner);
        if *removed {
            return false;
        }
        *removed = true;
        let path = self.path.display();
        match fs::symlink_metadata(&self.path) {
            // Between this check and the unlink another server could still replace the file;
            // the window is microseconds, against the seconds a restart takes.
            Ok(meta) if (meta.dev(), meta.ino()) == (self.dev, self.ino) => {
                match fs::remove_file(&self.path) {
                    Ok(()) => return true,
                    Err(err) => log!("remove {path}: {err}"),
                }
            }
            Ok(_) => log!("{path} is no longer our socket; left in place"),
            Err(err) if err.kind() == ErrorKind::NotFound => {}
            Err(err) => log!("stat {path}: {err}"),
        }
        false
    }
}

/// Removes the socket file when dropped: on an early `?` and when a panic unwinds, as well
/// as at the end of `run` (where the removal has already been done and logged).
struct RemoveOnDrop(Arc<SocketFile>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        self.0.remove();
    }
}
// ANCHOR_END: socket_file

// ANCHOR: signals
/// Wait for SIGINT and SIGTERM on a thread of its own. The first stops the accept loop; a
/// second, during the grace period, removes the socket file and exits 1 at once. SIGUSR1, while
/// serving, logs how many connections are open and changes nothing else.
///
/// Why not `signal_hook::flag::register` and a flag the accept loop checks? signal-hook
/// installs its handlers with SA_RESTART, so the kernel *restarts* a blocked `accept` instead
/// of failing it with EINTR (strace shows `ERESTARTSYS`): the loop would not see the flag until
/// the next client happened to connect. So this thread receives the signal and wakes `accept`.
fn handle_signals(
    listener: &UnixListener,
    socket_file: &Arc<SocketFile>,
    stop_signal: &Arc<AtomicI32>,
    open: Weak<Sender<()>>,
) -> anyhow::Result<()> {
    let mut signals =
        Signals::new([SIGINT, SIGTERM, SIGUSR1]).context("register SIGINT, SIGTERM and SIGUSR1")?;
    // A second handle on the same listening socket, for this thread to shut down.
    let listening = listener.try_clone().context("clone the listener")?;
    let (socket_file, stop_signal) = (Arc::clone(socket_file), Arc::clone(stop_signal));
    let wait = move || {
        // SIGUSR1 is answered here, never taken for a stop signal. Logged from this thread: a
        // signal handler itself may not lock a mutex or print (neither is async-signal-safe).
        let mut signals = signals.forever();
        // Until a stop signal comes, `run` still holds `serving`: one strong count is its own,
        // the rest are the open connections.
        let first = loop {
            match signals.next() {
                Some(SIGUSR1) => log!("open connections: {}", open.strong_count() - 1),
                other => break other,
            }
        };
        if let Some(signal) = first {
            stop_signal.store(signal, Ordering::SeqCst);
            // shutdown(2) on a listening socket makes the blocked `accept` return at once,
            // with an error, and from now on `connect` is refused. That is Linux; on macOS and
            // the BSDs it does not wake `accept`, and a self-pipe with poll(2) is the portable way.
            if let Err(err) = rustix::net::shutdown(&listening, rustix::net::Shutdown::Read) {
                log!("shutdown the listener: {err}");
            }
            drop(listening); // the main thread closes its handle too, once it stops accepting
        }
        // Now `run` drops its handle at a moment this thread cannot see, so SIGUSR1 gets no
        // answer: the shutdown's own lines give the count.
        if let Some(signal) = signals.find(|&signal| signal != SIGUSR1) {
            log!("{} again: exiting now", signal_name(signal));
            // process::exit runs no destructors, so remove the file by hand.
            if socket_file.remove() {
                log!("removed {}", socket_file.path.display());
            }
            process::exit(1);
        }
    };
    thread::Builder::new().name("signals".into()).spawn(wait).context("spawn the signal thread")?;
    Ok(())
}

fn signal_name(signal: i32) -> &'static str {
    signal_hook::low_level::signal_name(signal).unwrap_or("signal")
}
// ANCHOR_END: signals

// ANCHOR: serve
/// One client's connection, on its own thread: whatever goes wrong ends only this connection.
fn serve(id: u64, stream: &UnixStream) {
    log!("connection {id}: accepted");
    match answer_lines(stream) {
        Ok(lines) => log!("connection {id}: closed, lines answered: {lines}"),
        Err(err) => log!("connection {id}: {err:#}"),
    }
}

/// Answer each line until EOF (the client half-closed or went away); returns how many.
fn answer_lines(stream: &UnixStream) -> anyhow::Result<u64> {
    // `&UnixStream` is both Read and Write: one socket carries both directions (full duplex).
    let mut reader = BufReader::new(stream);
    let mut writer = stream;
    let mut line = Vec::new();
    let mut lines = 0;
    loop {
        line.clear();
        // read_until, not read_line: a client may send bytes that are not UTF-8.
        if reader.read_until(b'\n', &mut line).context("read")? == 0 {
            return Ok(lines);
        }
        if !line.ends_with(b"\n") {
            line.push(b'\n'); // a last line without a newline is answered too
        }
        line.make_ascii_uppercase();
        writer.write_all(&line).context("write")?;
        lines += 1;
    }
}
// ANCHOR_END: serve
