//! lesson05-server: lesson 04's server, and deadlines and limits on every connection.
//!
//! The one idea: no client may hold the server, however it misbehaves. Each exchange, a line in
//! and its reply out, has a deadline (`--idle-timeout-ms`): a client that goes quiet, trickles
//! a line a byte at a time, or reads its replies too slowly is answered `error: ...` where it
//! can be, and closed. A line longer than `--max-line` is refused, never held in memory whole.
//! And lesson 02's start-up probe gives up on a server that does not accept.
//!
//! Run: `cargo run --bin lesson05-server` prints `listening on PATH`; then, in another terminal,
//! `cargo run --bin lesson05-client -- PATH hello` or `nc -NU PATH`. Partner: client.rs.

use std::io::{self, BufRead, BufReader, ErrorKind, Read, Write};
use std::net::Shutdown;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{self, ExitCode};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use std::{fs, thread};

use anyhow::{Context, bail};
use clap::Parser;
use lesson05::{
    SOCKET_NAME, connect_within, default_socket_dir, log, parse_timeout_ms, peer_credentials,
    timed_out,
};
use rustix::fs::Mode;
use rustix::process::{Gid, getuid, umask};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

/// Answer each line a client sends with the same line in ASCII upper case.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Where to create the socket [default: $XDG_RUNTIME_DIR/uds-course/lesson05.sock]
    path: Option<PathBuf>,
    /// After SIGINT or SIGTERM, how long accepted connections may take to finish
    #[arg(long, value_name = "N", default_value_t = 5000)]
    grace_ms: u64,
    /// The socket file's mode, in octal [default: 0600, or 0660 with --group]
    #[arg(long, value_name = "OCTAL", value_parser = parse_mode)]
    mode: Option<u32>,
    /// Give the socket file to group GID (mode 0660 unless --mode) and allow peers in it
    #[arg(long, value_name = "GID")]
    group: Option<u32>,
    /// Also allow peers with this uid, besides our own and root's (repeatable)
    #[arg(long, value_name = "UID")]
    allow_uid: Vec<u32>,
    /// Also allow peers whose gid is GID (repeatable)
    #[arg(long, value_name = "GID")]
    allow_gid: Vec<u32>,
    /// Close a connection that sends no complete line for N ms, or reads no reply for as long
    #[arg(long, value_name = "N", default_value_t = 30_000, value_parser = parse_timeout_ms)]
    idle_timeout_ms: u64,
    /// The longest line answered, not counting its newline; a longer one closes the connection
    #[arg(long, value_name = "BYTES", default_value_t = 65_536)]
    max_line: usize,
    /// Close a connection N ms after it was accepted, however busy [default: no limit]
    #[arg(long, value_name = "N", value_parser = parse_timeout_ms)]
    max_connection_ms: Option<u64>,
}

