//! The on-disk frame: the whole batch of one `append`, with a length and a
//! CRC, so that recovery can tell a complete frame from a torn or damaged one.
//!
//! Layout, little-endian:
//!
//! ```text
//! magic u32 | payload_len u32 | crc32 u32 (of the payload) | payload
//! payload = count u32, then per entry:
//!           term u64 | index u64 | kind u8 | data_len u32 | data
//! ```

use std::fmt;
use std::ops::Range;

use bytes::Bytes;

use crate::types::{Entry, EntryKind};

/// Marks the start of a frame. Not zero and not ASCII, so that zero-filled
/// or text garbage after a torn tail does not look like a frame.
pub(crate) const MAGIC: u32 = 0xD1B5_4A32;
/// Bytes before the payload: magic, length, CRC.
pub(crate) const HEADER_LEN: usize = 12;
/// Bytes of one entry's fixed part: term, index, kind, data length.
const ENTRY_HEADER_LEN: usize = 8 + 8 + 1 + 4;

/// Encodes `entries` as one frame, into one buffer so the caller can write
/// it with a single `write_all`. Fails with the encoded size if the payload
/// does not fit a `u32` length.
pub(crate) fn encode(entries: &[Entry]) -> Result<Vec<u8>, usize> {
    let payload_len = 4 + entries
        .iter()
        .map(|e| ENTRY_HEADER_LEN + e.data.len())
        .sum::<usize>();
    let len = u32::try_from(payload_len).map_err(|_| HEADER_LEN + payload_len)?;
    // Every entry adds at least ENTRY_HEADER_LEN bytes, so a count that
    // overflowed u32 would already have overflowed the length.
    let count = u32::try_from(entries.len()).map_err(|_| HEADER_LEN + payload_len)?;

    let mut buf = Vec::with_capacity(HEADER_LEN + payload_len);
    buf.extend_from_slice(&MAGIC.to_le_bytes());
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(&[0; 4]); // CRC, filled in below
    buf.extend_from_slice(&count.to_le_bytes());
    for e in entries {
        buf.extend_from_slice(&e.term.to_le_bytes());
        buf.extend_from_slice(&e.index.to_le_bytes());
        buf.push(e.kind.code());
        // Fits: the whole payload fits a u32.
        buf.extend_from_slice(&(e.data.len() as u32).to_le_bytes());
        buf.extend_from_slice(&e.data);
    }
    let crc = crc32fast::hash(&buf[HEADER_LEN..]);
    buf[8..12].copy_from_slice(&crc.to_le_bytes());
    Ok(buf)
}

/// Where a frame that passed its checks lies in a buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct FrameBounds {
    /// The payload's byte range.
    pub payload: Range<usize>,
}

impl FrameBounds {
    /// Offset just past the frame.
    pub fn end(&self) -> usize {
        self.payload.end
    }
}

/// Why the bytes at some offset are not a valid frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum FrameFault {
    /// Fewer than [`HEADER_LEN`] bytes are left.
    ShortHeader { available: usize },
    /// The first four bytes are not [`MAGIC`].
    BadMagic { found: u32 },
    /// The length field points past the end of the file.
    LengthPastEnd { len: u32, available: usize },
    /// The payload does not match its CRC.
    BadCrc { stored: u32, computed: u32 },
}

impl fmt::Display for FrameFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameFault::ShortHeader { available } => {
                write!(
                    f,
                    "frame header cut short ({available} of {HEADER_LEN} bytes)"
                )
            }
            FrameFault::BadMagic { found } => {
                write!(f, "bad frame magic {found:#010x} (expected {MAGIC:#010x})")
            }
            FrameFault::LengthPastEnd { len, available } => write!(
                f,
                "frame payload length {len} runs past the end of the file ({available} bytes left)"
            ),
            FrameFault::BadCrc { stored, computed } => write!(
                f,
                "frame CRC mismatch (stored {stored:#010x}, computed {computed:#010x})"
            ),
        }
    }
}

fn read_u32(buf: &[u8], at: usize) -> u32 {
    let mut b = [0; 4];
    b.copy_from_slice(&buf[at..at + 4]);
    u32::from_le_bytes(b)
}

fn read_u64(buf: &[u8], at: usize) -> u64 {
    let mut b = [0; 8];
    b.copy_from_slice(&buf[at..at + 8]);
    u64::from_le_bytes(b)
}

/// Checks the frame at `offset` of `buf`: magic, length within the buffer,
/// and CRC. Does not look inside the payload.
pub(crate) fn check(buf: &[u8], offset: usize) -> Result<FrameBounds, FrameFault> {
    let available = buf.len().saturating_sub(offset);
    if available < HEADER_LEN {
        return Err(FrameFault::ShortHeader { available });
    }
    let magic = read_u32(buf, offset);
    if magic != MAGIC {
        return Err(FrameFault::BadMagic { found: magic });
    }
    let len = read_u32(buf, offset + 4);
    let start = offset + HEADER_LEN;
    if len as usize > buf.len() - start {
        return Err(FrameFault::LengthPastEnd {
            len,
            available: buf.len() - start,
        });
    }
    let payload = start..start + len as usize;
    let stored = read_u32(buf, offset + 8);
    let computed = crc32fast::hash(&buf[payload.clone()]);
    if stored != computed {
        return Err(FrameFault::BadCrc { stored, computed });
    }
    Ok(FrameBounds { payload })
}

