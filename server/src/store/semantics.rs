//! Which apply semantics a log entry was written for.
//!
//! A log entry must mean the same on every node, whatever ReSQLite version
//! each runs, or replicas diverge while a cluster is upgraded one node at a
//! time, and when a node replays old entries after its upgrade. So a
//! version whose apply connection accepts something an older one refused
//! (a new SQL function, a write the authorizer now lets through) numbers
//! that change here, and the leader stamps every write and transaction
//! with [`CURRENT`]. On apply:
//!
//! - an entry stamped with a newer number than this node knows halts the
//!   node ("upgrade this node") instead of being applied differently;
//! - an entry stamped with an older number is applied as that version did:
//!   what came later is refused by the authorizer, at prepare time, as the
//!   older version refused it (the same effect: nothing applied).
//!
//! | semantics | what came with it |
//! |---|---|
//! | 0 | entries written before the stamp existed |
//! | 1 | PostgreSQL's functions on the apply connection (`pg_functions`); SQLite's own `ALTER TABLE … RENAME` may read and update the temp catalog and rename an AUTOINCREMENT counter |

use std::cell::Cell;

/// What this version applies. Raise it with every change that makes the
/// apply connection accept a statement an older version refused.
pub const CURRENT: u32 = 1;

/// The semantics that brought PostgreSQL's functions and `ALTER TABLE …
/// RENAME`.
pub const PG_FUNCTIONS_AND_RENAME: u32 = 1;

thread_local! {
    /// The stamp of the entry being applied on this thread; [`CURRENT`]
    /// outside the apply path (the leader's own speculation).
    static ENTRY: Cell<u32> = const { Cell::new(CURRENT) };
}

/// Whether the entry being applied on this thread was written by a version
/// that had what `since` brought.
pub fn has(since: u32) -> bool {
    ENTRY.with(|e| e.get() >= since)
}

/// Why this node cannot apply an entry stamped `semantics`, if it cannot.
pub fn unsupported(semantics: u32) -> Option<String> {
    (semantics > CURRENT).then(|| {
        format!(
            "a log entry needs apply semantics {semantics}, and this node's ReSQLite knows only up \
             to {CURRENT}: it stops rather than apply it differently; upgrade this node"
        )
    })
}

/// Marks this thread as applying an entry stamped `semantics` until the
/// value is dropped.
pub struct Applying {
    previous: u32,
}

impl Applying {
    pub fn enter(semantics: u32) -> Applying {
        let previous = ENTRY.with(|e| e.replace(semantics));
        Applying { previous }
    }
}

impl Drop for Applying {
    fn drop(&mut self) {
        ENTRY.with(|e| e.set(self.previous));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_marks_its_thread_while_it_is_applied() {
        assert!(has(PG_FUNCTIONS_AND_RENAME));
        {
            let _old = Applying::enter(0);
            assert!(!has(PG_FUNCTIONS_AND_RENAME));
        }
        assert!(has(PG_FUNCTIONS_AND_RENAME));
        assert!(unsupported(CURRENT).is_none());
        assert!(unsupported(CURRENT + 1)
            .unwrap()
            .contains("upgrade this node"));
    }
}
