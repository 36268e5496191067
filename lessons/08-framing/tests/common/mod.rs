//! Frames for the tests, written out by hand (not with the lesson's own `encode`/`decode`), so
//! a bug in the lesson's code cannot hide itself.

#![allow(dead_code)] // each test file uses its own share

use std::io::Read;
use std::os::unix::net::UnixStream;

/// `payload` with its 4-byte big-endian length in front.
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let mut bytes =
        u32::try_from(payload.len()).expect("a test frame under 4 GiB").to_be_bytes().to_vec();
    bytes.extend_from_slice(payload);
    bytes
}

/// Read one whole frame from `stream` (read_exact: the kernel may hand it over in pieces).
pub fn read_frame(mut stream: &UnixStream) -> Vec<u8> {
    let mut header = [0; 4];
    stream.read_exact(&mut header).expect("read a frame header");
    let mut payload = vec![0; u32::from_be_bytes(header) as usize];
    stream.read_exact(&mut payload).expect("read a frame payload");
    payload
}

/// Split everything a server sent into its frames; panics on a partial one.
pub fn split_frames(mut bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut frames = Vec::new();
    while !bytes.is_empty() {
        let (header, rest) = bytes.split_first_chunk::<4>().expect("a whole header");
        let len = u32::from_be_bytes(*header) as usize;
        assert!(rest.len() >= len, "a partial frame: {} of {len} bytes", rest.len());
        frames.push(rest[..len].to_vec());
        bytes = &rest[len..];
    }
    frames
}

/// Every byte value, over and over, `len` bytes in all: a payload no line protocol carries.
pub fn every_byte_value(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 256) as u8).collect()
}

/// What the server answers: ASCII letters upper-cased, every other byte unchanged.
pub fn upper(payload: &[u8]) -> Vec<u8> {
    payload.to_ascii_uppercase()
}
