//! The snapshot metadata file: which snapshot the log starts after. Written
//! like the hard state (temporary file, fsync, rename, fsync of the
//! directory), so it is either the old or the new value.
//!
//! Layout, little-endian:
//!
//! ```text
//! magic u32 | index u64 | term u64 | len u32 | membership (len bytes) | crc32 u32 (of all before)
//! ```
//!
//! The membership is [`Membership::encode`]'s form. Files of the first
//! format (magic `SNP1`: a list of voter ids instead of the membership) are
//! still read.

use std::fs::{self, File};
use std::io::ErrorKind;
use std::path::Path;

use super::error::{io_err, StoreError};
use crate::types::{Membership, SnapshotMeta};

/// The file's name in the store directory.
pub(crate) const FILE_NAME: &str = "snapshot";
/// The name it is written under before the rename.
pub(crate) const TMP_FILE_NAME: &str = "snapshot.tmp";

/// `SNP2`: the membership as encoded bytes.
const MAGIC: u32 = 0x534e_5032;
/// `SNP1`: voter ids only.
const MAGIC_V1: u32 = 0x534e_5031;
/// Bytes before the membership (or the voters).
const HEAD: usize = 24;
/// More voters than any cluster has: a larger count is damage.
const MAX_VOTERS: usize = 1 << 16;

fn encode(meta: &SnapshotMeta) -> Vec<u8> {
    let membership = meta.membership.encode();
    let mut buf = Vec::with_capacity(HEAD + membership.len() + 4);
    buf.extend_from_slice(&MAGIC.to_le_bytes());
    buf.extend_from_slice(&meta.index.to_le_bytes());
    buf.extend_from_slice(&meta.term.to_le_bytes());
    buf.extend_from_slice(&(membership.len() as u32).to_le_bytes());
    buf.extend_from_slice(&membership);
    let crc = crc32fast::hash(&buf);
    buf.extend_from_slice(&crc.to_le_bytes());
    buf
}

fn decode(buf: &[u8]) -> Result<SnapshotMeta, String> {
    let u64_at = |at: usize| {
        let mut b = [0; 8];
        b.copy_from_slice(&buf[at..at + 8]);
        u64::from_le_bytes(b)
    };
    let u32_at = |at: usize| {
        let mut b = [0; 4];
        b.copy_from_slice(&buf[at..at + 4]);
        u32::from_le_bytes(b)
    };
    if buf.len() < HEAD + 4 {
        return Err(format!("snapshot metadata is only {} bytes", buf.len()));
    }
    let magic = u32_at(0);
    let count = u32_at(20) as usize;
    let body_len = match magic {
        MAGIC => count,
        MAGIC_V1 if count <= MAX_VOTERS => 8 * count,
        MAGIC_V1 => usize::MAX,
        _ => return Err(format!("bad snapshot metadata magic {magic:#010x}")),
    };
    if body_len == usize::MAX || buf.len() != HEAD + body_len + 4 {
        return Err(format!(
            "snapshot metadata of {} bytes does not match its length field {count}",
            buf.len()
        ));
    }
    let body = buf.len() - 4;
    let (stored, computed) = (u32_at(body), crc32fast::hash(&buf[..body]));
    if stored != computed {
        return Err(format!(
            "snapshot metadata CRC mismatch (stored {stored:#010x}, computed {computed:#010x})"
        ));
    }
    let membership = if magic == MAGIC {
        Membership::decode(&buf[HEAD..body])?
    } else {
        let voters: Vec<u64> = (0..count).map(|i| u64_at(HEAD + 8 * i)).collect();
        Membership::from_voters(&voters)
    };
    Ok(SnapshotMeta {
        index: u64_at(4),
        term: u64_at(12),
        membership,
    })
}

/// Loads the snapshot metadata from `dir`: index 0 if none was ever saved.
/// A leftover temporary file (a crash before the rename) is removed: the
/// old file is still the current value. A damaged file is an error: the
/// log before it may be gone, so guessing would lose committed entries.
pub(crate) fn load(dir: &Path) -> Result<SnapshotMeta, StoreError> {
    let tmp = dir.join(TMP_FILE_NAME);
    match fs::remove_file(&tmp) {
        Ok(()) => {
            tracing::info!(path = %tmp.display(), "removed unfinished snapshot metadata write")
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("remove", tmp)(e)),
    }
    let path = dir.join(FILE_NAME);
    let buf = match fs::read(&path) {
        Ok(buf) => buf,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(SnapshotMeta::default()),
        Err(e) => return Err(io_err("read", path)(e)),
    };
    decode(&buf).map_err(|reason| StoreError::Corrupt {
        path,
        offset: 0,
        reason,
    })
}

/// Durably replaces the snapshot metadata in `dir`; `dir_file` is the open
/// directory, fsynced so that the rename itself survives a crash.
pub(crate) fn save(dir: &Path, dir_file: &File, meta: &SnapshotMeta) -> Result<(), StoreError> {
    super::atomic_file::replace(dir, dir_file, TMP_FILE_NAME, FILE_NAME, &encode(meta))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_round_trips() {
        for meta in [
            SnapshotMeta::default(),
            SnapshotMeta {
                index: 42,
                term: 7,
                membership: Membership::from_voters(&[1, 2, 3]),
            },
        ] {
            assert_eq!(decode(&encode(&meta)), Ok(meta));
        }
    }

    #[test]
    fn decoding_rejects_any_flipped_bit_and_truncation() {
        let good = encode(&SnapshotMeta {
            index: 9,
            term: 2,
            membership: Membership::from_voters(&[1, 5]),
        });
        for byte in 0..good.len() {
            let mut bad = good.clone();
            bad[byte] ^= 0x10;
            assert!(decode(&bad).is_err(), "flip in byte {byte} went unnoticed");
        }
        assert!(decode(&good[..good.len() - 1]).is_err());
    }

    #[test]
    fn the_first_format_is_still_read() {
        let mut v1 = Vec::new();
        v1.extend_from_slice(&MAGIC_V1.to_le_bytes());
        v1.extend_from_slice(&9u64.to_le_bytes());
        v1.extend_from_slice(&2u64.to_le_bytes());
        v1.extend_from_slice(&2u32.to_le_bytes());
        v1.extend_from_slice(&1u64.to_le_bytes());
        v1.extend_from_slice(&5u64.to_le_bytes());
        let crc = crc32fast::hash(&v1);
        v1.extend_from_slice(&crc.to_le_bytes());
        assert_eq!(
            decode(&v1),
            Ok(SnapshotMeta {
                index: 9,
                term: 2,
                membership: Membership::from_voters(&[1, 5]),
            })
        );
    }
}