/// The offset of the first valid frame (magic, length and CRC all good) at
/// or after `from`, if there is one. Used to tell a torn tail (nothing valid
/// follows the bad frame) from damage in the middle (something does).
pub(crate) fn find_valid(buf: &[u8], from: usize) -> Option<usize> {
    let magic = MAGIC.to_le_bytes();
    let mut at = from;
    while at + HEADER_LEN <= buf.len() {
        let pos = at + buf[at..].windows(4).position(|w| w == magic)?;
        if check(buf, pos).is_ok() {
            return Some(pos);
        }
        at = pos + 1;
    }
    None
}

/// Decodes the payload of a frame that passed [`check`]. The entry data are
/// zero-copy slices of `buf`. The entries must start at `first_index` and be
/// contiguous; a payload that passed its CRC but breaks these rules was
/// written wrong, and the error says how.
pub(crate) fn decode(
    buf: &Bytes,
    bounds: &FrameBounds,
    first_index: u64,
) -> Result<Vec<Entry>, String> {
    let p = bounds.payload.clone();
    if p.len() < 4 {
        return Err(format!(
            "frame payload of {} bytes has no entry count",
            p.len()
        ));
    }
    let count = read_u32(buf, p.start) as usize;
    if count == 0 {
        return Err("frame holds no entries".to_string());
    }
    // Each entry needs at least ENTRY_HEADER_LEN bytes: bound the allocation
    // by what the payload can hold, not by the count field.
    let mut entries = Vec::with_capacity(count.min(p.len() / ENTRY_HEADER_LEN));
    let mut at = p.start + 4;
    for i in 0..count {
        if p.end - at < ENTRY_HEADER_LEN {
            return Err(format!(
                "entry {i} of {count} is cut short by the frame length"
            ));
        }
        let term = read_u64(buf, at);
        let index = read_u64(buf, at + 8);
        let code = buf[at + 16];
        let len = read_u32(buf, at + 17) as usize;
        at += ENTRY_HEADER_LEN;
        let expected = first_index + i as u64;
        if index != expected {
            return Err(format!("entry has index {index}, expected {expected}"));
        }
        let kind = EntryKind::from_code(code)
            .ok_or_else(|| format!("entry {index} has unknown kind code {code}"))?;
        if p.end - at < len {
            return Err(format!("data of entry {index} runs past the frame payload"));
        }
        entries.push(Entry {
            term,
            index,
            kind,
            data: buf.slice(at..at + len),
        });
        at += len;
    }
    if at != p.end {
        return Err(format!(
            "{} stray bytes after the last entry of the frame",
            p.end - at
        ));
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(first: u64, n: u64) -> Vec<Entry> {
        (first..first + n)
            .map(|i| Entry {
                term: i / 3 + 1,
                index: i,
                kind: if i % 5 == 0 {
                    EntryKind::Noop
                } else {
                    EntryKind::Normal
                },
                data: Bytes::from(format!("payload-{i}")),
            })
            .collect()
    }

    #[test]
    fn encode_then_decode_round_trips() {
        let es = entries(7, 4);
        let buf = Bytes::from(encode(&es).unwrap());
        let bounds = check(&buf, 0).unwrap();
        assert_eq!(bounds.end(), buf.len());
        assert_eq!(decode(&buf, &bounds, 7).unwrap(), es);
    }

    #[test]
    fn check_reports_each_fault() {
        let buf = encode(&entries(1, 2)).unwrap();
        assert!(matches!(
            check(&buf[..5], 0),
            Err(FrameFault::ShortHeader { available: 5 })
        ));
        assert!(matches!(
            check(&buf[..buf.len() - 1], 0),
            Err(FrameFault::LengthPastEnd { .. })
        ));
        let mut flipped = buf.clone();
        *flipped.last_mut().unwrap() ^= 0x40;
        assert!(matches!(check(&flipped, 0), Err(FrameFault::BadCrc { .. })));
        let mut magic = buf.clone();
        magic[0] ^= 1;
        assert!(matches!(check(&magic, 0), Err(FrameFault::BadMagic { .. })));
    }

    #[test]
    fn decode_rejects_a_wrong_first_index() {
        let buf = Bytes::from(encode(&entries(3, 2)).unwrap());
        let bounds = check(&buf, 0).unwrap();
        let err = decode(&buf, &bounds, 4).unwrap_err();
        assert!(err.contains("index 3, expected 4"), "{err}");
    }

    #[test]
    fn find_valid_skips_garbage_and_finds_the_next_frame() {
        let mut buf = vec![0u8; 10];
        buf.extend_from_slice(&MAGIC.to_le_bytes()); // a false start
        buf.extend_from_slice(&[0xff; 9]);
        let at = buf.len();
        buf.extend_from_slice(&encode(&entries(1, 1)).unwrap());
        assert_eq!(find_valid(&buf, 0), Some(at));
        assert_eq!(find_valid(&buf, at + 1), None);
    }
}
