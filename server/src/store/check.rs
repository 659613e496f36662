//! `resqlite check`: replicas prove they are identical.
//!
//! A check entry goes through the Raft log like any write. Every member,
//! when it applies it, hashes its user-visible database on the apply
//! connection inside the apply transaction — so it hashes exactly the state
//! at that log index — and remembers (index, hash) in a [`CheckLog`] the
//! node reports in its status. The leader then gathers the voters' hashes
//! and proposes a verdict entry carrying the hash a majority of them hold
//! (not simply its own: a node restarted on a damaged file may well be the
//! one elected); every member, the leader included, compares it with its
//! own and, on a mismatch, reports itself diverged.
//!
//! What is hashed is what a client can see and what decides future
//! results: the schema (minus the page numbers, which differ between a
//! node restored from a snapshot and one that was not), every table's rows
//! in key order with their rowids, and `sqlite_sequence` (the next
//! AUTOINCREMENT ids). ReSQLite's own tables (`_resqlite…`, which hold each
//! node's applied index) and SQLite's planner statistics are left out.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use resqlite_wire::{Column, Outcome, PgType, Value};
use rusqlite::types::ValueRef;
use rusqlite::Connection;
use sha2::{Digest, Sha256};

use super::guard::INTERNAL_TABLE_PREFIX;
use super::log_command::CheckEntry;

/// The command tag of check and verdict entries.
pub const CHECK_TAG: &str = "CHECK";
/// Checks a node remembers, newest last, for verdicts to compare with.
const REMEMBERED_CHECKS: usize = 16;
/// Bumped whenever what is hashed or how changes: nodes of different
/// versions must not be compared.
const HASH_FORMAT: &[u8] = b"resqlite-check-v1";

/// SHA-256 of a database's user-visible contents.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct DbHash(pub [u8; 32]);

impl fmt::Display for DbHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

/// A hash that is not 64 hex digits.
#[derive(Debug, thiserror::Error)]
#[error("not a SHA-256 in hex: {0:?}")]
pub struct BadHash(String);

impl std::str::FromStr for DbHash {
    type Err = BadHash;

    fn from_str(s: &str) -> Result<Self, BadHash> {
        let bad = || BadHash(s.to_string());
        if s.len() != 64 || !s.is_ascii() {
            return Err(bad());
        }
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        Ok(DbHash(out))
    }
}

impl fmt::Debug for DbHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DbHash({self})")
    }
}

/// Hashes the user-visible database of `conn` (its `main` schema): the
/// schema rows (type, name, table, SQL; not the root page) ordered by type
/// and name, then each table's rows in key order (rowid order with the
/// rowid for rowid tables, primary-key order for WITHOUT ROWID tables),
/// then `sqlite_sequence`. Every value is encoded with its type and length,
/// a REAL by its IEEE bits, so no two different databases encode alike.
///
/// Run it inside a transaction (or with no writer) to hash one state.
pub fn database_hash(conn: &Connection) -> rusqlite::Result<DbHash> {
    let mut h = Encoder::default();
    h.bytes(b'V', HASH_FORMAT);
    let mut schema = conn
        .prepare("SELECT type, name, tbl_name, sql FROM main.sqlite_schema ORDER BY type, name")?;
    let mut rows = schema.query([])?;
    while let Some(row) = rows.next()? {
        let name: String = row.get(1)?;
        let table: String = row.get(2)?;
        if internal(&name) || internal(&table) {
            continue;
        }
        h.tag(b'S');
        for i in 0..4 {
            h.value(row.get_ref(i)?);
        }
    }
    for table in user_tables(conn)? {
        h.bytes(b'T', table.as_bytes());
        hash_rows(conn, &table, &mut h)?;
        h.tag(b'E');
    }
    let has_sequence: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM main.sqlite_schema \
         WHERE type = 'table' AND name = 'sqlite_sequence')",
        [],
        |r| r.get(0),
    )?;
    if has_sequence {
        h.tag(b'Q');
        let mut seq =
            conn.prepare("SELECT name, seq FROM main.sqlite_sequence ORDER BY name, seq")?;
        let mut rows = seq.query([])?;
        while let Some(row) = rows.next()? {
            h.tag(b'R');
            h.value(row.get_ref(0)?);
            h.value(row.get_ref(1)?);
        }
    }
    Ok(h.finish())
}

/// Whether `name` is ReSQLite's or SQLite's own object rather than
/// replicated data. SQLite names are case-insensitive, so is this. The
/// roles are ReSQLite's own but replicated: they are hashed.
fn internal(name: &str) -> bool {
    let starts = |prefix: &str| {
        name.len() >= prefix.len()
            && name.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
    };
    let replicated = name.eq_ignore_ascii_case(super::roles::ROLES_TABLE);
    !replicated && (starts(INTERNAL_TABLE_PREFIX) || starts("sqlite_"))
}