fn parse_mode(text: &str) -> Result<u32, String> {
    match u32::from_str_radix(text, 8) {
        Ok(mode) if mode <= 0o777 => Ok(mode),
        _ => Err(format!("`{text}` is not a file mode in octal, like 0600 or 660")),
    }
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
    let limits = Limits {
        idle: Duration::from_millis(args.idle_timeout_ms),
        max_line: args.max_line,
        max_age: args.max_connection_ms.map(Duration::from_millis),
    };
    let path = match args.path.clone() {
        Some(path) => path,
        None => {
            let dir = default_socket_dir();
            create_private_dir(&dir)?;
            dir.join(SOCKET_NAME)
        }
    };
    let mode = args.mode.unwrap_or(if args.group.is_some() { 0o660 } else { 0o600 });
    remove_stale_socket(&path)?;
    // ANCHOR: bind
    // `bind` creates the socket file; std then calls `listen`, so clients can queue up until
    // we `accept` them. If anything exists at `path` — even the socket file of a server that
    // died — `bind` fails with "Address already in use".
    //
    // The file is born with mode 0777 minus the umask, and from `listen` on anyone the mode
    // lets in can connect. So the umask is set *before* `bind`: a chmod after it would leave a
    // window in which others connect, and their connections outlive the chmod. With --group
    // the file is born open to the owner only; `give_to_group` opens it to the group later.
    let born = if args.group.is_some() { mode & 0o700 } else { mode };
    // The umask is per process: change it only while no other thread could be creating files.
    // (`as _`: mode_t is 32 bits on Linux, 16 on macOS and the BSDs; 0o777 fits either.)
    let umask_before = umask(Mode::from_raw_mode((!born & 0o777) as _));
    let bound = UnixListener::bind(&path);
    umask(umask_before);
    let listener = bound.with_context(|| format!("bind {}", path.display()))?;
    // ANCHOR_END: bind
    // ANCHOR: guard
    let socket_file = Arc::new(SocketFile::bound_at(&path)?);
    let _remove_on_exit = RemoveOnDrop(Arc::clone(&socket_file));
    // ANCHOR_END: guard
    if let Some(gid) = args.group {
        give_to_group(&path, gid, mode)?;
    }

    // 0 while serving; then the signal that asked us to stop.
    let stop_signal = Arc::new(AtomicI32::new(0));
    // Before `listening on`: a signal that arrives once we are ready must find its handler.
    handle_signals(&listener, &socket_file, &stop_signal)?;
    // The line that scripts and tests wait for. writeln!, not println!, which would panic
    // if nobody reads our stdout.
    let mut stdout = io::stdout();
    writeln!(stdout, "listening on {}", path.display())
        .and_then(|()| stdout.flush())
        .context("write stdout")?;
    let allowed = Arc::new(Allowed::from_args(&args));
    // ANCHOR: accept_loop
    // Each connection holds a clone of `serving` until it closes (as mini-redis waits): nothing is
    // sent, but `all_closed` reports Disconnected once the last, with the only `Sender`, is gone.
    let (sender, all_closed) = mpsc::channel::<()>();
    let serving = Arc::new(sender);
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
                let allowed = Arc::clone(&allowed);
                // Builder, not thread::spawn: spawn panics when the OS refuses a thread.
                let spawned = thread::Builder::new().spawn(move || {
                    serve(id, &stream, &allowed, limits);
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

// ANCHOR: private_dir
/// Create the default directory with mode 0700, or accept an existing one only if it is ours
/// and closed to everyone else. It is the second lock on the socket: nobody else can even
/// reach the socket file, whatever its mode (and some BSDs ignore a socket file's mode).
fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    let created = fs::DirBuilder::new().recursive(true).mode(0o700).create(dir);
    created.with_context(|| format!("create {}", dir.display()))?;
    // It may have been there already, made by anyone: lib.rs checks it, as the client does.
    lesson05::check_private_dir(dir)
}
// ANCHOR_END: private_dir

// ANCHOR: remove_stale
/// How long the start-up probe waits for a live server to accept it.
const PROBE_TIMEOUT: Duration = Duration::from_millis(1000);

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
    // it gets round to accepting — forever, if it is hung. Bounded, a timeout still answers
    // the question: someone holds the listening socket, so the file is not stale.
    match connect_within(path, PROBE_TIMEOUT) {
        Ok(_) => bail!("probe {}: is in use by a running server", path.display()),
        Err(err) if err.kind() == ErrorKind::TimedOut => bail!(
            "probe {}: is in use by a running server (it did not accept within {} ms)",
            path.display(),
            PROBE_TIMEOUT.as_millis()
        ),
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

// ANCHOR: group
/// Hand the socket file to group `gid`, then open it to that group. The chmod here only
/// *adds* access, after the group is already right: at no moment can anyone outside the owner
/// and that group connect. (The window to avoid is the opposite one: born open, narrowed late.)
fn give_to_group(path: &Path, gid: u32, mode: u32) -> anyhow::Result<()> {
    rustix::fs::chown(path, None, Some(Gid::from_raw(gid)))
        .with_context(|| format!("chown {} to group {gid}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {} to {mode:04o}", path.display()))
}
// ANCHOR_END: group

// ANCHOR: signals
/// Wait for SIGINT and SIGTERM on a thread of its own. The first stops the accept loop; a
/// second, during the grace period, removes the socket file and exits 1 at once.
///
/// Why not `signal_hook::flag::register` and a flag the accept loop checks? signal-hook
/// installs its handlers with SA_RESTART, so the kernel *restarts* a blocked `accept` instead
/// of failing it with EINTR (strace shows `ERESTARTSYS`): the loop would not see the flag until
/// the next client happened to connect. So this thread receives the signal and wakes `accept`.
fn handle_signals(
    listener: &UnixListener,
    socket_file: &Arc<SocketFile>,
    stop_signal: &Arc<AtomicI32>,
) -> anyhow::Result<()> {
    let mut signals = Signals::new([SIGINT, SIGTERM]).context("register SIGINT and SIGTERM")?;
    // A second handle on the same listening socket, for this thread to shut down.
    let listening = listener.try_clone().context("clone the listener")?;
    let (socket_file, stop_signal) = (Arc::clone(socket_file), Arc::clone(stop_signal));
    let wait = move || {
        let mut signals = signals.forever();
        if let Some(signal) = signals.next() {
            stop_signal.store(signal, Ordering::SeqCst);
            // shutdown(2) on a listening socket makes the blocked `accept` return at once,
            // with an error, and from now on `connect` is refused. That is Linux; on macOS and
            // the BSDs it does not wake `accept`, and a self-pipe with poll(2) is the portable way.
            if let Err(err) = rustix::net::shutdown(&listening, rustix::net::Shutdown::Read) {
                log!("shutdown the listener: {err}");
            }
            drop(listening); // the main thread closes its handle too, once it stops accepting
        }
        if let Some(signal) = signals.next() {
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

// ANCHOR: allowed
/// Who may talk to us, by the peer's credentials: our own uid, root's, each --allow-uid, and
/// any peer whose gid is --group or an --allow-gid.
struct Allowed {
    uids: Vec<u32>,
    gids: Vec<u32>,
}

impl Allowed {
    fn from_args(args: &Args) -> Allowed {
        let mut uids = vec![getuid().as_raw(), 0];
        uids.extend(&args.allow_uid);
        let gids = args.group.iter().chain(&args.allow_gid).copied().collect();
        Allowed { uids, gids }
    }

    fn admits(&self, uid: u32, gid: u32) -> bool {
        self.uids.contains(&uid) || self.gids.contains(&gid)
    }
}
// ANCHOR_END: allowed

// ANCHOR: serve
/// One client's connection, on its own thread: whatever goes wrong ends only this connection.
fn serve(id: u64, stream: &UnixStream, allowed: &Allowed, limits: Limits) {
    // ANCHOR: peer
    // SO_PEERCRED: the kernel recorded who called `connect` (uid, gid, pid at that moment).
    // The client cannot lie about it, unlike anything it could send us.
    let (uid, gid, pid) = match peer_credentials(stream) {
        Ok(peer) => peer,
        Err(err) => {
            log!("connection {id}: peer credentials: {err}");
            return;
        }
    };
    // A peer outside our PID namespace (we run in a container, it on the host) has a pid the
    // kernel cannot name here, so it says 0. Nothing is wrong with the peer: serve it.
    let outside = if pid == 0 { " (outside this PID namespace)" } else { "" };
    log!("connection {id}: accepted from uid {uid} gid {gid} pid {pid}{outside}");
    if !allowed.admits(uid, gid) {
        log!("connection {id}: refused uid {uid}");
        if let Err(err) = refuse(stream, &format!("uid {uid} is not allowed")) {
            log!("connection {id}: {err:#}");
        }
        return;
    }
    // ANCHOR_END: peer
    match answer_lines(stream, limits) {
        Ok(lines) => log!("connection {id}: closed, lines answered: {lines}"),
        Err(err) => log!("connection {id}: {err:#}"),
    }
}

/// Answer each line until EOF (the client half-closed or went away); returns how many. A
/// client that oversteps a limit is told why (see `cut_off`), and the reason is the error.
fn answer_lines(stream: &UnixStream, limits: Limits) -> anyhow::Result<u64> {
    let mut reader = BufReader::new(Deadline { stream, at: Instant::now() });
    let mut line = Vec::new();
    let mut lines = 0;
    let closes_at = limits.max_age.map(|age| Instant::now() + age);
    loop {
        // One deadline for each exchange, the line in and its reply out: see `Deadline`.
        // Two deadlines, and the earlier one decides: the exchange's and the connection's.
        let exchange_deadline = Instant::now() + limits.idle;
        let deadline = closes_at.map_or(exchange_deadline, |at| at.min(exchange_deadline));
        reader.get_mut().at = deadline;
        line.clear();
        // read_until, not read_line: a client may send bytes that are not UTF-8. `take` stops
        // it after `max_line + 1` bytes, so a line that never ends cannot fill our memory.
        let longest = limits.max_line as u64 + 1;
        match (&mut reader).take(longest).read_until(b'\n', &mut line) {
            Ok(0) => return Ok(lines),
            Ok(_) if line.len() > limits.max_line && !line.ends_with(b"\n") => {
                let reason = format!("line longer than {} bytes", limits.max_line);
                return Err(cut_off(stream, reason));
            }
            Ok(_) => {}
            Err(err) if matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                let reason = match limits.max_age {
                    Some(age) if deadline < exchange_deadline => {
                        format!("connection older than {} ms", age.as_millis())
                    }
                    _ => format!("no complete line in {} ms", limits.idle.as_millis()),
                };
                return Err(cut_off(stream, reason));
            }
            Err(err) => return Err(err).context("read"),
        }
        if !line.ends_with(b"\n") {
            line.push(b'\n'); // a last line without a newline is answered too
        }
        line.make_ascii_uppercase();
        // A line that came in time is answered: its reply keeps the exchange's deadline.
        let mut writer = Deadline { stream, at: exchange_deadline };
        writer.write_all(&line).map_err(timed_out).context("write")?;
        lines += 1;
    }
}
// ANCHOR_END: serve

// ANCHOR: deadline
/// The limits every connection lives within: `--idle-timeout-ms`, `--max-line` and
/// `--max-connection-ms`.
#[derive(Clone, Copy)]
struct Limits {
    idle: Duration,
    max_line: usize,
    max_age: Option<Duration>,
}

/// A connection that gives up at a deadline: each `read` and `write` may wait only for the
/// time left until `at`, and fails with `TimedOut` once none is left.
///
/// A socket timeout (SO_RCVTIMEO, SO_SNDTIMEO) bounds each *call*, not a line or a reply: a
/// client that sends one byte before each timeout expires, or reads one, keeps its connection
/// and our thread for ever. So before each call the timeout is set to the time left.
struct Deadline<'a> {
    stream: &'a UnixStream,
    at: Instant,
}

impl Deadline<'_> {
    fn left(&self) -> io::Result<Duration> {
        // A zero timeout means "none" to the kernel (std rejects it): stop at zero.
        match self.at.checked_duration_since(Instant::now()) {
            Some(left) if !left.is_zero() => Ok(left),
            _ => Err(io::Error::new(ErrorKind::TimedOut, "timed out")),
        }
    }
}

impl Read for Deadline<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.stream.set_read_timeout(Some(self.left()?))?;
        self.stream.read(buf)
    }
}

impl Write for Deadline<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.stream.set_write_timeout(Some(self.left()?))?;
        // At most 64 KiB a call: Linux queues a long write as several messages and waits for
        // room before each with the *whole* timeout, so one big `write` could outlast it.
        self.stream.write(&buf[..buf.len().min(64 << 10)])
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(()) // a socket has no buffer of ours to flush
    }
}
// ANCHOR_END: deadline

