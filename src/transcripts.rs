//! `transcripts [--check]`: run every scene the book shows and write each terminal block to
//! book/transcripts/, or, with `--check`, compare and fail on drift.
//!
//! A scene runs the real programs in a private temp dir, with the lesson binaries on PATH, as a
//! reader would type them. Its blocks: `shell.txt`, the commands typed in one terminal and
//! what they printed; then one file per program left running in another terminal (a server,
//! an interactive client) — never interleaved (CONTRACT.md "Transcripts"). Every lesson also
//! gets `lesson-NN.txt` (`lesson N`) and `diff-BB-NN.txt` (`diff N`, BB the lesson it builds
//! on). A program scene is Rust code that writes its files itself (the error catalogue,
//! `errors.rs`).
//!
//! What varies between runs and machines is redacted by snapbox: `[TMP]` (the temp dir),
//! `[PID]`, our own `uid [UID]` and `gid [GID]`, and in `ls -l` lines `[USER]`, `[GROUP]` and
//! `[DATE]`. Another user's ids (`nobody`'s 65534) are the point of a line, and stay.

use std::collections::BTreeSet;
use std::env;
use std::ffi::OsString;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use regex::Regex;
use snapbox::assert::Action;
use snapbox::{Assert, Data, Redactions};
use tempfile::TempDir;

use crate::cargo::BinDir;
use crate::child::{self, Child, Event};
use crate::lessons::{self, Lesson};
use crate::{diff, run};

/// The error catalogue: one of the transcripts' programs.
mod errors;

/// Where the book includes them from.
const DIR: &str = "book/transcripts";
/// How long one command, or one wait for a line, may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);
/// `ls -l`'s first columns: type and mode, links. The owner, group and date follow.
const LS_LINE: &str = r"(?m)^[-bcdlps][-rwxsStT]{9}[.+]? +\d+ ";

pub fn transcripts(check: bool) -> anyhow::Result<()> {
    child::interruptible(|interrupted| regenerate(check, interrupted))
}

/// A scene: the files it writes, and what it needs beyond the lessons.
struct Scene {
    name: String,
    needs: &'static [Tool],
    play: Play,
}

enum Play {
    /// `cargo run -q -- lesson N`, into `NAME.txt`.
    Lesson(Lesson),
    /// `cargo run -q -- diff A B`, into `NAME.txt`.
    Diff(Lesson, Lesson),
    /// A terminal session, into `NAME/shell.txt` and `NAME/<label>.txt` per program started.
    Session(Script),
    /// Rust code that makes its files itself, into `NAME/<file>`.
    Program(Program),
}

/// What a session scene does, step by step.
type Script = fn(&mut Session) -> anyhow::Result<()>;

/// A program scene: the files it made (relative to the scene's directory) and their text.
type Program = fn(&Stage) -> anyhow::Result<Vec<(PathBuf, String)>>;

/// Where a program scene runs.
struct Stage<'a> {
    /// A private temp dir, redacted as `[TMP]` in what the program returns.
    dir: &'a Path,
    /// The lesson binaries.
    bins: &'a Path,
    interrupted: &'a AtomicBool,
}

/// The scenes the book's chapters show, beside every lesson's `lesson-NN` and `diff-AA-BB`.
const SESSIONS: &[(&str, &[Tool], Script)] = &[
    ("echo-fails", &[STRACE, NETCAT, SOCAT, PYTHON], echo_fails),
    ("address-in-use", &[], address_in_use),
    ("stale-socket", &[], stale_socket),
    ("graceful-shutdown", &[], graceful_shutdown),
    ("permissions", &[ROOT], permissions),
    ("deadlines", &[PYTHON], deadlines),
    ("abstract", &[ROOT, SOCAT, PYTHON], abstract_name),
    ("framing", &[PYTHON], framing),
    ("passing-fds", &[ROOT, PYTHON], passing_fds),
    ("socket-activation", &[ACTIVATE, PYTHON], socket_activation),
    ("async", &[PYTHON], tasks_not_threads),
    ("http", &[ROOT, CURL], http),
    ("inspecting", &[SS, LSOF], inspecting),
    ("errors/eaddrinuse", &[], eaddrinuse),
    ("errors/econnrefused", &[PYTHON], econnrefused),
    ("errors/enoent", &[], enoent),
    ("errors/eacces", &[ROOT], eacces),
    ("errors/enxio", &[PYTHON], enxio),
    ("errors/epipe", &[PYTHON], epipe),
    ("errors/econnreset", &[PYTHON], econnreset),
    ("errors/eprototype", &[NETCAT], eprototype),
    ("errors/eagain", &[PYTHON, STRACE], eagain),
    ("errors/sun-len", &[], sun_len),
];

/// The scenes that are Rust code: background/errors.md's table.
const PROGRAMS: &[(&str, &[Tool], Program)] = &[("errors", &[NOBODY_IF_ROOT], errors::catalogue)];

fn scenes() -> anyhow::Result<Vec<Scene>> {
    let mut scenes = Vec::new();
    for lesson in lessons::all()? {
        // What each lesson adds to the one it builds on: its chapter shows that diff.
        if let Some(base) = lesson.builds_on()? {
            let name = format!("diff-{base}-{}", lesson.number);
            let base = lessons::find(base)?;
            scenes.push(Scene { name, needs: &[], play: Play::Diff(base, lesson.clone()) });
        }
        let name = format!("lesson-{}", lesson.number);
        scenes.push(Scene { name, needs: &[], play: Play::Lesson(lesson) });
    }
    for &(name, needs, session) in SESSIONS {
        scenes.push(Scene { name: name.to_owned(), needs, play: Play::Session(session) });
    }
    for &(name, needs, program) in PROGRAMS {
        scenes.push(Scene { name: name.to_owned(), needs, play: Play::Program(program) });
    }
    Ok(scenes)
}

