//! For the fuzz targets only (`fuzz/`): not part of the crate's API, and
//! free to change with them.
//!
//! The frontend message decoder is internal; this drives it over a byte
//! stream as a connection would and checks what must hold for any input.

use bytes::BytesMut;
use pgwire::api::DefaultClient;
use tokio_util::codec::Decoder;

use crate::codec::{Inbound, WireCodec};

/// What a byte stream decoded to: one line per item, `Debug`-formatted.
pub type Decoded = Vec<String>;

/// Decodes `chunks`, arriving one after the other, with a fresh decoder:
/// after the startup packet when `typed`, else before it. Panics if the
/// decoder breaks one of its promises: it never fails, makes progress with
/// every item, and reads nothing after a fatal error.
pub fn decode_frontend(chunks: &[&[u8]], typed: bool, max_message_bytes: usize) -> Decoded {
    let client = DefaultClient::new(([127, 0, 0, 1], 1).into(), false);
    let mut codec = WireCodec::new(client, max_message_bytes);
    if typed {
        codec.skip_startup();
    }
    let total: usize = chunks.iter().map(|c| c.len()).sum();
    let mut out = Vec::new();
    let mut src = BytesMut::new();
    let mut fatal = false;
    for chunk in chunks {
        src.extend_from_slice(chunk);
        loop {
            let before = src.len();
            let item = codec
                .decode(&mut src)
                .expect("the frontend decoder never returns an I/O error");
            let Some(item) = item else { break };
            assert!(!fatal, "an item decoded after a fatal error: {item:?}");
            // Every item consumes at least a message header, so a stream
            // cannot yield more items than it has headers' worth of bytes.
            assert!(
                src.len() < before,
                "an item decoded without consuming input: {item:?}"
            );
            fatal |= matches!(item, Inbound::Fatal(_));
            out.push(format!("{item:?}"));
            assert!(
                out.len() <= total / 5 + 1,
                "more items than message headers"
            );
        }
    }
    out
}
