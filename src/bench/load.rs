//! Servers under load: the bench's own load client (connect, one line, its reply, close; or
//! many lines on one connection), against a lean server of its own (Unix and TCP) and against
//! each lesson's server. Partner: mod.rs, which decides what runs against what.

use std::ffi::OsStr;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Mutex, PoisonError, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use nix::time::{ClockId, clock_getcpuclockid, clock_gettime};
use nix::unistd::Pid;

use super::Ctx;
use super::transports::Transport;
use crate::child::{Child, Event, bail_if_interrupted, open_fds};
use crate::lessons::Lesson;

/// What the load client sends, and the reply every lesson's protocol gives it.
const LINE: &[u8] = b"hello\n";
const REPLY: &[u8] = b"HELLO\n";
/// A server that stops answering fails the run after this long instead of hanging it.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a lesson's server may take to print `listening on PATH`.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// A lesson server's log has been read to the end once it is quiet for this long.
const LOG_QUIET: Duration = Duration::from_millis(5);
/// How often a client looks at the Ctrl-C flag, in connections or lines.
const CHECK_EVERY: usize = 64;

/// A connected socket of either kind, for code that does not care which.
trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

/// Where the load client connects.
pub enum Target {
    Unix(PathBuf),
    Tcp(SocketAddr),
}

impl Target {
    /// A lean server's socket file is the bench's to remove once it is done with it.
    fn remove_socket_file(&self) -> anyhow::Result<()> {
        if let Target::Unix(path) = self {
            std::fs::remove_file(path).with_context(|| format!("remove {}", path.display()))?;
        }
        Ok(())
    }

    /// `connect`, plus a read timeout so a stuck server fails the run (one `setsockopt`, the
    /// same for every server). TCP also gets TCP_NODELAY, as in every TCP measurement here.
    fn connect(&self) -> anyhow::Result<Box<dyn Stream>> {
        match self {
            Target::Unix(path) => {
                let stream = UnixStream::connect(path)
                    .with_context(|| format!("connect {}", path.display()))?;
                stream.set_read_timeout(Some(REPLY_TIMEOUT)).context("set a read timeout")?;
                Ok(Box::new(stream))
            }
            Target::Tcp(address) => {
                let stream =
                    TcpStream::connect(address).with_context(|| format!("connect {address}"))?;
                stream.set_nodelay(true).context("set TCP_NODELAY")?;
                stream.set_read_timeout(Some(REPLY_TIMEOUT)).context("set a read timeout")?;
                Ok(Box::new(stream))
            }
        }
    }
}

/// What the load client does, on `clients` threads at once.
#[derive(Clone, Copy)]
pub enum Load {
    /// Connections per second, each one `connect`, a line, its reply, `close`. What it costs:
    /// creating and tearing down a connected socket pair in the kernel (for TCP, also the
    /// handshake and teardown packets), plus what the server does per connection (a lesson's
    /// server spawns a thread for each).
    Connections,
    /// Lines per second, each client on one connection sending a line only when the reply to
    /// the one before has arrived. What it costs: a round trip of the lessons' protocol,
    /// through the server's reading and writing code.
    Lines,
}

impl Load {
    pub const ALL: [Load; 2] = [Load::Connections, Load::Lines];

    pub fn name(self) -> &'static str {
        match self {
            Load::Connections => "connections",
            Load::Lines => "lines",
        }
    }

    /// Runs this load on `clients` threads at once, about `total` connections or lines among
    /// them.
    pub fn run(
        self,
        target: &Target,
        clients: usize,
        total: usize,
        interrupted: &AtomicBool,
    ) -> anyhow::Result<Done> {
        on_threads(clients, total, |each| {
            let mut reply = Vec::new();
            match self {
                Load::Connections => {
                    repeat(each, interrupted, || exchange(&mut *target.connect()?, &mut reply))
                }
                Load::Lines => {
                    let mut stream = target.connect()?;
                    repeat(each, interrupted, || exchange(&mut *stream, &mut reply))
                }
            }
        })
    }
}

/// What a load did: how many connections or lines, in how long.
#[derive(Clone, Copy)]
pub struct Done {
    pub count: usize,
    pub elapsed: Duration,
}

impl Done {
    pub fn per_second(self) -> f64 {
        self.count as f64 / self.elapsed.as_secs_f64()
    }

    /// `spent`, a server's CPU time during the load, shared among what was done: µs each.
    pub fn micros_each(self, spent: Duration) -> f64 {
        spent.as_secs_f64() * 1e6 / self.count as f64
    }
}

