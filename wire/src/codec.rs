//! Framing of frontend messages, checked before pgwire decodes them.
//!
//! pgwire's decoders read past a message's end or panic when a body is
//! shorter than its fields, and turn invalid UTF-8 into U+FFFD silently. So
//! this codec cuts each message out by its length, checks its layout and
//! its strings, and only then lets pgwire decode exactly those bytes. A
//! message over the size limit is refused from its header and skipped as it
//! arrives, never buffered.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::{Buf, BytesMut};
use pgwire::api::DefaultClient;
use pgwire::messages::{DecodeContext, PgWireBackendMessage, PgWireFrontendMessage};
use tokio_util::codec::{Decoder, Encoder};

use crate::errors::protocol_violation;
use crate::executor::SqlError;

/// PostgreSQL's limit for a startup packet (`MAX_STARTUP_PACKET_LENGTH`).
const MAX_STARTUP_BYTES: usize = 10_000;

/// What the connection reads next.
#[derive(Debug)]
pub(crate) enum Inbound {
    /// A well-formed message.
    Message(PgWireFrontendMessage),
    /// A message refused whole; the connection goes on. `extended`: it was
    /// part of the extended protocol, so the client next waits for Sync.
    Refused { error: SqlError, extended: bool },
    /// The byte stream cannot be followed any more: report and close.
    Fatal(SqlError),
}

/// Messages at least this long count against the server's
/// [`ReceiveBudget`] while they are being received.
const BUDGETED_MESSAGE_BYTES: usize = 64 << 10;

/// Bytes of large messages being received at once, across all connections
/// of one server: a message cut off half-way holds its buffer until the
/// connection ends, and with a full statement of 8 MiB per connection
/// `max_connections` such clients would pin far more than a node may use.
/// A large message that would pass the budget is refused from its header
/// (53000) and skipped as it arrives, not buffered; the connection goes on.
#[derive(Debug)]
pub(crate) struct ReceiveBudget {
    used: AtomicUsize,
    limit: usize,
}

impl ReceiveBudget {
    pub(crate) fn new(limit: usize) -> Arc<Self> {
        Arc::new(ReceiveBudget {
            used: AtomicUsize::new(0),
            limit,
        })
    }

    /// Takes `n` bytes if they fit.
    fn take(&self, n: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(n).filter(|&total| total <= self.limit)
            })
            .is_ok()
    }

    fn give_back(&self, n: usize) {
        self.used.fetch_sub(n, Ordering::AcqRel);
    }
}

/// The server side of the protocol's framing. It also holds the client's
/// connection state, which decoding depends on (startup vs typed messages,
/// protocol version).
pub(crate) struct WireCodec {
    pub(crate) client: DefaultClient<()>,
    max_message_bytes: usize,
    /// Bytes of a refused message still to skip.
    discard: usize,
    /// The startup packet has been read: messages now start with a type byte.
    typed: bool,
    /// A fatal error was reported: nothing more is read.
    failed: bool,
    /// Shared by the server's connections; `held` bytes of it are the
    /// message being received here.
    budget: Arc<ReceiveBudget>,
    held: usize,
}

impl Drop for WireCodec {
    fn drop(&mut self) {
        self.budget.give_back(std::mem::take(&mut self.held));
    }
}

impl WireCodec {
    pub(crate) fn new(client: DefaultClient<()>, max_message_bytes: usize) -> Self {
        WireCodec {
            client,
            max_message_bytes,
            discard: 0,
            typed: false,
            failed: false,
            budget: ReceiveBudget::new(usize::MAX),
            held: 0,
        }
    }

    /// Counts large messages against `budget`, shared with the server's
    /// other connections.
    pub(crate) fn with_budget(mut self, budget: Arc<ReceiveBudget>) -> Self {
        self.budget = budget;
        self
    }

    /// Starts after the startup packet, as the fuzz targets need (see
    /// `crate::fuzzing`); a connection gets there by decoding one.
    pub(crate) fn skip_startup(&mut self) {
        self.typed = true;
    }

