//! The processes the runner starts (lesson binaries, cargo) and Ctrl-C, shared by `lesson N` and
//! `check N`.
//!
//! Cleanup lives in `Drop`: a [`Child`] guard stops and reaps its process on every path, error
//! and Ctrl-C included. Ctrl-C only raises a flag, so those guards get to run.

use std::borrow::Cow;
use std::ffi::OsStr;
use std::fmt;
use std::fs;
use std::io::{self, BufRead, BufReader, PipeReader, Write};
use std::path::Path;
use std::process::{self, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rustix::process::{Pid, Signal, kill_process};
use signal_hook::consts::{SIGINT, SIGTERM};

/// How long a process may take to exit after SIGTERM before it gets SIGKILL.
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

/// Runs `command` with a flag that SIGINT and SIGTERM raise, and reports [`Interrupted`] if
/// either arrived, whatever `command` returned.
pub fn interruptible<T>(
    command: impl FnOnce(&AtomicBool) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    // A terminal's Ctrl-C sends SIGINT to the whole foreground process group: our children get
    // it too and die of it or shut down. The flag replaces our own default action, dying on the
    // spot, which would skip every `Drop` and leave processes and temp dirs behind.
    let interrupted = Arc::new(AtomicBool::new(false));
    for signal in [SIGINT, SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&interrupted))
            .context("register a signal handler")?;
    }
    let result = command(&interrupted);
    // By now every guard has run. Whatever the signal broke on its way (a child died, a test
    // failed), the user asked us to stop: report that, not the symptom.
    if interrupted.load(Ordering::SeqCst) {
        return Err(Interrupted.into());
    }
    result
}

/// How many descriptors process `pid` holds open now: its entries in /proc/PID/fd.
pub fn open_fds(pid: u32) -> anyhow::Result<usize> {
    let path = format!("/proc/{pid}/fd");
    Ok(fs::read_dir(&path).with_context(|| format!("read {path}"))?.count())
}

/// [`Interrupted`] once SIGINT or SIGTERM has arrived.
pub fn bail_if_interrupted(interrupted: &AtomicBool) -> anyhow::Result<()> {
    if interrupted.load(Ordering::SeqCst) { Err(Interrupted.into()) } else { Ok(()) }
}

/// A running process whose stdout and stderr share ONE pipe, so its lines keep the order it
/// wrote them in. Dropping it stops and reaps the process.
pub struct Child {
    /// The program's file name: `lesson01-server`, `cargo`.
    pub name: String,
    /// `$ name args...`, as a shell user would type it.
    shown: String,
    process: process::Child,
    lines: Receiver<String>,
    /// Every line read so far, without its newline.
    pub output: Vec<String>,
}

pub enum Event {
    Line,
    Eof,
    TimedOut,
}

impl Child {
    pub fn spawn(program: &Path, args: &[impl AsRef<OsStr>]) -> anyhow::Result<Self> {
        let mut command = Command::new(program);
        command.args(args);
        Self::start(command)
    }

    /// Starts `command` (its program, arguments, environment and directory as set) with stdin
    /// closed and stdout and stderr into our pipe.
    pub fn start(command: Command) -> anyhow::Result<Self> {
        Self::start_with(command, Stdio::null())
    }

    /// [`Child::start`], with a pipe to the process's stdin: typing into an interactive client.
    pub fn start_typing(command: Command) -> anyhow::Result<(Self, ChildStdin)> {
        let mut child = Self::start_with(command, Stdio::piped())?;
        let stdin = child.process.stdin.take().context("take the child's stdin")?;
        Ok((child, stdin))
    }

    fn start_with(mut command: Command, stdin: Stdio) -> anyhow::Result<Self> {
        let program = Path::new(command.get_program()).to_owned();
        let name = program.file_name().unwrap_or(program.as_os_str()).to_string_lossy();
        let mut shown = format!("$ {name}");
        for arg in command.get_args() {
            shown.push(' ');
            shown.push_str(&shell_quote(&arg.to_string_lossy()));
        }
        let (reader, writer) = io::pipe().context("create a pipe")?;
        command.stdin(stdin).stdout(writer.try_clone().context("duplicate a pipe")?).stderr(writer);
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

    /// The process id, valid until the guard is dropped (which reaps the process).
    pub fn id(&self) -> u32 {
        self.process.id()
    }

    /// Waits for the next line (kept in `output`) until `deadline`; never blocks past it, even
    /// when the process hangs without printing anything.
    pub fn next_line(
        &mut self,
        deadline: Instant,
        interrupted: &AtomicBool,
    ) -> anyhow::Result<Event> {
        loop {
            bail_if_interrupted(interrupted)?;
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

    /// Waits until the process holds at most `fds` descriptors, checking every 2 ms. Gives up
    /// quietly at `deadline`, or at once without /proc: the wait only orders what comes next.
    pub fn wait_for_fds(
        &self,
        fds: usize,
        deadline: Instant,
        interrupted: &AtomicBool,
    ) -> anyhow::Result<()> {
        while Instant::now() < deadline && open_fds(self.id()).is_ok_and(|open| open > fds) {
            bail_if_interrupted(interrupted)?;
            thread::sleep(Duration::from_millis(2));
        }
        Ok(())
    }

    /// Reads lines until one is exactly `line` (then `Event::Line`), or until EOF or
    /// `deadline`: how a server's `listening on PATH` is awaited.
    pub fn wait_for_line(
        &mut self,
        line: &str,
        deadline: Instant,
        interrupted: &AtomicBool,
    ) -> anyhow::Result<Event> {
        loop {
            match self.next_line(deadline, interrupted)? {
                Event::Line if self.output.last().is_some_and(|last| last == line) => {
                    return Ok(Event::Line);
                }
                Event::Line => {}
                other => return Ok(other),
            }
        }
    }

    /// Reads the rest of the output, then the exit status, within `timeout`.
    pub fn finish(
        &mut self,
        timeout: Duration,
        interrupted: &AtomicBool,
    ) -> anyhow::Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while let Event::Line = self.next_line(deadline, interrupted)? {}
        // EOF means it closed its output, which almost always means it exited.
        while Instant::now() < deadline {
            if let Some(status) = self.process.try_wait().context("wait")? {
                return Ok(status);
            }
            bail_if_interrupted(interrupted)?;
            thread::sleep(POLL);
        }
        bail!("{} did not finish within {timeout:?}", self.name)
    }

    /// The lines still in the pipe after the process exited.
    pub fn drain(&mut self, interrupted: &AtomicBool) -> anyhow::Result<()> {
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        while let Event::Line = self.next_line(deadline, interrupted)? {}
        Ok(())
    }

    /// SIGTERM, up to [`STOP_TIMEOUT`] to exit, then SIGKILL; reaps the process either way.
    pub fn stop(&mut self) -> anyhow::Result<ExitStatus> {
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

    pub fn print(&self, out: &mut impl Write) -> anyhow::Result<()> {
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
        // Lossy: the output is shown, or scanned for libtest's lines, never parsed byte for byte.
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
