//! The table that opens background/errors.md, "Errors you will meet": each error a Unix socket
//! program commonly meets, made to happen for real with std (and rustix where std cannot), with
//! what Rust prints for it (`err.to_string()`) and its `io::ErrorKind`, beside the errno, the
//! command that reproduces it with the lesson binaries, the cause and the fix.
//!
//! `transcripts` writes the table to book/transcripts/errors/catalogue.md; `--check` fails when
//! a text or a kind changes (a new Rust, another libc), so the book's table cannot drift.

use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixDatagram, UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};

use super::{NOBODY, STEP_TIMEOUT, Stage};
use crate::child::Child;

/// One row of the table.
struct Entry {
    /// The errno's name, or what stands in for one.
    errno: &'static str,
    /// The id of the error's section in background/errors.md (`{#eaddrinuse}`).
    anchor: &'static str,
    /// Why it happens (Markdown, like the next two; links are relative to book/src/background/).
    cause: &'static str,
    /// What the reader types, with the lesson binaries, to meet it.
    reproduce: &'static str,
    fix: &'static str,
    /// Makes the error happen in the stage's directory; each entry uses its own file names.
    provoke: fn(&Stage) -> anyhow::Result<io::Error>,
}

const ENTRIES: &[Entry] = &[
    Entry {
        errno: "`EADDRINUSE`",
        anchor: "eaddrinuse",
        cause: "`bind` found a file at the path: a live server's, a stale one, any file",
        reproduce: "`lesson01-server app.sock`, twice",
        fix: "remove a stale file first ([lesson 02](../lessons/02-stale-socket.md)), your own \
              at exit ([lesson 03](../lessons/03-graceful-shutdown.md))",
        provoke: addr_in_use,
    },
    Entry {
        errno: "`ECONNREFUSED`",
        anchor: "econnrefused",
        cause: "no socket listens on the socket file: it is *stale* (or bound, not listening \
                yet)",
        reproduce: "`lesson01-client app.sock hello` after the server died",
        fix: "start the server, which can remove a stale file itself \
              ([lesson 02](../lessons/02-stale-socket.md))",
        provoke: connection_refused,
    },
    Entry {
        errno: "`ENOENT`",
        anchor: "enoent",
        cause: "nothing at the path (for `bind`: no such directory)",
        reproduce: "`lesson01-client missing.sock hello`",
        fix: "connect to the path in `listening on PATH`, once it is printed",
        provoke: not_found,
    },
    Entry {
        errno: "`EACCES`",
        anchor: "eacces",
        cause: "`connect` needs write permission on the socket file",
        reproduce: "`lesson01-client app.sock hello` as another user",
        fix: "run as its owner, or let a group in ([lesson 04](../lessons/04-permissions.md))",
        provoke: permission_denied,
    },
    Entry {
        errno: "`ENXIO`",
        anchor: "enxio",
        cause: "`open(2)` on a socket file",
        reproduce: "`echo hi > app.sock`",
        fix: "`connect` to it instead ([why](echo-fails.md))",
        provoke: no_device,
    },
    Entry {
        errno: "`EPIPE`",
        anchor: "epipe",
        cause: "a write after the peer closed, whether or not it left data unread; Rust gets \
                this error, not a deadly SIGPIPE",
        reproduce: "`lesson01-client app.sock` writing after the server closed the connection",
        fix: "end that connection, keep serving the others",
        provoke: broken_pipe,
    },
    Entry {
        errno: "`ECONNRESET`",
        anchor: "econnreset",
        cause: "the peer closed with data it never read",
        reproduce: "`lesson01-client` to a server that closes without reading",
        fix: "end that connection; to refuse a client, half-close and drain first \
              ([lesson 05](../lessons/05-deadlines.md))",
        provoke: connection_reset,
    },
    Entry {
        errno: "`EPROTOTYPE`",
        anchor: "eprototype",
        cause: "a datagram socket against a stream socket",
        reproduce: "`nc -uU app.sock` to `lesson01-server`",
        fix: "use the server's type: `UnixStream` or `UnixDatagram`",
        provoke: wrong_type,
    },
    Entry {
        errno: "`EAGAIN`",
        anchor: "eagain",
        cause: "the accept queue is full, or a timeout expired",
        reproduce: "`lesson05-client` to a server that never accepts",
        fix: "bound the wait ([lesson 05](../lessons/05-deadlines.md)); find why the server does \
              not accept",
        provoke: would_block,
    },
    Entry {
        errno: "none (std)",
        anchor: "sun-len",
        cause: "107 bytes is the longest path",
        reproduce: "`lesson01-server` with a path of 108 bytes",
        fix: "a shorter path: relative, or under `$XDG_RUNTIME_DIR`",
        provoke: path_too_long,
    },
];