    fn context(&self) -> DecodeContext {
        let mut ctx = DecodeContext::new(self.client.protocol_version);
        // pgwire's TLS negotiation has already consumed any SSLRequest.
        ctx.awaiting_frontend_ssl = false;
        ctx.awaiting_frontend_startup = !self.typed;
        ctx
    }

    fn decode_untyped(&mut self, src: &mut BytesMut) -> Option<Inbound> {
        if src.len() < 4 {
            return None;
        }
        let len = i32::from_be_bytes([src[0], src[1], src[2], src[3]]);
        let Some(len) = usize::try_from(len)
            .ok()
            .filter(|l| (8..=MAX_STARTUP_BYTES).contains(l))
        else {
            return Some(Inbound::Fatal(protocol_violation(format!(
                "invalid length of startup packet: {len}"
            ))));
        };
        if src.len() < len {
            src.reserve(len - src.len());
            return None;
        }
        let mut frame = src.split_to(len);
        match PgWireFrontendMessage::decode(&mut frame, &self.context()) {
            Ok(Some(message @ PgWireFrontendMessage::Startup(_))) => {
                self.typed = true;
                Some(Inbound::Message(message))
            }
            Ok(Some(message @ PgWireFrontendMessage::CancelRequest(_))) => {
                Some(Inbound::Message(message))
            }
            Ok(_) | Err(_) => Some(Inbound::Fatal(protocol_violation(
                "invalid startup packet: expected a StartupMessage or a CancelRequest \
                 with protocol version 3",
            ))),
        }
    }

    fn decode_typed(&mut self, src: &mut BytesMut) -> Option<Inbound> {
        if self.discard > 0 {
            let n = self.discard.min(src.len());
            src.advance(n);
            self.discard -= n;
            if self.discard > 0 {
                return None;
            }
        }
        if src.len() < 5 {
            return None;
        }
        let kind = src[0];
        let len = i32::from_be_bytes([src[1], src[2], src[3], src[4]]);
        let Some(body_len) = usize::try_from(len).ok().and_then(|l| l.checked_sub(4)) else {
            return Some(Inbound::Fatal(protocol_violation(format!(
                "invalid message length {len} for message type '{}'",
                kind.escape_ascii()
            ))));
        };
        let Some(extended) = is_extended(kind) else {
            return Some(Inbound::Fatal(protocol_violation(format!(
                "invalid frontend message type '{}'",
                kind.escape_ascii()
            ))));
        };
        if body_len > self.max_message_bytes {
            src.advance(5);
            self.discard = body_len;
            return Some(Inbound::Refused {
                error: statement_too_large(body_len, self.max_message_bytes),
                extended,
            });
        }
        if src.len() < 5 + body_len {
            if body_len >= BUDGETED_MESSAGE_BYTES && self.held == 0 {
                if !self.budget.take(body_len) {
                    src.advance(5);
                    self.discard = body_len;
                    return Some(Inbound::Refused {
                        error: SqlError::new(
                            "53000",
                            format!(
                                "the server is receiving too many large messages at once \
                                 ({} MiB in all); retry",
                                self.budget.limit >> 20
                            ),
                        ),
                        extended,
                    });
                }
                self.held = body_len;
            }
            src.reserve(5 + body_len - src.len());
            return None;
        }
        self.budget.give_back(std::mem::take(&mut self.held));
        let mut frame = src.split_to(5 + body_len);
        if kind == b'F' {
            return Some(Inbound::Refused {
                error: SqlError::new("0A000", "the function call protocol is not supported"),
                extended: false,
            });
        }
        if let Err(error) = check_layout(kind, &frame[5..]) {
            return Some(Inbound::Refused { error, extended });
        }
        Some(
            match PgWireFrontendMessage::decode(&mut frame, &self.context()) {
                Ok(Some(message)) => Inbound::Message(message),
                Ok(None) => Inbound::Refused {
                    error: protocol_violation("incomplete message"),
                    extended,
                },
                Err(e) => Inbound::Refused {
                    error: protocol_violation(format!("invalid message: {e}")),
                    extended,
                },
            },
        )
    }
}

