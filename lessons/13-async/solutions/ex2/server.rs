//! lesson13-server: lesson 07's server, on tokio.
//!
//! The one idea: the same server, written async. Each connection is a task, not a job waiting
//! for one of `--workers` threads: a task costs a few hundred bytes, so an idle client costs
//! no thread, and `--workers` now sizes the runtime that runs all the tasks. A semaphore
//! bounds the connections (`--max-connections`), a cancellation token stops the acceptor on
//! SIGINT or SIGTERM, a task tracker waits out the grace period, and `tokio::time::timeout`
//! replaces the socket timeouts. Same command line, same messages, same exit codes.
//!
//! Run: `cargo run --bin lesson13-server` prints `listening on PATH`; then, in another terminal,
//! `cargo run --bin lesson13-client -- PATH hello` or `nc -NU PATH`. Partner: client.rs.

use std::fs;
use std::io::{self, ErrorKind, Write};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{self, ExitCode};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::builder::{OsStringValueParser, TypedValueParser};
use clap::{CommandFactory, Parser};
use lesson13::{
    Address, SOCKET_NAME, connect_within, default_socket_dir, linux_only, log, parse_timeout_ms,
};
use rustix::process::{Gid, getuid};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixSocket, UnixStream};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, sleep, timeout, timeout_at};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Answer each line a client sends with the same line in ASCII upper case.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// The socket to create, or @name (Linux) [default: $XDG_RUNTIME_DIR/uds-course/lesson13.sock]
    #[arg(value_name = "PATH", value_parser = OsStringValueParser::new().try_map(Address::parse))]
    path: Option<Address>,
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
    /// The runtime's worker threads, which run every connection's task [default: one per CPU]
    #[arg(long, value_name = "N")]
    #[arg(value_parser = clap::value_parser!(u16).range(1..))]
    workers: Option<u16>,
    /// Connections accepted and not yet closed; past it a client is answered `error: busy`
    #[arg(long, value_name = "N", default_value_t = 1024)]
    #[arg(value_parser = clap::value_parser!(u32).range(1..))]
    max_connections: u32,
}

