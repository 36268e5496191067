//! lesson11-client: ask the server for a file by NAME, receive it open, print it.
//!
//! The one idea, from this side: the reply `ok\n` carries an open descriptor (SCM_RIGHTS), and
//! this client reads the file through it — a file it may have no permission to open by name.
//! `recvmsg` receives the bytes and the descriptor together, as an `OwnedFd`, close-on-exec; a
//! control buffer too small for what came (MSG_CTRUNC) is an error, never a silent loss. The
//! default directory is checked as in lesson 04; a uid the server refuses gets its `error: `
//! line, exit 1.
//!
//! Run: start the server (`lesson11-server --dir DIR` prints `listening on PATH`), then
//! `cargo run --bin lesson11-client -- PATH NAME`. Partner: server.rs.

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, IoSliceMut, Read, Write};
use std::mem::MaybeUninit;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::error::ErrorKind::MissingRequiredArgument;
use clap::{CommandFactory, Parser};
use lesson11::{SOCKET_NAME, check_private_dir, default_socket_dir};
use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags, recvmsg};

/// Ask a lesson11-server for a file by NAME and print it, read through the descriptor it sends.
#[derive(Parser)]
#[command(version, override_usage = "lesson11-client [OPTIONS] [PATH] NAME")]
struct Args {
    /// The server's socket [default: $XDG_RUNTIME_DIR/uds-course/lesson11.sock]
    path: Option<PathBuf>,
    /// The file, in the server's --dir, to print (one argument alone is the NAME)
    name: Option<OsString>,
}

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(err) => {
            eprintln!("lesson11-client: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<ExitCode> {
    let args = Args::parse();
    // `[PATH] NAME`: clap cannot put an optional positional before a required one, so one
    // word alone is moved over to NAME here.
    let (path, name) = match (args.path, args.name) {
        (path, Some(name)) => (path, name),
        (Some(name), None) => (None, name.into_os_string()),
        (None, None) => Args::command().error(MissingRequiredArgument, "NAME is required").exit(),
    };
    // ANCHOR: default_path
    let path = match path {
        // An explicit PATH is the user's choice.
        Some(path) => path,
        // A socket in a directory that someone else controls may be theirs, not our server's:
        // check the default directory as the server does.
        None => {
            let dir = default_socket_dir();
            check_private_dir(&dir)?;
            dir.join(SOCKET_NAME)
        }
    };
    // ANCHOR_END: default_path
    // ANCHOR: connect
    let mut stream =
        UnixStream::connect(&path).with_context(|| format!("connect {}", path.display()))?;
    // ANCHOR_END: connect
    // ANCHOR: request
    // One request per connection: NAME's bytes as they are (a file name need not be UTF-8)
    // and `\n`, in one write.
    let mut request = name.as_bytes().to_vec();
    request.push(b'\n');
    stream.write_all(&request).with_context(|| format!("write {}", path.display()))?;
    // ANCHOR_END: request
    let Some(file) = receive_file(&stream, &path)? else {
        return Ok(ExitCode::FAILURE); // the server's `error: ` line, on stderr, says why
    };
    // ANCHOR: eof
    // One reply, then the server closes: wait for that EOF. Exiting before it would be no harm
    // to us, but a script that stops the server the moment we exit would catch it still busy
    // with our connection.
    let after = stream.read(&mut [0; 1]).with_context(|| format!("read {}", path.display()))?;
    if after != 0 {
        bail!("read {}: the server sent more than one reply", path.display());
    }
    // ANCHOR_END: eof
    // ANCHOR: copy
    // The descriptor is an open file like any other: read it to the end. Its permissions
    // were checked when the server opened it, not now, and not against us.
    let mut file = File::from(file);
    let mut stdout = io::stdout().lock();
    let copied = io::copy(&mut file, &mut stdout).and_then(|_| stdout.flush());
    copied.with_context(|| format!("copy {} to stdout", name.as_bytes().escape_ascii()))?;
    // ANCHOR_END: copy
    Ok(ExitCode::SUCCESS)
}

/// The longest `error: ` line we read: a server that never stops sending cannot fill memory.
const MAX_ERROR: u64 = 64 * 1024;

// ANCHOR: receive
/// The server's reply: `ok\n` with the file's descriptor attached, or an `error: ` line (then
/// printed to stderr, and `None`).
fn receive_file(stream: &UnixStream, path: &Path) -> anyhow::Result<Option<OwnedFd>> {
    let shown = path.display();
    // The reply in one `recvmsg`, its bytes and the descriptor together. Never through a
    // BufReader or a plain `read`: they take the bytes, and the kernel closes the descriptors
    // that rode on them, without a word.
    let mut reply = [0; 4096];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    // CMSG_CLOEXEC: the descriptor arrives close-on-exec, in the same system call, so a
    // program started meanwhile (by another thread) cannot inherit it.
    let flags = RecvFlags::CMSG_CLOEXEC;
    let received = recvmsg(stream, &mut [IoSliceMut::new(&mut reply)], &mut control, flags);
    let received = received.map_err(io::Error::from).with_context(|| format!("recvmsg {shown}"))?;
    // MSG_CTRUNC: more descriptors came than `space` had room for (or we hit RLIMIT_NOFILE),
    // and the kernel closed the ones that did not fit. Say so; never carry on without them.
    if received.flags.contains(ReturnFlags::CTRUNC) {
        bail!("recvmsg {shown}: descriptors were lost: no room for them (MSG_CTRUNC)");
    }
    // What came is ours now, as `OwnedFd`s: closed when dropped, on every path below.
    let mut fds: Vec<OwnedFd> = control
        .drain()
        .filter_map(|message| match message {
            RecvAncillaryMessage::ScmRights(fds) => Some(fds),
            _ => None,
        })
        .flatten()
        .collect();
    let reply = &reply[..received.bytes];
    match (reply, fds.len()) {
        (b"ok\n", 1) => Ok(fds.pop()),
        (error, 0) if error.starts_with(b"error: ") => {
            // The line may be longer than one `recvmsg` took: read on to the server's EOF (no
            // descriptor rides on an error, so a plain read loses nothing).
            let mut line = error.to_vec();
            let rest = stream.take(MAX_ERROR).read_to_end(&mut line);
            rest.with_context(|| format!("read {shown}"))?;
            // The server's words, shown, not obeyed: a control character is printed escaped.
            let mut text = String::new();
            for c in String::from_utf8_lossy(&line).trim_end_matches('\n').chars() {
                if c.is_control() { text.extend(c.escape_default()) } else { text.push(c) }
            }
            let _ = writeln!(io::stderr(), "{text}"); // ok to lose: stderr is gone
            Ok(None)
        }
        (b"", 0) => bail!("read {shown}: the server closed the connection without a reply"),
        (reply, count) => {
            let reply = String::from_utf8_lossy(reply);
            bail!("read {shown}: not a reply: {reply:?} with {count} descriptors")
        }
    }
}
// ANCHOR_END: receive