/// The user's tables whose rows are hashed, by name: ordinary tables and
/// the shadow tables that hold a virtual table's data. A virtual table's
/// own rows come from its module (and its shadow tables), so only its
/// schema row is hashed.
fn user_tables(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    let mut stmt = conn.prepare(
        "SELECT name FROM pragma_table_list \
         WHERE schema = 'main' AND type IN ('table', 'shadow') ORDER BY name",
    )?;
    let names = stmt.query_map([], |r| r.get::<_, String>(0))?;
    let mut out = Vec::new();
    for name in names {
        let name = name?;
        if !internal(&name) {
            out.push(name);
        }
    }
    Ok(out)
}

/// Hashes the rows of `table` in key order.
fn hash_rows(conn: &Connection, table: &str, h: &mut Encoder) -> rusqlite::Result<()> {
    let without_rowid: bool = conn.query_row(
        "SELECT wr FROM pragma_table_list WHERE schema = 'main' AND name = ?1",
        [table],
        |r| r.get(0),
    )?;
    let mut columns = Vec::new();
    let mut key = Vec::new();
    let mut info = conn.prepare("SELECT name, pk FROM pragma_table_xinfo(?1, 'main')")?;
    let mut rows = info.query([table])?;
    while let Some(row) = rows.next()? {
        let name: String = row.get(0)?;
        let pk: i64 = row.get(1)?;
        if pk > 0 {
            key.push((pk, name.clone()));
        }
        columns.push(name);
    }
    key.sort();
    let quoted = quote(table);
    let sql = if without_rowid {
        let order: Vec<String> = key.iter().map(|(_, c)| quote(c)).collect();
        format!("SELECT * FROM main.{quoted} ORDER BY {}", order.join(", "))
    } else {
        // The rowid is user-visible state (SELECT rowid; the next rowid
        // SQLite picks), unless every name for it is taken by a column.
        let alias = ["rowid", "_rowid_", "oid"]
            .into_iter()
            .find(|a| !columns.iter().any(|c| c.eq_ignore_ascii_case(a)));
        match alias {
            Some(a) => {
                h.tag(b'r');
                format!("SELECT {a}, * FROM main.{quoted} ORDER BY {a}")
            }
            None => {
                let order: Vec<String> = (1..=columns.len())
                    .map(|i| format!("{i} COLLATE BINARY"))
                    .collect();
                format!("SELECT * FROM main.{quoted} ORDER BY {}", order.join(", "))
            }
        }
    };
    let mut select = conn.prepare(&sql)?;
    let width = select.column_count();
    h.bytes(b'C', &(width as u64).to_be_bytes());
    let mut rows = select.query([])?;
    while let Some(row) = rows.next()? {
        h.tag(b'R');
        for i in 0..width {
            h.value(row.get_ref(i)?);
        }
    }
    Ok(())
}

/// `name` as a quoted SQLite identifier.
fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Feeds tagged, length-prefixed items into SHA-256, so that the encoding
/// of a database is unambiguous (no two sequences of items encode alike).
#[derive(Default)]
struct Encoder(Sha256);

impl Encoder {
    fn tag(&mut self, tag: u8) {
        self.0.update([tag]);
    }

    fn bytes(&mut self, tag: u8, b: &[u8]) {
        self.0.update([tag]);
        self.0.update((b.len() as u64).to_be_bytes());
        self.0.update(b);
    }

    fn value(&mut self, v: ValueRef<'_>) {
        match v {
            ValueRef::Null => self.tag(0),
            ValueRef::Integer(i) => {
                self.tag(1);
                self.0.update(i.to_be_bytes());
            }
            ValueRef::Real(f) => {
                self.tag(2);
                self.0.update(f.to_bits().to_be_bytes());
            }
            ValueRef::Text(t) => self.bytes(3, t),
            ValueRef::Blob(b) => self.bytes(4, b),
        }
    }

    fn finish(self) -> DbHash {
        DbHash(self.0.finalize().into())
    }
}

/// What this node learned from the checks it applied, shared between the
/// state machine (which writes it) and the node's status (which reads it).
/// In memory only: after a restart a node has no check and no verdict
/// until the next `resqlite check`.
#[derive(Clone, Default)]
pub struct CheckLog {
    inner: Arc<Mutex<CheckState>>,
}

#[derive(Default)]
struct CheckState {
    /// (check index, own hash), oldest first.
    recent: VecDeque<(u64, DbHash)>,
    diverged: Option<String>,
}

/// A node's check results, as its status shows them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CheckStatus {
    /// The newest check applied: its index and this node's hash there.
    pub last: Option<(u64, DbHash)>,
    /// Why this node's database differs from the majority's, if a verdict
    /// said so.
    pub diverged: Option<String>,
}

/// How a verdict compares with this node's own hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Same hash: this node holds the majority's database.
    Agrees,
    /// Different: this node diverged.
    Differs {
        /// This node's hash at the check.
        own: DbHash,
    },
    /// This node has no hash for that check: it did not apply it in this
    /// process (it restarted after, or restored a snapshot past it).
    Unknown,
}