/// Runs `client(each)` on `clients` threads at once, `each` being their share of `total`
/// (rounded up), and says how many they did together, and how fast. The clock includes
/// starting the threads (tens of µs each): small beside the work they do.
fn on_threads(
    clients: usize,
    total: usize,
    client: impl Fn(usize) -> anyhow::Result<()> + Sync,
) -> anyhow::Result<Done> {
    let each = total.div_ceil(clients);
    let start = Instant::now();
    thread::scope(|scope| {
        let mut threads = Vec::new();
        for _ in 0..clients {
            let spawned = thread::Builder::new().spawn_scoped(scope, || client(each));
            threads.push(spawned.context("spawn a client thread")?);
        }
        for thread in threads {
            thread.join().map_err(|_| anyhow!("a client thread panicked"))??;
        }
        anyhow::Ok(())
    })?;
    Ok(Done { count: each * clients, elapsed: start.elapsed() })
}

/// `step`, `times` times, stopping early on Ctrl-C.
fn repeat(
    times: usize,
    interrupted: &AtomicBool,
    mut step: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    for i in 0..times {
        if i % CHECK_EVERY == 0 {
            bail_if_interrupted(interrupted)?;
        }
        step()?;
    }
    Ok(())
}

/// Writes [`LINE`] and reads the reply line, which must be [`REPLY`].
fn exchange(stream: &mut dyn Stream, reply: &mut Vec<u8>) -> anyhow::Result<()> {
    stream.write_all(LINE).context("write a line")?;
    read_line(stream, reply).context("read the reply")?;
    if reply != REPLY {
        bail!("the server replied {:?}, not HELLO", String::from_utf8_lossy(reply));
    }
    Ok(())
}

/// Reads until a newline, without reading past it: only one reply is ever on its way.
fn read_line(stream: &mut dyn Read, line: &mut Vec<u8>) -> io::Result<()> {
    line.clear();
    let mut buf = [0; 128];
    while line.last() != Some(&b'\n') {
        match stream.read(&mut buf)? {
            0 => return Err(io::Error::new(ErrorKind::UnexpectedEof, "closed mid-line")),
            n => line.extend_from_slice(&buf[..n]),
        }
    }
    Ok(())
}

/// The bench's lean server over `transport`, in this process, under the connections load:
/// what the load did, and the CPU time the server's threads spent meanwhile.
///
/// Lean: `clients` threads started beforehand, each accepting and answering one connection
/// at a time. No thread is spawned per connection (a spawn costs tens of µs, more than a Unix
/// connection), so this measures the sockets rather than the server.
pub fn lean_server(
    ctx: &Ctx,
    transport: Transport,
    clients: usize,
) -> anyhow::Result<(Done, Duration)> {
    let (listener, target) = Listener::bind(transport, ctx.sockets)?;
    let measured = thread::scope(|scope| {
        let mut servers = Vec::new();
        let done = (|| {
            for _ in 0..clients {
                let serve = || on_cpu(|| listener.serve());
                let spawned = thread::Builder::new().spawn_scoped(scope, serve);
                servers.push(spawned.context("spawn a server thread")?);
            }
            let total = ctx.sizes.connections;
            Load::Connections.run(&target, clients, total, ctx.interrupted)
        })();
        // Before the server threads are joined: their `accept` must return.
        listener.shut_down()?;
        Ok::<_, anyhow::Error>((done?, join_cpu_times(servers)?))
    })?;
    target.remove_socket_file()?;
    Ok(measured)
}

/// The lean server in lesson 07's shape, over a Unix socket: one thread accepts and hands each
/// connection through a bounded queue to `clients` workers started beforehand. Beside
/// [`lean_server`], whose threads each accept for themselves, it measures what the handoff
/// costs (a queue and a wakeup per connection) without a lesson's logging and checks.
pub fn lean_handoff(ctx: &Ctx, clients: usize) -> anyhow::Result<(Done, Duration)> {
    let (listener, target) = Listener::bind(Transport::Unix, ctx.sockets)?;
    let (queue, jobs) = mpsc::sync_channel::<Box<dyn Stream>>(1024);
    let jobs = Mutex::new(jobs);
    let measured = thread::scope(|scope| {
        let mut threads = Vec::new();
        let done = (|| {
            for _ in 0..clients {
                let jobs = &jobs;
                let work = move || {
                    let mut line = Vec::new();
                    loop {
                        let job = jobs.lock().unwrap_or_else(PoisonError::into_inner).recv();
                        let Ok(mut stream) = job else { return };
                        answer_one(&mut stream, &mut line);
                    }
                };
                let spawned = thread::Builder::new().spawn_scoped(scope, move || on_cpu(work));
                threads.push(spawned.context("spawn a worker")?);
            }
            let listener = &listener;
            let accept = move || {
                while let Ok(stream) = listener.accept() {
                    if queue.send(stream).is_err() {
                        return;
                    }
                }
            }; // the queue is dropped when accept fails: the workers then stop
            let spawned = thread::Builder::new().spawn_scoped(scope, move || on_cpu(accept));
            threads.push(spawned.context("spawn the acceptor")?);
            Load::Connections.run(&target, clients, ctx.sizes.connections, ctx.interrupted)
        })();
        listener.shut_down()?;
        Ok::<_, anyhow::Error>((done?, join_cpu_times(threads)?))
    })?;
    target.remove_socket_file()?;
    Ok(measured)
}