fn regenerate(check: bool, interrupted: &AtomicBool) -> anyhow::Result<()> {
    let bins = BinDir::of_runner()?;
    for lesson in lessons::all()? {
        bins.build(&lesson)?;
    }
    let dir = lessons::root().join(DIR);
    let action = if check { Action::Verify } else { Action::Overwrite };
    let assert = Assert::new().action(action).normalize_paths(false);
    // Every file a scene wrote (or, skipped, left alone): anything else in DIR is stale.
    let mut known: BTreeSet<PathBuf> = BTreeSet::new();
    let mut skipped_dirs: Vec<PathBuf> = Vec::new();
    let mut drifted = Vec::new();
    for scene in scenes()? {
        child::bail_if_interrupted(interrupted)?;
        if let Some(reason) = scene.needs.iter().find_map(Tool::missing) {
            // CI installs every tool, so a skip there would hide drift.
            if in_ci() {
                bail!("scene {}: {reason}", scene.name);
            }
            eprintln!("transcripts: skipped {}: {reason}", scene.name);
            known.insert(PathBuf::from(format!("{}.txt", scene.name)));
            skipped_dirs.push(PathBuf::from(&scene.name));
            continue;
        }
        eprintln!("transcripts: {}", scene.name);
        for (file, text) in play(&scene, &bins, interrupted)? {
            let path = dir.join(&file);
            let expected = Data::read_from(&path, None).raw();
            if let Err(err) = assert.try_eq(Some(&file.display()), Data::text(text), expected) {
                drifted.push(format!("{}\n{err}", file.display()));
            }
            known.insert(file);
        }
    }
    let on_disk = if dir.exists() { lessons::files_under(&dir)? } else { BTreeSet::new() };
    for file in on_disk {
        if known.contains(&file) || skipped_dirs.iter().any(|skipped| file.starts_with(skipped)) {
            continue;
        }
        if check {
            drifted.push(format!("{}: no scene writes it any more", file.display()));
        } else {
            let path = dir.join(&file);
            fs::remove_file(&path).with_context(|| format!("remove {}", path.display()))?;
            eprintln!("transcripts: removed {} (no scene writes it any more)", file.display());
        }
    }
    if !drifted.is_empty() {
        for report in &drifted {
            eprintln!("{report}");
        }
        bail!(
            "{} transcripts differ from what the programs print now; run `cargo run -- \
             transcripts` to regenerate them, and review the diff before committing",
            drifted.len()
        );
    }
    Ok(())
}

/// Runs `scene` and returns its files (relative to DIR) and their redacted text.
fn play(
    scene: &Scene,
    bins: &BinDir,
    interrupted: &AtomicBool,
) -> anyhow::Result<Vec<(PathBuf, String)>> {
    let file = PathBuf::from(format!("{}.txt", scene.name));
    match &scene.play {
        Play::Lesson(lesson) => {
            let mut text = format!("$ cargo run -q -- lesson {}\n", lesson.number.get());
            let mut out = Vec::new();
            let temp_dir = run::show(lesson.number, &mut out, interrupted)?;
            text.push_str(&String::from_utf8_lossy(&out));
            Ok(vec![(file, redactions(&temp_dir)?.redact(&text))])
        }
        Play::Diff(a, b) => {
            let mut out = Vec::new();
            diff::write(a.number, b.number, &mut out)?;
            Ok(vec![(file, String::from_utf8_lossy(&out).into_owned())])
        }
        Play::Session(session) => {
            let mut s = Session::new(bins, interrupted)?;
            session(&mut s).with_context(|| format!("scene {}", scene.name))?;
            s.finish(Path::new(&scene.name))
        }
        Play::Program(program) => {
            let temp_dir = temp_dir()?;
            let stage = Stage { dir: temp_dir.path(), bins: &bins.path, interrupted };
            let files = program(&stage).with_context(|| format!("scene {}", scene.name))?;
            let redactions = redactions(temp_dir.path())?;
            let dir = Path::new(&scene.name);
            Ok(files
                .into_iter()
                .map(|(file, text)| (dir.join(file), redactions.redact(&text)))
                .collect())
        }
    }
}

/// A fresh private directory for one scene.
fn temp_dir() -> anyhow::Result<TempDir> {
    tempfile::Builder::new().prefix("uds-course-").tempdir().context("create a temp dir")
}

// ---- the sessions ---------------------------------------------------------------------------