/// The program scene "errors": provokes every entry in `stage.dir` and returns the table as
/// `catalogue.md`.
pub(super) fn catalogue(stage: &Stage) -> anyhow::Result<Vec<(PathBuf, String)>> {
    let mut rows = Vec::new();
    for entry in ENTRIES {
        let err = (entry.provoke)(stage).with_context(|| format!("reproduce {}", entry.errno))?;
        rows.push((entry, err));
    }
    Ok(vec![(PathBuf::from("catalogue.md"), render(&rows))])
}

fn render(rows: &[(&Entry, io::Error)]) -> String {
    // Four columns, the kind under the errno: five do not fit the book's page.
    let mut table = String::from(
        "| errno<br>`io::ErrorKind` | what Rust prints | cause | fix |\n|---|---|---|---|\n",
    );
    for (entry, err) in rows {
        let Entry { errno, anchor, cause, reproduce, fix, .. } = entry;
        let kind = err.kind();
        table.push_str(&format!(
            "| [{errno}](#{anchor})<br>`{kind:?}` | `{err}` | {cause}. Try: {reproduce} | {fix} |\n"
        ));
    }
    table
}

/// The error `result` was expected to be; an error of ours if it succeeded.
fn failure<T>(result: io::Result<T>, what: &str) -> anyhow::Result<io::Error> {
    match result {
        Ok(_) => bail!("{what} succeeded"),
        Err(err) => Ok(err),
    }
}

fn listen(path: &Path) -> anyhow::Result<UnixListener> {
    UnixListener::bind(path).with_context(|| format!("bind {}", path.display()))
}

/// A socket file nobody listens on: bound, then the listener dropped (std leaves the file).
fn stale(path: &Path) -> anyhow::Result<&Path> {
    listen(path)?;
    Ok(path)
}

fn addr_in_use(stage: &Stage) -> anyhow::Result<io::Error> {
    let path = stage.dir.join("in-use.sock");
    let _running = listen(&path)?;
    failure(UnixListener::bind(&path), "a second bind")
}

fn connection_refused(stage: &Stage) -> anyhow::Result<io::Error> {
    let path = stage.dir.join("stale.sock");
    failure(UnixStream::connect(stale(&path)?), "connect to a stale socket")
}

fn not_found(stage: &Stage) -> anyhow::Result<io::Error> {
    failure(UnixStream::connect(stage.dir.join("missing.sock")), "connect to a missing path")
}

/// Mode 0 on the socket file keeps every user out, except root: permission bits do not apply
/// to root, so as root the attempt is made by user `nobody`, through lesson 01's client.
fn permission_denied(stage: &Stage) -> anyhow::Result<io::Error> {
    let path = stage.dir.join("private.sock");
    let _running = listen(&path)?;
    set_mode(&path, 0o000)?;
    if rustix::process::getuid().is_root() {
        connect_as_nobody(stage, &path)
    } else {
        failure(UnixStream::connect(&path), "connect to a socket file of mode 0")
    }
}

