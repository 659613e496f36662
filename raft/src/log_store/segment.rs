//! One segment file: a run of frames whose first entry's index names the
//! file. Recovery of a segment (scan, classify a bad frame as a torn tail or
//! as corruption) and the rewrite that truncates inside a frame live here.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::error::{io_err, StoreError};
use super::frame;
use crate::types::Entry;

const SUFFIX: &str = ".seg";
const TMP_SUFFIX: &str = ".seg.tmp";
const NAME_DIGITS: usize = 20;

/// The file name of the segment whose first entry is `first_index`,
/// zero-padded so that names sort in index order.
pub(crate) fn file_name(first_index: u64) -> String {
    format!("{first_index:0NAME_DIGITS$}{SUFFIX}")
}

/// The first index encoded in a segment file name, if `name` is one.
pub(crate) fn parse_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SUFFIX)?;
    if digits.len() != NAME_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Whether `name` is a leftover of an interrupted [`rewrite_prefix`].
pub(crate) fn is_tmp_file_name(name: &str) -> bool {
    name.strip_suffix(TMP_SUFFIX)
        .is_some_and(|digits| parse_file_name(&format!("{digits}{SUFFIX}")).is_some())
}

/// Where one frame lies and which entries it holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FrameMeta {
    /// Byte offset of the frame header in its segment.
    pub offset: u64,
    /// Bytes of header and payload.
    pub len: u64,
    /// Index of the frame's first entry.
    pub first_index: u64,
    /// Index of the frame's last entry.
    pub last_index: u64,
}

impl FrameMeta {
    /// Offset just past the frame.
    pub fn end(&self) -> u64 {
        self.offset + self.len
    }
}

/// The in-memory index of one segment file, so that truncation finds the
/// frame to cut without reading the log.
#[derive(Debug)]
pub(crate) struct Segment {
    /// Index of the first entry, which also names the file.
    pub first_index: u64,
    /// The file.
    pub path: PathBuf,
    /// Every frame, in file order.
    pub frames: Vec<FrameMeta>,
    /// Length of the file: the end of the last frame.
    pub size: u64,
}

impl Segment {
    /// An empty segment for a file about to be created in `dir`.
    pub fn new(dir: &Path, first_index: u64) -> Segment {
        Segment {
            first_index,
            path: dir.join(file_name(first_index)),
            frames: Vec::new(),
            size: 0,
        }
    }

    /// Index of the last entry, if the segment holds any.
    pub fn last_index(&self) -> Option<u64> {
        self.frames.last().map(|f| f.last_index)
    }

    /// Position in `frames` of the frame that holds `index`, if any.
    pub fn frame_holding(&self, index: u64) -> Option<usize> {
        let pos = self.frames.partition_point(|f| f.last_index < index);
        let f = self.frames.get(pos)?;
        (f.first_index <= index).then_some(pos)
    }
}

fn corrupt(path: &Path, offset: u64, reason: String) -> StoreError {
    StoreError::Corrupt {
        path: path.to_path_buf(),
        offset,
        reason,
    }
}

/// Reads the segment at `path`, whose name says it starts at `first_index`,
/// and returns its index and entries.
///
/// A frame that fails its checks is a torn tail only if this is the last
/// segment and no valid frame follows it; then the file is cut at that frame
/// (and synced) and a warning logged. Anything else is
/// [`StoreError::Corrupt`]: the store appends one frame per batch and syncs
/// before the next, so a crash can only damage the last frame written.
pub(crate) fn recover(
    path: &Path,
    first_index: u64,
    is_last: bool,
) -> Result<(Segment, Vec<Entry>), StoreError> {
    let buf = Bytes::from(fs::read(path).map_err(io_err("read", path))?);
    let mut segment = Segment {
        first_index,
        path: path.to_path_buf(),
        frames: Vec::new(),
        size: 0,
    };
    let mut entries = Vec::new();
    let mut offset = 0usize;
    let mut next = first_index;
    while offset < buf.len() {
        let bounds = match frame::check(&buf, offset) {
            Ok(bounds) => bounds,
            Err(fault) => {
                if !is_last {
                    return Err(corrupt(
                        path,
                        offset as u64,
                        format!("{fault}, in a segment that is not the last"),
                    ));
                }
                if let Some(valid) = frame::find_valid(&buf, offset + 1) {
                    return Err(corrupt(
                        path,
                        offset as u64,
                        format!("{fault}, but a valid frame follows at offset {valid}"),
                    ));
                }
                tracing::warn!(
                    path = %path.display(),
                    offset,
                    cut_bytes = buf.len() - offset,
                    last_index = next - 1,
                    fault = %fault,
                    "cutting torn tail of the log"
                );
                let file = OpenOptions::new()
                    .write(true)
                    .open(path)
                    .map_err(io_err("open", path))?;
                file.set_len(offset as u64)
                    .map_err(io_err("truncate torn tail of", path))?;
                file.sync_data().map_err(io_err("fdatasync", path))?;
                break;
            }
        };
        let decoded = frame::decode(&buf, &bounds, next)
            .map_err(|reason| corrupt(path, offset as u64, reason))?;
        let last_index = next + decoded.len() as u64 - 1;
        segment.frames.push(FrameMeta {
            offset: offset as u64,
            len: (bounds.end() - offset) as u64,
            first_index: next,
            last_index,
        });
        entries.extend(decoded);
        next = last_index + 1;
        offset = bounds.end();
    }
    segment.size = segment.frames.last().map_or(0, FrameMeta::end);
    Ok((segment, entries))
}

