//! What a replicated write reached for while it ran.
//!
//! The guards inside SQLite — the clock VFS, the time-zone hook, the
//! authorizer, the denied-function overrides and the work budget — cannot
//! return a SQLSTATE of their own: SQLite turns their refusal into a
//! generic error (or, for the clock, a NULL). So each records the first
//! [`Violation`] here, on the applying thread, and the apply code turns it
//! into the client's error after the statement and rolls the statement
//! back. The record is per thread because a connection runs on one thread
//! at a time, and the apply connection's statements run on the apply
//! thread inside a [`WriteScope`].

use std::cell::RefCell;

use resqlite_wire::SqlError;

use super::budget;
use crate::sql::deny::{self, DeniedFunction};
use crate::sql::sqlstate::{
    FEATURE_NOT_SUPPORTED, INSUFFICIENT_PRIVILEGE, NUMERIC_VALUE_OUT_OF_RANGE,
};

/// Something a replicated write may not do, found while it ran.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Violation {
    /// It read the current time.
    Clock,
    /// It converted with the server's time zone (`'localtime'`, `'utc'`).
    TimeZone,
    /// It called a denied function.
    Function(&'static DeniedFunction),
    /// It read or changed a denied table.
    Table { name: String, why: &'static str },
    /// It created a TEMP object.
    TempObject(&'static str),
    /// It reached for the server's files or settings (ATTACH, PRAGMA …).
    Privilege(&'static str),
    /// It went over a deterministic budget.
    Budget(budget::Exceeded),
    /// It stored the largest rowid, after which SQLite picks random ones.
    ReservedRowid,
    /// It called a function its entry's version did not have
    /// ([`super::semantics`]).
    NoSuchFunction(String),
}

impl Violation {
    /// The error its client gets; the same on every node.
    pub(crate) fn to_sql_error(&self) -> SqlError {
        match self {
            Violation::Clock => SqlError::new(
                FEATURE_NOT_SUPPORTED,
                "reading the server's clock (CURRENT_TIMESTAMP, 'now', 'subsec' or a date \
                 function with no time value) is not allowed in writes: it differs on every node, \
                 so replicas would diverge; compute the time in the client and pass it as a \
                 parameter",
            ),
            Violation::TimeZone => SqlError::new(
                FEATURE_NOT_SUPPORTED,
                "converting with the server's time zone ('localtime' or 'utc') is not allowed in \
                 writes: it may differ between nodes, so replicas would diverge; convert in the \
                 client",
            ),
            Violation::Function(f) => deny::function_error(f),
            // As SQLite words it, where the function did not exist.
            Violation::NoSuchFunction(name) => {
                SqlError::new("42883", format!("no such function: {name}"))
            }
            Violation::Table { name, why } => deny::table_error(name, why),
            Violation::TempObject(kind) => deny::temp_object_error(kind),
            Violation::Privilege(what) => SqlError::new(
                INSUFFICIENT_PRIVILEGE,
                format!("{what} is not allowed in writes: SQL may not reach the server's files or settings"),
            ),
            Violation::Budget(exceeded) => exceeded.to_sql_error(),
            Violation::ReservedRowid => SqlError::new(
                NUMERIC_VALUE_OUT_OF_RANGE,
                format!(
                    "rowid {} is reserved: once a table holds it, SQLite picks random rowids for \
                     new rows, so replicas would diverge",
                    i64::MAX
                ),
            ),
        }
    }
}

#[derive(Default)]
struct Watch {
    /// A user's write runs on this thread now.
    active: bool,
    first: Option<Violation>,
    /// Progress-handler calls during this write (see [`budget`]).
    progress_calls: u64,
}

thread_local! {
    static WATCH: RefCell<Watch> = RefCell::new(Watch::default());
}

/// Records `v` if a write is running on this thread (the first one wins).
/// Returns whether one is running.
pub(crate) fn record(v: Violation) -> bool {
    WATCH.with(|w| {
        let mut w = w.borrow_mut();
        if w.active && w.first.is_none() {
            w.first = Some(v);
        }
        w.active
    })
}

/// Whether a user's write runs on this thread now.
pub(crate) fn in_write() -> bool {
    WATCH.with(|w| w.borrow().active)
}

/// Counts one progress-handler call of the running write; returns the
/// count so far (0 when no write runs).
pub(crate) fn count_progress() -> u64 {
    WATCH.with(|w| {
        let mut w = w.borrow_mut();
        if !w.active {
            return 0;
        }
        w.progress_calls += 1;
        w.progress_calls
    })
}

/// A user's write running on this thread. Dropping it ends the watch.
pub(crate) struct WriteScope {
    _not_send: std::marker::PhantomData<*const ()>,
}

impl WriteScope {
    /// Starts watching a write on this thread.
    pub(crate) fn enter() -> Self {
        WATCH.with(|w| {
            *w.borrow_mut() = Watch {
                active: true,
                first: None,
                progress_calls: 0,
            }
        });
        WriteScope {
            _not_send: std::marker::PhantomData,
        }
    }

    /// Ends the watch and returns what the write reached for, if anything.
    pub(crate) fn finish(self) -> Option<Violation> {
        WATCH.with(|w| w.borrow_mut().first.take())
    }
}

impl Drop for WriteScope {
    fn drop(&mut self) {
        WATCH.with(|w| *w.borrow_mut() = Watch::default());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_first_violation_inside_a_scope_is_kept() {
        assert!(
            !record(Violation::Clock),
            "nothing is recorded outside a write"
        );
        let scope = WriteScope::enter();
        assert!(record(Violation::TimeZone));
        assert!(record(Violation::Clock));
        assert_eq!(scope.finish(), Some(Violation::TimeZone));
        assert!(!in_write());
    }
}