impl Decoder for WireCodec {
    type Item = Inbound;
    type Error = std::io::Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Inbound>, std::io::Error> {
        if self.failed {
            src.clear();
            return Ok(None);
        }
        let item = if self.typed {
            self.decode_typed(src)
        } else {
            self.decode_untyped(src)
        };
        if matches!(item, Some(Inbound::Fatal(_))) {
            self.failed = true;
            src.clear();
        }
        Ok(item)
    }
}

impl Encoder<PgWireBackendMessage> for WireCodec {
    type Error = std::io::Error;

    fn encode(&mut self, item: PgWireBackendMessage, dst: &mut BytesMut) -> std::io::Result<()> {
        item.encode(dst).map_err(Into::into)
    }
}

/// Whether a frontend message type belongs to the extended protocol; None
/// for a type the protocol does not have.
fn is_extended(kind: u8) -> Option<bool> {
    match kind {
        b'P' | b'B' | b'D' | b'E' | b'C' | b'S' | b'H' => Some(true),
        b'Q' | b'X' | b'p' | b'd' | b'c' | b'f' | b'F' => Some(false),
        _ => None,
    }
}

/// Checks that a message body has exactly the fields its type defines, and
/// that its strings are UTF-8. Opaque bodies (password, COPY data) are left
/// to their readers.
fn check_layout(kind: u8, body: &[u8]) -> Result<(), SqlError> {
    let mut b = Body(body);
    match kind {
        b'Q' => {
            b.string("query")?;
        }
        b'P' => {
            b.string("statement name")?;
            b.string("query")?;
            let types = b.u16()?;
            b.skip(4 * usize::from(types))?;
        }
        b'B' => {
            b.string("portal name")?;
            b.string("statement name")?;
            let formats = b.u16()?;
            b.skip(2 * usize::from(formats))?;
            for _ in 0..b.u16()? {
                match b.i32()? {
                    -1 => {}
                    len if len >= 0 => b.skip(len as usize)?,
                    len => return Err(malformed(&format!("invalid parameter length {len}"))),
                }
            }
            let formats = b.u16()?;
            b.skip(2 * usize::from(formats))?;
        }
        b'D' | b'C' => {
            match b.u8()? {
                b'S' | b'P' => {}
                other => {
                    return Err(malformed(&format!(
                        "invalid target '{}': expected 'S' or 'P'",
                        other.escape_ascii()
                    )))
                }
            }
            b.string("name")?;
        }
        b'E' => {
            b.string("portal name")?;
            b.i32()?;
        }
        // Sync, Flush, Terminate and CopyDone have no fields; stray bytes
        // are ignored rather than refused, so a client's Sync always ends
        // an error's skip-until-Sync.
        _ => return Ok(()),
    }
    b.end()
}

/// 54000 for a statement (one message, or a bound statement's text and
/// parameters together) over the front end's limit.
pub(crate) fn statement_too_large(bytes: usize, limit: usize) -> SqlError {
    SqlError::new(
        "54000",
        format!(
            "statement of {bytes} bytes exceeds the maximum statement size of {limit} bytes \
             ({:.1} MiB, SQL text and parameters together); split it into smaller statements",
            limit as f64 / f64::from(1 << 20)
        ),
    )
}

fn malformed(what: &str) -> SqlError {
    protocol_violation(format!("invalid message format: {what}"))
}

/// A cursor over a message body whose reads fail instead of panicking.
struct Body<'a>(&'a [u8]);

