//! Free space of a file system, for refusing a snapshot that would not fit
//! before any of it is written.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Bytes an unprivileged process may still write on the file system that
/// holds `path` (`f_bavail`: what is left for non-root users, so the
/// blocks reserved for root are not counted). Blocking: a `statvfs` call.
pub(crate) fn available_bytes(path: &Path) -> io::Result<u64> {
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))?;
    // SAFETY: `c_path` is a valid NUL-terminated string that outlives the
    // call, and `stat` is a properly sized, writable `statvfs` that the
    // call fills in; it is read only after the call reported success.
    let stat = unsafe {
        let mut stat: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(c_path.as_ptr(), &mut stat) != 0 {
            return Err(io::Error::last_os_error());
        }
        stat
    };
    // The field widths differ between platforms; the product saturates
    // rather than wrap on a file system that reports nonsense.
    #[allow(clippy::unnecessary_cast)]
    let (blocks, fragment) = (stat.f_bavail as u64, stat.f_frsize as u64);
    Ok(blocks.saturating_mul(fragment))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_real_directory_has_some_space_and_a_missing_one_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let free = available_bytes(dir.path()).expect("statvfs of a temp dir");
        assert!(free > 0, "a temp dir with no space left");
        let missing = dir.path().join("not-there");
        assert!(available_bytes(&missing).is_err());
    }
}
