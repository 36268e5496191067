//! lesson14-server: lesson 13's server, speaking HTTP/1.1.
//!
//! The one idea: HTTP over a Unix socket, as Docker's API is served. The socket, its file's
//! mode, the peer's credentials, the connection limit and the shutdown are lesson 13's; what
//! travels on each connection is now HTTP requests and responses, parsed and written by hyper:
//! `POST /upper` answers its body in upper case, `GET /health` answers `ok`. The limits become
//! status codes: 403 for a refused uid, 503 when busy, 413 for a body too large, 431 for a
//! line too long.
//!
//! Run: `cargo run --bin lesson14-server` prints `listening on PATH`; then, in another terminal,
//! `curl --unix-socket PATH http://localhost/upper -d hello` or
//! `cargo run --bin lesson14-client -- PATH hello`. Partner: client.rs.

use std::convert::Infallible;
use std::fs;
use std::future::{Future, poll_fn};
use std::io::{self, ErrorKind, IoSlice, Write};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::pin::{Pin, pin};
use std::process::{self, ExitCode};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::task::{self, Poll};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::builder::{OsStringValueParser, TypedValueParser};
use clap::{CommandFactory, Parser};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::{Body, Bytes, Incoming};
use hyper::header::{ALLOW, CONNECTION, CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use lesson14::{
    Address, SOCKET_NAME, connect_within, default_socket_dir, linux_only, log, parse_timeout_ms,
};
use rustix::process::{Gid, getuid};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{UnixListener, UnixSocket, UnixStream};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Sleep, sleep, timeout};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Answer `POST /upper` with its body in ASCII upper case, over HTTP/1.1.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// The socket to create, or @name (Linux) [default: $XDG_RUNTIME_DIR/uds-course/lesson14.sock]
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
    /// Close a connection that sends no complete request head for N ms (idle between requests
    /// too), no complete body for as long, or reads no response for as long
    #[arg(long, value_name = "N", default_value_t = 30_000, value_parser = parse_timeout_ms)]
    idle_timeout_ms: u64,
    /// The longest request line or header line, not counting its CRLF; longer is 431
    #[arg(long, value_name = "BYTES", default_value_t = 65_536)]
    max_line: usize,
    /// The largest request body, chunked or not; larger is 413
    #[arg(long, value_name = "BYTES", default_value_t = 1_048_576)]
    max_body: u64,
    /// The runtime's worker threads, which run every connection's task [default: one per CPU]
    #[arg(long, value_name = "N")]
    #[arg(value_parser = clap::value_parser!(u16).range(1..))]
    workers: Option<u16>,
    /// Connections accepted and not yet closed; past it a client is answered 503 `error: busy`
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
        let mut usage = Args::command().bin_name("lesson14-server");
        usage.error(clap::error::ErrorKind::ArgumentConflict, why).exit();
    }
    // ANCHOR_END: no_mode
    if !cfg!(target_os = "linux") {
        return Err(linux_only()).context("start");
    }
    let limits = Limits {
        idle: Duration::from_millis(args.idle_timeout_ms),
        max_line: args.max_line,
        max_body: args.max_body,
    };
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
                    let (allowed, stop) = (Arc::clone(&allowed), stop.clone());
                    tasks.spawn(serve(id, stream, allowed, limits, stop, permit));
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
    lesson14::check_private_dir(dir)
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

// ANCHOR: pool
/// Past `--max-connections`: a 503 with `error: busy`, at once, before the client has sent its
/// request (HTTP lets a server answer early), then close. On a task of its own: the acceptor
/// must never wait on a client. (A refused uid's 403 waits for the request instead: it is
/// answered by hyper, in `answer`.)
fn busy(stream: UnixStream) {
    let body = "error: busy, try again later\n";
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    tokio::spawn(async move {
        let mut stream = stream;
        let _ = refuse(&mut stream, &response).await; // ok to fail: the client is gone
    });
}
// ANCHOR_END: pool

