//! Lesson 08's one idea: frames carry any bytes, of any size up to the cap, however the kernel
//! splits them; the cap is checked before a byte is allocated.

mod common;

use std::fs;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::Duration;

use assert_cmd::cargo::cargo_bin;
use common::{every_byte_value, frame, read_frame, split_frames, upper};
use rustix::process::Signal;
use uds_test_support::{Conn, Server, exchange, have_tool, start_in_temp_dir, temp_dir};

fn server() -> &'static Path {
    cargo_bin!("lesson08-server")
}

fn client() -> &'static Path {
    cargo_bin!("lesson08-client")
}

/// Send one payload as a frame on a fresh connection, half-close, and return the reply frames.
fn round_trip(path: &Path, payload: &[u8]) -> Vec<Vec<u8>> {
    split_frames(&exchange(path, &frame(payload)))
}

/// 1 MiB and 8 MiB (the default cap, exactly) of every byte value come back whole, in order,
/// upper-cased and nothing else: newlines, zeros and bytes over 127 included.
#[test]
fn a_1_mib_and_an_8_mib_message_with_every_byte_value_round_trip_intact() {
    let (_dir, path, _server) = start_in_temp_dir(server(), "lesson08.sock");
    for len in [1 << 20, 8 << 20] {
        let payload = every_byte_value(len);
        let replies = round_trip(&path, &payload);
        assert_eq!(replies.len(), 1, "one reply frame for one request frame");
        assert!(replies[0] == upper(&payload), "the {len}-byte reply differs from the request");
    }
}

/// The seeds' server does one `read` into a 1 KiB buffer and answers what it got. It cannot
/// know a message is longer: on a 1 MiB message it answers the first kilobyte (or less) as if
/// that were all. Framing reads until the announced length has arrived.
#[test]
fn one_1_kib_read_truncates_where_a_frame_arrives_whole() {
    let (_dir, path, _server) = start_in_temp_dir(server(), "lesson08.sock");
    let payload = every_byte_value(1 << 20);
    // The seeds' way, against our own socket pair: a writer, and a reader that reads once.
    let (mut writer, mut reader) = UnixStream::pair().expect("a socket pair");
    let sent = payload.clone();
    let writing = thread::spawn(move || writer.write_all(&sent));
    let mut buf = [0; 1024];
    let got = reader.read(&mut buf).expect("one read");
    assert!(got <= 1024 && got < payload.len(), "one 1 KiB read got {got} bytes");
    drop(reader);
    let _ = writing.join(); // EPIPE: the reader is gone, as the seeds' server would be
    // The framed way gets all of it.
    assert!(round_trip(&path, &payload)[0] == upper(&payload));
}

/// A frame sent one byte at a time, with pauses, is reassembled and answered once.
#[test]
fn a_frame_sent_one_byte_at_a_time_is_reassembled() {
    let (_dir, path, _server) = start_in_temp_dir(server(), "lesson08.sock");
    let mut conn = Conn::connect(&path);
    for byte in frame(b"one\nbyte\0at a time") {
        conn.send(&[byte]);
        thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(read_frame(conn.stream()), b"ONE\nBYTE\0AT A TIME");
}

/// Two frames in one write, and a zero-length frame, are answered frame by frame.
#[test]
fn frames_back_to_back_and_an_empty_frame_are_each_answered() {
    let (_dir, path, _server) = start_in_temp_dir(server(), "lesson08.sock");
    let mut input = frame(b"first");
    input.extend(frame(b""));
    input.extend(frame(b"third"));
    let replies = split_frames(&exchange(&path, &input));
    assert_eq!(replies, [b"FIRST".to_vec(), Vec::new(), b"THIRD".to_vec()]);
}

/// Peak memory (VmHWM in /proc/PID/status), in KiB.
fn peak_rss_kib(pid: i32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc status");
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).expect("a VmHWM line");
    line.split_whitespace().nth(1).and_then(|kib| kib.parse().ok()).expect("VmHWM in kB")
}

/// A header announcing 2 GiB, with the default cap: the client gets the error frame, and the
/// server's peak memory stays small — it allocated nothing for the announced payload.
#[test]
fn a_2_gib_header_is_refused_without_allocating() {
    let (_dir, path, server) = start_in_temp_dir(server(), "lesson08.sock");
    let pid = server.pid().as_raw_nonzero().get();
    let mut conn = Conn::connect(&path);
    conn.send(&(2u32 << 30).to_be_bytes());
    let reply = read_frame(conn.stream());
    assert_eq!(
        String::from_utf8_lossy(&reply),
        "error: frame of 2147483648 bytes is over the 8388608-byte limit"
    );
    assert!(conn.at_eof(), "the server closes after the error frame");
    let peak = peak_rss_kib(pid);
    assert!(peak < 64 << 10, "peak RSS {peak} KiB: the server allocated for the header");
}

