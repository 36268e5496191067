//! lesson11-server's one idea, proven with the real binary on real sockets: an allowed peer gets
//! `ok\n` and exactly one descriptor of the file it named; every other request gets an `error: `
//! line and none, and the server keeps serving; its own copies are closed (its descriptor count
//! does not grow); a receiver with no room is told (MSG_CTRUNC); Python's `socket.recv_fds`
//! works as a client.

mod common;

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{MetadataExt, symlink};
use std::path::Path;
use std::process::Command;

use assert_cmd::cargo::cargo_bin;
use common::{
    HELLO, ROOM_FOR_ONE, ask, ask_then_eof, assert_refused, connect, receive, serve_files,
};
use rustix::process::{Pid, Signal, kill_process};
use uds_test_support::{DEADLINE, Server, have_tool, open_fd_count, temp_dir, wait_until};

fn server() -> &'static Path {
    cargo_bin!("lesson11-server")
}

/// An allowed peer (root, here) gets the bytes `ok\n` and exactly one descriptor: the file it
/// named (the same inode), open for reading, close-on-exec as we asked (MSG_CMSG_CLOEXEC).
#[test]
fn an_allowed_peer_gets_ok_and_one_descriptor_of_the_file() {
    let mut served = serve_files(server(), &[]);
    let reply = ask(&served.path, b"hello.txt\n", ROOM_FOR_ONE);
    assert_eq!((reply.text().as_str(), reply.fds.len(), reply.truncated), ("ok\n", 1, false));
    let fd = reply.fds[0].as_fd();
    let inode = fs::metadata(served.files.join("hello.txt")).expect("stat").ino();
    assert_eq!(rustix::fs::fstat(fd).expect("fstat").st_ino, inode);
    let flags = rustix::io::fcntl_getfd(fd).expect("F_GETFD");
    assert!(flags.contains(rustix::io::FdFlags::CLOEXEC), "{flags:?}");
    assert_eq!(reply.read_file(), HELLO);
    served.server.wait_for_line("lesson11-server: connection 1: sent hello.txt");
}

/// The descriptor is read-only: writing through it fails, and the file is unchanged.
#[test]
fn the_descriptor_is_open_for_reading_only() {
    let served = serve_files(server(), &[]);
    let reply = ask(&served.path, b"hello.txt\n", ROOM_FOR_ONE);
    let mut file = fs::File::from(reply.fds.into_iter().next().expect("a descriptor"));
    let err = file.write_all(b"overwritten").expect_err("a write through the descriptor");
    assert_eq!(err.raw_os_error(), Some(rustix::io::Errno::BADF.raw_os_error()), "{err}");
    assert_eq!(fs::read_to_string(served.files.join("hello.txt")).expect("read"), HELLO);
}

/// A NAME with a `/`, or `.`, `..`, or nothing, is refused with an `error: ` line and no
/// descriptor — though each names something the server could open (a file beside DIR, one in
/// a subdirectory, DIR itself) — and the server goes on serving.
#[test]
fn names_with_a_slash_or_dots_are_refused_and_the_server_keeps_serving() {
    let served = serve_files(server(), &[]);
    let beside = served.dir.path().join("beside.txt");
    fs::write(&beside, "not in DIR\n").expect("write a file beside DIR");
    fs::create_dir(served.files.join("sub")).expect("mkdir sub");
    fs::write(served.files.join("sub/inner.txt"), "in a subdirectory\n").expect("write");
    let absolute = format!("{}\n", beside.display());
    let names: [&[u8]; 7] = [
        b"../beside.txt\n",
        absolute.as_bytes(),
        b"sub/inner.txt\n",
        b"./hello.txt\n",
        b".\n",
        b"..\n",
        b"\n",
    ];
    for name in names {
        let reply = ask(&served.path, name, ROOM_FOR_ONE);
        let shown = String::from_utf8_lossy(name.strip_suffix(b"\n").expect("a line"));
        assert_refused(&reply, &format!("{shown:?} is not a file name"));
        assert_eq!(ask(&served.path, b"hello.txt\n", ROOM_FOR_ONE).read_file(), HELLO);
    }
}

/// A symbolic link in DIR is not followed (O_NOFOLLOW), even to a file the server could read:
/// `error: open link: ...` (ELOOP), no descriptor.
#[test]
fn a_symlink_is_refused_not_followed() {
    let served = serve_files(server(), &[]);
    fs::write(served.dir.path().join("beside.txt"), "not in DIR\n").expect("write");
    symlink("../beside.txt", served.files.join("link")).expect("symlink");
    let reply = ask(&served.path, b"link\n", ROOM_FOR_ONE);
    assert_refused(&reply, "open link: Too many levels of symbolic links (os error 40)");
    assert_eq!(ask(&served.path, b"hello.txt\n", ROOM_FOR_ONE).read_file(), HELLO);
}

