//! `lesson N`: build lesson N, start its server on a private temp path, run its client with
//! sample messages, print the client's block then the server's, and leave nothing behind.
//!
//! "Nothing behind" holds on every path because cleanup lives in `Drop`: a [`Child`] guard stops
//! and reaps its process, and the `TempDir` (declared before the children, so dropped after
//! them) removes the socket file that lessons 01 and 02 leave.

use std::borrow::Cow;
use std::env;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io::{self, BufRead, BufReader, PipeReader, Write};
use std::path::{Path, PathBuf};
use std::process::{self, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rustix::process::{Pid, Signal, kill_process};
use signal_hook::consts::{SIGINT, SIGTERM};

use crate::lessons::{self, Lesson, Number};

const MESSAGES: [&str; 2] = ["hello", "unix domain sockets"];
/// How long the server may take to print `listening on PATH`, and the client to finish.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the server may take to exit after SIGTERM before it gets SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// How long to wait for the last lines once a process has exited.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(1);
/// The runner polls (for the Ctrl-C flag and for exits): it is a tool, not lesson code.
const POLL: Duration = Duration::from_millis(20);

/// SIGINT or SIGTERM arrived; `main` exits 130 once everything is cleaned up.
#[derive(Debug)]
pub struct Interrupted;

impl fmt::Display for Interrupted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("interrupted")
    }
}

impl std::error::Error for Interrupted {}

pub fn lesson(number: Number) -> anyhow::Result<()> {
    // A terminal's Ctrl-C sends SIGINT to the whole foreground process group: our server and
    // client die of it (lessons 01-02) or shut down (from 03). The flag replaces our own default
    // action, dying on the spot, which would skip every `Drop` and leave the temp dir behind.
    let interrupted = Arc::new(AtomicBool::new(false));
    for signal in [SIGINT, SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&interrupted))
            .context("register a signal handler")?;
    }
    let result = run(number, &interrupted);
    // By now every guard has run. Whatever the signal broke on its way (the server died, the
    // client failed), the user asked us to stop: report that, not the symptom.
    if interrupted.load(Ordering::SeqCst) {
        return Err(Interrupted.into());
    }
    result
}

fn run(number: Number, interrupted: &AtomicBool) -> anyhow::Result<()> {
    let lesson = lessons::find(number)?;
    let (server_bin, client_bin) = binaries(&lesson)?;
    check(interrupted)?;
    // Declared before the children, so it is dropped (and removed) after they are reaped.
    let dir =
        tempfile::Builder::new().prefix("uds-course-").tempdir().context("create a temp dir")?;
    let socket = dir.path().join(format!("{}.sock", lesson.package()));
    let mut out = io::stdout().lock();

    let mut server = Child::spawn(&server_bin, &[socket.as_os_str()])?;
    let ready = format!("listening on {}", socket.display());
    let deadline = Instant::now() + STEP_TIMEOUT;
    loop {
        match server.next_line(deadline, interrupted)? {
            Event::Line if server.output.last() == Some(&ready) => break,
            Event::Line => {}
            Event::Eof => {
                let status = server.stop()?;
                server.print(&mut out)?;
                bail!("{} exited before it was listening ({status})", server.name);
            }
            Event::TimedOut => {
                server.print(&mut out)?;
                bail!("{} did not print `{ready}` within {STEP_TIMEOUT:?}", server.name);
            }
        }
    }

    let mut args = vec![socket.as_os_str()];
    args.extend(MESSAGES.map(OsStr::new));
    let mut client = Child::spawn(&client_bin, &args)?;
    let client_status = client.finish(interrupted);
    check(interrupted)?;
    // Stop the server even when the client failed: its block usually says why.
    server.stop()?;
    server.drain(interrupted)?;
    client.print(&mut out)?;
    writeln!(out).context("write stdout")?;
    server.print(&mut out)?;
    out.flush().context("write stdout")?;
    let client_name = client.name.clone();
    drop((client, server));
    let path = dir.path().to_owned();
    dir.close().with_context(|| format!("remove {}", path.display()))?;

    let status = client_status?;
    if !status.success() {
        bail!("{client_name} failed ({status})");
    }
    Ok(())
}

