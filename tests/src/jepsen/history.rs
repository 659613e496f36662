//! The recorded history: every client op with its invocation and completion
//! time and outcome, and every fault the nemesis injected, on one clock.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;

use super::checker::{InsertOutcome, RegisterOp, TimedOp};
use super::transactions::ACCOUNTS;
use super::workload::Workload;

/// What a client asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpKind {
    Read {
        key: i64,
    },
    Write {
        key: i64,
        value: i64,
    },
    Cas {
        key: i64,
        from: i64,
        to: i64,
    },
    Insert {
        id: i64,
    },
    /// Moves `amount` from account `from` to `to` in one transaction,
    /// unless `from` holds less.
    Transfer {
        from: i64,
        to: i64,
        amount: i64,
        mode: TransferMode,
    },
    /// Every account's balance, one `SELECT` each inside one
    /// `BEGIN READ ONLY … COMMIT`.
    ReadBalances,
    /// The counter's read-modify-write in one transaction. `lock_first`:
    /// a no-op write first takes the node's write gate, so no concurrent
    /// write can make the read stale.
    Increment {
        lock_first: bool,
    },
}

impl OpKind {
    /// The workload the op belongs to.
    pub fn workload(&self) -> Workload {
        match self {
            OpKind::Read { .. } | OpKind::Write { .. } | OpKind::Cas { .. } => Workload::Registers,
            OpKind::Insert { .. } => Workload::Set,
            OpKind::Transfer { .. } | OpKind::ReadBalances => Workload::Bank,
            OpKind::Increment { .. } => Workload::Counter,
        }
    }
}

/// How a transfer is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransferMode {
    /// `UPDATE … SET balance = balance - $amount WHERE … AND balance >= $amount`,
    /// then the credit if one row changed.
    Conditional,
    /// Reads both balances, then writes the new values: a stale read that
    /// committed would break the total. Fails with 40001 whenever any
    /// other write commits between its first read and its first write.
    ReadFirst,
    /// As `ReadFirst`, after a no-op write that takes the write gate, so
    /// no other write can come between its reads and its writes.
    LockFirst,
}

/// How an op ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// It happened, with this result.
    Ok,
    /// It certainly did not happen (refused before it could).
    Fail,
    /// It may or may not have happened (timeout, connection lost, 40003).
    Unknown,
}

/// What an ok op returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpValue {
    None,
    /// A read's value (`None`: no row).
    Read(Option<i64>),
    /// A CAS: whether it found `from` (one row affected); a transfer:
    /// whether `from` held enough and the money moved.
    Applied(bool),
    /// Every account's balance, by id.
    Balances([i64; ACCOUNTS]),
    /// An increment: the value it wrote (one more than it read).
    Incremented(i64),
}

/// One client op, invoked and completed.
#[derive(Clone, Debug)]
pub struct OpRecord {
    pub process: usize,
    pub node: u64,
    pub kind: OpKind,
    pub outcome: Outcome,
    pub value: OpValue,
    pub invoke_us: u64,
    pub complete_us: u64,
    /// The error that made it fail or unknown.
    pub error: String,
}

/// Ops and faults of one run, appended to concurrently.
pub struct History {
    start: Instant,
    ops: Mutex<Vec<OpRecord>>,
    faults: Mutex<Vec<(u64, String)>>,
}

impl Default for History {
    fn default() -> Self {
        Self::new()
    }
}

impl History {
    pub fn new() -> History {
        History {
            start: Instant::now(),
            ops: Mutex::new(Vec::new()),
            faults: Mutex::new(Vec::new()),
        }
    }

    /// Microseconds since the run started.
    pub fn now_us(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }

    pub fn record(&self, op: OpRecord) {
        self.ops.lock().expect("history lock poisoned").push(op);
    }

    /// Notes a nemesis action at the current time.
    pub fn fault(&self, what: impl Into<String>) {
        let t = self.now_us();
        self.faults
            .lock()
            .expect("history lock poisoned")
            .push((t, what.into()));
    }