/// A file that is not there: `error: open NAME: No such file or directory`, no descriptor.
#[test]
fn a_missing_file_is_refused() {
    let served = serve_files(server(), &[]);
    let reply = ask(&served.path, b"missing.txt\n", ROOM_FOR_ONE);
    assert_refused(&reply, "open missing.txt: No such file or directory (os error 2)");
}

/// A client's bytes are shown escaped, never raw, in the reply and in the log: an escape
/// character (the start of a terminal's control sequence) is `\x1b`, a newline `\n`.
#[test]
fn a_name_with_an_escape_byte_is_shown_escaped() {
    let mut served = serve_files(server(), &[]);
    fs::write(served.files.join("\x1b[31mred.txt"), HELLO).expect("write a file");
    assert_eq!(ask(&served.path, b"\x1b[31mred.txt\n", ROOM_FOR_ONE).read_file(), HELLO);
    served.server.wait_for_line(r"lesson11-server: connection 1: sent \x1b[31mred.txt");
    let reply = ask(&served.path, b"\x1b[2Jgone\r\n", ROOM_FOR_ONE);
    let missing = r"open \x1b[2Jgone\r: No such file or directory (os error 2)";
    assert_refused(&reply, missing);
    served.server.wait_for_line(&format!("lesson11-server: connection 2: refused: {missing}"));
}

/// A long name is shown cut short (its first 64 bytes, then `…`), escaped: the `error: ` line
/// stays one short line, whole in one read, however many bytes the name took to show.
#[test]
fn a_long_name_is_shown_cut_short_in_one_whole_line() {
    let served = serve_files(server(), &[]);
    let name = [&[0x1b; 3000][..], b"/\n"].concat();
    let reply = ask(&served.path, &name, ROOM_FOR_ONE);
    let shown = r"\x1b".repeat(64);
    assert_refused(&reply, &format!("\"{shown}…\" is not a file name"));
    assert!(reply.bytes.len() < 400, "{} bytes: {:?}", reply.bytes.len(), reply.text());
}

/// The server opens the file close-on-exec (O_CLOEXEC), so that no program it might start would
/// inherit it. The flag is on the server's own descriptor, which never leaves the server (the
/// client's copy has flags of its own): strace sees it where it is set, in the `openat` call.
#[test]
fn the_server_opens_the_file_close_on_exec() {
    if !have_tool("strace", "apt-get install -y strace") {
        return;
    }
    let dir = temp_dir();
    let (files, path, trace) =
        (dir.path().join("files"), dir.path().join("lesson11.sock"), dir.path().join("trace"));
    fs::create_dir(&files).expect("mkdir files");
    fs::write(files.join("hello.txt"), HELLO).expect("write hello.txt");
    let mut cmd = Command::new("strace");
    cmd.args(["-f", "-e", "trace=openat", "-o"]).arg(&trace).arg(server()).arg(&path);
    cmd.arg("--dir").arg(&files);
    let strace = Server::start_cmd(cmd, &path);
    // Killing strace would only detach it: the server, its child, is killed on drop too.
    let _server = KillOnDrop(child_of(strace.pid()));
    assert_eq!(ask(&path, b"hello.txt\n", ROOM_FOR_ONE).read_file(), HELLO);
    let mut opened = String::new();
    wait_until("strace shows the openat of hello.txt", || {
        let trace = fs::read_to_string(&trace).expect("read the trace");
        let line = trace.lines().find(|line| line.contains(r#", "hello.txt", "#));
        opened = line.unwrap_or_default().to_owned();
        !opened.is_empty()
    });
    assert!(opened.contains("O_CLOEXEC"), "opened without O_CLOEXEC: {opened}");
}

/// The one child of `pid` (the server strace runs), from /proc.
fn child_of(pid: Pid) -> Pid {
    let raw = pid.as_raw_nonzero();
    let children = fs::read_to_string(format!("/proc/{raw}/task/{raw}/children"));
    let children = children.expect("read the children of strace");
    let child = children.trim().parse().expect("one child pid");
    Pid::from_raw(child).expect("a pid")
}

/// Kills the process when dropped, however the test ends.
struct KillOnDrop(Pid);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = kill_process(self.0, Signal::KILL);
    }
}

/// A request is at most 4096 bytes, its newline included: past that (with or without a newline
/// to come) `error: request longer than 4096 bytes`, no descriptor; at exactly 4096 the name is
/// opened (and is too long for a file name).
#[test]
fn a_request_over_4096_bytes_gets_an_error_and_no_descriptor() {
    let served = serve_files(server(), &[]);
    let longer = "error: request longer than 4096 bytes\n";
    assert_eq!(ask(&served.path, &[b'x'; 5000], ROOM_FOR_ONE).text(), longer);
    let reply = ask(&served.path, format!("{}\n", "x".repeat(4096)).as_bytes(), ROOM_FOR_ONE);
    assert_refused(&reply, "request longer than 4096 bytes");
    let reply = ask(&served.path, format!("{}\n", "x".repeat(4095)).as_bytes(), ROOM_FOR_ONE);
    assert_refused(&reply, "open xxxx");
    assert!(reply.text().ends_with(": File name too long (os error 36)\n"), "{}", reply.text());
    assert_eq!(ask(&served.path, b"hello.txt\n", ROOM_FOR_ONE).read_file(), HELLO);
}