/// Runs `lesson01-client PATH hello` as `nobody` and returns the error it printed, rebuilt from
/// its errno; the client's text must be what std prints for that errno.
fn connect_as_nobody(stage: &Stage, path: &Path) -> anyhow::Result<io::Error> {
    // A copy, in a directory user nobody may enter: the target dir may be private to root.
    let client = stage.dir.join("lesson01-client");
    let source = stage.bins.join("lesson01-client");
    fs::copy(&source, &client).with_context(|| format!("copy {}", source.display()))?;
    set_mode(stage.dir, 0o755)?;
    let mut as_nobody = NOBODY.split(' ');
    let mut command = Command::new(as_nobody.next().context("an empty NOBODY")?);
    command.args(as_nobody).arg(&client).arg(path).arg("hello").env("LC_ALL", "C");
    let mut child = Child::start(command)?;
    child.finish(STEP_TIMEOUT, stage.interrupted)?;
    let output = child.output.join("\n");
    let prefix = format!("lesson01-client: connect {}: ", path.display());
    let printed = output
        .strip_prefix(&prefix)
        .with_context(|| format!("the client, as nobody, printed {output:?}"))?;
    let errno = printed
        .strip_suffix(')')
        .and_then(|rest| rest.rsplit_once("(os error "))
        .and_then(|(_, number)| number.parse().ok())
        .with_context(|| format!("no errno in {printed:?}"))?;
    let err = io::Error::from_raw_os_error(errno);
    if err.to_string() != printed {
        bail!("the client printed {printed:?}, std prints {err:?} for errno {errno}");
    }
    Ok(err)
}

fn set_mode(path: &Path, mode: u32) -> anyhow::Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {mode:o} {}", path.display()))
}

/// `echo hi > app.sock`: `open(2)` for writing.
fn no_device(stage: &Stage) -> anyhow::Result<io::Error> {
    let path = stage.dir.join("open.sock");
    failure(OpenOptions::new().write(true).open(stale(&path)?), "open a socket file")
}

/// A socket whose peer closed with nothing unread: any close of the peer makes a write fail.
fn broken_pipe(_: &Stage) -> anyhow::Result<io::Error> {
    let (ours, theirs) = UnixStream::pair().context("socketpair")?;
    drop(theirs);
    // No SIGPIPE kills us: the runtime ignores it before `main`, and since Rust 1.90 std also
    // sends with MSG_NOSIGNAL (rust#140005). The write fails with EPIPE.
    failure((&ours).write(b"hello\n"), "write to a closed peer")
}

fn connection_reset(_: &Stage) -> anyhow::Result<io::Error> {
    let (mut ours, theirs) = UnixStream::pair().context("socketpair")?;
    ours.write_all(b"hello\n").context("write")?;
    drop(theirs); // with our line unread
    failure(ours.read(&mut [0; 16]), "read after the peer closed unread")
}

fn wrong_type(stage: &Stage) -> anyhow::Result<io::Error> {
    let path = stage.dir.join("stream.sock");
    let _running = listen(&path)?;
    let datagram = UnixDatagram::unbound().context("socket")?;
    failure(datagram.send_to(b"hello\n", &path), "a datagram to a stream socket")
}

/// rustix, because std can do neither half: `UnixListener::bind` always listens with the
/// system's maximum backlog (4096 here), and `UnixStream::connect` always blocks (it makes the
/// socket itself, so `set_nonblocking` comes too late). A blocking connect to a full queue
/// waits until the server accepts: forever, here.
fn would_block(stage: &Stage) -> anyhow::Result<io::Error> {
    let path = stage.dir.join("full.sock");
    let address = SocketAddrUnix::new(&path).context("address")?;
    let listener = socket(SocketFlags::CLOEXEC)?;
    rustix::net::bind(&listener, &address).context("bind")?;
    // Backlog 0: the queue holds one connection that was never accepted.
    rustix::net::listen(&listener, 0).context("listen")?;
    let mut queued = Vec::new();
    while queued.len() < 8 {
        let client = socket(SocketFlags::CLOEXEC | SocketFlags::NONBLOCK)?;
        match rustix::net::connect(&client, &address) {
            Ok(()) => queued.push(client),
            Err(errno) => return Ok(errno.into()),
        }
    }
    bail!("{} non-blocking connects to a backlog of 0 all succeeded", queued.len())
}

