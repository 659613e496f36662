//! A clock and a time zone the apply connection cannot read.
//!
//! Every way SQLite learns the current time — `'now'`, `'subsec'`, a date
//! function with no time value, `CURRENT_TIMESTAMP` in a statement, a
//! `DEFAULT`, a trigger or a generated column, whatever the argument's
//! type or spelling — ends in one call: the connection's VFS
//! `xCurrentTimeInt64`. The apply connection opens its database through
//! [`APPLY_VFS`], the default VFS with that method (and `xCurrentTime`)
//! replaced by one that records [`Violation::Clock`] and fails, so SQLite
//! sees no time at all and the write is rolled back with the same error on
//! every node. Everything else (files, locks, shared memory) is the default
//! VFS's own code, so the read connections, which use the default VFS on
//! the same file, coordinate with it as usual.
//!
//! Likewise every `'localtime'`/`'utc'` conversion ends in SQLite's
//! `osLocaltime`, which SQLite lets a process replace (the
//! `SQLITE_TESTCTRL_LOCALTIME_FAULT` hook). Ours fails inside a replicated
//! write and is the C library's `localtime_r` everywhere else, so reads
//! still see the server's zone.

use std::ffi::{c_int, c_void, CStr};
use std::sync::OnceLock;

use rusqlite::ffi;

use super::write_watch::{self, Violation};

/// The name of the VFS the apply connection opens its database with.
pub const APPLY_VFS: &CStr = c"resqlite-apply";

/// Registers [`APPLY_VFS`] and the time-zone hook, once per process.
pub fn register() -> rusqlite::Result<()> {
    static REGISTERED: OnceLock<Result<(), c_int>> = OnceLock::new();
    let result = *REGISTERED.get_or_init(|| {
        // SAFETY: `sqlite3_vfs_find(NULL)` returns SQLite's default VFS, a
        // static object; we copy it and register the copy, which is leaked
        // so it lives as long as the process (SQLite keeps the pointer).
        // The copy shares `pAppData` and every method of the default VFS
        // except the two clock methods, which take the same arguments.
        unsafe {
            let default = ffi::sqlite3_vfs_find(std::ptr::null());
            if default.is_null() {
                return Err(ffi::SQLITE_ERROR);
            }
            let mut vfs: ffi::sqlite3_vfs = *default;
            vfs.zName = APPLY_VFS.as_ptr();
            vfs.pNext = std::ptr::null_mut();
            vfs.xCurrentTime = Some(no_current_time);
            if vfs.iVersion >= 2 {
                vfs.xCurrentTimeInt64 = Some(no_current_time_int64);
            }
            let vfs: &'static mut ffi::sqlite3_vfs = Box::leak(Box::new(vfs));
            let rc = ffi::sqlite3_vfs_register(vfs, 0);
            if rc != ffi::SQLITE_OK {
                return Err(rc);
            }
            // bLocaltimeFault = 2: call our function instead of the OS's.
            let hook: unsafe extern "C" fn(*const c_void, *mut c_void) -> c_int = local_time;
            let rc =
                ffi::sqlite3_test_control(ffi::SQLITE_TESTCTRL_LOCALTIME_FAULT, 2 as c_int, hook);
            if rc != ffi::SQLITE_OK {
                return Err(rc);
            }
        }
        Ok(())
    });
    result.map_err(|rc| {
        rusqlite::Error::SqliteFailure(
            ffi::Error::new(rc),
            Some("cannot register the apply connection's clock guard".into()),
        )
    })
}

unsafe extern "C" fn no_current_time(_vfs: *mut ffi::sqlite3_vfs, _now: *mut f64) -> c_int {
    record_clock_read()
}

unsafe extern "C" fn no_current_time_int64(
    _vfs: *mut ffi::sqlite3_vfs,
    _now: *mut ffi::sqlite3_int64,
) -> c_int {
    record_clock_read()
}

fn record_clock_read() -> c_int {
    // Never unwind into SQLite.
    let _ = std::panic::catch_unwind(|| write_watch::record(Violation::Clock));
    ffi::SQLITE_ERROR
}

/// SQLite's `localtime_r` replacement: 0 on success.
unsafe extern "C" fn local_time(t: *const c_void, tm: *mut c_void) -> c_int {
    let in_write = std::panic::catch_unwind(|| {
        write_watch::in_write() && write_watch::record(Violation::TimeZone)
    })
    .unwrap_or(true);
    if in_write || t.is_null() || tm.is_null() {
        return 1;
    }
    // SAFETY: SQLite passes a valid `time_t*` and `struct tm*`.
    let converted = unsafe { libc::localtime_r(t.cast::<libc::time_t>(), tm.cast::<libc::tm>()) };
    c_int::from(converted.is_null())
}