/// Runs `work` and returns the CPU time it took on this thread: user and kernel time, not the
/// time spent waiting.
fn on_cpu(work: impl FnOnce()) -> anyhow::Result<Duration> {
    let start = cpu_time(ClockId::CLOCK_THREAD_CPUTIME_ID)?;
    work();
    Ok(cpu_time(ClockId::CLOCK_THREAD_CPUTIME_ID)? - start)
}

/// Waits for each of the lean server's threads to end; returns their CPU time together.
fn join_cpu_times(
    threads: Vec<thread::ScopedJoinHandle<'_, anyhow::Result<Duration>>>,
) -> anyhow::Result<Duration> {
    let mut total = Duration::ZERO;
    for thread in threads {
        total += thread.join().map_err(|_| anyhow!("a lean server thread panicked"))??;
    }
    Ok(total)
}

/// The time on a CPU-time clock: a thread's, or a whole process's (see [`LessonServer`]).
fn cpu_time(clock: ClockId) -> anyhow::Result<Duration> {
    let time = clock_gettime(clock).with_context(|| format!("read CPU-time clock {clock}"))?;
    Ok(Duration::new(time.tv_sec() as u64, time.tv_nsec() as u32))
}

/// Read one line, answer it upper-cased; a failed connection is its client's to report.
fn answer_one(stream: &mut Box<dyn Stream>, line: &mut Vec<u8>) {
    if read_line(stream, line).is_ok() {
        line.make_ascii_uppercase();
        let _ = stream.write_all(line);
    }
}

/// The lean server's listening socket.
enum Listener {
    Unix(UnixListener),
    Tcp(TcpListener),
}

impl Listener {
    fn bind(transport: Transport, dir: &Path) -> anyhow::Result<(Listener, Target)> {
        match transport {
            Transport::Unix => {
                let path = dir.join("lean.sock");
                let listener = UnixListener::bind(&path)
                    .with_context(|| format!("bind {}", path.display()))?;
                Ok((Listener::Unix(listener), Target::Unix(path)))
            }
            Transport::Tcp => {
                let listener =
                    TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("bind 127.0.0.1")?;
                let address = listener.local_addr().context("the listener's address")?;
                Ok((Listener::Tcp(listener), Target::Tcp(address)))
            }
            Transport::Pipe => bail!("a pipe has no connections"),
        }
    }

    fn accept(&self) -> io::Result<Box<dyn Stream>> {
        Ok(match self {
            Listener::Unix(listener) => Box::new(listener.accept()?.0),
            Listener::Tcp(listener) => Box::new(listener.accept()?.0),
        })
    }

    /// One server thread: answer one line per connection, then close, until [`shut_down`].
    /// The server closes first, so TCP's TIME_WAIT (a minute of remembering a closed
    /// connection) stays on its side and cannot use up the clients' ephemeral ports.
    ///
    /// [`shut_down`]: Listener::shut_down
    fn serve(&self) {
        let mut line = Vec::new();
        while let Ok(mut stream) = self.accept() {
            answer_one(&mut stream, &mut line);
        }
    }

    /// `shutdown` on a listening socket: Linux then fails every blocked `accept` (EINVAL), so
    /// the server threads end. Dropping the listener would not wake them.
    fn shut_down(&self) -> anyhow::Result<()> {
        rustix::net::shutdown(self.as_fd(), rustix::net::Shutdown::Both)
            .context("shutdown the lean server's listener")
    }

    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Listener::Unix(listener) => listener.as_fd(),
            Listener::Tcp(listener) => listener.as_fd(),
        }
    }
}

/// A lesson's server on a private socket path, stopped (SIGTERM, then SIGKILL) when dropped.
pub struct LessonServer {
    label: String,
    target: Target,
    /// The process's CPU-time clock: user and kernel time of all its threads, the ended ones
    /// too, to the nanosecond (clock_getcpuclockid(3)).
    cpu_clock: ClockId,
    /// In a mutex only so that [`LessonServer::under_load`] can take `&self`.
    process: Mutex<Child>,
}

impl LessonServer {
    /// Starts `server` on `<dir>/lessonNN.sock`, every option at its default, and waits for
    /// `listening on PATH`.
    pub fn start(
        lesson: &Lesson,
        server: &Path,
        dir: &Path,
        interrupted: &AtomicBool,
    ) -> anyhow::Result<Self> {
        let socket = dir.join(format!("{}.sock", lesson.package()));
        Self::start_with(lesson, server, socket, &[], interrupted)
    }

