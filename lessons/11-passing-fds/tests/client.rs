//! lesson11-client against the real server and against fake ones: the file printed through the
//! descriptor, byte for byte; a refusal on stderr with exit 1; a reply with too many descriptors
//! (MSG_CTRUNC), or none, or out of descriptors (RLIMIT_NOFILE): an error, exit 1, never a
//! silent loss.

mod common;

use std::ffi::OsString;
use std::fs;
use std::io::{self, BufRead, BufReader, IoSlice, Write};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;

use assert_cmd::cargo::cargo_bin;
use common::serve_files;
use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags, sendmsg};
use uds_test_support::{DEADLINE, FakeServer, Server, fake_server, temp_dir, wait_until};

fn server() -> &'static Path {
    cargo_bin!("lesson11-server")
}

fn client() -> assert_cmd::Command {
    let mut cmd = assert_cmd::Command::new(cargo_bin!("lesson11-client"));
    cmd.timeout(DEADLINE);
    cmd
}

/// The client prints the file it named, read through the descriptor, byte for byte: every byte
/// value, and more than any one buffer holds. Exit 0, nothing on stderr.
#[test]
fn the_client_prints_the_file_through_the_descriptor() {
    let served = serve_files(server(), &[]);
    let bytes: Vec<u8> = (0..=255u8).cycle().take(1 << 20).collect();
    fs::write(served.files.join("all-bytes.bin"), &bytes).expect("write a file");
    let out = client().arg(&served.path).arg("all-bytes.bin").output().expect("run the client");
    assert!(out.status.success(), "{:?}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stdout == bytes, "the output differs from the file");
    assert_eq!(out.stderr, b"");
}

/// A refusal (`error: ` with no descriptor) goes to stderr as it came; exit 1, stdout empty.
#[test]
fn a_refusal_goes_to_stderr_and_exits_1() {
    let served = serve_files(server(), &[]);
    client()
        .arg(&served.path)
        .arg("../etc/passwd")
        .assert()
        .code(1)
        .stdout("")
        .stderr("error: \"../etc/passwd\" is not a file name (no '/', not '.' or '..')\n");
}

/// Without a NAME: a usage error, exit 2.
#[test]
fn a_missing_name_is_a_usage_error() {
    let out = client().output().expect("run the client");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("NAME is required"), "{out:?}");
}

/// A fake server that reads the request line, then answers `ok\n` with `fds` attached.
fn answering_ok_with(
    dir: &Path,
    count: usize,
) -> (std::path::PathBuf, uds_test_support::FakeServer) {
    fake_server(dir, move |stream: UnixStream| {
        let mut line = String::new();
        BufReader::new(&stream).read_line(&mut line).expect("read the request");
        // Copies of one descriptor (the connection's own) are as good as many files.
        let fds: Vec<BorrowedFd<'_>> = vec![stream.as_fd(); count];
        let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(count))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        if count > 0 {
            assert!(control.push(SendAncillaryMessage::ScmRights(&fds)), "room for {count}");
        }
        let sent = sendmsg(&stream, &[IoSlice::new(b"ok\n")], &mut control, SendFlags::empty());
        assert_eq!(sent.expect("sendmsg"), 3);
    })
}

/// What the client says when descriptors came that it had no room for.
fn lost(path: &Path) -> String {
    let shown = path.display();
    format!(
        "lesson11-client: recvmsg {shown}: descriptors were lost: no room for them (MSG_CTRUNC)\n"
    )
}

/// The client against a fake server answering `ok\n` with `count` descriptors: exit 1, nothing
/// on stdout, and on stderr what `says` makes of the socket's path.
fn assert_the_client_fails_against_ok_with(count: usize, says: impl FnOnce(&Path) -> String) {
    let dir = temp_dir();
    let (path, fake) = answering_ok_with(dir.path(), count);
    client().arg(&path).arg("hello.txt").assert().code(1).stdout("").stderr(says(&path));
    fake.join().expect("the fake server");
}

/// More descriptors than the client has room for: the kernel closes those that do not fit and
/// sets MSG_CTRUNC; the client says so and exits 1 instead of going on without them.
#[test]
fn a_truncated_control_message_is_an_error_not_a_silent_loss() {
    assert_the_client_fails_against_ok_with(16, lost);
}