/// EOF before the newline: `error: the request ended before its newline`, no descriptor —
/// even when the bytes name a file.
#[test]
fn eof_before_the_newline_gets_an_error_and_no_descriptor() {
    let served = serve_files(server(), &[]);
    let reply = ask_then_eof(&served.path, b"hello.txt");
    assert_refused(&reply, "the request ended before its newline");
    assert_refused(&ask_then_eof(&served.path, b""), "the request ended before its newline");
}

/// The server closes its own copy of each descriptor it sends, and each connection: after 1000
/// requests (files sent, and refusals) it holds as many descriptors as before.
#[test]
fn the_servers_fd_count_is_the_same_after_1000_requests() {
    let served = serve_files(server(), &[]);
    let pid = served.server.pid();
    let before = open_fd_count(pid).expect("count the server's descriptors");
    for i in 0..1000 {
        let reply = ask(&served.path, b"hello.txt\n", ROOM_FOR_ONE);
        assert_eq!((reply.bytes.as_slice(), reply.fds.len()), (&b"ok\n"[..], 1), "request {i}");
        if i % 10 == 0 {
            assert_refused(&ask(&served.path, b"missing.txt\n", ROOM_FOR_ONE), "open missing");
        }
    }
    // Each connection's thread may still be on its way out: wait for the count, not forever.
    let count = || open_fd_count(pid).expect("count the server's descriptors");
    wait_until("the server holds as many descriptors as before", || count() == before);
}

/// A receiver with no room for control messages gets `ok\n` and MSG_CTRUNC: the kernel tells it
/// a descriptor was dropped (and closed it), instead of losing it without a word.
#[test]
fn a_receiver_with_no_room_for_the_descriptor_gets_msg_ctrunc() {
    let served = serve_files(server(), &[]);
    let reply = ask(&served.path, b"hello.txt\n", 0);
    assert_eq!((reply.text().as_str(), reply.fds.len(), reply.truncated), ("ok\n", 0, true));
}

/// What the chapter warns of: a plain `read` (here a BufReader's) takes the byte the descriptor
/// rode on, and the descriptor is gone — the next `recvmsg` finds only EOF, and no flag says so.
#[test]
fn a_plain_read_takes_the_bytes_and_the_descriptor_is_lost() {
    let served = serve_files(server(), &[]);
    let mut stream = connect(&served.path);
    stream.write_all(b"hello.txt\n").expect("send the request");
    let mut line = String::new();
    BufReader::new(&stream).read_line(&mut line).expect("read a line");
    assert_eq!(line, "ok\n");
    let rest = receive(&stream, ROOM_FOR_ONE);
    assert_eq!((rest.bytes.len(), rest.fds.len(), rest.truncated), (0, 0, false));
}

/// Python's `socket.recv_fds` is a client too: it gets `ok\n` and one descriptor, and reads the
/// file through it.
#[test]
fn python_recv_fds_reads_the_file_through_the_descriptor() {
    if !have_tool("python3", "apt-get install -y python3") {
        return;
    }
    let served = serve_files(server(), &[]);
    let script = "import os, socket, sys\n\
                  s = socket.socket(socket.AF_UNIX)\n\
                  s.connect(sys.argv[1])\n\
                  s.sendall(b'hello.txt\\n')\n\
                  msg, fds, flags, _ = socket.recv_fds(s, 4096, 1)\n\
                  print(msg, len(fds), flags)\n\
                  print(os.read(fds[0], 100).decode(), end='')\n";
    let out = assert_cmd::Command::new("python3")
        .args(["-c", script])
        .arg(&served.path)
        .timeout(DEADLINE)
        .output()
        .expect("run python3");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), format!("b'ok\\n' 1 0\n{HELLO}"));
}

/// `--dir` is required, and a DIR that cannot be opened as a directory stops the server at start,
/// exit 1, one line naming it.
#[test]
fn a_missing_dir_is_a_start_up_error() {
    let dir = uds_test_support::temp_dir();
    let path = dir.path().join("lesson11.sock");
    let missing = dir.path().join("missing");
    let out = Command::new(server()).arg(&path).output().expect("run the server");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let out = Command::new(server())
        .arg(&path)
        .arg("--dir")
        .arg(&missing)
        .output()
        .expect("run the server");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "lesson11-server: open {}: No such file or directory (os error 2)\n",
            missing.display()
        )
    );
    assert!(!path.exists(), "a socket file was left behind");
}