fn socket(flags: SocketFlags) -> anyhow::Result<OwnedFd> {
    rustix::net::socket_with(AddressFamily::UNIX, SocketType::STREAM, flags, None).context("socket")
}

/// std checks the length before any system call: there is no errno.
fn path_too_long(_: &Stage) -> anyhow::Result<io::Error> {
    failure(UnixStream::connect("x".repeat(108)), "connect to a path of 108 bytes")
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use super::*;

    fn stage<'a>(dir: &'a Path, interrupted: &'a AtomicBool) -> Stage<'a> {
        Stage { dir, bins: Path::new("/nonexistent"), interrupted }
    }

    /// Every error that needs no other user is reproduced with the kind the table promises;
    /// EACCES needs a lesson binary (as root), and the catalogue scene covers it.
    #[test]
    fn each_error_is_reproduced_with_its_kind() {
        use io::ErrorKind::*;
        let dir = tempfile::tempdir().unwrap();
        let interrupted = AtomicBool::new(false);
        let stage = stage(dir.path(), &interrupted);
        let kinds: Vec<_> = ENTRIES
            .iter()
            .filter(|entry| entry.anchor != "eacces")
            .map(|entry| (entry.anchor, (entry.provoke)(&stage).unwrap().kind()))
            .collect();
        let uncategorized = io::Error::from_raw_os_error(6).kind(); // ENXIO: no stable name
        let expected = [
            ("eaddrinuse", AddrInUse),
            ("econnrefused", ConnectionRefused),
            ("enoent", NotFound),
            ("enxio", uncategorized),
            ("epipe", BrokenPipe),
            ("econnreset", ConnectionReset),
            ("eprototype", uncategorized),
            ("eagain", WouldBlock),
            ("sun-len", InvalidInput),
        ];
        assert_eq!(kinds, expected);
    }

    /// 107 bytes is the longest path std accepts: it reaches the kernel (and finds nothing).
    #[test]
    fn a_path_of_107_bytes_passes_std_check_and_108_does_not() {
        let err = UnixStream::connect("x".repeat(107)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        let err = UnixStream::connect("x".repeat(108)).unwrap_err();
        assert_eq!(err.to_string(), "path must be shorter than SUN_LEN");
    }

    /// One header, one separator and one row per entry, each with four cells: a stray `|` in a
    /// cell's prose would split it.
    #[test]
    fn the_table_has_a_row_of_four_cells_per_entry() {
        let rows: Vec<_> = ENTRIES.iter().map(|entry| (entry, io::Error::other("text"))).collect();
        let table = render(&rows);
        let lines: Vec<_> = table.lines().collect();
        assert_eq!(lines.len(), ENTRIES.len() + 2, "{table}");
        for line in lines {
            let cells = line.matches('|').count() - 1;
            assert_eq!(cells, 4, "{line}");
        }
    }

    /// The table's links are relative to the chapter that includes it.
    #[test]
    fn every_link_in_the_table_resolves_from_the_chapter() {
        let chapter_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("book/src/background");
        let link = regex::Regex::new(r"\]\(([^)#]+)(#[^)]*)?\)").unwrap();
        for entry in ENTRIES {
            for text in [entry.cause, entry.reproduce, entry.fix] {
                for captures in link.captures_iter(text) {
                    let target = chapter_dir.join(&captures[1]);
                    assert!(target.exists(), "{}: {} does not exist", entry.errno, &captures[1]);
                }
            }
        }
    }
}