// ANCHOR: serve
/// One client's connection, as a task of its own: whatever goes wrong ends only this
/// connection. `permit` is its slot under `--max-connections`, given back when the task ends.
async fn serve(
    id: u64,
    stream: UnixStream,
    allowed: Arc<Allowed>,
    limits: Limits,
    stop: CancellationToken,
    permit: OwnedSemaphorePermit,
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
    // Checked once per connection, as in lesson 13: every request on it comes from this peer.
    // HTTP answers requests, so a refused peer's request is awaited and answered 403.
    let refused = (!allowed.admits(uid, gid)).then_some(uid);
    if refused.is_some() {
        log!("connection {id}: refused uid {uid}");
    }
    // ANCHOR_END: peer
    let answered = AtomicU64::new(0);
    // Set by a response that ends the connection (`closing`): the request's rest may be unread.
    let lingering = AtomicBool::new(false);
    let service = service_fn(|request| {
        answered.fetch_add(1, Ordering::Relaxed);
        // Boxed: `poll_without_shutdown`, below, wants a future it may move.
        Box::pin(async {
            let response = answer(id, request, limits, refused).await;
            if response.as_ref().is_ok_and(|response| response.headers().contains_key(CONNECTION)) {
                lingering.store(true, Ordering::Relaxed);
            }
            response
        })
    });
    // ANCHOR: serve_connection
    let mut http = http1::Builder::new();
    // The idle timeout is hyper's: its clock runs while it waits for a request's head, on a
    // new connection and between requests, and stops once the head is in.
    http.timer(TokioTimer::new()).header_read_timeout(limits.idle);
    // The head as a whole is buffered before we see a line of it: hyper bounds it (431).
    let head = limits.max_line.saturating_mul(HEAD_LINES);
    http.max_header_size(head).max_buf_size(head.max(MIN_BUF_SIZE));
    // Writes bounded by the idle timeout, which hyper has no setting for (see `WriteDeadline`).
    let stream = WriteDeadline { stream, limit: limits.idle, stalled: None };
    // TokioIo: hyper has Read and Write traits of its own; this adapts tokio's stream to them.
    let mut connection = http.serve_connection(TokioIo::new(stream), service);
    let mut cancelled = pin!(stop.cancelled());
    // The connection first, then the token, each time the task wakes: a request already in the
    // socket when the token is cancelled is read, and so is in flight, before hyper is told.
    // Without shutdown: at its end the connection hands the stream back, for `linger`.
    let served = poll_fn(|cx| match connection.poll_without_shutdown(cx) {
        Poll::Ready(served) => Poll::Ready(Some(served)),
        Poll::Pending => cancelled.as_mut().poll(cx).map(|()| None),
    });
    let served = match served.await {
        Some(served) => served,
        // Shutting down: no more requests here. hyper closes an idle connection now (one that
        // has not sent a byte yet too), and one with a request in flight once it is answered.
        None => {
            Pin::new(&mut connection).graceful_shutdown();
            poll_fn(|cx| connection.poll_without_shutdown(cx)).await
        }
    };
    // A response that closed the connection may have left the request's body unread: close
    // as `refuse` does, so the client reads the response instead of a reset.
    if served.is_ok() && lingering.load(Ordering::Relaxed) {
        let _ = linger(&mut connection.into_parts().io.into_inner().stream).await;
    }
    // ANCHOR_END: serve_connection
    let answered = answered.load(Ordering::Relaxed);
    match served {
        Ok(()) => log!("connection {id}: closed, requests: {answered}"),
        Err(err) if err.is_timeout() => log!(
            "connection {id}: no request in {} ms, closed; requests: {answered}",
            limits.idle.as_millis()
        ),
        Err(err) => {
            let err = anyhow::Error::from(err); // `{:#}`: hyper's words and the cause under them
            log!("connection {id}: {err:#}; requests: {answered}");
        }
    }
    // Given back before `connection`, and the stream in it, is dropped at the end of the block:
    // a client that has read EOF finds its slot free, as in lesson 13 (but after a `linger`,
    // whose half-close comes first).
    drop(permit);
}
// ANCHOR_END: serve