/// Lesson N's server and client, built by cargo beside the runner's own executable.
fn binaries(lesson: &Lesson) -> anyhow::Result<(PathBuf, PathBuf)> {
    let exe = env::current_exe().context("find the runner's own executable")?;
    let dir = exe.parent().context("find the runner's own directory")?;
    build(lesson, dir)?;
    let package = lesson.package();
    let [server, client] = ["server", "client"].map(|side| dir.join(format!("{package}-{side}")));
    for bin in [&server, &client] {
        if !bin.is_file() {
            bail!("find {}: not built (try `cargo build -p {package}`)", bin.display());
        }
    }
    Ok((server, client))
}

/// `cargo build -p lessonNN --bins` into the runner's own target dir, if cargo is around.
///
/// Nesting cargo is safe here: `cargo run` and `cargo test` release the target dir's lock
/// before they start the runner (tests/runner.rs runs this under `cargo test`).
fn build(lesson: &Lesson, dir: &Path) -> anyhow::Result<()> {
    // Only from a cargo profile directory can cargo put the binaries beside us; a runner
    // copied elsewhere only looks for them.
    let profile: &[&str] = match dir.file_name().and_then(OsStr::to_str) {
        Some("debug") => &[],
        Some("release") => &["--release"],
        _ => return Ok(()),
    };
    let Some(target_dir) = dir.parent() else { return Ok(()) };
    // `cargo run` sets CARGO to the cargo that built us: the same toolchain and settings.
    let cargo = env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    let package = lesson.package();
    let status = Command::new(&cargo)
        .args(["build", "--quiet", "-p", &package, "--bins"])
        .args(profile)
        // Explicit, so the binaries land beside us even if we were built with `--target-dir`.
        .arg("--target-dir")
        .arg(target_dir)
        .current_dir(lessons::root())
        .stdin(Stdio::null())
        .status();
    match status {
        Ok(status) if status.success() => Ok(()),
        Ok(status) => bail!("cargo build -p {package} failed ({status})"),
        // No cargo on this machine: use the binaries already beside us, if any.
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(err).with_context(|| format!("run {}", Path::new(&cargo).display())),
    }
}

fn check(interrupted: &AtomicBool) -> anyhow::Result<()> {
    if interrupted.load(Ordering::SeqCst) { Err(Interrupted.into()) } else { Ok(()) }
}

/// A running lesson binary whose stdout and stderr share ONE pipe, so its lines keep the order
/// it wrote them in. Dropping it stops and reaps the process.
struct Child {
    name: String,
    /// `$ name args...`, as a shell user would type it.
    shown: String,
    process: process::Child,
    lines: Receiver<String>,
    output: Vec<String>,
}

enum Event {
    Line,
    Eof,
    TimedOut,
}

impl Child {
    fn spawn(program: &Path, args: &[&OsStr]) -> anyhow::Result<Self> {
        let name = program.file_name().unwrap_or(program.as_os_str()).to_string_lossy();
        let mut shown = format!("$ {name}");
        for arg in args {
            shown.push(' ');
            shown.push_str(&shell_quote(&arg.to_string_lossy()));
        }
        let (reader, writer) = io::pipe().context("create a pipe")?;
        let mut command = Command::new(program);
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(writer.try_clone().context("duplicate a pipe")?)
            .stderr(writer);
        let process = command.spawn().with_context(|| format!("spawn {}", program.display()))?;
        // `command` still holds the pipe's write ends: until they close, there is no EOF.
        drop(command);
        let (sender, lines) = mpsc::channel();
        let child = Child { name: name.into_owned(), shown, process, lines, output: Vec::new() };
        // On error `child` is dropped here, which stops the process we just started.
        thread::Builder::new()
            .spawn(move || read_lines(reader, sender))
            .context("spawn a reader thread")?;
        Ok(child)
    }

    /// Waits for the next line (kept in `output`) until `deadline`; never blocks past it, even
    /// when the process hangs without printing anything.
    fn next_line(&mut self, deadline: Instant, interrupted: &AtomicBool) -> anyhow::Result<Event> {
        loop {
            check(interrupted)?;
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return Ok(Event::TimedOut);
            };
            match self.lines.recv_timeout(left.min(POLL)) {
                Ok(line) => {
                    self.output.push(line);
                    return Ok(Event::Line);
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return Ok(Event::Eof),
            }
        }
    }