fn parse_mode(text: &str) -> Result<u32, String> {
    match u32::from_str_radix(text, 8) {
        Ok(mode) if mode <= 0o777 => Ok(mode),
        _ => Err(format!("`{text}` is not a file mode in octal, like 0600 or 660")),
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    // ANCHOR: runtime
    // `--workers` threads run every task; they start here, before anything is bound. A task
    // waiting on its client costs no thread, so the default is tokio's: one per CPU.
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(workers) = args.workers {
        runtime.worker_threads(workers.into());
    }
    let runtime = runtime.enable_io().enable_time().build();
    let served = runtime.context("start the runtime").and_then(|rt| rt.block_on(run(args)));
    // ANCHOR_END: runtime
    if let Err(err) = served {
        log!("{err:#}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

async fn run(args: Args) -> anyhow::Result<()> {
    // ANCHOR: no_mode
    // A mode or a group for a file that does not exist would protect nothing, silently.
    let named = matches!(args.path, Some(Address::Abstract(_)));
    if named && (args.mode.is_some() || args.group.is_some()) {
        let why = "an abstract name (@name) has no file, so no --mode or --group; \
                   let peers in with --allow-uid or --allow-gid";
        let mut usage = Args::command().bin_name("lesson13-server");
        usage.error(clap::error::ErrorKind::ArgumentConflict, why).exit();
    }
    // ANCHOR_END: no_mode
    if !cfg!(target_os = "linux") {
        return Err(linux_only()).context("start");
    }
    let limits =
        Limits { idle: Duration::from_millis(args.idle_timeout_ms), max_line: args.max_line };
    let path = match args.path.clone() {
        Some(path) => path,
        None => {
            let dir = default_socket_dir();
            create_private_dir(&dir)?;
            Address::File(dir.join(SOCKET_NAME))
        }
    };
    let mode = args.mode.unwrap_or(if args.group.is_some() { 0o660 } else { 0o600 });
    remove_stale_socket(&path)?;
    // ANCHOR: bind
    // `bind` creates the socket file; `listen` then lets clients queue up until we `accept`
    // them. If anything exists at `path` — even the socket file of a server that died — `bind`
    // fails with "Address already in use".
    //
    // The file is born with mode 0777 minus the umask, and from `listen` on anyone the mode
    // lets in can connect. std's `bind` listens at once, so lesson 07 set the umask around it;
    // but the umask is per process, and the runtime's threads already run. tokio's
    // `UnixSocket` binds without listening: until `listen` every `connect` is refused, so the
    // mode (and the group) can be set in between, with no window and no umask.
    let listener = match &path {
        Address::File(file) => {
            let socket = UnixSocket::new_stream();
            let socket = socket.with_context(|| format!("socket {}", path.display()))?;
            socket.bind(file).with_context(|| format!("bind {}", path.display()))?;
            match args.group {
                Some(gid) => give_to_group(file, gid, mode)?,
                None => set_mode(file, mode)?,
            }
            socket.listen(BACKLOG).with_context(|| format!("listen {}", path.display()))?
        }
        // No file, no mode: tokio binds the name and listens, as std's `bind_addr` would.
        Address::Abstract(_) => path
            .socket_addr()
            .and_then(|address| UnixListener::bind_addr(&address.into()))
            .with_context(|| format!("bind {}", path.display()))?,
    };
    // ANCHOR_END: bind
    // ANCHOR: guard
    // The socket file, if any: an abstract name leaves nothing behind to remove.
    let socket_file = match &path {
        Address::File(file) => Some(Arc::new(SocketFile::bound_at(file)?)),
        Address::Abstract(_) => None,
    };
    let _remove_on_exit = socket_file.clone().map(RemoveOnDrop);
    // ANCHOR_END: guard

    // Cancelled by the first SIGINT or SIGTERM: the acceptor stops.
    let stop = CancellationToken::new();
    // Before `listening on`: a signal that arrives once we are ready must find its handler.
    let stop_signal = handle_signals(&socket_file, &stop)?;
    // The line that scripts and tests wait for. writeln!, not println!, which would panic
    // if nobody reads our stdout.
    let mut stdout = io::stdout();
    writeln!(stdout, "listening on {}", path.display())
        .and_then(|()| stdout.flush())
        .context("write stdout")?;
    let allowed = Arc::new(Allowed::from_args(&args));
    // ANCHOR: accept_loop
    // A permit for each connection accepted and not yet closed; its task holds it, and gives
    // it back when it ends. `tasks` tracks the tasks, for shutdown to wait on.
    let slots = Arc::new(Semaphore::new(args.max_connections as usize));
    let tasks = TaskTracker::new();
    let max_connections = args.max_connections;
    for id in 1.. {
        // `accept`, unless the token is cancelled first. The two can happen at once, and then
        // the accepted client was still queued: either way, we are done accepting.
        let accepted = stop.run_until_cancelled(listener.accept()).await;
        let Some(accepted) = accepted.filter(|_| !stop.is_cancelled()) else { break };
        match accepted {
            Ok((stream, _addr)) => match Arc::clone(&slots).try_acquire_owned() {
                Ok(permit) => {
                    let stats = Stats { slots: Arc::clone(&slots), max: max_connections };
                    tasks.spawn(serve(id, stream, Arc::clone(&allowed), limits, permit, stats));
                }
                // Full: say so at once, and never wait on this client (see `busy`).
                Err(_) => {
                    log!("connection {id}: busy ({max_connections} open)");
                    busy(stream);
                }
            },
            Err(err) => {
                // Out of file descriptors (EMFILE) the client stays queued, so `accept` fails
                // again at once: a bare `continue` here would spin a core. Wait instead.
                log!("accept: {err}");
                sleep(Duration::from_millis(100)).await;
            }
        }
    }
    // ANCHOR_END: accept_loop
    // Close the listening socket: clients still queued in it get a reset now, instead of
    // waiting out the grace period for an `accept` that will never come.
    drop(listener);
    log!("{}: shutting down", stop_signal.get().unwrap_or(&"signal"));
    // ANCHOR: grace
    let grace = Duration::from_millis(args.grace_ms);
    // The permits out, not the tasks: a task still ends for a moment after its client read EOF.
    let still_open = max_connections as usize - slots.available_permits();
    if still_open > 0 {
        log!("waiting up to {} ms for open connections: {still_open}", grace.as_millis());
    }
    // No more tasks will be spawned: `wait` returns the moment the last one ends.
    tasks.close();
    if timeout(grace, tasks.wait()).await.is_err() {
        let cut_off = max_connections as usize - slots.available_permits();
        log!("grace period over; cutting off open connections: {cut_off}");
    }
    // ANCHOR_END: grace
    if socket_file.is_some_and(|file| file.remove()) {
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
    lesson13::check_private_dir(dir)
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
fn remove_stale_socket(address: &Address) -> anyhow::Result<()> {
    // An abstract name is never stale: the kernel frees it the moment its socket closes.
    let Address::File(path) = address else { return Ok(()) };
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
    match connect_within(address, PROBE_TIMEOUT) {
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
/// The backlog `listen` asks for, the clients that may wait to be accepted: as many as the
/// kernel allows (it caps this at net.core.somaxconn), as std's and tokio's own `bind` ask.
const BACKLOG: u32 = u32::MAX;

/// Set the mode of the socket file, still unreachable: it is bound, not yet listening.
fn set_mode(path: &Path, mode: u32) -> anyhow::Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {} to {mode:04o}", path.display()))
}

/// Hand the socket file to group `gid`, then open it to that group. Before `listen` the order
/// no longer matters (nobody can connect yet), but it still reads right: group, then mode.
fn give_to_group(path: &Path, gid: u32, mode: u32) -> anyhow::Result<()> {
    rustix::fs::chown(path, None, Some(Gid::from_raw(gid)))
        .with_context(|| format!("chown {} to group {gid}", path.display()))?;
    set_mode(path, mode)
}
// ANCHOR_END: group

// ANCHOR: signals
/// Wait for SIGINT and SIGTERM, a task for each. The first signal, of either kind, cancels
/// `stop`, which ends the accept loop; a second, during the grace period, removes the socket
/// file and exits 1 at once. Returns where the first signal's name will be, for the log.
///
/// Lesson 07 needed a thread of its own and shutdown(2) to wake the blocked `accept`. Here
/// nothing blocks: the acceptor awaits `accept` or the token, whichever comes first.
fn handle_signals(
    socket_file: &Option<Arc<SocketFile>>,
    stop: &CancellationToken,
) -> anyhow::Result<Arc<OnceLock<&'static str>>> {
    let stop_signal = Arc::new(OnceLock::new());
    for (kind, name) in [(SignalKind::interrupt(), "SIGINT"), (SignalKind::terminate(), "SIGTERM")]
    {
        let mut signals = signal(kind).with_context(|| format!("register {name}"))?;
        let (socket_file, stop, stop_signal) =
            (socket_file.clone(), stop.clone(), Arc::clone(&stop_signal));
        tokio::spawn(async move {
            while signals.recv().await.is_some() {
                // Only the first signal finds `stop_signal` empty: it stops the acceptor.
                if stop_signal.set(name).is_ok() {
                    stop.cancel();
                    continue;
                }
                log!("{name} again: exiting now");
                // process::exit runs no destructors, so remove the file by hand.
                if let Some(socket_file) = &socket_file
                    && socket_file.remove()
                {
                    log!("removed {}", socket_file.path.display());
                }
                process::exit(1);
            }
        });
    }
    Ok(stop_signal)
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

// ANCHOR: busy
/// Past `--max-connections`: `error: busy`, and close. Unlike `refuse` there is no drain: the
/// acceptor must never wait on a client, and the one thing a flood of refused clients may cost
/// us is this write. A fresh socket's buffer is empty, so the line goes out without blocking
/// (non-blocking all the same). A client that had already sent lines reads it, then a reset.
/// Through std: tokio's `try_write` says WouldBlock, writing nothing, until the runtime has
/// polled a new socket once.
fn busy(stream: UnixStream) {
    if let Ok(stream) = stream.into_std() {
        let _ = (&stream).write_all(b"error: busy, try again later\n"); // ok to fail: it is gone
    }
}
// ANCHOR_END: busy

// ANCHOR: serve
/// One client's connection, as a task of its own: whatever goes wrong ends only this
/// connection. `_permit` is its slot under `--max-connections`. Rust drops parameters last to
/// first, so it goes before `stream`: the slot is free before the client can read EOF.
async fn serve(
    id: u64,
    mut stream: UnixStream,
    allowed: Arc<Allowed>,
    limits: Limits,
    _permit: OwnedSemaphorePermit,
    stats: Stats,
) {
    // ANCHOR: peer
    // SO_PEERCRED: the kernel recorded who called `connect` (uid, gid, pid at that moment).
    // The client cannot lie about it, unlike anything it could send us.
    let peer = match stream.peer_cred() {
        Ok(peer) => peer,
        Err(err) => {
            log!("connection {id}: peer credentials: {err}");
            return;
        }
    };
    let (uid, gid) = (peer.uid(), peer.gid());
    // A peer outside our PID namespace (we run in a container, it on the host) has a pid the
    // kernel cannot name here, so it says 0; tokio passes that on as Some(0), and has None
    // where the system tells no pid at all. Nothing is wrong with the peer: serve it.
    let pid = peer.pid().unwrap_or(0);
    let outside = if pid == 0 { " (outside this PID namespace)" } else { "" };
    log!("connection {id}: accepted from uid {uid} gid {gid} pid {pid}{outside}");
    if !allowed.admits(uid, gid) {
        log!("connection {id}: refused uid {uid}");
        if let Err(err) = refuse(&mut stream, &format!("uid {uid} is not allowed")).await {
            log!("connection {id}: {err:#}");
        }
        return;
    }
    // ANCHOR_END: peer
    match answer_lines(&mut stream, limits, &stats).await {
        Ok(lines) => log!("connection {id}: closed, lines answered: {lines}"),
        Err(err) => log!("connection {id}: {err:#}"),
    }
} // dropping `stream` closes the connection: the client reads EOF

/// Answer each line until EOF (the client half-closed or went away); returns how many. A
/// client that oversteps a limit is told why (see `cut_off`), and the reason is the error.
async fn answer_lines(
    stream: &mut UnixStream,
    limits: Limits,
    stats: &Stats,
) -> anyhow::Result<u64> {
    // tokio's BufReader passes writes through: one value to read lines from and write to.
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    let mut lines = 0;
    let mut deadline = Instant::now() + limits.idle;
    loop {
        line.clear();
        // read_until, not read_line: a client may send bytes that are not UTF-8. `take` stops
        // it after `max_line + 1` bytes, so a line that never ends cannot fill our memory.
        let longest = limits.max_line as u64 + 1;
        // One deadline for each exchange, the line in and its reply out: a timeout around the
        // whole read, not each call, so a client trickling a byte at a time is cut off too.
        let mut limited = (&mut reader).take(longest);
        let read = timeout_at(deadline, limited.read_until(b'\n', &mut line)).await;
        match read {
            Ok(Ok(0)) => return Ok(lines),
            Ok(Ok(_)) if line.len() > limits.max_line && !line.ends_with(b"\n") => {
                let reason = format!("line longer than {} bytes", limits.max_line);
                return Err(cut_off(reader.get_mut(), reason).await);
            }
            Ok(Ok(_)) => {}
            Err(_elapsed) => {
                let reason = format!("no complete line in {} ms", limits.idle.as_millis());
                return Err(cut_off(reader.get_mut(), reason).await);
            }
            Ok(Err(err)) => return Err(err).context("read"),
        }
        if !line.ends_with(b"\n") {
            line.push(b'\n'); // a last line without a newline is answered too
        }
        if line == b"/stats\n" {
            line = stats.line().into_bytes();
        } else {
            line.make_ascii_uppercase();
        }
        match timeout_at(deadline, reader.write_all(&line)).await {
            Ok(written) => written.context("write")?,
            Err(_elapsed) => bail!("write: timed out"),
        }
        lines += 1;
        deadline = Instant::now() + limits.idle;
    }
}
// ANCHOR_END: serve

/// What `/stats` reports: the semaphore knows how many connections are open, as the permits
/// handed out and not yet given back.
struct Stats {
    slots: Arc<Semaphore>,
    max: u32,
}

impl Stats {
    fn line(&self) -> String {
        let open = self.max as usize - self.slots.available_permits();
        format!("stats: {open} of {} connections open\n", self.max)
    }
}

// ANCHOR: deadline
/// The limits every connection lives within: `--idle-timeout-ms` and `--max-line`.
#[derive(Clone, Copy)]
struct Limits {
    idle: Duration,
    max_line: usize,
}
// ANCHOR_END: deadline

/// A limit is answered as a refusal is, with one `error: ` line, so the client learns why it
/// was cut off instead of seeing the connection simply end; the reason is also our log line.
async fn cut_off(stream: &mut UnixStream, reason: String) -> anyhow::Error {
    match refuse(stream, &reason).await {
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
async fn refuse(stream: &mut UnixStream, reason: &str) -> anyhow::Result<()> {
    // One `write` for the whole line, so a client that reads once gets all of it. Bounded as
    // the drain is: a client that reads nothing may have left no room for it, ever.
    let line = format!("error: {reason}\n");
    match timeout(DRAIN, stream.write_all(line.as_bytes())).await {
        Ok(written) => written.context("write")?,
        Err(_elapsed) => bail!("write: timed out"),
    }
    stream.shutdown().await.context("shutdown")?;
    // On the heap, for the drain only: an array here would be part of every connection's task
    // (a future holds what lives across an `.await`), idle or not: 4 KiB more per connection.
    let mut discard = vec![0; 4096];
    let drain = async {
        // EOF, or the client is gone: done.
        while let Ok(1..) = stream.read(&mut discard).await {}
    };
    let _ = timeout(DRAIN, drain).await; // or the second is up
    Ok(())
}

/// How long `refuse` waits for room for its line, and then for the client to finish sending.
const DRAIN: Duration = Duration::from_secs(1);
// ANCHOR_END: refuse
