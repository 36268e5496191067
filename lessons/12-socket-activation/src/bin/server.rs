//! lesson12-server: lesson 07's server, started by a service manager that owns its socket.
//!
//! The one idea: socket activation. When `LISTEN_PID` is our pid and `LISTEN_FDS` is at least
//! 1, the manager (systemd, or `systemd-socket-activate`) has already made, bound and listened
//! on the socket, and hands it to us as fd 3. We check what fd 3 is and serve on it; we never
//! bind, never probe or remove a stale file, never unlink: the socket is the manager's.
//! Without `LISTEN_FDS` the server is lesson 07's.
//!
//! Run: `systemd-socket-activate -l PATH target/debug/lesson12-server` listens on PATH and
//! starts the server on the first connection: `cargo run --bin lesson12-client -- PATH hello`.
//! Without it, `cargo run --bin lesson12-server` runs as lesson 07 does. Partner: client.rs.

use std::io::{self, BufRead, BufReader, ErrorKind, Read, Write};
use std::net::Shutdown;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{self, ExitCode};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, Sender, SyncSender};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use std::{env, fs, thread};

use anyhow::{Context, anyhow, bail};
use clap::builder::{OsStringValueParser, TypedValueParser};
use clap::{CommandFactory, Parser};
use lesson12::{
    Address, SOCKET_NAME, connect_within, default_socket_dir, linux_only, log, parse_timeout_ms,
    peer_credentials, timed_out,
};
use rustix::event::{PollFd, PollFlags, Timespec, poll};
use rustix::fs::{FileType, Mode, fstat};
use rustix::io::{Errno, FdFlags, fcntl_setfd};
use rustix::net::sockopt::{socket_acceptconn, socket_domain, socket_type};
use rustix::net::{AddressFamily, SocketType};
use rustix::process::{Gid, getuid, umask};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