impl CheckLog {
    fn lock(&self) -> MutexGuard<'_, CheckState> {
        // The state is two plain fields, valid after any panic.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The newest check and whether this node diverged.
    pub fn status(&self) -> CheckStatus {
        let s = self.lock();
        CheckStatus {
            last: s.recent.back().copied(),
            diverged: s.diverged.clone(),
        }
    }

    /// Remembers this node's hash at check `index`.
    pub fn record(&self, index: u64, hash: DbHash) {
        let mut s = self.lock();
        s.recent.retain(|&(i, _)| i != index);
        s.recent.push_back((index, hash));
        while s.recent.len() > REMEMBERED_CHECKS {
            s.recent.pop_front();
        }
    }

    /// Compares the verdict's hash at check `index` with this node's own;
    /// on a difference, marks this node diverged (for good: a node that
    /// differed once is not trusted again until it is rebuilt).
    pub fn verdict(&self, index: u64, majority: DbHash) -> Verdict {
        let mut s = self.lock();
        let own = s.recent.iter().find(|&&(i, _)| i == index).map(|&(_, h)| h);
        match own {
            None => Verdict::Unknown,
            Some(own) if own == majority => Verdict::Agrees,
            Some(own) => {
                if s.diverged.is_none() {
                    s.diverged = Some(format!(
                        "check at index {index}: this node's hash {own} differs from the \
                         hash a majority of the voters hold, {majority}"
                    ));
                }
                Verdict::Differs { own }
            }
        }
    }
}

/// Sets the apply connection's authorizer switch for ReSQLite's own
/// statements while it lives, and clears it when dropped (even on panic).
struct InternalStatements<'a>(&'a AtomicBool);

impl<'a> InternalStatements<'a> {
    fn enter(flag: &'a AtomicBool) -> Self {
        flag.store(true, Ordering::Relaxed);
        InternalStatements(flag)
    }
}

impl Drop for InternalStatements<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Relaxed);
    }
}

/// Applies a check or verdict entry at log `index` on the apply connection
/// `conn` (inside the batch's transaction; `internal` is its authorizer
/// switch). An error is this node's own failure to read its database (I/O,
/// corruption): the caller must halt, never skip the entry.
pub fn apply_entry(
    log: &CheckLog,
    conn: &Connection,
    internal: &AtomicBool,
    index: u64,
    entry: CheckEntry,
) -> rusqlite::Result<Outcome> {
    match entry {
        CheckEntry::Run => {
            let hash = {
                let _internal = InternalStatements::enter(internal);
                database_hash(conn)?
            };
            tracing::info!(index, hash = %hash, "consistency check: database hashed");
            log.record(index, hash);
            Ok(check_outcome(index, &hash))
        }
        CheckEntry::Verdict {
            index: checked,
            hash,
        } => {
            match log.verdict(checked, hash) {
                Verdict::Agrees => {
                    tracing::info!(check = checked, hash = %hash, "consistency check: same hash as the majority")
                }
                Verdict::Differs { own } => tracing::error!(
                    check = checked,
                    own = %own,
                    majority = %hash,
                    "consistency check: this replica's database differs from the one a majority \
                     of the voters hold; \
                     it has diverged and must be rebuilt (stop it, wipe it, rejoin under a new id)"
                ),
                Verdict::Unknown => tracing::warn!(
                    check = checked,
                    "consistency check: no own hash for this check (restarted or restored a \
                     snapshot since); not compared"
                ),
            }
            Ok(Outcome {
                tag: CHECK_TAG.to_string(),
                columns: Vec::new(),
                rows: Vec::new(),
            })
        }
    }
}

/// What applying a check entry gives the leader that proposed it: one row,
/// (index, hash).
fn check_outcome(index: u64, hash: &DbHash) -> Outcome {
    Outcome {
        tag: CHECK_TAG.to_string(),
        columns: vec![
            Column {
                name: "index".into(),
                pg_type: PgType::Int8,
            },
            Column {
                name: "hash".into(),
                pg_type: PgType::Bytea,
            },
        ],
        rows: vec![vec![
            Value::Integer(index as i64),
            Value::Blob(hash.0.to_vec()),
        ]],
    }
}

/// The (index, hash) a check entry's [`Outcome`] carries; `None` if it is
/// not one.
pub fn from_outcome(outcome: &Outcome) -> Option<(u64, DbHash)> {
    match outcome.rows.as_slice() {
        [row] => match row.as_slice() {
            [Value::Integer(index), Value::Blob(hash)] => Some((
                u64::try_from(*index).ok()?,
                DbHash(<[u8; 32]>::try_from(hash.as_slice()).ok()?),
            )),
            _ => None,
        },
        _ => None,
    }
}

#[cfg(test)]
#[path = "check_tests.rs"]
mod tests;
