//! Durable replacement of a small file (hard state, snapshot metadata):
//! write a temporary file, fsync it, rename it over the old one, fsync the
//! directory so that the rename itself survives a crash. A crash at any
//! point leaves either the old contents or the new ones, never a mix.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::Path;

use super::error::{io_err, StoreError};

/// Replaces `dir/name` with `bytes`, going through `dir/tmp_name`;
/// `dir_file` is the open directory.
pub(crate) fn replace(
    dir: &Path,
    dir_file: &File,
    tmp_name: &str,
    name: &str,
    bytes: &[u8],
) -> Result<(), StoreError> {
    let tmp = dir.join(tmp_name);
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(io_err("create", &tmp))?;
    file.write_all(bytes).map_err(io_err("write", &tmp))?;
    file.sync_all().map_err(io_err("fsync", &tmp))?;
    drop(file);
    let path = dir.join(name);
    fs::rename(&tmp, &path).map_err(io_err("rename over", &path))?;
    dir_file.sync_all().map_err(io_err("fsync directory", dir))
}