    /// How many ops invoked at or after `since_us` completed ok, in all
    /// and per workload.
    pub fn ok_since(&self, since_us: u64) -> (usize, BTreeMap<Workload, usize>) {
        let ops = self.ops.lock().expect("history lock poisoned");
        let mut per = BTreeMap::new();
        let mut all = 0;
        for o in ops
            .iter()
            .filter(|o| o.outcome == Outcome::Ok && o.invoke_us >= since_us)
        {
            all += 1;
            *per.entry(o.kind.workload()).or_insert(0) += 1;
        }
        (all, per)
    }

    /// A copy of every op, in invocation order.
    pub fn ops(&self) -> Vec<OpRecord> {
        let mut ops = self.ops.lock().expect("history lock poisoned").clone();
        ops.sort_by_key(|o| (o.invoke_us, o.complete_us));
        ops
    }

    /// Each register's ops as the linearizability checker takes them,
    /// with ids indexing [`History::ops`]. Reads without an answer change
    /// nothing and are left out; so is every op that certainly failed.
    pub fn register_ops(ops: &[OpRecord]) -> BTreeMap<i64, Vec<TimedOp>> {
        let mut by_key: BTreeMap<i64, Vec<TimedOp>> = BTreeMap::new();
        for (id, o) in ops.iter().enumerate() {
            let complete = match o.outcome {
                Outcome::Fail => continue,
                Outcome::Ok => Some(o.complete_us),
                Outcome::Unknown => None,
            };
            let (key, op) = match (o.kind, o.value) {
                (OpKind::Read { key }, OpValue::Read(v)) if complete.is_some() => {
                    (key, RegisterOp::Read(v))
                }
                (OpKind::Read { .. }, _) => continue,
                (OpKind::Write { key, value }, _) => (key, RegisterOp::Write(value)),
                (OpKind::Cas { key, from, to }, OpValue::Applied(true)) => {
                    (key, RegisterOp::CasOk { from, to })
                }
                (OpKind::Cas { key, from, .. }, OpValue::Applied(false)) => {
                    (key, RegisterOp::CasFail { from })
                }
                (OpKind::Cas { key, from, to }, _) => (key, RegisterOp::CasUnknown { from, to }),
                (OpKind::Insert { .. }, _)
                | (OpKind::Transfer { .. }, _)
                | (OpKind::ReadBalances, _)
                | (OpKind::Increment { .. }, _) => continue,
            };
            by_key.entry(key).or_default().push(TimedOp {
                invoke: o.invoke_us,
                complete,
                op,
                id,
            });
        }
        by_key
    }

    /// Every insert of the set workload and how it ended.
    pub fn inserts(ops: &[OpRecord]) -> Vec<(i64, InsertOutcome)> {
        ops.iter()
            .filter_map(|o| match o.kind {
                OpKind::Insert { id } => Some((
                    id,
                    match o.outcome {
                        Outcome::Ok => InsertOutcome::Ok,
                        Outcome::Fail => InsertOutcome::Fail,
                        Outcome::Unknown => InsertOutcome::Unknown,
                    },
                )),
                _ => None,
            })
            .collect()
    }

    /// Writes the whole history (ops and faults, merged by time) as text,
    /// one event per line, for a person to read after a failure.
    pub fn write_to(&self, path: &Path, notes: &[String]) -> std::io::Result<()> {
        let ops = self.ops();
        let faults = self.faults.lock().expect("history lock poisoned").clone();
        let mut lines: Vec<(u64, String)> = Vec::new();
        for (i, o) in ops.iter().enumerate() {
            lines.push((
                o.invoke_us,
                format!(
                    "op#{i} p{} node={} invoke {}",
                    o.process,
                    o.node,
                    describe(&o.kind)
                ),
            ));
            let value = describe_value(&o.value);
            let err = if o.error.is_empty() {
                String::new()
            } else {
                format!(" error={:?}", o.error)
            };
            lines.push((
                o.complete_us,
                format!(
                    "op#{i} p{} node={} {:?}{value}{err} (took {} us)",
                    o.process,
                    o.node,
                    o.outcome,
                    o.complete_us.saturating_sub(o.invoke_us)
                ),
            ));
        }
        for (t, f) in faults {
            lines.push((t, format!("nemesis {f}")));
        }
        lines.sort_by_key(|(t, _)| *t);
        let mut text = String::new();
        for n in notes {
            let _ = writeln!(text, "# {n}");
        }
        for (t, l) in lines {
            let _ = writeln!(text, "{:>12.6} {l}", t as f64 / 1e6);
        }
        std::fs::write(path, text)
    }
}

