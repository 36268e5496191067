//! The decoder is a pure function over bytes, so it is tested as one: with properties that must
//! hold for any input (proptest), and with the fuzz target in ../fuzz/ for the nightly-minded.

use lesson08::{Decoded, Decoder, HEADER, TooLong, decode, encode};
use proptest::prelude::*;

/// Feed `stream` to a decoder in pieces cut at `cuts`; every frame it yields, or the error.
fn decode_in_pieces(stream: &[u8], cuts: &[usize], max: usize) -> Result<Vec<Vec<u8>>, TooLong> {
    let mut decoder = Decoder::new(max);
    let mut frames = Vec::new();
    let mut cuts: Vec<usize> = cuts.iter().map(|cut| cut % (stream.len() + 1)).collect();
    cuts.sort_unstable();
    let mut start = 0;
    for end in cuts.into_iter().chain([stream.len()]) {
        frames.extend(decoder.push(&stream[start..end])?);
        assert!(decoder.capacity() <= HEADER + max + 8, "allocated {}", decoder.capacity());
        start = end;
    }
    Ok(frames)
}

fn payloads() -> impl Strategy<Value = Vec<Vec<u8>>> {
    prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 0..8)
}

proptest! {
    /// encode → decode gives back each payload, and consumes exactly the frame.
    #[test]
    fn encode_then_decode_round_trips(payload in prop::collection::vec(any::<u8>(), 0..2000)) {
        let frame = encode(&payload).expect("small enough");
        prop_assert_eq!(
            decode(&frame, payload.len()),
            Ok(Decoded::Frame { payload: &payload[..], consumed: frame.len() })
        );
    }

    /// However a valid stream is split into reads, the same frames come out, in order.
    #[test]
    fn any_split_of_a_valid_stream_gives_the_same_frames(
        payloads in payloads(),
        cuts in prop::collection::vec(any::<usize>(), 0..20),
    ) {
        let stream: Vec<u8> = payloads.iter().flat_map(|p| encode(p).expect("small")).collect();
        prop_assert_eq!(decode_in_pieces(&stream, &cuts, 300), Ok(payloads));
    }

    /// Arbitrary bytes, arbitrarily split: no panic, and never more allocated than the cap
    /// allows (checked after every piece in `decode_in_pieces`).
    #[test]
    fn arbitrary_bytes_never_panic_nor_allocate_past_the_cap(
        bytes in prop::collection::vec(any::<u8>(), 0..2000),
        cuts in prop::collection::vec(any::<usize>(), 0..20),
        max in 0usize..600,
    ) {
        if let Ok(frames) = decode_in_pieces(&bytes, &cuts, max) {
            prop_assert!(frames.iter().all(|frame| frame.len() <= max));
        }
    }

    /// A header over the cap is refused as soon as it is complete, with no payload yet.
    #[test]
    fn a_header_over_the_cap_is_refused_at_once(len in 1u32.., max in 0usize..1 << 20) {
        prop_assume!(len as usize > max);
        let header = len.to_be_bytes();
        prop_assert_eq!(
            decode(&header, max),
            Err(TooLong { len: u64::from(len), max })
        );
    }
}

/// The boundaries, by hand: less than a header, an empty frame, a partial payload.
#[test]
fn incomplete_input_says_how_much_is_missing() {
    assert_eq!(decode(&[], 10), Ok(Decoded::Incomplete { needed: 4 }));
    assert_eq!(decode(&[0, 0], 10), Ok(Decoded::Incomplete { needed: 2 }));
    assert_eq!(decode(&[0, 0, 0, 0], 10), Ok(Decoded::Frame { payload: &[], consumed: 4 }));
    assert_eq!(decode(&[0, 0, 0, 3, b'a'], 10), Ok(Decoded::Incomplete { needed: 2 }));
    let mut decoder = Decoder::new(10);
    assert_eq!(decoder.push(&[0, 0, 0, 3, b'a']), Ok(vec![]));
    assert_eq!(decoder.partial().as_deref(), Some("1 of 3 payload bytes arrived"));
}
