//! What lesson 14's tests share: the binaries under test, curl as the outside client, and a
//! bare HTTP/1.1 connection for what curl will not do (hold a connection idle, stop mid-body).

#![allow(dead_code)] // each test file uses its own part of this

use std::env;
use std::fs::{self, Permissions};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use assert_cmd::cargo::cargo_bin;
use uds_test_support::{DEADLINE, Server, TempDir, as_nobody, have_tool, temp_dir};

/// The server under test: `UDS_SERVER` (an absolute path), else this lesson's own. The
/// exercise checks set it; the lesson's own tests leave it unset.
pub fn server() -> PathBuf {
    env::var_os("UDS_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| cargo_bin!("lesson14-server").to_owned())
}

/// The client under test: `UDS_CLIENT` (an absolute path), else this lesson's own.
pub fn client() -> PathBuf {
    env::var_os("UDS_CLIENT")
        .map(PathBuf::from)
        .unwrap_or_else(|| cargo_bin!("lesson14-client").to_owned())
}

/// The server under test on `lesson14.sock` in a private temp dir, with `extra` flags after the
/// path. Bind all three: the server is dropped (killed) before its directory.
pub fn start(extra: &[&str]) -> (TempDir, PathBuf, Server) {
    let dir = temp_dir();
    let path = dir.path().join("lesson14.sock");
    let mut args = vec![path.to_str().expect("a UTF-8 temp path")];
    args.extend(extra);
    let server = Server::start(&server(), &path, &args);
    (dir, path, server)
}

/// Run the client under test with `args`: its exit code, stdout and stderr.
pub fn run_client<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> (Option<i32>, String, String) {
    let out = assert_cmd::Command::new(client())
        .args(args)
        .timeout(DEADLINE)
        .output()
        .expect("run the client");
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    (out.status.code(), text(&out.stdout), text(&out.stderr))
}

/// Let `nobody` reach the socket at `path`: its directory (private to root, from `start`)
/// opened to 0755. The socket's own mode is the server's `--mode`.
pub fn open_to_nobody(path: &Path) {
    let dir = path.parent().expect("the socket's directory");
    fs::set_permissions(dir, Permissions::from_mode(0o755)).expect("chmod 755 the temp dir");
}

/// curl, as the user `nobody` (root only: see `is_root`).
pub fn curl_as_nobody(path: &Path, args: &[&str]) -> Reply {
    let mut cmd = as_nobody(Path::new("curl"));
    curl_args(&mut cmd, path, args);
    parse_curl(cmd)
}

/// Is curl here? Skips outside CI, fails in CI (see `have_tool`).
pub fn have_curl() -> bool {
    have_tool("curl", "apt-get install -y curl")
}

/// An HTTP response: status code, header block (lower-case names, as hyper sends them) and body.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub head: String,
    pub body: String,
}

impl Reply {
    /// The value of header `name` (lower case), if the response has it.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case(name).then(|| value.trim())
        })
    }
}

/// `curl -sS -i --unix-socket PATH ARGS...`, bounded by `--max-time`: the final response (curl
/// shows a `100 Continue` first when it asked for one).
pub fn curl(path: &Path, args: &[&str]) -> Reply {
    let mut cmd = Command::new("curl");
    curl_args(&mut cmd, path, args);
    parse_curl(cmd)
}

/// The arguments every curl here gets: quiet but for errors, the response head too, a deadline.
fn curl_args(cmd: &mut Command, path: &Path, args: &[&str]) {
    let max_time = DEADLINE.as_secs().to_string();
    cmd.args(["-sS", "-i", "--max-time", &max_time, "--unix-socket"]).arg(path).args(args);
}

/// Run a prepared curl command and parse its `-i` output.
fn parse_curl(mut cmd: Command) -> Reply {
    let out = cmd.output().unwrap_or_else(|err| panic!("run {cmd:?}: {err}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{cmd:?} failed ({}): {stderr}\n{stdout}", out.status);
    let mut rest = stdout.as_str();
    loop {
        let (head, body) = rest
            .split_once("\r\n\r\n")
            .unwrap_or_else(|| panic!("{cmd:?}: no response head in its output:\n{stdout}"));
        let status = status_code(head);
        if status >= 200 {
            return Reply { status, head: head.to_owned(), body: body.to_owned() };
        }
        rest = body; // an interim response (100 Continue): the real one follows
    }
}

fn status_code(head: &str) -> u16 {
    let status = head.split(' ').nth(1).and_then(|code| code.parse().ok());
    status.unwrap_or_else(|| panic!("not an HTTP response head: {head:?}"))
}

/// A bare HTTP/1.1 connection to the server, with a deadline on every read and write.
pub struct Http {
    pub stream: UnixStream,
    reader: BufReader<UnixStream>,
}

impl Http {
    pub fn connect(path: &Path) -> Http {
        let stream = UnixStream::connect(path).expect("connect");
        stream.set_read_timeout(Some(DEADLINE)).expect("set a read timeout");
        stream.set_write_timeout(Some(DEADLINE)).expect("set a write timeout");
        let reader = BufReader::new(stream.try_clone().expect("clone the stream"));
        Http { stream, reader }
    }

    /// Write raw bytes: a request, or a piece of one.
    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write to the server");
    }

    /// Read one response: its head, then a body of its Content-Length.
    pub fn reply(&mut self) -> Reply {
        let reply = self.try_reply();
        reply.expect("a whole response, but the connection ended (EOF, a reset, the deadline)")
    }

    /// One response, or None if the connection ends (EOF, a reset, the read deadline) before a
    /// whole one came.
    pub fn try_reply(&mut self) -> Option<Reply> {
        let mut head = String::new();
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line).ok()? == 0 {
                return None;
            }
            if line == "\r\n" {
                break;
            }
            head.push_str(&line);
        }
        let mut reply = Reply { status: status_code(&head), head, body: String::new() };
        let length = reply.header("content-length").map_or(0, |n| n.parse().expect("a length"));
        let mut body = vec![0; length];
        self.reader.read_exact(&mut body).ok()?;
        reply.body = String::from_utf8(body).expect("a UTF-8 body");
        Some(reply)
    }

    /// `GET /health`, keeping the connection alive; its response.
    pub fn health(&mut self) -> Reply {
        self.send(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n");
        self.reply()
    }

    /// Does the server close the connection (EOF) without sending more, within `limit`?
    pub fn closed_within(&mut self, limit: Duration) -> bool {
        self.stream.set_read_timeout(Some(limit)).expect("set a read timeout");
        let mut rest = Vec::new();
        matches!(self.reader.read_to_end(&mut rest), Ok(0))
    }
}
