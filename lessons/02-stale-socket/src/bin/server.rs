//! lesson02-server: lesson 01's server, and a safe start over a stale socket file.
//!
//! The one idea: a socket file whose server has died is *stale* — nothing accepts on it — and
//! it blocks `bind`. Before binding, knock: `connect` to whatever is at the path. Refused means
//! stale (on Linux), so remove it; an answer means a live server, so refuse to start;
//! anything that is not a socket is not ours to delete, so leave it alone.
//!
//! Run: `cargo run --bin lesson02-server` prints `listening on PATH`; then, in another terminal,
//! `cargo run --bin lesson02-client -- PATH hello` or `nc -NU PATH`. Partner: client.rs.

use std::io::{self, BufRead, BufReader, ErrorKind, Write};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;
use std::{fs, thread};

use anyhow::{Context, bail};
use clap::Parser;
use lesson02::{SOCKET_NAME, default_socket_dir, log};

/// Answer each line a client sends with the same line in ASCII upper case.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Where to create the socket [default: $XDG_RUNTIME_DIR/uds-course/lesson02.sock]
    path: Option<PathBuf>,
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
    let path = match args.path {
        Some(path) => path,
        None => {
            let dir = default_socket_dir();
            fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
            dir.join(SOCKET_NAME)
        }
    };
    remove_stale_socket(&path)?;
    // ANCHOR: bind
    // `bind` creates the socket file; std then calls `listen`, so clients can queue up until
    // we `accept` them. If anything exists at `path` — even the socket file of a server that
    // died — `bind` fails with "Address already in use".
    let listener = UnixListener::bind(&path).with_context(|| format!("bind {}", path.display()))?;
    // ANCHOR_END: bind
    // The line that scripts and tests wait for. writeln!, not println!, which would panic
    // if nobody reads our stdout.
    let mut stdout = io::stdout();
    writeln!(stdout, "listening on {}", path.display())
        .and_then(|()| stdout.flush())
        .context("write stdout")?;
    // ANCHOR: accept_loop
    for id in 1.. {
        match listener.accept() {
            Ok((stream, _addr)) => {
                // Builder, not thread::spawn: spawn panics when the OS refuses a thread.
                if let Err(err) = thread::Builder::new().spawn(move || serve(id, stream)) {
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
    Ok(())
}

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

// ANCHOR: serve
/// One client's connection, on its own thread: whatever goes wrong ends only this connection.
fn serve(id: u64, stream: UnixStream) {
    log!("connection {id}: accepted");
    match answer_lines(&stream) {
        Ok(lines) => log!("connection {id}: closed, lines answered: {lines}"),
        Err(err) => log!("connection {id}: {err:#}"),
    }
} // dropping `stream` closes the connection: the client reads EOF

/// Answer each line until EOF (the client half-closed or went away); returns how many.
fn answer_lines(stream: &UnixStream) -> anyhow::Result<u64> {
    // `&UnixStream` is both Read and Write: one socket carries both directions (full duplex).
    let mut reader = BufReader::new(stream);
    let mut writer = stream;
    let mut line = Vec::new();
    let mut lines = 0;
    loop {
        line.clear();
        // read_until, not read_line: a client may send bytes that are not UTF-8.
        if reader.read_until(b'\n', &mut line).context("read")? == 0 {
            return Ok(lines);
        }
        if !line.ends_with(b"\n") {
            line.push(b'\n'); // a last line without a newline is answered too
        }
        line.make_ascii_uppercase();
        writer.write_all(&line).context("write")?;
        lines += 1;
    }
}
// ANCHOR_END: serve