/// Answer each line a client sends with the same line in ASCII upper case.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// The socket to create, or @name (Linux) [default: $XDG_RUNTIME_DIR/uds-course/lesson12.sock]
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
    /// The threads that serve connections, whatever the load
    #[arg(long, value_name = "N", default_value_t = 32)]
    #[arg(value_parser = clap::value_parser!(u16).range(1..))]
    workers: u16,
    /// Connections accepted and not yet closed (served, or waiting for a worker); past it a
    /// client is answered `error: busy`
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
    if let Err(err) = run() {
        log!("{err:#}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

fn run() -> anyhow::Result<()> {
    let args = Args::parse();
    // ANCHOR: no_mode
    // A mode or a group for a file that does not exist would protect nothing, silently.
    let named = matches!(args.path, Some(Address::Abstract(_)));
    if named && (args.mode.is_some() || args.group.is_some()) {
        let why = "an abstract name (@name) has no file, so no --mode or --group; \
                   let peers in with --allow-uid or --allow-gid";
        let mut usage = Args::command().bin_name("lesson12-server");
        usage.error(clap::error::ErrorKind::ArgumentConflict, why).exit();
    }
    // ANCHOR_END: no_mode
    if !cfg!(target_os = "linux") {
        return Err(linux_only()).context("start");
    }
    // ANCHOR: activated
    // First, before this process opens anything: the socket a service manager handed us.
    let inherited = take_listen_fd()?;
    // The manager made the file, so its mode and group are set where it is made.
    if inherited.is_some() && (args.mode.is_some() || args.group.is_some()) {
        let why = "the service manager made this socket, so no --mode or --group: set them \
                   with SocketMode= and SocketGroup= in its .socket unit";
        let mut usage = Args::command().bin_name("lesson12-server");
        usage.error(clap::error::ErrorKind::ArgumentConflict, why).exit();
    }
    // ANCHOR_END: activated
    let limits =
        Limits { idle: Duration::from_millis(args.idle_timeout_ms), max_line: args.max_line };
    let path = match (&inherited, args.path.clone()) {
        // Whatever PATH says, the socket is where the manager bound it.
        (Some(listener), _) => bound_address(listener)?,
        (None, Some(path)) => path,
        (None, None) => {
            let dir = default_socket_dir();
            create_private_dir(&dir)?;
            Address::File(dir.join(SOCKET_NAME))
        }
    };
    let mode = args.mode.unwrap_or(if args.group.is_some() { 0o660 } else { 0o600 });
    // ANCHOR: gives_up
    // Everything in `None` is what a server gives up when the manager owns the socket: the
    // stale-file probe (it would find the manager's live socket "in use"), the bind, the mode
    // and group, and the guard that unlinks the file on exit (the manager removes it, when
    // the .socket unit stops).
    let (listener, socket_file) = match inherited {
        Some(listener) => (listener, None),
        None => {
            remove_stale_socket(&path)?;
            // ANCHOR: bind
            // `bind` creates the socket file; std then calls `listen`, so clients can queue up
            // until we `accept` them. If anything exists at `path` — even the socket file of a
            // server that died — `bind` fails with "Address already in use".
            //
            // The file is born with mode 0777 minus the umask, and from `listen` on anyone the
            // mode lets in can connect. So the umask is set *before* `bind`: a chmod after it
            // would leave a window in which others connect, and their connections outlive the
            // chmod. With --group the file is born open to the owner only; `give_to_group`
            // opens it to the group later.
            let born = if args.group.is_some() { mode & 0o700 } else { mode };
            // The umask is per process: change it only while no other thread could be creating
            // files. (`as _`: mode_t is 32 bits on Linux, 16 on macOS and the BSDs; 0o777 fits
            // either.)
            let umask_before = umask(Mode::from_raw_mode((!born & 0o777) as _));
            let bound = path.socket_addr().and_then(|address| UnixListener::bind_addr(&address));
            umask(umask_before);
            let listener = bound.with_context(|| format!("bind {}", path.display()))?;
            // ANCHOR_END: bind
            // ANCHOR: guard
            // The socket file, if any: an abstract name leaves nothing behind to remove.
            let socket_file = match &path {
                Address::File(file) => Some(Arc::new(SocketFile::bound_at(file)?)),
                Address::Abstract(_) => None,
            };
            // ANCHOR_END: guard
            if let (Some(gid), Address::File(file)) = (args.group, &path) {
                give_to_group(file, gid, mode)?;
            }
            (listener, socket_file)
        }
    };
    let _remove_on_exit = socket_file.clone().map(RemoveOnDrop);
    // ANCHOR_END: gives_up

    // 0 while serving; then the signal that asked us to stop.
    let stop_signal = Arc::new(AtomicI32::new(0));
    // The signal thread wakes the accept loop by closing `wake`: see `handle_signals`.
    let (wake, woken) = UnixStream::pair().context("make the wake-up pair")?;
    // Before `listening on`: a signal that arrives once we are ready must find its handler.
    handle_signals(wake, &socket_file, &stop_signal)?;
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
    let queue = start_workers(args.workers, args.max_connections, &allowed, limits)?;
    let max_connections = args.max_connections as usize;
    for id in 1.. {
        // Sleep until a client is queued or a signal asks us to stop; then `accept` has a
        // client to return and cannot block.
        if !client_waiting(&listener, &woken) {
            break;
        }
        match listener.accept() {
            // Full: say so at once, and never wait on this client (see `busy`). While we serve,
            // our own `serving` is one of the strong counts: the rest are the open connections.
            Ok((stream, _addr)) if Arc::strong_count(&serving) > max_connections => {
                log!("connection {id}: busy ({max_connections} open)");
                busy(stream);
            }
            Ok((stream, _addr)) => {
                let serving = Arc::clone(&serving);
                let job = Job { id, stream, accepted: Instant::now(), serving };
                // Never blocks: the queue has room for `max_connections`, more than are open.
                if let Err(err) = queue.try_send(job) {
                    log!("connection {id}: queue: {err}");
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
    // Close our listening socket. If it is ours alone, clients still queued in it get a reset
    // now, instead of waiting out the grace period for an `accept` that will never come; if the
    // manager handed it to us, they stay queued in its socket for the next server it starts.
    // Close the queue too: the workers serve what is in it, then stop.
    drop(listener);
    drop(queue);
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
    if socket_file.is_some_and(|file| file.remove()) {
        log!("removed {}", path.display());
    }
    Ok(())
}

// ANCHOR: take_fd
/// The first descriptor a service manager passes: fds 0–2 are stdin, stdout and stderr.
const SD_LISTEN_FDS_START: i32 = 3;

/// The listening socket a service manager handed us, if it did (socket activation): fd 3,
/// when `LISTEN_PID` is our pid and `LISTEN_FDS` is 1 or more. We serve on the first only.
fn take_listen_fd() -> anyhow::Result<Option<UnixListener>> {
    // Unset is "not activated"; set to something that is no number is a broken unit or
    // script, and an error (sd_listen_fds(3) returns -EINVAL), not a quiet bind of our own.
    let number = |name| match env::var_os(name) {
        None => Ok(None),
        Some(value) => match value.to_str().and_then(|text| text.parse::<u32>().ok()) {
            Some(number) => Ok(Some(number)),
            None => Err(anyhow!("take fd 3: {name}={}: not a number", value.display())),
        },
    };
    // LISTEN_PID: the variables are for the process the manager started, not for whatever
    // inherits its environment later (a child of ours, a shell it runs).
    if number("LISTEN_PID")? != Some(process::id()) || number("LISTEN_FDS")?.unwrap_or(0) == 0 {
        return Ok(None);
    }
    // A manager that set LISTEN_FDS and passed nothing: say so, rather than own a number
    // that is no descriptor. (A path lookup: it opens nothing that could become fd 3.)
    if let Err(error) = fs::symlink_metadata("/proc/self/fd/3") {
        if fs::symlink_metadata("/proc/self/fd").is_ok() {
            bail!("take fd 3: LISTEN_FDS is set, but fd 3 is not open");
        }
        bail!("take fd 3: is it open? /proc/self/fd/3: {error} (is /proc mounted?)");
    }
    // SAFETY: `from_raw_fd` needs fd 3 to be open and owned by nothing else in this process.
    // It is open: checked just above. It is ours: LISTEN_PID names this process, and by the
    // protocol the manager that set it passed us LISTEN_FDS descriptors from 3 up, for us to
    // own. Nothing else here owns it: `run` calls this once, before it opens anything, and
    // no other code in the program turns a raw number into a descriptor. std and rustix have
    // no safe way to do this: only the environment says that fd 3 is ours.
    let fd = unsafe { OwnedFd::from_raw_fd(SD_LISTEN_FDS_START) };
    // The manager clears close-on-exec so that fd 3 survives its exec of us; set it again
    // (as sd_listen_fds(3) does), so that nothing we might start inherits the socket. The
    // flag belongs to our descriptor only: the manager's own is unchanged.
    fcntl_setfd(&fd, FdFlags::CLOEXEC).context("take fd 3")?;
    if let Some(kind) = what_else(&fd).context("take fd 3")? {
        bail!("take fd 3: it is {kind}, not a listening Unix stream socket");
    }
    Ok(Some(UnixListener::from(fd)))
}
// ANCHOR_END: take_fd

// ANCHOR: what_else
/// What `fd` is, unless it is a listening Unix stream socket (then `None`). A misconfigured
/// unit (a `ListenDatagram=`, a TCP port, a file) fails here, with its name, instead of at the
/// first `accept`.
fn what_else(fd: &OwnedFd) -> Result<Option<&'static str>, Errno> {
    match FileType::from_raw_mode(fstat(fd)?.st_mode) {
        FileType::Socket => {}
        FileType::RegularFile => return Ok(Some("a regular file")),
        _ => return Ok(Some("not a socket")),
    }
    match socket_domain(fd)? {
        AddressFamily::UNIX => {}
        AddressFamily::INET => return Ok(Some("an AF_INET socket")),
        AddressFamily::INET6 => return Ok(Some("an AF_INET6 socket")),
        _ => return Ok(Some("a socket of another family than AF_UNIX")),
    }
    Ok(match socket_type(fd)? {
        // SO_ACCEPTCONN: has `listen` been called on it?
        SocketType::STREAM if socket_acceptconn(fd)? => None,
        SocketType::STREAM => Some("a stream socket that is not listening"),
        SocketType::DGRAM => Some("a datagram socket"),
        SocketType::SEQPACKET => Some("a seqpacket socket"),
        _ => Some("a socket of another type"),
    })
}
// ANCHOR_END: what_else

// ANCHOR: bound_address
/// Where the manager bound the socket (getsockname(2)): a path, or an abstract `@name`.
fn bound_address(listener: &UnixListener) -> anyhow::Result<Address> {
    let address = listener.local_addr().context("take fd 3: getsockname")?;
    if let Some(path) = address.as_pathname() {
        return Ok(Address::File(path.to_owned()));
    }
    #[cfg(target_os = "linux")]
    if let Some(name) = std::os::linux::net::SocketAddrExt::as_abstract_name(&address) {
        return Ok(Address::Abstract(name.to_vec()));
    }
    bail!("take fd 3: it is bound to no path and no name")
}
// ANCHOR_END: bound_address

// ANCHOR: wake
/// Wait until a client is queued on `listener` (true) or `woken` is readable: the signal
/// thread closed the other end, and we must stop accepting (false).
fn client_waiting(listener: &UnixListener, woken: &UnixStream) -> bool {
    loop {
        let mut fds = [PollFd::new(listener, PollFlags::IN), PollFd::new(woken, PollFlags::IN)];
        match poll(&mut fds, None) {
            Ok(_) if !fds[1].revents().is_empty() => return false,
            Ok(_) => return true,
            // A signal's handler ran; the signal thread will close `wake` in a moment.
            Err(Errno::INTR) => {}
            Err(err) => {
                log!("poll: {err}");
                thread::sleep(Duration::from_millis(100));
            }
        }
    }
}
// ANCHOR_END: wake

// ANCHOR: private_dir
/// Create the default directory with mode 0700, or accept an existing one only if it is ours
/// and closed to everyone else. It is the second lock on the socket: nobody else can even
/// reach the socket file, whatever its mode (and some BSDs ignore a socket file's mode).
fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    let created = fs::DirBuilder::new().recursive(true).mode(0o700).create(dir);
    created.with_context(|| format!("create {}", dir.display()))?;
    // It may have been there already, made by anyone: lib.rs checks it, as the client does.
    lesson12::check_private_dir(dir)
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
/// Why not `signal_hook::flag::register` and a flag the accept loop checks? A process signal
/// lands on any thread that does not block it — a worker as likely as the main thread — so
/// the `poll` the loop sleeps in is not reliably interrupted: the loop would not see the flag
/// until the next client happened to connect. So this thread receives the signal and wakes the
/// loop by closing `wake`.
fn handle_signals(
    wake: UnixStream,
    socket_file: &Option<Arc<SocketFile>>,
    stop_signal: &Arc<AtomicI32>,
) -> anyhow::Result<()> {
    let mut signals = Signals::new([SIGINT, SIGTERM]).context("register SIGINT and SIGTERM")?;
    let (socket_file, stop_signal) = (socket_file.clone(), Arc::clone(stop_signal));
    let wait = move || {
        let mut signals = signals.forever();
        if let Some(signal) = signals.next() {
            stop_signal.store(signal, Ordering::SeqCst);
            // Lesson 07 called shutdown(2) on the listening socket here, to make the blocked
            // `accept` fail. On a socket the manager handed us that would shut down *its*
            // socket, the same one: every later `connect` refused, for every server it starts,
            // until the manager makes a new one. So the loop waits in poll(2) on the listener
            // and on the other end of `wake`, and closing `wake` makes that end readable (EOF).
            drop(wake);
        }
        if let Some(signal) = signals.next() {
            log!("{} again: exiting now", signal_name(signal));
            // process::exit runs no destructors, so remove the file by hand.
            if let Some(socket_file) = &socket_file
                && socket_file.remove()
            {
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

// ANCHOR: pool
/// An accepted connection on its way to a worker.
struct Job {
    id: u64,
    stream: UnixStream,
    /// Its first line is due `--idle-timeout-ms` after this, however long it waits for a worker.
    accepted: Instant,
    /// A clone of `serving`: counts it as open until the worker is done with it.
    serving: Arc<Sender<()>>,
}

/// Start `workers` threads that serve the connections sent to the returned queue, one at a
/// time each; they stop when the queue is closed (the sender dropped) and empty.
///
/// The queue holds up to `max_connections`: the acceptor answers `busy` before more than that
/// are open, so a send never finds it full and never blocks the acceptor.
fn start_workers(
    workers: u16,
    max_connections: u32,
    allowed: &Arc<Allowed>,
    limits: Limits,
) -> anyhow::Result<SyncSender<Job>> {
    let (queue, jobs) = mpsc::sync_channel::<Job>(max_connections as usize);
    // One receiver for all: whichever worker holds the lock waits for the next job, and lets
    // go as soon as it has one.
    let jobs = Arc::new(Mutex::new(jobs));
    for n in 1..=workers {
        let (jobs, allowed) = (Arc::clone(&jobs), Arc::clone(allowed));
        let work = move || {
            loop {
                let job = jobs.lock().unwrap_or_else(PoisonError::into_inner).recv();
                // Closed and empty: we are shutting down.
                let Ok(Job { id, stream, accepted, serving }) = job else { return };
                serve(id, &stream, &allowed, limits, accepted);
                // Uncounted before closing: a client that has read EOF finds its slot free.
                drop(serving);
                drop(stream); // closes the connection: the client reads EOF
            }
        };
        thread::Builder::new()
            .name(format!("worker {n}"))
            .spawn(work)
            .with_context(|| format!("spawn worker {n}"))?;
    }
    Ok(queue)
}

/// Past `--max-connections`: `error: busy`, and close. Unlike `refuse` there is no drain: the
/// acceptor must never wait on a client, and the one thing a flood of refused clients may cost
/// us is this write. A fresh socket's buffer is empty, so the line goes out without blocking
/// (non-blocking all the same). A client that had already sent lines reads it, then a reset.
fn busy(stream: UnixStream) {
    let _ = stream.set_nonblocking(true); // ok to fail: then the write may block, briefly
    let _ = (&stream).write_all(b"error: busy, try again later\n"); // ok to fail: it is gone
}

/// Has the client sent something (or closed its side) that we have not read yet? poll(2) with
/// a zero timeout answers without waiting.
fn has_input(stream: &UnixStream) -> bool {
    let mut fds = [PollFd::new(stream, PollFlags::IN)];
    matches!(poll(&mut fds, Some(&Timespec::default())), Ok(1..))
}
// ANCHOR_END: pool

// ANCHOR: serve
/// One client's connection, on its own thread: whatever goes wrong ends only this connection.
fn serve(id: u64, stream: &UnixStream, allowed: &Allowed, limits: Limits, accepted: Instant) {
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
    match answer_lines(stream, limits, accepted) {
        Ok(lines) => log!("connection {id}: closed, lines answered: {lines}"),
        Err(err) => log!("connection {id}: {err:#}"),
    }
}

/// Answer each line until EOF (the client half-closed or went away); returns how many. A
/// client that oversteps a limit is told why (see `cut_off`), and the reason is the error.
fn answer_lines(stream: &UnixStream, limits: Limits, accepted: Instant) -> anyhow::Result<u64> {
    let mut reader = BufReader::new(Deadline { stream, at: Instant::now() });
    let mut line = Vec::new();
    let mut lines = 0;
    // The first exchange's deadline counts from accept, time spent waiting for a worker too:
    // a client that sent nothing meanwhile is cut off at once. One whose line is already here
    // was not idle, and is not punished for our delay: its exchange starts now.
    let mut deadline = accepted + limits.idle;
    if deadline <= Instant::now() && has_input(stream) {
        deadline = Instant::now() + limits.idle;
    }
    loop {
        // One deadline for each exchange, the line in and its reply out: see `Deadline`.
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
                let reason = format!("no complete line in {} ms", limits.idle.as_millis());
                return Err(cut_off(stream, reason));
            }
            Err(err) => return Err(err).context("read"),
        }
        if !line.ends_with(b"\n") {
            line.push(b'\n'); // a last line without a newline is answered too
        }
        line.make_ascii_uppercase();
        let mut writer = Deadline { stream, at: deadline };
        writer.write_all(&line).map_err(timed_out).context("write")?;
        lines += 1;
        deadline = Instant::now() + limits.idle;
    }
}
// ANCHOR_END: serve

// ANCHOR: deadline
/// The limits every connection lives within: `--idle-timeout-ms` and `--max-line`.
#[derive(Clone, Copy)]
struct Limits {
    idle: Duration,
    max_line: usize,
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