/// A smaller `--max-frame` is the limit named in the error frame; one byte under it is served.
#[test]
fn max_frame_sets_the_cap() {
    let dir = temp_dir();
    let path = dir.path().join("lesson08.sock");
    let mut server =
        Server::start(server(), &path, &[path.as_os_str(), "--max-frame".as_ref(), "10".as_ref()]);
    assert_eq!(round_trip(&path, b"ten bytes!"), [b"TEN BYTES!".to_vec()]);
    let replies = round_trip(&path, b"eleven byte");
    assert_eq!(replies, [b"error: frame of 11 bytes is over the 10-byte limit".to_vec()]);
    server.wait_for_line_containing("frame of 11 bytes is over the 10-byte limit; closed");
}

/// EOF inside a header or a payload: nothing answered, one clear log line.
#[test]
fn eof_inside_a_frame_is_a_clear_log_line() {
    let (_dir, path, mut server) = start_in_temp_dir(server(), "lesson08.sock");
    assert!(exchange(&path, &[0, 0]).is_empty());
    server.wait_for_line_containing("EOF inside a frame: 2 of 4 header bytes arrived");
    assert!(exchange(&path, &[0, 0, 0, 5, b'a', b'b']).is_empty());
    server.wait_for_line_containing("EOF inside a frame: 2 of 5 payload bytes arrived");
    // Between frames it is a normal close.
    assert_eq!(round_trip(&path, b"done"), [b"DONE".to_vec()]);
    server.wait_for_line_containing("closed, frames answered: 1");
}

/// A frame that never completes is cut off at --idle-timeout-ms with an error frame.
#[test]
fn a_frame_that_never_completes_is_cut_off() {
    let dir = temp_dir();
    let path = dir.path().join("lesson08.sock");
    let args = [path.as_os_str(), "--idle-timeout-ms".as_ref(), "300".as_ref()];
    let _server = Server::start(server(), &path, &args);
    let mut conn = Conn::connect(&path);
    conn.send(&[0, 0, 0, 9, b'x']);
    assert_eq!(read_frame(conn.stream()), b"error: no complete frame in 300 ms");
}

/// The client: each MESSAGE a frame, each reply printed with a newline added.
#[test]
fn the_client_prints_each_reply_on_its_own_line() {
    let (_dir, path, _server) = start_in_temp_dir(server(), "lesson08.sock");
    let output = Command::new(client()).arg(&path).args(["hello", "two\nlines", ""]).output();
    let output = output.expect("run the client");
    assert!(output.status.success(), "{output:?}");
    assert_eq!(output.stdout, b"HELLO\nTWO\nLINES\n\n");
}

/// With no MESSAGE, stdin is one frame and the reply is raw bytes: binary-safe end to end.
#[test]
fn the_client_is_binary_safe_from_stdin_to_stdout() {
    let (_dir, path, _server) = start_in_temp_dir(server(), "lesson08.sock");
    let payload = every_byte_value(1 << 20);
    let mut child = Command::new(client())
        .arg(&path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the client");
    let mut stdin = child.stdin.take().expect("piped stdin");
    let input = payload.clone();
    let feeding = thread::spawn(move || stdin.write_all(&input));
    let output = child.wait_with_output().expect("the client's output");
    feeding.join().expect("the feeding thread").expect("write the client's stdin");
    assert!(output.status.success(), "{:?}", output.status);
    assert!(output.stdout == upper(&payload), "stdout is not the upper-cased input");
}

/// An error frame goes to the client's stderr, and the exit code is 1.
#[test]
fn the_client_reports_an_error_frame_and_exits_1() {
    let dir = temp_dir();
    let path = dir.path().join("lesson08.sock");
    let args = [path.as_os_str(), "--max-frame".as_ref(), "3".as_ref()];
    let _server = Server::start(server(), &path, &args);
    let output = Command::new(client()).arg(&path).arg("four").output().expect("run the client");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr, "error: frame of 4 bytes is over the 3-byte limit\n");
}

/// Python's `struct.pack('>I', n)` frames are ours: an outside client agrees.
#[test]
fn a_python_struct_client_agrees() {
    if !have_tool("python3", "apt-get install python3") {
        return;
    }
    let (_dir, path, _server) = start_in_temp_dir(server(), "lesson08.sock");
    let script = r#"
import socket, struct, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
payload = b"hi\nthere\x00"
s.sendall(struct.pack('>I', len(payload)) + payload)
def exact(n):
    data = b""
    while len(data) < n:
        chunk = s.recv(n - len(data))
        assert chunk, "EOF"
        data += chunk
    return data
(n,) = struct.unpack('>I', exact(4))
sys.stdout.buffer.write(exact(n))
"#;
    let output = Command::new("python3").args(["-c", script]).arg(&path).output();
    let output = output.expect("run python3");
    assert!(output.status.success(), "{output:?}");
    assert_eq!(output.stdout, b"HI\nTHERE\0");
}

/// Lesson 03's shutdown still holds: SIGTERM, exit 0, the socket file removed.
#[test]
fn sigterm_still_shuts_down_cleanly() {
    let (_dir, path, server) = start_in_temp_dir(server(), "lesson08.sock");
    assert_eq!(round_trip(&path, b"bye"), [b"BYE".to_vec()]);
    server.signal(Signal::TERM);
    let (status, output) = server.finish();
    assert_eq!(status.code(), Some(0), "{output}");
    assert!(!path.exists(), "{output}");
}