    /// Reads the rest of the output, then the exit status, within [`STEP_TIMEOUT`].
    fn finish(&mut self, interrupted: &AtomicBool) -> anyhow::Result<ExitStatus> {
        let deadline = Instant::now() + STEP_TIMEOUT;
        while let Event::Line = self.next_line(deadline, interrupted)? {}
        // EOF means it closed its output, which almost always means it exited.
        while Instant::now() < deadline {
            if let Some(status) = self.process.try_wait().context("wait")? {
                return Ok(status);
            }
            check(interrupted)?;
            thread::sleep(POLL);
        }
        bail!("{} did not finish within {STEP_TIMEOUT:?}", self.name)
    }

    /// The lines still in the pipe after the process exited.
    fn drain(&mut self, interrupted: &AtomicBool) -> anyhow::Result<()> {
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        while let Event::Line = self.next_line(deadline, interrupted)? {}
        Ok(())
    }

    /// SIGTERM, up to [`STOP_TIMEOUT`] to exit, then SIGKILL; reaps the process either way.
    fn stop(&mut self) -> anyhow::Result<ExitStatus> {
        let wait = |name: &str| format!("wait for {name}");
        if let Some(status) = self.process.try_wait().with_context(|| wait(&self.name))? {
            return Ok(status);
        }
        // SIGTERM first, not SIGKILL: from lesson 03 the server shuts down cleanly on it, and
        // its block shows that. The pid is still ours: we have not reaped it.
        kill_process(Pid::from_child(&self.process), Signal::TERM)
            .with_context(|| format!("kill {}", self.name))?;
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(status) = self.process.try_wait().with_context(|| wait(&self.name))? {
                return Ok(status);
            }
            thread::sleep(POLL);
        }
        self.process.kill().with_context(|| format!("kill {}", self.name))?;
        self.process.wait().with_context(|| wait(&self.name))
    }

    fn print(&self, out: &mut impl Write) -> anyhow::Result<()> {
        writeln!(out, "{}", self.shown).context("write stdout")?;
        for line in &self.output {
            writeln!(out, "{line}").context("write stdout")?;
        }
        Ok(())
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        // Nowhere to report a failure from here; `stop` already tried SIGKILL.
        let _ = self.stop();
    }
}

/// Sends each line (without its newline) until EOF: the child and every copy of the pipe's
/// write end are closed. A read error ends the output the same way.
fn read_lines(pipe: PipeReader, lines: Sender<String>) {
    let mut reader = BufReader::new(pipe);
    let mut line = Vec::new();
    while let Ok(1..) = reader.read_until(b'\n', &mut line) {
        // Lossy: a lesson binary's output is shown, never parsed byte for byte.
        let text = String::from_utf8_lossy(line.strip_suffix(b"\n").unwrap_or(&line));
        if lines.send(text.into_owned()).is_err() {
            return; // nobody is listening any more
        }
        line.clear();
    }
}

/// `arg` as typed in a POSIX shell: bare when that is safe, else in single quotes.
fn shell_quote(arg: &str) -> Cow<'_, str> {
    let safe = |c: char| c.is_ascii_alphanumeric() || "@%+=:,./_-".contains(c);
    if !arg.is_empty() && arg.chars().all(safe) {
        Cow::Borrowed(arg)
    } else {
        Cow::Owned(format!("'{}'", arg.replace('\'', r"'\''")))
    }
}

#[cfg(test)]
mod tests {
    use super::shell_quote;

    /// Arguments shown in `$ lessonNN-client ...` lines paste back into a shell unchanged.
    #[test]
    fn shell_quote_leaves_plain_words_bare_and_quotes_the_rest() {
        assert_eq!(
            shell_quote("/tmp/uds-course-x1/lesson01.sock"),
            "/tmp/uds-course-x1/lesson01.sock"
        );
        assert_eq!(shell_quote("unix domain sockets"), "'unix domain sockets'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("$HOME"), "'$HOME'");
    }
}