/// Creates the file of a new, empty segment (it must not exist).
pub(crate) fn create(segment: &Segment) -> Result<File, StoreError> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&segment.path)
        .map_err(io_err("create", &segment.path))
}

/// Opens an existing segment for appending at its end.
pub(crate) fn open_for_append(segment: &Segment) -> Result<File, StoreError> {
    let mut file = OpenOptions::new()
        .write(true)
        .open(&segment.path)
        .map_err(io_err("open", &segment.path))?;
    file.seek(SeekFrom::Start(segment.size))
        .map_err(io_err("seek", &segment.path))?;
    Ok(file)
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".tmp");
    PathBuf::from(name)
}

/// Truncates `segment` so that it ends just before entry `from`, which lies
/// inside (not at the start of) frame `frames[pos]`: the file keeps the
/// frames before it, and the surviving entries of that frame become a new,
/// shorter frame. Returns the new frame's metadata.
///
/// The entries kept may already be acknowledged, so a crash must never lose
/// them: the new content is written to a temporary file, synced, and renamed
/// over the segment. The caller must fsync the directory.
pub(crate) fn rewrite_prefix(
    segment: &Segment,
    pos: usize,
    from: u64,
) -> Result<FrameMeta, StoreError> {
    let path = &segment.path;
    let old = segment.frames[pos];
    debug_assert!(old.first_index < from && from <= old.last_index);

    let mut src = File::open(path).map_err(io_err("open", path))?;
    src.seek(SeekFrom::Start(old.offset))
        .map_err(io_err("seek", path))?;
    let mut raw = vec![0; old.len as usize];
    src.read_exact(&mut raw)
        .map_err(io_err("read frame to truncate from", path))?;
    let raw = Bytes::from(raw);
    let bounds = frame::check(&raw, 0).map_err(|fault| {
        corrupt(
            path,
            old.offset,
            format!("re-reading frame to truncate it: {fault}"),
        )
    })?;
    let mut entries = frame::decode(&raw, &bounds, old.first_index)
        .map_err(|reason| corrupt(path, old.offset, reason))?;
    entries.truncate((from - old.first_index) as usize);
    // A prefix of a frame that fitted always fits.
    let new = frame::encode(&entries).map_err(|bytes| StoreError::TooLarge { bytes })?;

    let tmp = tmp_path(path);
    let mut out = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(io_err("create", &tmp))?;
    src.seek(SeekFrom::Start(0)).map_err(io_err("seek", path))?;
    let copied = io::copy(&mut (&mut src).take(old.offset), &mut out)
        .map_err(io_err("copy frames into", &tmp))?;
    if copied != old.offset {
        return Err(corrupt(
            path,
            copied,
            format!(
                "segment ended at {copied} bytes while copying {} bytes",
                old.offset
            ),
        ));
    }
    out.write_all(&new).map_err(io_err("write", &tmp))?;
    out.sync_data().map_err(io_err("fdatasync", &tmp))?;
    drop(out);
    fs::rename(&tmp, path).map_err(io_err("rename over", path))?;
    Ok(FrameMeta {
        offset: old.offset,
        len: new.len() as u64,
        first_index: old.first_index,
        last_index: from - 1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_sort_by_index_and_parse_back() {
        assert_eq!(file_name(1), "00000000000000000001.seg");
        assert!(file_name(9) < file_name(10));
        assert_eq!(parse_file_name(&file_name(u64::MAX)), Some(u64::MAX));
        assert_eq!(parse_file_name("1.seg"), None);
        assert_eq!(parse_file_name("0000000000000000000x.seg"), None);
        assert_eq!(parse_file_name("hardstate"), None);
        assert!(is_tmp_file_name("00000000000000000042.seg.tmp"));
        assert!(!is_tmp_file_name("hardstate.tmp"));
    }
}