/// A limit is answered as a refusal is, with one `error: ` line, so the client learns why it
/// was cut off instead of seeing the connection simply end; the reason is also our log line.
fn cut_off(stream: &UnixStream, reason: String) -> anyhow::Error {
    match refuse(stream, &reason) {
        Ok(()) => anyhow::anyhow!("{reason}; closed"),
        Err(err) => err.context(reason),
    }
}

// ANCHOR: refuse
/// Answer `error: REASON` and end the connection cleanly: shut down our side (the client
/// reads the line, then EOF), then read and discard what it still sends, for up to a second.
/// Closing at once would cut the client short: one still writing stops at EPIPE (any close
/// does that) before it reads our line, and as its lines lie unread the close is a reset:
/// one that reads gets ECONNRESET, not our line and EOF.
fn refuse(stream: &UnixStream, reason: &str) -> anyhow::Result<()> {
    let (mut writer, mut reader) = (stream, stream);
    // One `write` for the whole line (`writeln!` on a socket makes one per piece), so a client
    // that reads once gets all of it.
    writer.write_all(format!("error: {reason}\n").as_bytes()).context("write")?;
    stream.shutdown(Shutdown::Write).context("shutdown")?;
    let deadline = Instant::now() + Duration::from_secs(1);
    let mut discard = [0; 4096];
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        // A zero timeout means "none" to the kernel; std rejects it. Stop instead.
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            break;
        }
        match reader.read(&mut discard) {
            Ok(1..) => {}
            Ok(0) | Err(_) => break, // EOF, the timeout, or the client is gone
        }
    }
    Ok(())
}
// ANCHOR_END: refuse
