//! Fuzzes the answer framer: any bytes from a backend, delivered in any
//! pieces, are framed or refused; a framed body never uses bytes past its
//! end, and the same bytes framed in one piece give the same body.
#![no_main]

use h1::{parse_head, Asked, BodyReader, Framing};
use libfuzzer_sys::fuzz_target;

/// The body read from `wire` after its head, feeding at most `step` bytes
/// at a time: the body and the bytes used, or `None` if refused.
fn frame(wire: &[u8], asked: Asked, step: usize) -> Option<(Vec<u8>, usize, bool)> {
    let head = parse_head(wire, asked).ok()??;
    let mut reader = BodyReader::new(head.framing);
    let mut at = head.len;
    let mut body = Vec::new();
    while !reader.is_done() && at < wire.len() {
        let end = at.saturating_add(step).min(wire.len());
        let piece = reader.feed(&wire[at..end]).ok()?;
        assert!(piece.used <= end - at, "used more than it was given");
        assert!(piece.data.end <= piece.used, "data past what was used");
        body.extend_from_slice(&wire[at..end][piece.data]);
        at += piece.used;
        if piece.used == 0 {
            break;
        }
    }
    if reader.is_done() {
        match head.framing {
            Framing::Length(n) => assert_eq!(body.len() as u64, n, "a length not kept"),
            Framing::Empty | Framing::Upgrade => assert!(body.is_empty(), "a body where none is"),
            Framing::Chunked | Framing::Close => {}
        }
    }
    Some((body, at, reader.is_done()))
}

fuzz_target!(|input: &[u8]| {
    let Some((&flags, wire)) = input.split_first() else {
        return;
    };
    let asked = Asked {
        head: flags & 1 != 0,
        upgrade: flags & 2 != 0,
    };
    let step = usize::from(flags >> 2) + 1;
    let whole = frame(wire, asked, usize::MAX);
    let pieces = frame(wire, asked, step);
    // A refusal may come earlier in one piece than in several only if the
    // bad byte was not reached; when both frame, they agree.
    if let (Some(whole), Some(pieces)) = (&whole, &pieces) {
        if whole.2 && pieces.2 {
            assert_eq!(whole, pieces, "pieces changed the framing");
        }
    }
});
