//! The errors of the log store. Every disk-related error names the file, and
//! a corruption also names the byte offset, so an operator can look at it.

use std::io;
use std::path::PathBuf;

/// Why a [`LogStore`](super::LogStore) operation failed.
#[derive(thiserror::Error, Debug)]
pub enum StoreError {
    /// The operating system refused an operation on a file or directory.
    #[error("log store: {op} {}: {source}", path.display())]
    Io {
        /// What the store was doing (`"open"`, `"write"`, `"fdatasync"` …).
        op: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The data on disk is damaged in a way a crash cannot explain (a bad
    /// record before a good one, a gap in the indices, a bad hard state).
    /// The store refuses to open rather than silently dropping entries.
    #[error("log store corrupt: {} at offset {offset}: {reason}", path.display())]
    Corrupt {
        /// The damaged file.
        path: PathBuf,
        /// Byte offset of the damaged record in `path`.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// An append would leave a hole: its first index is past `last_index + 1`.
    #[error("append at index {index} would leave a gap: the log ends at index {last_index}")]
    Gap {
        /// Index of the first entry of the append.
        index: u64,
        /// The store's last index.
        last_index: u64,
    },
    /// An append starts before the first index the store can hold.
    #[error("append at index {index} is before the first index {first_index}")]
    BeforeStart {
        /// Index of the first entry of the append.
        index: u64,
        /// The store's first index.
        first_index: u64,
    },
    /// The entries of one append do not have consecutive indices.
    #[error("entries of an append are not contiguous: found index {index}, expected {expected}")]
    NotContiguous {
        /// The offending index.
        index: u64,
        /// The index that should have been there.
        expected: u64,
    },
    /// One append is larger than a frame can hold (4 GiB).
    #[error("append of {bytes} bytes is larger than one log frame can hold")]
    TooLarge {
        /// Encoded size of the batch.
        bytes: usize,
    },
    /// An earlier write or sync failed, so what is on disk is unknown (a
    /// failed fsync may have dropped dirty pages). The store refuses further
    /// work; restarting the node recovers from what the disk actually holds.
    #[error("log store failed after an earlier I/O error; restart to recover from disk")]
    Failed,
}

/// Maps an `io::Error` to [`StoreError::Io`] for `op` on `path`.
pub(crate) fn io_err(
    op: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(io::Error) -> StoreError {
    let path = path.into();
    move |source| StoreError::Io { op, path, source }
}