impl Body<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], SqlError> {
        if self.0.len() < n {
            return Err(malformed("message is shorter than its fields"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn skip(&mut self, n: usize) -> Result<(), SqlError> {
        self.take(n).map(|_| ())
    }

    fn u8(&mut self) -> Result<u8, SqlError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, SqlError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn i32(&mut self) -> Result<i32, SqlError> {
        let b = self.take(4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A NUL-terminated UTF-8 string.
    fn string(&mut self, what: &str) -> Result<(), SqlError> {
        // CStr's search is std's memchr: a byte loop here would cost a
        // debug build tens of milliseconds per megabyte on the runtime.
        let end = std::ffi::CStr::from_bytes_until_nul(self.0)
            .map_err(|_| malformed(&format!("{what} is not NUL-terminated")))?
            .count_bytes();
        let text = self.take(end + 1)?;
        std::str::from_utf8(&text[..end]).map_err(|e| {
            SqlError::new(
                "22021",
                format!(
                    "invalid byte sequence for encoding \"UTF8\" in the {what} at byte {}",
                    e.valid_up_to()
                ),
            )
        })?;
        Ok(())
    }

    fn end(&self) -> Result<(), SqlError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(malformed("unexpected bytes after the last field"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BufMut;

    fn codec(limit: usize) -> WireCodec {
        let mut c = WireCodec::new(
            DefaultClient::new("127.0.0.1:1".parse().unwrap(), false),
            limit,
        );
        c.typed = true;
        c
    }

    fn frame(kind: u8, body: &[u8]) -> BytesMut {
        let mut b = BytesMut::new();
        b.put_u8(kind);
        b.put_i32(4 + body.len() as i32);
        b.put_slice(body);
        b
    }

    fn decode_all(c: &mut WireCodec, mut src: BytesMut) -> Vec<Inbound> {
        let mut out = Vec::new();
        while let Some(item) = c.decode(&mut src).unwrap() {
            out.push(item);
        }
        out
    }

    fn refused_state(item: &Inbound) -> (&str, bool) {
        match item {
            Inbound::Refused { error, extended } => (error.sqlstate.as_str(), *extended),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn decodes_a_query_and_waits_for_more_bytes() {
        let mut c = codec(1024);
        let mut src = frame(b'Q', b"SELECT 1\0");
        let tail = src.split_off(7);
        assert!(c.decode(&mut src).unwrap().is_none());
        src.unsplit(tail);
        match c.decode(&mut src).unwrap() {
            Some(Inbound::Message(PgWireFrontendMessage::Query(q))) => {
                assert_eq!(q.query, "SELECT 1")
            }
            other => panic!("{other:?}"),
        }
        assert!(src.is_empty());
    }

    #[test]
    fn invalid_utf8_is_refused_not_replaced() {
        let mut c = codec(1024);
        let items = decode_all(&mut c, frame(b'Q', b"SELECT '\xff'\0"));
        assert_eq!(refused_state(&items[0]), ("22021", false));
        let items = decode_all(&mut c, frame(b'P', b"\0SELECT '\xc3'\0\0\0"));
        assert_eq!(refused_state(&items[0]), ("22021", true));
    }

    #[test]
    fn truncated_bodies_are_refused_without_panicking() {
        let mut c = codec(1024);
        let cases: &[(u8, &[u8])] = &[
            (b'P', b"s\0SELECT 1\0"),                      // no type count
            (b'P', b"s\0SELECT 1\0\0\x02\0\0"),            // 2 types, 2 bytes
            (b'B', b"\0\0\0\0\0\x01\0\0\0\x10ab"),         // param says 16 bytes, has 2
            (b'B', b"\0\0\0\0\0\x01\xff\xff\xff\xfe\0\0"), // length -2
            (b'E', b"\0\0\0"),
            (b'D', b"X\0"),
            (b'D', b"S"),
            (b'Q', b"no terminator"),
        ];
        for (kind, body) in cases {
            let items = decode_all(&mut c, frame(*kind, body));
            assert_eq!(items.len(), 1, "{}", kind.escape_ascii());
            assert_eq!(
                refused_state(&items[0]).0,
                "08P01",
                "{}",
                kind.escape_ascii()
            );
        }
        // And the stream is still in step: the next message decodes, and a
        // Sync is a Sync even with stray bytes.
        let items = decode_all(&mut c, frame(b'S', b"junk"));
        assert!(matches!(
            items[0],
            Inbound::Message(PgWireFrontendMessage::Sync(_))
        ));
    }

    #[test]
    fn half_received_large_messages_share_one_budget() {
        let budget = ReceiveBudget::new(100 << 10);
        let mut a = codec(1 << 20).with_budget(Arc::clone(&budget));
        let mut b = codec(1 << 20).with_budget(Arc::clone(&budget));
        let mut sql = vec![b'x'; 80 << 10];
        sql.push(0);
        let whole = frame(b'Q', &sql);
        // A has half of its message: it holds the budget.
        let mut a_src = whole.clone();
        let a_rest = a_src.split_off(40 << 10);
        assert!(decode_all(&mut a, a_src.clone()).is_empty());
        // B's large message does not fit: refused from its header, skipped.
        let mut b_src = whole.clone();
        let b_rest = b_src.split_off(40 << 10);
        let items = decode_all(&mut b, b_src);
        assert_eq!(refused_state(&items[0]), ("53000", false));
        assert!(
            decode_all(&mut b, b_rest).is_empty(),
            "skipped as it arrives"
        );
        // A completes: the budget is free again, and B's next one fits.
        let mut a_all = a_src;
        a_all.unsplit(a_rest);
        let items = decode_all(&mut a, a_all);
        assert!(matches!(items[0], Inbound::Message(_)));
        assert_eq!(budget.used.load(Ordering::Acquire), 0);
        let mut b_src = whole.clone();
        b_src.truncate(40 << 10);
        assert!(decode_all(&mut b, b_src).is_empty());
        assert_eq!(
            budget.used.load(Ordering::Acquire),
            (80 << 10) + 1,
            "its body"
        );
        // A connection that ends half-way gives its share back.
        drop(b);
        assert_eq!(budget.used.load(Ordering::Acquire), 0);
    }

    #[test]
    fn oversized_messages_are_refused_from_their_header_and_skipped() {
        let mut c = codec(16);
        let mut src = frame(b'Q', &[b'x'; 100]);
        let rest = src.split_off(40);
        let items = decode_all(&mut c, src);
        assert_eq!(refused_state(&items[0]), ("54000", false));
        assert_eq!(items.len(), 1);
        // The remaining body bytes are dropped as they arrive.
        let mut src = rest;
        src.unsplit(frame(b'Q', b"ok\0"));
        let items = decode_all(&mut c, src);
        assert!(
            matches!(&items[0], Inbound::Message(PgWireFrontendMessage::Query(q)) if q.query == "ok")
        );
    }

    #[test]
    fn unknown_types_and_bad_lengths_are_fatal() {
        let mut c = codec(1024);
        assert!(matches!(
            decode_all(&mut c, frame(b'Z', b""))[0],
            Inbound::Fatal(_)
        ));
        let mut c = codec(1024);
        let mut src = BytesMut::new();
        src.put_u8(b'Q');
        src.put_i32(2);
        assert!(matches!(decode_all(&mut c, src)[0], Inbound::Fatal(_)));
    }

    #[test]
    fn startup_packet_switches_to_typed_messages() {
        let mut c = WireCodec::new(
            DefaultClient::new("127.0.0.1:1".parse().unwrap(), false),
            1024,
        );
        let mut src = BytesMut::new();
        let body = b"user\0alice\0\0";
        src.put_i32(8 + body.len() as i32);
        src.put_i32(196608);
        src.put_slice(body);
        src.unsplit(frame(b'Q', b"SELECT 1\0"));
        let items = decode_all(&mut c, src);
        assert!(
            matches!(&items[0], Inbound::Message(PgWireFrontendMessage::Startup(s)) if s.parameters["user"] == "alice")
        );
        assert!(matches!(
            &items[1],
            Inbound::Message(PgWireFrontendMessage::Query(_))
        ));
    }

    #[test]
    fn garbage_startup_is_fatal() {
        let mut c = WireCodec::new(
            DefaultClient::new("127.0.0.1:1".parse().unwrap(), false),
            1024,
        );
        let mut src = BytesMut::new();
        src.put_i32(1_000_000);
        assert!(matches!(decode_all(&mut c, src)[0], Inbound::Fatal(_)));
        let mut c = WireCodec::new(
            DefaultClient::new("127.0.0.1:1".parse().unwrap(), false),
            1024,
        );
        let mut src = BytesMut::new();
        src.put_i32(12);
        src.put_i32(0x0002_0000); // protocol 2.0
        src.put_i32(0);
        assert!(matches!(decode_all(&mut c, src)[0], Inbound::Fatal(_)));
    }
}