/// background/echo-fails.md: a socket file cannot be opened, only connected to.
fn echo_fails(s: &mut Session) -> anyhow::Result<()> {
    let server = s.start("server", "lesson01-server app.sock", "listening on app.sock")?;
    s.sh("ls -l app.sock")?;
    s.sh(r#"echo hi > app.sock || echo "exit status $?""#)?;
    s.sh(r#"cat app.sock || echo "exit status $?""#)?;
    s.sh("strace -e trace=openat bash -c 'echo hi > app.sock' 2>&1 | grep app.sock")?;
    s.sh("echo hi | nc -NU app.sock")?;
    s.sh("echo hi | socat - UNIX-CONNECT:app.sock")?;
    s.sh(
        "python3 -c 'import socket; s = socket.socket(socket.AF_UNIX); s.connect(\"app.sock\"); \
         s.sendall(b\"hi\\n\"); s.shutdown(socket.SHUT_WR); print(s.makefile().read(), end=\"\")'",
    )?;
    s.sh("echo hi | strace -e trace=socket,connect nc -NU app.sock")?;
    s.wait_for(server, "connection 4: closed")
}

/// lessons/01-listen-accept.md: the socket file outlives a killed server and blocks a restart.
fn address_in_use(s: &mut Session) -> anyhow::Result<()> {
    let server = s.start("server", "lesson01-server app.sock", "listening on app.sock")?;
    s.sh("lesson01-client app.sock hello")?;
    s.wait_for(server, "connection 1: closed")?;
    s.signal(server, "KILL")?;
    s.wait_exit(server)?;
    s.sh("ls -l app.sock")?;
    s.sh(r#"lesson01-server app.sock || echo "exit status $?""#)?;
    s.sh(r#"lesson01-client app.sock hello || echo "exit status $?""#)?;
    s.sh("rm app.sock")?;
    let again = s.start("server-2", "lesson01-server app.sock", "listening on app.sock")?;
    s.sh("lesson01-client app.sock 'hello again'")?;
    s.wait_for(again, "connection 1: closed")
}

/// lessons/02-stale-socket.md: a stale file is removed, a live server and a regular file are not.
fn stale_socket(s: &mut Session) -> anyhow::Result<()> {
    let first = s.start("server", "lesson02-server app.sock", "listening on app.sock")?;
    s.signal(first, "KILL")?;
    s.wait_exit(first)?;
    s.sh("ls -l app.sock")?;
    s.sh(r#"lesson02-client app.sock hello || echo "exit status $?""#)?;
    let second = s.start("server-2", "lesson02-server app.sock", "listening on app.sock")?;
    s.sh("lesson02-client app.sock hello")?;
    s.wait_for(second, "connection 1: closed")?;
    s.sh(r#"lesson02-server app.sock || echo "exit status $?""#)?;
    s.wait_for(second, "connection 2: closed")?;
    s.sh("echo 'my notes' > notes.txt")?;
    s.sh(r#"lesson02-server notes.txt || echo "exit status $?""#)?;
    s.sh("cat notes.txt")?;
    s.sh(r#"lesson02-server no-such-dir/app.sock || echo "exit status $?""#)
}

/// lessons/03-graceful-shutdown.md: SIGTERM with a client still connected.
fn graceful_shutdown(s: &mut Session) -> anyhow::Result<()> {
    let server = s.start("server", "lesson03-server app.sock", "listening on app.sock")?;
    let client = s.start_typing("client", "lesson03-client app.sock")?;
    s.wait_for(server, "connection 1: accepted")?;
    s.type_line(client, "hello", "HELLO")?;
    s.signal(server, "TERM")?;
    s.wait_for(server, "waiting up to")?;
    s.sh(r#"lesson03-client app.sock 'too late' || echo "exit status $?""#)?;
    s.type_line(client, "still here", "STILL HERE")?;
    s.end_input(client);
    s.wait_exit(client)?;
    s.wait_exit(server)?;
    s.sh(r#"ls app.sock || echo "exit status $?""#)
}

/// lessons/04-permissions.md: the file's mode keeps others out; with the mode opened, the
/// credential check does; a group can be let in.
fn permissions(s: &mut Session) -> anyhow::Result<()> {
    s.share("lesson04-client")?;
    let private = s.start("server", "lesson04-server app.sock", "listening on app.sock")?;
    s.sh("ls -l app.sock")?;
    s.sh("lesson04-client app.sock hello")?;
    s.sh(&format!(r#"{NOBODY} lesson04-client app.sock hello || echo "exit status $?""#))?;
    let open = s.start("server-2", "lesson04-server open.sock --mode 0666", "listening on")?;
    s.sh("ls -l open.sock")?;
    s.sh(&format!(r#"{NOBODY} lesson04-client open.sock hello || echo "exit status $?""#))?;
    s.wait_for(open, "refused uid")?;
    let group = s.start("server-3", "lesson04-server group.sock --group 65534", "listening on")?;
    s.sh("ls -l group.sock")?;
    s.sh(&format!("{NOBODY} lesson04-client group.sock hello"))?;
    s.wait_for(group, "connection 1: closed")?;
    s.wait_for(private, "connection 1: closed")
}

/// lessons/05-deadlines.md: a line too long, a client gone quiet, a server that never answers.
fn deadlines(s: &mut Session) -> anyhow::Result<()> {
    let line = "lesson05-server app.sock --idle-timeout-ms 1000 --max-line 16";
    let server = s.start("server", line, "listening on app.sock")?;
    s.sh("lesson05-client app.sock 'short line'")?;
    s.sh(
        r#"lesson05-client app.sock 'a line longer than sixteen bytes' || echo "exit status $?""#,
    )?;
    let quiet = s.start_typing("client", "lesson05-client app.sock")?;
    s.wait_for(server, "connection 3: accepted")?;
    s.type_line(quiet, "hello", "HELLO")?;
    // Nothing more is typed: the server's idle timeout ends it, and the client exits by itself.
    s.wait_exit(quiet)?;
    s.wait_for(server, "connection 3: no complete line")?;
    // A server that accepts and then never answers.
    s.start_quiet(
        "hung",
        r#"python3 -c 'import socket, time; s = socket.socket(socket.AF_UNIX); s.bind("hung.sock"); s.listen(); c = s.accept(); time.sleep(60)'"#,
        "hung.sock",
    )?;
    s.sh(r#"lesson05-client --timeout-ms 500 hung.sock hello || echo "exit status $?""#)
}

/// lessons/08-framing.md: frames from Python's `struct`, any bytes through the client, a 2 GiB
/// header refused, and EOF inside a frame logged.
fn framing(s: &mut Session) -> anyhow::Result<()> {
    let server = s.start("server", "lesson08-server app.sock", "listening on app.sock")?;
    s.sh("lesson08-client app.sock hello 'two\nlines'")?;
    s.sh(r#"printf 'tab\there\0nul\n' | lesson08-client app.sock | od -An -c"#)?;
    let connect = "import socket, struct; s = socket.socket(socket.AF_UNIX); s.connect('app.sock')";
    s.sh(&format!(
        r#"python3 -c "{connect}; m = b'hi there'; s.sendall(struct.pack('>I', len(m)) + m); n, = struct.unpack('>I', s.recv(4)); print(s.recv(n))""#
    ))?;
    // Python exits without waiting for our EOF: let the server log this close before the next.
    s.wait_for(server, "connection 3: closed")?;
    s.sh(&format!(
        r#"python3 -c "{connect}; s.sendall(struct.pack('>I', 2**31)); n, = struct.unpack('>I', s.recv(4)); print(s.recv(n))""#
    ))?;
    s.wait_for(server, "connection 4: frame of 2147483648 bytes")?;
    s.sh(&format!(
        r#"python3 -c "{connect}; s.sendall(b'\0\0\0\x05ab'); s.shutdown(socket.SHUT_WR); print(s.recv(10))""#
    ))?;
    s.wait_for(server, "connection 5: EOF inside a frame")?;
    Ok(())
}

/// lessons/13-async.md: 500 idle connections held by lesson 07 (its worker threads and its
/// queue) and by lesson 13 (a task each): the threads each server runs meanwhile.
fn tasks_not_threads(s: &mut Session) -> anyhow::Result<()> {
    let pool = s.start("pool", "lesson07-server pool.sock 2>/dev/null", "listening on")?;
    let line = "lesson13-server tasks.sock --workers 2 2>/dev/null";
    let tasks = s.start("tasks", line, "listening on")?;
    let hold = |socket: &str| {
        format!(
            r#"python3 -c 'import socket, time; held = [socket.socket(socket.AF_UNIX) for _ in range(500)]; [c.connect("{socket}") for c in held]; print("holding 500", flush=True); time.sleep(60)'"#
        )
    };
    let holders = [s.start("holder", &hold("pool.sock"), "holding 500")?];
    let holders = [holders[0], s.start("holder-2", &hold("tasks.sock"), "holding 500")?];
    s.sh(&format!("grep Threads /proc/{}/status  # lesson07-server", s.pid(pool)))?;
    s.sh(&format!("grep Threads /proc/{}/status  # lesson13-server", s.pid(tasks)))?;
    for holder in holders {
        s.signal(holder, "TERM")?;
        s.wait_exit(holder)?;
    }
    Ok(())
}

/// lessons/06-abstract.md: a name and no file; the credential check as the lock; first come,
/// first served; nothing left after SIGKILL.
fn abstract_name(s: &mut Session) -> anyhow::Result<()> {
    s.share("lesson06-client")?;
    let server = s.start("server", "lesson06-server @lesson06", "listening on @lesson06")?;
    s.sh("ls -l")?;
    s.sh("lesson06-client @lesson06 hello")?;
    s.sh("echo hi | socat - ABSTRACT-CONNECT:lesson06")?;
    s.sh(
        "python3 -c 'import socket; s = socket.socket(socket.AF_UNIX); s.connect(\"\\0lesson06\"); \
         s.sendall(b\"hi\\n\"); s.shutdown(socket.SHUT_WR); print(s.makefile().read(), end=\"\")'",
    )?;
    s.sh(&format!(r#"{NOBODY} lesson06-client @lesson06 hello || echo "exit status $?""#))?;
    s.wait_for(server, "refused uid")?;
    s.sh(r#"lesson06-server @lesson06 || echo "exit status $?""#)?;
    s.signal(server, "KILL")?;
    s.wait_exit(server)?;
    s.sh(r#"lesson06-client @lesson06 hello || echo "exit status $?""#)?;
    let again = s.start("server-2", "lesson06-server @lesson06", "listening on @lesson06")?;
    s.sh("lesson06-client @lesson06 'hello again'")?;
    s.wait_for(again, "connection 1: closed")
}

/// lessons/11-passing-fds.md: `nobody` reads root's file through the descriptor where `cat`
/// cannot open it; names and links refused; a uid not allowed; Python's `recv_fds`; out of
/// descriptors.
fn passing_fds(s: &mut Session) -> anyhow::Result<()> {
    s.share("lesson11-client")?;
    s.sh("mkdir -m 755 files")?;
    s.sh("echo 'for root only' > files/secret.txt && chmod 600 files/secret.txt")?;
    s.sh("ls -l files/secret.txt")?;
    let allowed = "lesson11-server app.sock --dir files --mode 0666 --allow-uid 65534";
    let server = s.start("server", allowed, "listening on app.sock")?;
    s.sh("lesson11-client app.sock secret.txt")?;
    s.sh_failing(&format!("{NOBODY} cat files/secret.txt"))?;
    s.sh(&format!("{NOBODY} lesson11-client app.sock secret.txt"))?;
    s.sh_failing("lesson11-client app.sock ../etc/passwd")?;
    s.sh("ln -s /etc/passwd files/passwd")?;
    s.sh_failing("lesson11-client app.sock passwd")?;
    s.sh(
        r#"python3 -c "import os, socket; s = socket.socket(socket.AF_UNIX); s.connect('app.sock'); s.sendall(b'secret.txt\n'); msg, fds, flags, _ = socket.recv_fds(s, 4096, 1); print(msg, len(fds)); print(os.read(fds[0], 100))""#,
    )?;
    s.sh_failing("(ulimit -n 4; lesson11-client app.sock secret.txt)")?;
    s.wait_for(server, "connection 6: sent secret.txt")?;
    let strict = "lesson11-server strict.sock --dir files --mode 0666";
    let other = s.start("server-2", strict, "listening on strict.sock")?;
    s.sh_failing(&format!("{NOBODY} lesson11-client strict.sock secret.txt"))?;
    s.wait_for(other, "refused uid 65534")
}

/// lessons/12-socket-activation.md: the manager binds and waits; the first connection starts
/// the server on fd 3; SIGTERM leaves the file; a fd 3 of the wrong kind is refused by name.
fn socket_activation(s: &mut Session) -> anyhow::Result<()> {
    let line = "systemd-socket-activate -l $PWD/app.sock lesson12-server";
    let manager = s.start("manager", line, "app.sock as 3")?;
    s.sh("ls -l app.sock")?;
    s.sh("lesson12-client app.sock hello")?;
    s.wait_for(manager, "connection 1: closed")?;
    s.signal(manager, "TERM")?;
    s.wait_exit(manager)?;
    s.sh("ls -l app.sock")?;
    // The tool's socket died with the server it became: systemd's would still be listening.
    s.sh_failing("lesson12-client app.sock hello")?;
    s.sh("echo 'my notes' > notes.txt")?;
    s.sh_failing("bash -c 'LISTEN_PID=$$ LISTEN_FDS=1 exec lesson12-server' 3<notes.txt")?;
    let line = "systemd-socket-activate --datagram -l $PWD/dgram.sock lesson12-server";
    let datagram = s.start("manager-2", line, "dgram.sock as 3")?;
    s.sh("python3 -c 'import socket; \
         socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).sendto(b\"hi\", \"dgram.sock\")'")?;
    s.wait_exit(datagram).map(drop)
}

/// background/inspecting.md: a socket file and an abstract name, as ls, stat, ss, lsof and
/// /proc/net/unix see them; a connection, as ss sees it.
fn inspecting(s: &mut Session) -> anyhow::Result<()> {
    let file = s.start("server", "lesson06-server app.sock", "listening on app.sock")?;
    let name = s.start("server-2", "lesson06-server @lesson06", "listening on @lesson06")?;
    s.sh("ls -l app.sock")?;
    s.sh("stat -c '%n: %F, mode %a' app.sock")?;
    s.sh(r#"test -S app.sock && echo "app.sock is a socket""#)?;
    // `tr -s ' '` squeezes the padding: the columns' widths change with the numbers in them.
    s.sh("ss -xlp src app.sock | tr -s ' '")?;
    s.sh("ss -xlp src @lesson06 | tr -s ' '")?;
    s.sh("head -1 /proc/net/unix; grep -E ' (app.sock|@lesson06)$' /proc/net/unix")?;
    let pids = format!("{},{}", s.pid(file), s.pid(name));
    s.sh(&format!("lsof -U -a -p {pids} | tr -s ' '"))?;
    let client = s.start_typing("client", "lesson06-client app.sock")?;
    s.type_line(client, "hello", "HELLO")?;
    s.sh("ss -xp src app.sock | tr -s ' '")?;
    s.end_input(client);
    s.wait_exit(client)?;
    s.wait_for(file, "connection 1: closed")
}

/// lessons/14-http.md: curl over the socket; the URL's host is only a header; the limits as
/// status codes; a refused uid's 403; the lesson's client on one kept-alive connection.
fn http(s: &mut Session) -> anyhow::Result<()> {
    // The scene's directory opened to `nobody`, for the 403 (curl is the system's).
    s.share("lesson14-client")?;
    let line = "lesson14-server app.sock --mode 0666 --max-body 16 --max-line 64";
    let server = s.start("server", line, "listening on app.sock")?;
    s.sh("curl -sS --unix-socket app.sock http://localhost/upper -d 'hello over http'; echo")?;
    s.sh("curl -sS --unix-socket app.sock http://localhost/health; echo")?;
    // What curl sends: the host of the URL goes into the Host header, and nowhere else.
    let sent = "grep -E '^> (GET|Host)' | tr -d '\\r'";
    s.sh(&format!("curl -sv --unix-socket app.sock http://any-name/health 2>&1 | {sent}"))?;
    let status = "curl -sS -w '%{http_code}\\n' --unix-socket app.sock";
    s.sh(&format!("{status} http://localhost/nothing"))?;
    let allow = "curl -sS -w '%{http_code} Allow: %header{allow}\\n' --unix-socket app.sock";
    s.sh(&format!("{allow} http://localhost/upper"))?;
    s.sh(&format!("{status} http://localhost/upper -d 'seventeen bytes!!'"))?;
    s.sh(&format!(
        "{status} http://localhost/upper -H 'Transfer-Encoding: chunked' -d 'seventeen bytes!!'"
    ))?;
    s.sh(&format!(r#"{status} http://localhost/health -H "X-Pad: $(printf '%080d' 0)""#))?;
    s.sh(&format!("{NOBODY} {status} http://localhost/upper -d hi"))?;
    s.sh("lesson14-client app.sock hello 'one connection'")?;
    s.wait_for(server, "connection 10: closed")
}

// ---- background/errors.md: one scene per error, typed as a reader would meet it ------------

/// Leaves a stale socket file `app.sock`: a program that bound it and exited.
const STALE: &str = r#"python3 -c 'import socket; socket.socket(socket.AF_UNIX).bind("app.sock")'"#;

fn eaddrinuse(s: &mut Session) -> anyhow::Result<()> {
    s.start("server", "lesson01-server app.sock", "listening on app.sock")?;
    s.sh_failing("lesson01-server app.sock")
}

fn econnrefused(s: &mut Session) -> anyhow::Result<()> {
    s.sh(STALE)?;
    s.sh("ls -l app.sock")?;
    s.sh_failing("lesson01-client app.sock hello")
}

fn enoent(s: &mut Session) -> anyhow::Result<()> {
    s.sh_failing("lesson01-client missing.sock hello")?;
    s.sh_failing("lesson01-server no-such-dir/app.sock")
}

fn eacces(s: &mut Session) -> anyhow::Result<()> {
    s.share("lesson01-client")?;
    s.start("server", "lesson01-server app.sock", "listening on app.sock")?;
    s.sh("ls -l app.sock")?;
    s.sh_failing(&format!("{NOBODY} lesson01-client app.sock hello"))
}

fn enxio(s: &mut Session) -> anyhow::Result<()> {
    s.sh(STALE)?;
    s.sh_failing("echo hi > app.sock")
}

/// A Rust program and a C one, each writing to a pipe whose reader is gone (the sleep lets
/// `true` exit first).
/// A server that accepts and closes at once, without reading: the client's write, half a
/// second later, finds the connection gone (EPIPE on a socket). Then the same on a pipe, where
/// a C program dies of SIGPIPE.
fn epipe(s: &mut Session) -> anyhow::Result<()> {
    let closer = r#"python3 -c 'import socket; s = socket.socket(socket.AF_UNIX); s.bind("app.sock"); s.listen(); print("listening on app.sock", flush=True); c, _ = s.accept(); c.close(); s.accept()'"#;
    s.start("server", closer, "listening on app.sock")?;
    let late = r#"python3 -c 'import socket, time; s = socket.socket(socket.AF_UNIX); s.connect("app.sock"); time.sleep(0.5); s.send(b"hello\n")'"#;
    s.sh_failing(late)?;
    s.sh(r#"{ sleep 0.2; yes; } | true; echo "exit status ${PIPESTATUS[0]}""#)
}

/// A server that accepts, gives the client's line time to arrive, and closes without reading it.
fn econnreset(s: &mut Session) -> anyhow::Result<()> {
    let rude = r#"python3 -c 'import socket, time; s = socket.socket(socket.AF_UNIX); s.bind("app.sock"); s.listen(); print("listening on app.sock", flush=True); c, _ = s.accept(); time.sleep(0.5); c.close()'"#;
    s.start("server", rude, "listening on app.sock")?;
    s.sh_failing("lesson01-client app.sock hello")
}

fn eprototype(s: &mut Session) -> anyhow::Result<()> {
    s.start("server", "lesson01-server app.sock", "listening on app.sock")?;
    s.sh_failing("echo hi | nc -uU app.sock")
}

/// A server whose accept queue is full: backlog 0, one connection queued and never accepted.
fn eagain(s: &mut Session) -> anyhow::Result<()> {
    let full = r#"python3 -c 'import socket, time; s = socket.socket(socket.AF_UNIX); s.bind("app.sock"); s.listen(0); c = socket.socket(socket.AF_UNIX); c.connect("app.sock"); print("listening on app.sock, queue full", flush=True); time.sleep(60)'"#;
    s.start("server", full, "queue full")?;
    s.sh_failing("strace -e trace=connect lesson05-client --timeout-ms 500 app.sock hello")
}

fn sun_len(s: &mut Session) -> anyhow::Result<()> {
    s.sh_failing(r#"lesson01-server "$(printf 'x%.0s' {1..108})""#)
}

/// Runs the rest of the line as user `nobody`, group `nogroup` (CONTRACT.md "Tests").
const NOBODY: &str = "setpriv --reuid=nobody --regid=nogroup --clear-groups";

// ---- a terminal session ---------------------------------------------------------------------

/// One scene's terminals: the shell's, and one per program started in the background.
struct Session<'a> {
    dir: TempDir,
    /// The lesson binaries first, so `lesson01-server` runs by name; before them, the copies
    /// in `shared` that other users can run too.
    path_var: OsString,
    shared: PathBuf,
    bins: PathBuf,
    interrupted: &'a AtomicBool,
    shell: Vec<String>,
    jobs: Vec<Job>,
    redactions: Redactions,
}

/// A program in its own terminal.
struct Job {
    label: &'static str,
    /// `$ lesson01-server app.sock`
    shown: String,
    child: Child,
    stdin: Option<std::process::ChildStdin>,
    /// How many of `child.output`'s lines `wait_for` has looked at.
    seen: usize,
}

#[derive(Clone, Copy)]
struct JobId(usize);

impl<'a> Session<'a> {
    fn new(bins: &BinDir, interrupted: &'a AtomicBool) -> anyhow::Result<Self> {
        let dir = temp_dir()?;
        let shared = dir.path().join(".bin");
        let mut paths = vec![shared.clone(), bins.path.clone()];
        paths.extend(env::split_paths(&env::var_os("PATH").unwrap_or_default()));
        let path_var = env::join_paths(paths).context("join PATH")?;
        let redactions = redactions(dir.path())?;
        Ok(Session {
            shared,
            bins: bins.path.clone(),
            dir,
            path_var,
            interrupted,
            shell: Vec::new(),
            jobs: Vec::new(),
            redactions,
        })
    }

    /// Lets user `nobody` into the scene's directory and run lesson binary `program` (a copy:
    /// the target dir may be private to us), found first on PATH.
    fn share(&mut self, program: &str) -> anyhow::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let open = |path: &Path| {
            fs::set_permissions(path, fs::Permissions::from_mode(0o755))
                .with_context(|| format!("chmod 755 {}", path.display()))
        };
        fs::create_dir_all(&self.shared)
            .with_context(|| format!("create {}", self.shared.display()))?;
        let source = self.bins.join(program);
        fs::copy(&source, self.shared.join(program))
            .with_context(|| format!("copy {}", source.display()))?;
        open(self.dir.path())?;
        open(&self.shared)
    }

    /// `program`, run in the scene's directory with the lessons on PATH and messages in English.
    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(program);
        command.current_dir(self.dir.path()).env("PATH", &self.path_var).env("LC_ALL", "C");
        command
    }

    /// Types `line` into the shell: runs it with bash and records it and its output. A command
    /// expected to fail says so (`|| echo "exit status $?"`); any other failure is a bug.
    fn sh(&mut self, line: &str) -> anyhow::Result<()> {
        let mut command = self.command("bash");
        command.args(["-c", line]);
        let mut child = Child::start(command)?;
        let status = child.finish(STEP_TIMEOUT, self.interrupted)?;
        if !status.success() {
            bail!("`{line}` failed ({status}):\n{}", child.output.join("\n"));
        }
        self.shell.push(format!("$ {line}"));
        self.shell.append(&mut child.output);
        Ok(())
    }

    /// Types `line`, a command expected to fail, and shows its exit status.
    fn sh_failing(&mut self, line: &str) -> anyhow::Result<()> {
        self.sh(&format!(r#"{line} || echo "exit status $?""#))
    }

    /// Starts `line` (words split on spaces) in a terminal of its own and waits until it prints
    /// `ready`.
    fn start(&mut self, label: &'static str, line: &str, ready: &str) -> anyhow::Result<JobId> {
        let id = self.spawn(label, line, false)?;
        self.wait_for(id, ready)?;
        Ok(id)
    }

    /// Starts `line` (a program that prints nothing when ready) in a terminal of its own and
    /// waits until `file` exists in the scene's directory.
    fn start_quiet(
        &mut self,
        label: &'static str,
        line: &str,
        file: &str,
    ) -> anyhow::Result<JobId> {
        let id = self.spawn(label, line, false)?;
        let path = self.dir.path().join(file);
        let deadline = Instant::now() + STEP_TIMEOUT;
        while !path.exists() {
            if Instant::now() > deadline {
                bail!("`{line}` did not create {file} within {STEP_TIMEOUT:?}");
            }
            child::bail_if_interrupted(self.interrupted)?;
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(id)
    }

    /// Starts `line` in a terminal of its own, with its stdin ours to type into.
    fn start_typing(&mut self, label: &'static str, line: &str) -> anyhow::Result<JobId> {
        self.spawn(label, line, true)
    }

    fn spawn(&mut self, label: &'static str, line: &str, typing: bool) -> anyhow::Result<JobId> {
        // `exec`: the shell becomes the program, so the pid we signal is the program's.
        let mut command = self.command("bash");
        command.args(["-c", &format!("exec {line}")]);
        let (child, stdin) = if typing {
            let (child, stdin) = Child::start_typing(command)?;
            (child, Some(stdin))
        } else {
            (Child::start(command)?, None)
        };
        // Whole numbers only: pid 98 must not turn `os error 98` into `os error [PID]`.
        redact(&mut self.redactions, "[PID]", &format!(r"\b(?<redacted>{})\b", child.id()))?;
        self.jobs.push(Job { label, shown: format!("$ {line}"), child, stdin, seen: 0 });
        Ok(JobId(self.jobs.len() - 1))
    }

    /// Waits until `job` prints a line containing `text`.
    fn wait_for(&mut self, job: JobId, text: &str) -> anyhow::Result<()> {
        let job = &mut self.jobs[job.0];
        let deadline = Instant::now() + STEP_TIMEOUT;
        loop {
            if job.child.output[job.seen..].iter().any(|line| line.contains(text)) {
                job.seen = job.child.output.len();
                return Ok(());
            }
            job.seen = job.child.output.len();
            match job.child.next_line(deadline, self.interrupted)? {
                Event::Line => {}
                Event::Eof | Event::TimedOut => bail!(
                    "`{}` did not print `{text}`; it printed:\n{}",
                    job.shown,
                    job.child.output.join("\n")
                ),
            }
        }
    }

    /// Types `line` and Enter into `job`, shown as the terminal would echo it, and waits for
    /// the line `reply`.
    fn type_line(&mut self, id: JobId, line: &str, reply: &str) -> anyhow::Result<()> {
        let job = &mut self.jobs[id.0];
        let stdin = job.stdin.as_mut().context("type into a program whose input has ended")?;
        writeln!(stdin, "{line}").and_then(|()| stdin.flush()).context("type a line")?;
        job.child.output.push(line.to_owned());
        job.seen = job.child.output.len();
        self.wait_for(id, reply)
    }

    /// Ctrl-D: the end of `job`'s input.
    fn end_input(&mut self, job: JobId) {
        self.jobs[job.0].stdin = None;
    }

    /// Sends `job` a signal from the shell: `$ kill -TERM [PID]`.
    fn signal(&mut self, job: JobId, signal: &str) -> anyhow::Result<()> {
        self.sh(&format!("kill -{signal} {}", self.pid(job)))
    }

    /// `job`'s pid, for a command line (the transcript shows `[PID]`).
    fn pid(&self, job: JobId) -> u32 {
        self.jobs[job.0].child.id()
    }

    /// Waits until `job` has exited, with the rest of its output.
    fn wait_exit(&mut self, job: JobId) -> anyhow::Result<ExitStatus> {
        let job = &mut self.jobs[job.0];
        job.child.finish(STEP_TIMEOUT, self.interrupted)
    }

    /// Stops what still runs and returns the blocks: `DIR/shell.txt`, then one per program.
    fn finish(mut self, dir: &Path) -> anyhow::Result<Vec<(PathBuf, String)>> {
        let mut blocks = vec![(dir.join("shell.txt"), lines(&self.shell))];
        for job in &mut self.jobs {
            job.stdin = None;
            job.child.stop()?;
            job.child.drain(self.interrupted)?;
            let mut block = vec![job.shown.clone()];
            block.extend(job.child.output.iter().cloned());
            blocks.push((dir.join(format!("{}.txt", job.label)), lines(&block)));
        }
        Ok(blocks.into_iter().map(|(file, text)| (file, self.redactions.redact(&text))).collect())
    }
}

/// What every transcript redacts: `temp_dir`, pids in servers' logs, our own uid and gid, and
/// the owner, group and date of `ls -l` lines.
fn redactions(temp_dir: &Path) -> anyhow::Result<Redactions> {
    let mut redactions = Redactions::new();
    redactions.insert("[TMP]", temp_dir.to_owned()).context("redact the temp dir")?;
    redact(&mut redactions, "[PID]", r"\bpid (?<redacted>\d+)\b")?;
    let (uid, gid) = (rustix::process::getuid().as_raw(), rustix::process::getgid().as_raw());
    redact(&mut redactions, "[UID]", &format!(r"\buid (?<redacted>{uid})\b"))?;
    redact(&mut redactions, "[GID]", &format!(r"\bgid (?<redacted>{gid})\b"))?;
    redact(&mut redactions, "[USER]", &format!(r"{LS_LINE}(?<redacted>\S+) "))?;
    redact(&mut redactions, "[GROUP]", &format!(r"{LS_LINE}\S+ +(?<redacted>\S+) "))?;
    let date = r"\S+ +\S+ +\d+ (?<redacted>[A-Z][a-z]{2} [ \d]\d +(\d\d:\d\d|\d{4})) ";
    redact(&mut redactions, "[DATE]", &format!("{LS_LINE}{date}"))?;
    // The kernel's socket addresses and inode numbers: /proc/net/unix (`Num` and `Inode`),
    // lsof (`DEVICE`, `NODE`, and its `USER`) and ss (the local and the peer's inode).
    redact(&mut redactions, "[ADDR]", r"(?m)^(?<redacted>[0-9a-f]{16}): [0-9A-F]{8} ")?;
    let proc_line = r"(?m)^\S+: [0-9A-F]{8} [0-9A-F]{8} [0-9A-F]{8} [0-9A-F]{4} [0-9A-F]{2} ";
    redact(&mut redactions, "[INODE]", &format!(r"{proc_line}(?<redacted>\d+)"))?;
    redact(&mut redactions, "[ADDR]", r"\b(?<redacted>0x[0-9a-f]{16})\b")?;
    redact(&mut redactions, "[INODE]", r"\b0t0 (?<redacted>\d+) ")?;
    redact(&mut redactions, "[USER]", r"(?m)^\S+ \S+ (?<redacted>\S+) \d+u unix ")?;
    let ss_line = r"(?m)^u_\w+ \w+ \d+ \d+ \S+ ";
    redact(&mut redactions, "[INODE]", &format!(r"{ss_line}(?<redacted>\d+) "))?;
    redact(&mut redactions, "[INODE]", &format!(r"{ss_line}\d+ \S+ (?<redacted>[1-9]\d*) "))?;
    Ok(redactions)
}

/// Replaces the part of each match of `pattern` named `redacted` with `placeholder`.
fn redact(
    redactions: &mut Redactions,
    placeholder: &'static str,
    pattern: &str,
) -> anyhow::Result<()> {
    let regex = Regex::new(pattern).with_context(|| format!("compile `{pattern}`"))?;
    redactions.insert(placeholder, regex).with_context(|| format!("redact {placeholder}"))
}

fn lines(lines: &[String]) -> String {
    lines.iter().map(|line| format!("{line}\n")).collect()
}

// ---- tools ----------------------------------------------------------------------------------

/// An outside program (or a privilege) a scene needs, and how to tell it works here.
struct Tool {
    probe: &'static str,
    install: &'static str,
}

const ROOT: Tool = Tool {
    probe: r#"[ "$(id -u)" = 0 ] && setpriv --reuid=nobody --regid=nogroup --clear-groups true"#,
    install: "run as root, which may switch to the user nobody; setpriv is in util-linux",
};
const NOBODY_IF_ROOT: Tool = Tool {
    // Root ignores permission bits: as root, EACCES needs another user.
    probe: r#"[ "$(id -u)" != 0 ] || setpriv --reuid=nobody --regid=nogroup --clear-groups true"#,
    install: "setpriv is in util-linux",
};
const STRACE: Tool = Tool {
    // Installed is not enough: a container may forbid ptrace.
    probe: "strace -o /dev/null true",
    install: "sudo apt-get install strace, and allow ptrace",
};
const NETCAT: Tool = Tool {
    // netcat-traditional has no -N (half-close at EOF): the book shows OpenBSD's.
    probe: "nc -h 2>&1 | grep -q 'OpenBSD netcat'",
    install: "sudo apt-get install netcat-openbsd",
};
const SS: Tool = Tool { probe: "ss -V", install: "sudo apt-get install iproute2" };
const LSOF: Tool = Tool { probe: "lsof -v", install: "sudo apt-get install lsof" };
const SOCAT: Tool = Tool { probe: "socat -V", install: "sudo apt-get install socat" };
const PYTHON: Tool = Tool { probe: "python3 -c ''", install: "sudo apt-get install python3" };
const ACTIVATE: Tool = Tool {
    // Debian's systemd package has it; systemd itself need not be running.
    probe: "systemd-socket-activate --version",
    install: "sudo apt-get install systemd",
};
const CURL: Tool = Tool { probe: "curl --version", install: "sudo apt-get install curl" };

impl Tool {
    /// Why the tool cannot run here, or `None` if it can.
    fn missing(&self) -> Option<String> {
        let status = Command::new("bash")
            .args(["-c", self.probe])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        match status {
            Ok(status) if status.success() => None,
            _ => Some(format!("`{}` failed (to fix: {})", self.probe, self.install)),
        }
    }
}

/// CI sets CI=true: there, a tool that is missing is a failure, not a skip. Read as the
/// tests' helpers read it (tests/support): anything but empty, `0` or `false`.
fn in_ci() -> bool {
    env::var("CI").is_ok_and(|ci| !matches!(ci.as_str(), "" | "0" | "false"))
}