// ANCHOR: answer
/// A response to every request, never an `Err` (hyper would drop the connection without a
/// word). The routes: `POST /upper` and `GET /health`; any other path is 404, another method
/// on these two 405.
async fn answer(
    id: u64,
    request: Request<Incoming>,
    limits: Limits,
    refused: Option<u32>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (method, path) = (request.method().clone(), request.uri().path().to_owned());
    let response = if let Some(uid) = refused {
        closing(error(StatusCode::FORBIDDEN, format!("uid {uid} is not allowed")))
    } else if let Some(reason) = too_long(&request, limits.max_line) {
        closing(error(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, reason))
    } else {
        match (path.as_str(), &method) {
            ("/upper", &Method::POST) => upper(request, limits).await,
            ("/health", &Method::GET) => reply(StatusCode::OK, "ok"),
            ("/upper", _) => not_allowed(&path, "POST"),
            ("/health", _) => not_allowed(&path, "GET"),
            _ => error(StatusCode::NOT_FOUND, format!("no such path: {path}")),
        }
    };
    log!("connection {id}: {method} {path}: {}", response.status());
    Ok(response)
}

/// A `text/plain` response.
fn reply(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    response
}

/// `error: REASON` and a newline, as every refusal in the course reads.
fn error(status: StatusCode, reason: String) -> Response<Full<Bytes>> {
    reply(status, format!("error: {reason}\n"))
}

/// 405, with the method that `path` takes in `Allow` (HTTP requires it).
fn not_allowed(path: &str, allow: &'static str) -> Response<Full<Bytes>> {
    let mut response = error(StatusCode::METHOD_NOT_ALLOWED, format!("{path} takes {allow}"));
    response.headers_mut().insert(ALLOW, HeaderValue::from_static(allow));
    response
}

/// The connection ends after this response: `Connection: close` tells the client, and hyper.
fn closing(mut response: Response<Full<Bytes>>) -> Response<Full<Bytes>> {
    response.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
    response
}
// ANCHOR_END: answer

// ANCHOR: upper
/// `POST /upper`: the body in ASCII upper case. No more than `--max-body` bytes of it are ever
/// kept: a Content-Length over the limit is answered 413 before a byte of the body is read,
/// and a body without one (chunked) is counted as it arrives.
async fn upper(request: Request<Incoming>, limits: Limits) -> Response<Full<Bytes>> {
    let too_large = || {
        let reason = format!("body over the {}-byte limit", limits.max_body);
        closing(error(StatusCode::PAYLOAD_TOO_LARGE, reason))
    };
    // hyper read the Content-Length: the body's size hint says at least that many bytes.
    if request.body().size_hint().lower() > limits.max_body {
        return too_large();
    }
    // `Limited` fails as soon as the bytes read pass the limit; `collect` gathers them.
    let max_body = usize::try_from(limits.max_body).unwrap_or(usize::MAX);
    let body = Limited::new(request.into_body(), max_body).collect();
    match timeout(limits.idle, body).await {
        Ok(Ok(body)) => reply(StatusCode::OK, body.to_bytes().to_ascii_uppercase()),
        Ok(Err(err)) if err.is::<LengthLimitError>() => too_large(),
        Ok(Err(err)) => closing(error(StatusCode::BAD_REQUEST, format!("read the body: {err}"))),
        Err(_elapsed) => {
            let reason = format!("no complete body in {} ms", limits.idle.as_millis());
            closing(error(StatusCode::REQUEST_TIMEOUT, reason))
        }
    }
}
// ANCHOR_END: upper

// ANCHOR: deadline
/// The limits every connection lives within: `--idle-timeout-ms`, `--max-line`, `--max-body`.
#[derive(Clone, Copy)]
struct Limits {
    idle: Duration,
    max_line: usize,
    max_body: u64,
}
// ANCHOR_END: deadline

// ANCHOR: too_long
/// How many times `--max-line` the head as a whole may take: hyper buffers a request's head
/// before we see a line of it, so the head is bounded there, and each line in `too_long`.
/// Four lines' worth, as nginx's `large_client_header_buffers 4 8k`.
const HEAD_LINES: usize = 4;
/// hyper's smallest read buffer: it refuses a `max_buf_size` below 8 KiB.
const MIN_BUF_SIZE: usize = 8192;