    /// [`LessonServer::start`] on `socket`, with `options` after the path.
    fn start_with(
        lesson: &Lesson,
        server: &Path,
        socket: PathBuf,
        options: &[&str],
        interrupted: &AtomicBool,
    ) -> anyhow::Result<Self> {
        let mut args = vec![socket.as_os_str()];
        args.extend(options.iter().map(OsStr::new));
        let mut process = Child::spawn(server, &args)?;
        let ready = format!("listening on {}", socket.display());
        let deadline = Instant::now() + READY_TIMEOUT;
        if !matches!(process.wait_for_line(&ready, deadline, interrupted)?, Event::Line) {
            bail!(
                "{} did not print `{ready}` within {READY_TIMEOUT:?}; it printed: {}",
                process.name,
                process.output.join(" / ")
            );
        }
        let label = format!("{} {}", lesson.number, lesson.short_name);
        let pid = Pid::from_raw(process.id() as i32);
        let cpu_clock = clock_getcpuclockid(pid)
            .with_context(|| format!("the CPU-time clock of {} (pid {pid})", process.name))?;
        let target = Target::Unix(socket);
        Ok(LessonServer { label, target, cpu_clock, process: Mutex::new(process) })
    }

    /// Runs `load` against this server, then throws away what the server logged meanwhile:
    /// two lines per connection, which a full run would otherwise pile up by the megabyte.
    /// Returns what the load did, and the CPU time the server spent meanwhile.
    pub fn under_load(
        &self,
        load: impl FnOnce(&Target) -> anyhow::Result<Done>,
        interrupted: &AtomicBool,
    ) -> anyhow::Result<(Done, Duration)> {
        let before = cpu_time(self.cpu_clock)?;
        let done = load(&self.target)?;
        let spent = cpu_time(self.cpu_clock)?.saturating_sub(before);
        let mut process = self.process.lock().unwrap_or_else(PoisonError::into_inner);
        while let Event::Line = process.next_line(Instant::now() + LOG_QUIET, interrupted)? {}
        process.output.clear();
        Ok((done, spent))
    }

    /// `01 listen-accept`: the row's label.
    pub fn label(&self) -> &str {
        &self.label
    }
}

/// A lesson's server holding `count` idle connections (connected, nothing sent): its memory
/// (VmRSS, KiB) when ready, its memory holding them, that difference per connection (bytes),
/// and its threads holding them. A fresh server each time, so that nothing earlier is counted.
///
/// What is held differs: lesson 13 reads every connection on a task of its own; lesson 07
/// serves `--workers` of them and keeps the rest in its queue, unread, until a worker is free.
pub fn idle_connections(
    lesson: &Lesson,
    server: &Path,
    ctx: &Ctx,
    count: usize,
) -> anyhow::Result<Vec<f64>> {
    let socket = ctx.sockets.join(format!("{}-idle.sock", lesson.package()));
    // Room for all of them, and a --idle-timeout-ms (30 s by default) far longer than this.
    let limit = (count + 100).to_string();
    let options = ["--max-connections", &limit];
    let server = LessonServer::start_with(lesson, server, socket, &options, ctx.interrupted)?;
    let pid = server.process.lock().unwrap_or_else(PoisonError::into_inner).id();
    let status = |field: &str| proc_status(pid, field);
    let (before, fds) = (status("VmRSS")?, open_fds(pid)?);
    let mut held = Vec::with_capacity(count);
    for i in 0..count {
        if i % CHECK_EVERY == 0 {
            bail_if_interrupted(ctx.interrupted)?;
        }
        held.push(server.target.connect()?);
    }
    // Accepted: the server holds a descriptor for each.
    let deadline = Instant::now() + READY_TIMEOUT;
    while open_fds(pid)? < fds + count {
        bail_if_interrupted(ctx.interrupted)?;
        if Instant::now() > deadline {
            bail!(
                "{}: {count} connections not accepted within {READY_TIMEOUT:?}",
                lesson.package()
            );
        }
        thread::sleep(Duration::from_millis(10));
    }
    // A moment for what each accepted connection sets up (a task, its buffer) to be done.
    thread::sleep(Duration::from_millis(200));
    let (after, threads) = (status("VmRSS")?, status("Threads")?);
    drop(held);
    let per_connection = (after - before) * 1024.0 / count as f64;
    Ok(vec![before, after, per_connection, threads])
}

/// A number field of /proc/PID/status: `VmRSS` (in kB), `Threads`.
fn proc_status(pid: u32, field: &str) -> anyhow::Result<f64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
    let line = status.lines().find_map(|line| line.strip_prefix(field)?.strip_prefix(':'));
    let number = line.and_then(|value| value.split_whitespace().next()?.parse().ok());
    number.with_context(|| format!("read {path}: no {field}"))
}
