//! `lesson N`: build lesson N, start its server on a private temp path, run its client with
//! sample messages (or ask for a file holding them, from a lesson that hands out files), print
//! the client's block then the server's, and leave nothing behind.
//!
//! "Nothing behind" holds on every path because cleanup lives in `Drop`: a [`Child`] guard stops
//! and reaps its process, and the `TempDir` (declared before the children, so dropped after
//! them) removes the socket file that lessons 01 and 02 leave.

use std::ffi::OsString;
use std::fs;
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::cargo::BinDir;
use crate::child::{self, Child, Event, bail_if_interrupted};
use crate::lessons::{self, Number};

const MESSAGES: [&str; 2] = ["hello", "unix domain sockets"];
/// How long the server may take to print `listening on PATH`, and the client to finish.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);

pub fn lesson(number: Number) -> anyhow::Result<()> {
    child::interruptible(|interrupted| {
        let mut out = io::stdout().lock();
        show(number, &mut out, interrupted).map(drop)
    })
}

/// Runs lesson `number` as `lesson N` does and writes both blocks to `out`; returns the temp
/// dir the socket was in (removed by then), which `transcripts` redacts.
pub fn show(
    number: Number,
    out: &mut impl Write,
    interrupted: &AtomicBool,
) -> anyhow::Result<PathBuf> {
    let lesson = lessons::find(number)?;
    // Built by cargo beside the runner's own executable.
    let bins = BinDir::of_runner()?;
    bins.build(&lesson)?;
    let (server_bin, client_bin) = bins.server_and_client(&lesson)?;
    bail_if_interrupted(interrupted)?;
    // Declared before the children, so it is dropped (and removed) after they are reaped.
    let dir =
        tempfile::Builder::new().prefix("uds-course-").tempdir().context("create a temp dir")?;
    let socket = dir.path().join(format!("{}.sock", lesson.package()));

    let mut server_args = vec![socket.as_os_str().to_owned()];
    let mut client_args = server_args.clone();
    match lesson.sample_file()? {
        // A server that hands out files (lesson 11): a directory with one holding the sample
        // messages, and a client that asks for it by name.
        Some(name) => {
            let files = dir.path().join("files");
            fs::create_dir(&files).with_context(|| format!("create {}", files.display()))?;
            let sample = files.join(&name);
            fs::write(&sample, MESSAGES.map(|line| format!("{line}\n")).concat())
                .with_context(|| format!("write {}", sample.display()))?;
            server_args.extend(["--dir".into(), files.into_os_string()]);
            client_args.push(name.into());
        }
        None => client_args.extend(MESSAGES.map(OsString::from)),
    }
    let mut server = Child::spawn(&server_bin, &server_args)?;
    let ready = format!("listening on {}", socket.display());
    match server.wait_for_line(&ready, Instant::now() + STEP_TIMEOUT, interrupted)? {
        Event::Line => {}
        Event::Eof => {
            let status = server.stop()?;
            server.print(out)?;
            bail!("{} exited before it was listening ({status})", server.name);
        }
        Event::TimedOut => {
            server.print(out)?;
            bail!("{} did not print `{ready}` within {STEP_TIMEOUT:?}", server.name);
        }
    }

    // What the server holds open with no client: back to this, it is done with the client.
    let idle_fds = child::open_fds(server.id()).ok();
    let mut client = Child::spawn(&client_bin, &client_args)?;
    let client_status = client.finish(STEP_TIMEOUT, interrupted);
    bail_if_interrupted(interrupted)?;
    // Let the server finish with the client before the SIGTERM: a client may exit before the
    // server has seen it go (an HTTP client does not wait for the server to close), and a
    // SIGTERM that came first would change the server's log from run to run. Once it is back
    // to its descriptors of before, it has closed the connection, and logged that.
    if let Some(idle) = idle_fds {
        server.wait_for_fds(idle, Instant::now() + STEP_TIMEOUT, interrupted)?;
    }
    // Stop the server even when the client failed: its block usually says why.
    server.stop()?;
    server.drain(interrupted)?;
    client.print(out)?;
    writeln!(out).context("write stdout")?;
    server.print(out)?;
    out.flush().context("write stdout")?;
    let client_name = client.name.clone();
    drop((client, server));
    let path = dir.path().to_owned();
    dir.close().with_context(|| format!("remove {}", path.display()))?;

    let status = client_status?;
    if !status.success() {
        bail!("{client_name} failed ({status})");
    }
    Ok(path)
}
