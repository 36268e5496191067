//! What lesson 11's tests share: a server handing out the files of a directory of its own, and
//! a receiver that reports everything a reply brought: its bytes, the descriptors attached, and
//! whether the kernel had to drop some (MSG_CTRUNC). The exercise checks use them too, with the
//! server under test.

#![allow(dead_code)] // each test crate uses its own part

use std::ffi::OsStr;
use std::io::{IoSliceMut, Write};
use std::mem::MaybeUninit;
use std::net::Shutdown;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::{fs, io};

use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags, recvmsg};
use uds_test_support::{DEADLINE, Server, TempDir, temp_dir};

/// What `hello.txt` in the server's directory holds.
pub const HELLO: &str = "hello through a descriptor\n";

/// Room in a control buffer for one descriptor, as the lesson's client makes it.
pub const ROOM_FOR_ONE: usize = rustix::cmsg_space!(ScmRights(1));

/// A server listening at `path` in `_dir`, with `--dir files` (holding `hello.txt`). Fields
/// drop in order: the server is killed before the directory goes.
pub struct Served {
    pub server: Server,
    pub path: PathBuf,
    pub files: PathBuf,
    pub dir: TempDir,
}

/// `bin` serving `files/` of a fresh private temp dir; `args` added to its command line.
pub fn serve_files(bin: &Path, args: &[&str]) -> Served {
    serve_files_in(temp_dir(), bin, args)
}

/// `bin` serving `files/` of `dir`, its socket `lesson11.sock` in `dir`; `args` added.
pub fn serve_files_in(dir: TempDir, bin: &Path, args: &[&str]) -> Served {
    let files = dir.path().join("files");
    fs::create_dir(&files).expect("mkdir files");
    fs::write(files.join("hello.txt"), HELLO).expect("write hello.txt");
    let path = dir.path().join("lesson11.sock");
    let mut command = vec![path.as_os_str(), "--dir".as_ref(), files.as_os_str()];
    command.extend(args.iter().map(OsStr::new));
    let server = Server::start(bin, &path, &command);
    Served { server, path, files, dir }
}

/// Everything one connection's reply brought, read with `recvmsg` until EOF.
pub struct Reply {
    pub bytes: Vec<u8>,
    /// The descriptors attached, ours now (closed when dropped).
    pub fds: Vec<OwnedFd>,
    /// The kernel set MSG_CTRUNC: descriptors came that did not fit, and it closed them.
    pub truncated: bool,
}

impl Reply {
    /// The bytes as text, for asserts.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }

    /// What the first descriptor reads to the end.
    pub fn read_file(self) -> String {
        let fd = self.fds.into_iter().next().expect("a descriptor");
        io::read_to_string(fs::File::from(fd)).expect("read through the descriptor")
    }
}

/// A new connection to `path` with a deadline on every read.
pub fn connect(path: &Path) -> UnixStream {
    let stream = UnixStream::connect(path).expect("connect");
    stream.set_read_timeout(Some(DEADLINE)).expect("set a read timeout");
    stream
}

/// Send `request` on a new connection to `path` (nothing more, the connection left open) and
/// receive the whole reply, with `room` bytes of control buffer per `recvmsg`.
pub fn ask(path: &Path, request: &[u8], room: usize) -> Reply {
    let mut stream = connect(path);
    stream.write_all(request).expect("send the request");
    receive(&stream, room)
}

/// Send `request` and end it there (shutdown write): EOF where the newline should be.
pub fn ask_then_eof(path: &Path, request: &[u8]) -> Reply {
    let mut stream = connect(path);
    stream.write_all(request).expect("send the request");
    stream.shutdown(Shutdown::Write).expect("shutdown write");
    receive(&stream, ROOM_FOR_ONE)
}

/// Everything until EOF, each `recvmsg` with `room` bytes for control messages.
pub fn receive(stream: &UnixStream, room: usize) -> Reply {
    let mut reply = Reply { bytes: Vec::new(), fds: Vec::new(), truncated: false };
    loop {
        let mut buf = [0; 4096];
        let mut space = vec![MaybeUninit::uninit(); room];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let iov = &mut [IoSliceMut::new(&mut buf)];
        let got = recvmsg(stream, iov, &mut control, RecvFlags::CMSG_CLOEXEC).expect("recvmsg");
        reply.truncated |= got.flags.contains(ReturnFlags::CTRUNC);
        for message in control.drain() {
            if let RecvAncillaryMessage::ScmRights(fds) = message {
                reply.fds.extend(fds);
            }
        }
        if got.bytes == 0 {
            return reply;
        }
        reply.bytes.extend_from_slice(&buf[..got.bytes]);
    }
}

/// Asserts that `reply` is one `error: ` line starting `start`, with no descriptor.
pub fn assert_refused(reply: &Reply, start: &str) {
    let text = reply.text();
    assert!(text.starts_with(&format!("error: {start}")), "{text:?}");
    assert!(text.ends_with('\n') && text.lines().count() == 1, "{text:?}");
    assert!(reply.fds.is_empty(), "an error came with descriptors: {text:?}");
    assert!(!reply.truncated, "{text:?}");
}
