//! lesson11-server: lesson 04's server, handing out open files instead of echoing lines.
//!
//! The one idea: SCM_RIGHTS. A client sends the NAME of a file in `--dir`; if lesson 04's
//! checks let the client in, the server opens DIR/NAME itself and passes the open descriptor
//! over the socket (`sendmsg` with the descriptor attached to the reply `ok\n`). The client
//! then reads a file it may have no permission to open: the server decided, once, with the
//! peer's credentials in hand. Anyone else gets `error: ...` and no descriptor.
//!
//! Run: `cargo run --bin lesson11-server -- --dir /etc` prints `listening on PATH`; then, in
//! another terminal, `cargo run --bin lesson11-client -- PATH hostname`. Partner: client.rs.

use std::io::{self, BufRead, BufReader, ErrorKind, IoSlice, Read, Write};
use std::mem::MaybeUninit;
use std::net::Shutdown;
use std::os::fd::{AsFd, OwnedFd};
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
use lesson11::{SOCKET_NAME, default_socket_dir, log, peer_credentials};
use rustix::fs::{Mode, OFlags, openat};
use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags, sendmsg};
use rustix::process::{Gid, getuid, umask};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

/// Hand each client that asks for a file in DIR the open file itself (SCM_RIGHTS).
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Where to create the socket [default: $XDG_RUNTIME_DIR/uds-course/lesson11.sock]
    path: Option<PathBuf>,
    /// The directory whose files clients may ask for, by name
    #[arg(long, value_name = "DIR")]
    dir: PathBuf,
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
    let path = match args.path.clone() {
        Some(path) => path,
        None => {
            let dir = default_socket_dir();
            create_private_dir(&dir)?;
            dir.join(SOCKET_NAME)
        }
    };
    let mode = args.mode.unwrap_or(if args.group.is_some() { 0o660 } else { 0o600 });
    // ANCHOR: open_dir
    // Opened once, now: a DIR that is missing is a start-up error, not every client's, and
    // each NAME is then opened relative to this descriptor (`openat`), never by a path
    // built from what a client sent.
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let dir = rustix::fs::open(&args.dir, flags, Mode::empty())
        .with_context(|| format!("open {}", args.dir.display()))?;
    let dir = Arc::new(dir);
    // ANCHOR_END: open_dir
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
                let (allowed, dir) = (Arc::clone(&allowed), Arc::clone(&dir));
                // Builder, not thread::spawn: spawn panics when the OS refuses a thread.
                let spawned = thread::Builder::new().spawn(move || {
                    serve(id, &stream, &allowed, &dir);
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
    lesson11::check_private_dir(dir)
}
// ANCHOR_END: private_dir

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
fn serve(id: u64, stream: &UnixStream, allowed: &Allowed, dir: &OwnedFd) {
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
    // ANCHOR: answer
    let answered = match read_request(stream).and_then(|name| open_in(dir, &name)) {
        Ok((name, file)) => send_file(stream, &file).map(|()| format!("sent {name}")),
        Err(reason) => refuse(stream, &reason).map(|()| format!("refused: {reason}")),
    };
    // ANCHOR_END: answer
    match answered {
        Ok(what) => log!("connection {id}: {what}"),
        Err(err) => log!("connection {id}: {err:#}"),
    }
}

/// The most a request may take, its `\n` included: a NAME is at most 255 bytes on Linux, so
/// this is room enough, and a client cannot make us buffer more.
const MAX_REQUEST: u64 = 4096;

// ANCHOR: read_request
/// One request: a NAME and `\n`. The reason for the refusal, if it is not one.
fn read_request(stream: &UnixStream) -> Result<Vec<u8>, String> {
    // A BufReader is fine on this side: requests carry no descriptors (see the client).
    let mut reader = BufReader::new(stream.take(MAX_REQUEST));
    let mut line = Vec::new();
    // read_until, not read_line: a file name may be bytes that are not UTF-8.
    reader.read_until(b'\n', &mut line).map_err(|err| format!("read: {err}"))?;
    match line.pop() {
        Some(b'\n') => Ok(line),
        _ if line.len() as u64 + 1 >= MAX_REQUEST => {
            Err(format!("request longer than {MAX_REQUEST} bytes"))
        }
        _ => Err("the request ended before its newline".to_owned()),
    }
}
// ANCHOR_END: read_request

// ANCHOR: open_in
/// Open NAME in the directory, for reading: the descriptor we will hand over.
fn open_in(dir: &OwnedFd, name: &[u8]) -> Result<(String, OwnedFd), String> {
    let shown = shown(name);
    // A name, not a path: with a `/` in it, or `..`, a client could reach any file we can.
    if name.is_empty() || name.contains(&b'/') || name == b"." || name == b".." {
        return Err(format!("\"{shown}\" is not a file name (no '/', not '.' or '..')"));
    }
    // O_NOFOLLOW: a symbolic link in DIR (which someone may have put there) could point
    // anywhere; refuse it (ELOOP) rather than follow it. O_CLOEXEC: a program we started
    // would not inherit it.
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let file = openat(dir, name, flags, Mode::empty());
    let file = file.map_err(|err| format!("open {shown}: {}", io::Error::from(err)))?;
    Ok((shown, file))
}

/// At most this many bytes of a NAME are shown (in a reply, in our log): enough to know it by,
/// and a 4000-byte name cannot swell the reply past what a client reads in one `recvmsg`.
const SHOWN_NAME: usize = 64;

/// NAME as we show it: its first `SHOWN_NAME` bytes, escaped (`\x1b`, `\n`, `\xff`), so that a
/// client's bytes cannot forge a line in our log or drive a terminal; `…` if there is more.
fn shown(name: &[u8]) -> String {
    let more = if name.len() > SHOWN_NAME { "…" } else { "" };
    format!("{}{more}", name.get(..SHOWN_NAME).unwrap_or(name).escape_ascii())
}
// ANCHOR_END: open_in

// ANCHOR: send_file
/// Reply `ok\n` with `file` attached, in one `sendmsg`: the descriptor travels with those bytes.
fn send_file(stream: &UnixStream, file: &OwnedFd) -> anyhow::Result<()> {
    // Room for one descriptor's control message (SCM_RIGHTS), sized by rustix's macro.
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    let fds = [file.as_fd()];
    if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
        bail!("sendmsg: no room for the descriptor"); // the buffer was sized for it
    }
    // On a stream socket a descriptor must ride on at least one byte of data: `ok\n` is it.
    // NOSIGNAL: a client gone already is an EPIPE error here, not a signal.
    let sent = sendmsg(stream, &[IoSlice::new(b"ok\n")], &mut control, SendFlags::NOSIGNAL);
    let sent = sent.map_err(io::Error::from).context("sendmsg")?;
    if sent != 3 {
        bail!("sendmsg: sent {sent} of 3 bytes");
    }
    // Our copy of the descriptor is still open: `serve` drops `file` when we return. The
    // client's copy lives on in the kernel, in flight, until it receives it — or the
    // connection closes unread and the kernel closes it for us.
    Ok(())
}
// ANCHOR_END: send_file
// ANCHOR_END: serve

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