/// Is the request line, or a header line, longer than `max_line` bytes (not counting its
/// CRLF)? Measured on what hyper parsed: the method, target and version; a header's name,
/// `: ` and value (spaces around the value are not kept, so not counted).
fn too_long(request: &Request<Incoming>, max_line: usize) -> Option<String> {
    // The target whole: `/health?q`, or `http://host/health?q` in the absolute form.
    let target = request.uri().to_string().len();
    // `GET /health HTTP/1.1`: two spaces, and eight bytes of version.
    if request.method().as_str().len() + target + 10 > max_line {
        return Some(format!("the request line is longer than {max_line} bytes"));
    }
    let mut lines = request.headers().iter();
    if lines.any(|(name, value)| name.as_str().len() + 2 + value.len() > max_line) {
        return Some(format!("a header line is longer than {max_line} bytes"));
    }
    None
}
// ANCHOR_END: too_long

// ANCHOR: refuse
/// Send `response` and end the connection cleanly: shut down our side (the client reads the
/// response, then EOF), then read and discard what it still sends, for up to a second.
/// Closing at once would cut the client short: an HTTP client writes its request before it
/// reads, and one that finds the connection closed stops at EPIPE ("Send failure: Broken
/// pipe", says curl) without reading our response.
async fn refuse(stream: &mut UnixStream, response: &str) -> anyhow::Result<()> {
    // One `write` for the whole response, so a client that reads once gets all of it. Bounded
    // as the drain is: a client that reads nothing may have left no room for it, ever.
    match timeout(DRAIN, stream.write_all(response.as_bytes())).await {
        Ok(written) => written.context("write")?,
        Err(_elapsed) => bail!("write: timed out"),
    }
    linger(stream).await
}

/// The end of `refuse`, and of a connection that hyper ended with a closing response: shut
/// down our side, then read and discard what the client still sends, for up to a second.
async fn linger(stream: &mut UnixStream) -> anyhow::Result<()> {
    stream.shutdown().await.context("shutdown")?;
    // On the heap, for the drain only: an array here would be part of each busy connection's
    // task (a future holds what lives across an `.await`), 4 KiB more for each.
    let mut discard = vec![0; 4096];
    let drain = async {
        // EOF, or the client is gone: done.
        while let Ok(1..) = stream.read(&mut discard).await {}
    };
    let _ = timeout(DRAIN, drain).await; // or the second is up
    Ok(())
}

/// How long `refuse` waits for room for its response, and then for the client to finish.
const DRAIN: Duration = Duration::from_secs(1);
// ANCHOR_END: refuse

// ANCHOR: write_deadline
/// The stream hyper serves, with a limit on writing: a write (or flush) that has waited
/// `limit` for room fails with TimedOut, and hyper ends the connection. hyper has no write
/// timeout, and `header_read_timeout` stops once a request's head is in, so without this a
/// client that sends requests and never reads the responses would keep its slot for ever.
/// The clock restarts whenever a write goes through: lesson 05's rule, a client that "reads
/// no reply for as long" as the idle timeout is closed.
struct WriteDeadline {
    stream: UnixStream,
    limit: Duration,
    /// Running while a write waits for room; none while writes go through.
    stalled: Option<Pin<Box<Sleep>>>,
}

impl WriteDeadline {
    /// Pass on what the stream said, but after `limit` of Pending, fail.
    fn limit<T>(
        &mut self,
        cx: &mut task::Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if polled.is_ready() {
            self.stalled = None;
            return polled;
        }
        let limit = self.limit;
        let stalled = self.stalled.get_or_insert_with(|| Box::pin(sleep(limit)));
        match stalled.as_mut().poll(cx) {
            Poll::Ready(()) => {
                let why = format!("no room to write for {} ms", limit.as_millis());
                Poll::Ready(Err(io::Error::new(ErrorKind::TimedOut, why)))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncRead for WriteDeadline {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut task::Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for WriteDeadline {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut task::Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.limit(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut task::Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.limit(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut task::Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.stream).poll_flush(cx);
        self.limit(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut task::Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
// ANCHOR_END: write_deadline