/// Out of descriptors (RLIMIT_NOFILE reached: `ulimit -n 4` leaves room for stdin, stdout,
/// stderr and the socket) the kernel cannot install the one sent, and says so the same way.
#[test]
fn out_of_descriptors_the_client_reports_msg_ctrunc() {
    let served = serve_files(server(), &[]);
    assert_cmd::Command::new("bash")
        .args(["-c", r#"ulimit -n 4 && exec "$0" "$@""#])
        .arg(cargo_bin!("lesson11-client"))
        .arg(&served.path)
        .arg("hello.txt")
        .timeout(DEADLINE)
        .assert()
        .code(1)
        .stdout("")
        .stderr(lost(&served.path));
}

/// `ok\n` with no descriptor attached is no reply the client can use: exit 1, saying so.
#[test]
fn ok_without_a_descriptor_is_an_error() {
    assert_the_client_fails_against_ok_with(0, |path| {
        let shown = path.display();
        format!("lesson11-client: read {shown}: not a reply: \"ok\\n\" with 0 descriptors\n")
    });
}

/// `ok\n` with two descriptors, though the client asked for one: `cmsg_space!(ScmRights(1))` is
/// rounded up to hold more, so the kernel sets no MSG_CTRUNC; the count check catches it.
#[test]
fn a_reply_with_2_descriptors_is_an_error() {
    assert_the_client_fails_against_ok_with(2, |path| {
        let shown = path.display();
        format!("lesson11-client: read {shown}: not a reply: \"ok\\n\" with 2 descriptors\n")
    });
}

/// A fake server that reads the request line, then writes `reply` in pieces and closes.
fn answering(dir: &Path, reply: Vec<u8>) -> (PathBuf, FakeServer) {
    fake_server(dir, move |mut stream: UnixStream| {
        let mut line = String::new();
        BufReader::new(&stream).read_line(&mut line).expect("read the request");
        for piece in reply.chunks(1000) {
            stream.write_all(piece).expect("write the reply");
        }
    })
}

/// An `error: ` line longer than one `recvmsg` takes (4096 bytes) is printed whole, with its
/// newline: the client reads on to EOF.
#[test]
fn a_long_error_line_is_printed_whole() {
    let dir = temp_dir();
    let line = format!("error: {}\n", "x".repeat(6000));
    let (path, fake) = answering(dir.path(), line.clone().into_bytes());
    client().arg(&path).arg("hello.txt").assert().code(1).stdout("").stderr(line);
    fake.join().expect("the fake server");
}

/// An `error: ` line's control characters are printed escaped: a server's words cannot drive
/// the terminal (clear it, recolour it) or forge a line.
#[test]
fn an_error_line_s_control_characters_are_printed_escaped() {
    let dir = temp_dir();
    let (path, fake) = answering(dir.path(), b"error: \x1b[2J\x1b[31mred\rforged\n".to_vec());
    let shown = r"error: \u{1b}[2J\u{1b}[31mred\rforged";
    client().arg(&path).arg("x").assert().code(1).stdout("").stderr(format!("{shown}\n"));
    fake.join().expect("the fake server");
}

/// The real server's refusal of a long name with an escape byte in it: one line, whole, escaped.
#[test]
fn a_refused_long_name_is_one_whole_escaped_line() {
    let served = serve_files(server(), &[]);
    let name = OsString::from_vec([&[0x1b; 3000][..], b"/"].concat());
    let out = client().arg(&served.path).arg(name).output().expect("run the client");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let shown = r"\x1b".repeat(64);
    let line = format!("error: \"{shown}…\" is not a file name (no '/', not '.' or '..')\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), line);
}

/// The received descriptor is close-on-exec (MSG_CMSG_CLOEXEC): a fake server passes the read
/// end of a pipe whose write end stays open, so the client blocks reading it, and
/// /proc/CLIENT/fdinfo shows its flags: O_CLOEXEC is octal 02000000.
#[test]
fn the_received_descriptor_is_close_on_exec() {
    let dir = temp_dir();
    let (reader, writer) = io::pipe().expect("make a pipe");
    let inode = rustix::fs::fstat(&reader).expect("fstat the pipe").st_ino;
    let (path, fake) = fake_server(dir.path(), move |stream: UnixStream| {
        let mut line = String::new();
        BufReader::new(&stream).read_line(&mut line).expect("read the request");
        let fds = [reader.as_fd()];
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        assert!(control.push(SendAncillaryMessage::ScmRights(&fds)), "room for one");
        let sent = sendmsg(&stream, &[IoSlice::new(b"ok\n")], &mut control, SendFlags::empty());
        assert_eq!(sent.expect("sendmsg"), 3);
    });
    let mut cmd = Command::new(cargo_bin!("lesson11-client"));
    cmd.arg(&path).arg("pipe");
    let mut client = Server::spawn_cmd(cmd, &path);
    fake.join().expect("the fake server");
    let fd_dir = format!("/proc/{}/fd", client.pid().as_raw_nonzero());
    let pipe = format!("pipe:[{inode}]");
    let mut received = None;
    wait_until("the client holds the pipe", || {
        let entries = fs::read_dir(&fd_dir).expect("list the client's descriptors");
        received = entries.flatten().find(|entry| {
            fs::read_link(entry.path()).is_ok_and(|target| target.as_os_str() == pipe.as_str())
        });
        received.is_some()
    });
    let fd = received.expect("found").file_name();
    let fdinfo = format!("/proc/{}/fdinfo/{}", client.pid().as_raw_nonzero(), fd.display());
    let info = fs::read_to_string(&fdinfo).expect("read fdinfo");
    let flags = info.lines().find_map(|line| line.strip_prefix("flags:")).expect("a flags line");
    let flags = u32::from_str_radix(flags.trim(), 8).expect("octal flags");
    assert_ne!(flags & 0o2000000, 0, "received without close-on-exec: {fdinfo}:\n{info}");
    drop(writer);
    assert!(client.wait_exit().success(), "{}", client.output());
}
