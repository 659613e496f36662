//! The PostgreSQL frontend message decoder on arbitrary bytes, before and
//! after the startup packet. Besides not panicking, the decoder must cut
//! the same messages out of a stream however it arrives in pieces.
//!
//! Input: one control byte (bit 0: after startup; bits 1–7: where the
//! stream is split), then the bytes a client sends.

#![no_main]

use libfuzzer_sys::fuzz_target;
use resqlite_wire::fuzzing::decode_frontend;

/// Small enough that the fuzzer reaches the refuse-and-skip path of
/// oversized messages.
const MAX_MESSAGE_BYTES: usize = 1024;

fuzz_target!(|data: &[u8]| {
    let Some((&control, stream)) = data.split_first() else {
        return;
    };
    let typed = control & 1 == 1;
    let whole = decode_frontend(&[stream], typed, MAX_MESSAGE_BYTES);
    // Split into pieces of a length picked by the control byte, as TCP
    // may deliver them.
    let piece = usize::from(control >> 1) + 1;
    let pieces: Vec<&[u8]> = stream.chunks(piece).collect();
    let split = decode_frontend(&pieces, typed, MAX_MESSAGE_BYTES);
    assert_eq!(whole, split, "decoding depends on how the bytes arrive");
});
