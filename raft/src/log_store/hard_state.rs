//! The hard state file: term and vote, always written together, atomically
//! (write a temporary file, fsync it, rename it over the old one, fsync the
//! directory), so it is either the old or the new value, never a mix.
//!
//! Layout, little-endian, 25 bytes:
//!
//! ```text
//! magic u32 | term u64 | has_vote u8 | vote u64 | crc32 u32 (of the 21 bytes before)
//! ```

use std::fs::{self, File};
use std::io::ErrorKind;
use std::path::Path;

use super::error::{io_err, StoreError};
use crate::types::HardState;

/// The hard state file's name in the store directory.
pub(crate) const FILE_NAME: &str = "hardstate";
/// The name it is written under before the rename.
pub(crate) const TMP_FILE_NAME: &str = "hardstate.tmp";

const MAGIC: u32 = 0x4853_5231;
const LEN: usize = 25;

fn encode(hs: HardState) -> [u8; LEN] {
    let mut buf = [0; LEN];
    buf[0..4].copy_from_slice(&MAGIC.to_le_bytes());
    buf[4..12].copy_from_slice(&hs.term.to_le_bytes());
    buf[12] = u8::from(hs.vote.is_some());
    buf[13..21].copy_from_slice(&hs.vote.unwrap_or(0).to_le_bytes());
    let crc = crc32fast::hash(&buf[..21]);
    buf[21..25].copy_from_slice(&crc.to_le_bytes());
    buf
}

fn decode(buf: &[u8]) -> Result<HardState, String> {
    if buf.len() != LEN {
        return Err(format!("hard state is {} bytes, expected {LEN}", buf.len()));
    }
    let word = |r: std::ops::Range<usize>| {
        let mut b = [0; 8];
        b[..r.len()].copy_from_slice(&buf[r]);
        u64::from_le_bytes(b)
    };
    let magic = word(0..4) as u32;
    if magic != MAGIC {
        return Err(format!("bad hard state magic {magic:#010x}"));
    }
    let (stored, computed) = (word(21..25) as u32, crc32fast::hash(&buf[..21]));
    if stored != computed {
        return Err(format!(
            "hard state CRC mismatch (stored {stored:#010x}, computed {computed:#010x})"
        ));
    }
    let vote = match buf[12] {
        0 => None,
        1 => Some(word(13..21)),
        flag => return Err(format!("bad hard state vote flag {flag}")),
    };
    Ok(HardState {
        term: word(4..12),
        vote,
    })
}

/// Loads the hard state from `dir`: the default if none was ever saved.
/// A leftover temporary file (a crash before the rename) is removed: the old
/// file is still the current value. A damaged file is an error, not a reset:
/// forgetting a vote could let this node vote twice in one term.
pub(crate) fn load(dir: &Path) -> Result<HardState, StoreError> {
    let tmp = dir.join(TMP_FILE_NAME);
    match fs::remove_file(&tmp) {
        Ok(()) => tracing::info!(path = %tmp.display(), "removed unfinished hard state write"),
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("remove", tmp)(e)),
    }
    let path = dir.join(FILE_NAME);
    let buf = match fs::read(&path) {
        Ok(buf) => buf,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(HardState::default()),
        Err(e) => return Err(io_err("read", path)(e)),
    };
    decode(&buf).map_err(|reason| StoreError::Corrupt {
        path,
        offset: 0,
        reason,
    })
}

/// Durably replaces the hard state in `dir`; `dir_file` is the open
/// directory, fsynced so that the rename itself survives a crash.
pub(crate) fn save(dir: &Path, dir_file: &File, hs: HardState) -> Result<(), StoreError> {
    super::atomic_file::replace(dir, dir_file, TMP_FILE_NAME, FILE_NAME, &encode(hs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_round_trips_with_and_without_a_vote() {
        for hs in [
            HardState::default(),
            HardState {
                term: 7,
                vote: Some(3),
            },
            HardState {
                term: u64::MAX,
                vote: Some(0),
            },
        ] {
            assert_eq!(decode(&encode(hs)), Ok(hs));
        }
    }

    #[test]
    fn decoding_rejects_any_flipped_bit() {
        let good = encode(HardState {
            term: 5,
            vote: Some(2),
        });
        for byte in 0..LEN {
            let mut bad = good;
            bad[byte] ^= 0x10;
            assert!(decode(&bad).is_err(), "flip in byte {byte} went unnoticed");
        }
        assert!(decode(&good[..LEN - 1]).is_err());
    }
}
