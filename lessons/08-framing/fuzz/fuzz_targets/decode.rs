//! Feed the decoder whatever libFuzzer makes up: the first two bytes choose the cap and where
//! to split, the rest is the stream. It must never panic, never yield a frame over the cap, and
//! never hold more than the cap plus a header (plus the 8 bytes of a Vec's first allocation).

#![no_main]

use lesson08::{Decoder, HEADER};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [max, step, stream @ ..] = data else { return };
    let max = usize::from(*max) * 16;
    let step = usize::from(*step).max(1);
    let mut decoder = Decoder::new(max);
    for piece in stream.chunks(step) {
        match decoder.push(piece) {
            Ok(frames) => assert!(frames.iter().all(|frame| frame.len() <= max)),
            Err(_) => return, // an over-long header: the server closes here
        }
        assert!(decoder.capacity() <= HEADER + max + 8);
    }
});