/// An op as one line of text, e.g. `cas k=1 3->4`.
pub fn describe(k: &OpKind) -> String {
    match *k {
        OpKind::Read { key } => format!("read k={key}"),
        OpKind::Write { key, value } => format!("write k={key} v={value}"),
        OpKind::Cas { key, from, to } => format!("cas k={key} {from}->{to}"),
        OpKind::Insert { id } => format!("insert id={id}"),
        OpKind::Transfer {
            from,
            to,
            amount,
            mode,
        } => format!(
            "transfer {amount} from={from} to={to} ({})",
            match mode {
                TransferMode::Conditional => "conditional debit",
                TransferMode::ReadFirst => "read, then write",
                TransferMode::LockFirst => "lock, read, write",
            }
        ),
        OpKind::ReadBalances => "read balances".to_string(),
        OpKind::Increment { lock_first } => format!(
            "increment ({})",
            if lock_first {
                "lock first"
            } else {
                "read first"
            }
        ),
    }
}

/// An op's result as ` key=value` text (empty when there is none).
pub fn describe_value(v: &OpValue) -> String {
    match v {
        OpValue::None => String::new(),
        OpValue::Read(Some(v)) => format!(" value={v}"),
        OpValue::Read(None) => " value=none".to_string(),
        OpValue::Applied(a) => format!(" applied={a}"),
        OpValue::Balances(b) => format!(" balances={b:?} total={}", b.iter().sum::<i64>()),
        OpValue::Incremented(v) => format!(" wrote={v}"),
    }
}

/// Ids present in a final read of the set, parsed from rendered rows.
pub fn id_set(rows: &[Vec<String>]) -> BTreeSet<i64> {
    rows.iter()
        .filter_map(|r| r.first().and_then(|v| v.parse().ok()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jepsen::checker::{check_register, Linearizability};

    fn rec(kind: OpKind, outcome: Outcome, value: OpValue, t: (u64, u64)) -> OpRecord {
        OpRecord {
            process: 0,
            node: 1,
            kind,
            outcome,
            value,
            invoke_us: t.0,
            complete_us: t.1,
            error: String::new(),
        }
    }

    #[test]
    fn recorded_history_maps_outcomes_and_a_stale_read_is_caught() {
        let h = History::new();
        let w = OpKind::Write { key: 1, value: 5 };
        let r = OpKind::Read { key: 1 };
        h.record(rec(w, Outcome::Ok, OpValue::None, (0, 10)));
        // A refused write never happened: it cannot explain the read below.
        let w9 = OpKind::Write { key: 1, value: 9 };
        h.record(rec(w9, Outcome::Fail, OpValue::None, (12, 13)));
        // A read without an answer is dropped.
        h.record(rec(r, Outcome::Unknown, OpValue::None, (14, 15)));
        h.record(rec(r, Outcome::Ok, OpValue::Read(Some(0)), (20, 30)));
        let ops = h.ops();
        let regs = History::register_ops(&ops);
        assert_eq!(regs[&1].len(), 2);
        assert!(matches!(
            check_register(Some(0), &regs[&1], 1000),
            Linearizability::Violation { stuck_at: 3, .. }
        ));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.txt");
        h.write_to(&path, &["note".to_string()]).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("# note\n"));
        assert!(text.contains("write k=1 v=9") && text.contains("Fail"));
    }
}
