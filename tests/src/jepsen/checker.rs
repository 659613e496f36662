//! The checkers: linearizability of each register (a Wing–Gong/Lowe search
//! with memoisation) and the set's "nothing lost, nothing invented".
//!
//! Why not a crate: `todc-utils` (the WGL checker the issue names) panics on
//! a history with an operation that never returned, so an op with an unknown
//! outcome cannot be expressed, and its history list is O(n) per step;
//! stateright's `LinearizabilityTester` enumerates interleavings without
//! memoisation and brings the whole model checker with it. The search below
//! is ~150 lines: ops with an unknown outcome return "at infinity", so they
//! may take effect anywhere after their invocation or not at all.

use std::collections::{BTreeMap, BTreeSet, HashSet};

/// What a register op did, as far as its client knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegisterOp {
    /// A read that returned this value (`None`: no row).
    Read(Option<i64>),
    /// A write of this value.
    Write(i64),
    /// A compare-and-set that changed `from` to `to` (one row affected).
    CasOk { from: i64, to: i64 },
    /// A compare-and-set that found another value (no row affected).
    CasFail { from: i64 },
    /// A compare-and-set whose outcome is unknown.
    CasUnknown { from: i64, to: i64 },
}

impl RegisterOp {
    /// The state after this op in state `s`, or `None` if the op cannot
    /// have happened in `s`.
    fn step(self, s: Option<i64>) -> Option<Option<i64>> {
        match self {
            RegisterOp::Read(v) => (s == v).then_some(s),
            RegisterOp::Write(v) => Some(Some(v)),
            RegisterOp::CasOk { from, to } => (s == Some(from)).then_some(Some(to)),
            RegisterOp::CasFail { from } => (s != Some(from)).then_some(s),
            RegisterOp::CasUnknown { from, to } => Some(if s == Some(from) { Some(to) } else { s }),
        }
    }
}

/// One op on one register: invoked at `invoke`, returned at `complete`
/// (`None`: the outcome is unknown, the op may still take effect at any
/// later time or never). Times are microseconds on one clock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimedOp {
    pub invoke: u64,
    pub complete: Option<u64>,
    pub op: RegisterOp,
    /// The history's own id for this op, echoed in reports.
    pub id: usize,
}

/// The answer for one register.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Linearizability {
    Ok,
    /// No order fits. `stuck_at` is an op (by id) that had to return before
    /// any remaining op could be linearized, at the deepest point reached;
    /// `prefix` is that deepest linearization (ids).
    Violation {
        stuck_at: usize,
        prefix: Vec<usize>,
    },
    /// The search gave up after this many steps.
    Undecided {
        steps: u64,
    },
}

const NIL: usize = usize::MAX;

/// Checks one register's history against a register that starts holding
/// `initial`. Reads must carry the value they returned; reads with no
/// answer must be left out (they change nothing).
pub fn check_register(initial: Option<i64>, ops: &[TimedOp], max_steps: u64) -> Linearizability {
    // Events: a call and a return per op; unknown ops return after all others.
    // At equal times calls sort first, so touching ops count as concurrent
    // (the lenient choice: never a false alarm from clock granularity).
    let mut events: Vec<(u64, bool, usize)> = Vec::with_capacity(ops.len() * 2);
    for (i, o) in ops.iter().enumerate() {
        events.push((o.invoke, false, i));
        events.push((o.complete.unwrap_or(u64::MAX), true, i));
    }
    events.sort();
    let n = events.len();
    // Doubly linked list over events with a head sentinel at index n.
    let mut next: Vec<usize> = (1..=n).map(|i| if i == n { NIL } else { i }).collect();
    next.push(if n == 0 { NIL } else { 0 });
    let mut prev: Vec<usize> = (0..n).map(|i| if i == 0 { n } else { i - 1 }).collect();
    prev.push(NIL);
    let mut ret_of = vec![0usize; ops.len()];
    for (e, &(_, is_ret, op)) in events.iter().enumerate() {
        if is_ret {
            ret_of[op] = e;
        }
    }
    let unlink = |next: &mut Vec<usize>, prev: &mut Vec<usize>, e: usize| {
        let (p, nx) = (prev[e], next[e]);
        next[p] = nx;
        if nx != NIL {
            prev[nx] = p;
        }
    };
    let relink = |next: &mut Vec<usize>, prev: &mut Vec<usize>, e: usize| {
        let (p, nx) = (prev[e], next[e]);
        next[p] = e;
        if nx != NIL {
            prev[nx] = e;
        }
    };
    // 128-bit Zobrist keys per op: the memo holds (set of linearized ops,
    // state) without storing the set itself.
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut rnd = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let keys: Vec<(u64, u64)> = ops.iter().map(|_| (rnd(), rnd())).collect();
    let mut known_left = ops.iter().filter(|o| o.complete.is_some()).count();
    let mut memo: HashSet<(u64, u64, Option<i64>)> = HashSet::new();
    let mut hash = (0u64, 0u64);
    let mut state = initial;
    let mut stack: Vec<(usize, Option<i64>)> = Vec::new();
    let mut best: (usize, usize, Vec<usize>) = (0, NIL, Vec::new());
    let mut steps = 0u64;
    let mut e = next[n];
    while known_left > 0 {
        steps += 1;
        if steps > max_steps {
            return Linearizability::Undecided { steps };
        }
        // Either linearize the call at `e`, or take back the last call
        // linearized (`e` is a return that cannot go yet, or the end).
        let (call, s) = if e == NIL {
            // Only unknown ops' returns remain past here; cannot happen
            // while a known op is left, but backtrack defensively.
            match stack.pop() {
                None => break,
                Some(top) => top,
            }
        } else {
            let (_, is_ret, op) = events[e];
            if !is_ret {
                if let Some(s2) = ops[op].op.step(state) {
                    let h2 = (hash.0 ^ keys[op].0, hash.1 ^ keys[op].1);
                    if memo.insert((h2.0, h2.1, s2)) {
                        stack.push((e, state));
                        state = s2;
                        hash = h2;
                        if ops[op].complete.is_some() {
                            known_left -= 1;
                        }
                        unlink(&mut next, &mut prev, e);
                        unlink(&mut next, &mut prev, ret_of[op]);
                        e = next[n];
                        continue;
                    }
                }
                e = next[e];
                continue;
            }
            if stack.len() >= best.0 {
                best = (
                    stack.len(),
                    ops[op].id,
                    stack.iter().map(|&(c, _)| ops[events[c].2].id).collect(),
                );
            }
            match stack.pop() {
                None => {
                    return Linearizability::Violation {
                        stuck_at: best.1,
                        prefix: best.2,
                    }
                }
                Some(top) => top,
            }
        };
        let op = events[call].2;
        state = s;
        hash = (hash.0 ^ keys[op].0, hash.1 ^ keys[op].1);
        if ops[op].complete.is_some() {
            known_left += 1;
        }
        relink(&mut next, &mut prev, ret_of[op]);
        relink(&mut next, &mut prev, call);
        e = next[call];
    }
    Linearizability::Ok
}

/// How one insert of the set workload ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InsertOutcome {
    Ok,
    Fail,
    Unknown,
}

/// The set checker's findings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SetReport {
    /// Acknowledged inserts missing from the final read.
    pub lost: Vec<i64>,
    /// Rows in the final read that no client tried to insert.
    pub unexpected: Vec<i64>,
    /// Rows present although their insert was reported as not executed.
    pub failed_but_present: Vec<i64>,
    /// Inserts with an unknown outcome that are present / absent (both fine).
    pub unknown_present: usize,
    pub unknown_absent: usize,
}

impl SetReport {
    /// Anomalies found (each lost, invented or failed-yet-present row).
    pub fn anomalies(&self) -> usize {
        self.lost.len() + self.unexpected.len() + self.failed_but_present.len()
    }
}

/// Checks the final contents of the set against what clients were told.
/// An id attempted several times counts with its best outcome.
pub fn check_set(attempts: &[(i64, InsertOutcome)], final_rows: &BTreeSet<i64>) -> SetReport {
    let mut best: BTreeMap<i64, InsertOutcome> = BTreeMap::new();
    for &(id, o) in attempts {
        let rank = |o: InsertOutcome| match o {
            InsertOutcome::Fail => 0,
            InsertOutcome::Unknown => 1,
            InsertOutcome::Ok => 2,
        };
        let e = best.entry(id).or_insert(o);
        if rank(o) > rank(*e) {
            *e = o;
        }
    }
    let mut r = SetReport::default();
    for (&id, &o) in &best {
        let present = final_rows.contains(&id);
        match (o, present) {
            (InsertOutcome::Ok, false) => r.lost.push(id),
            (InsertOutcome::Fail, true) => r.failed_but_present.push(id),
            (InsertOutcome::Unknown, true) => r.unknown_present += 1,
            (InsertOutcome::Unknown, false) => r.unknown_absent += 1,
            _ => {}
        }
    }
    r.unexpected = final_rows
        .iter()
        .filter(|id| !best.contains_key(id))
        .copied()
        .collect();
    r
}

#[cfg(test)]
mod tests {
    use super::RegisterOp::*;
    use super::*;

    fn op(id: usize, invoke: u64, complete: Option<u64>, op: RegisterOp) -> TimedOp {
        TimedOp {
            invoke,
            complete,
            op,
            id,
        }
    }

    fn check(ops: &[TimedOp]) -> Linearizability {
        check_register(Some(0), ops, 1_000_000)
    }

    #[test]
    fn sequential_history_is_linearizable() {
        let h = [
            op(0, 0, Some(10), Write(1)),
            op(1, 20, Some(30), Read(Some(1))),
            op(2, 40, Some(50), CasOk { from: 1, to: 2 }),
            op(3, 60, Some(70), CasFail { from: 1 }),
            op(4, 80, Some(90), Read(Some(2))),
        ];
        assert_eq!(check(&h), Linearizability::Ok);
    }

    #[test]
    fn concurrent_ops_may_take_effect_in_either_order() {
        // Two overlapping writes; reads after both see the one that won.
        let h = [
            op(0, 0, Some(100), Write(1)),
            op(1, 10, Some(90), Write(2)),
            op(2, 120, Some(130), Read(Some(1))),
            op(3, 140, Some(150), Read(Some(1))),
        ];
        assert_eq!(check(&h), Linearizability::Ok);
    }

    #[test]
    fn detects_a_stale_read() {
        // write 1 is acknowledged, then a later read returns the old 0.
        let h = [
            op(0, 0, Some(10), Write(1)),
            op(1, 20, Some(30), Read(Some(0))),
        ];
        assert!(matches!(
            check(&h),
            Linearizability::Violation { stuck_at: 1, .. }
        ));
    }

    #[test]
    fn detects_a_lost_write() {
        // write 2 acknowledged; a read long after returns 1 and nothing
        // else wrote 1 after it.
        let h = [
            op(0, 0, Some(10), Write(1)),
            op(1, 20, Some(30), Write(2)),
            op(2, 40, Some(50), Read(Some(2))),
            op(3, 60, Some(70), Read(Some(1))),
        ];
        assert!(matches!(check(&h), Linearizability::Violation { .. }));
    }

    #[test]
    fn detects_a_non_linearizable_cas() {
        // Both CAS 0->1 and CAS 0->2 claim success, sequentially: the second
        // must have seen 1, not 0.
        let h = [
            op(0, 0, Some(10), CasOk { from: 0, to: 1 }),
            op(1, 20, Some(30), CasOk { from: 0, to: 2 }),
        ];
        assert!(matches!(check(&h), Linearizability::Violation { .. }));
        // And a CAS that "failed" although the value was there.
        let h = [
            op(0, 0, Some(10), Write(5)),
            op(1, 20, Some(30), CasFail { from: 5 }),
        ];
        assert!(matches!(check(&h), Linearizability::Violation { .. }));
    }

    #[test]
    fn unknown_ops_may_or_may_not_happen() {
        // An unknown write seen by a later read: fine.
        let seen = [
            op(0, 0, None, Write(7)),
            op(1, 50, Some(60), Read(Some(7))),
            op(2, 70, Some(80), Read(Some(7))),
        ];
        assert_eq!(check(&seen), Linearizability::Ok);
        // An unknown write never seen: fine.
        let unseen = [op(0, 0, None, Write(7)), op(1, 50, Some(60), Read(Some(0)))];
        assert_eq!(check(&unseen), Linearizability::Ok);
        // Taking effect late is fine, but not flickering: 7, then 0, then 7.
        let flicker = [
            op(0, 0, None, Write(7)),
            op(1, 50, Some(60), Read(Some(7))),
            op(2, 70, Some(80), Read(Some(0))),
        ];
        assert!(matches!(check(&flicker), Linearizability::Violation { .. }));
        // An unknown CAS that took effect.
        let cas = [
            op(0, 0, None, CasUnknown { from: 0, to: 3 }),
            op(1, 50, Some(60), Read(Some(3))),
        ];
        assert_eq!(check(&cas), Linearizability::Ok);
        // An unknown op cannot take effect before it was invoked.
        let early = [op(0, 0, Some(10), Read(Some(9))), op(1, 20, None, Write(9))];
        assert!(matches!(check(&early), Linearizability::Violation { .. }));
    }

    #[test]
    fn many_concurrent_unknown_writes_stay_tractable() {
        // 200 unknown writes and 400 reads: the memo must keep this quick.
        let mut h = Vec::new();
        let mut id = 0;
        for i in 0..200u64 {
            h.push(op(id, i * 10, None, Write(i as i64 + 1)));
            id += 1;
            h.push(op(
                id,
                i * 10 + 1,
                Some(i * 10 + 5),
                Read(Some(i as i64 + 1)),
            ));
            id += 1;
            h.push(op(
                id,
                i * 10 + 6,
                Some(i * 10 + 8),
                Read(Some(i as i64 + 1)),
            ));
            id += 1;
        }
        assert_eq!(check_register(Some(0), &h, 5_000_000), Linearizability::Ok);
    }

    #[test]
    fn set_checker_finds_lost_and_invented_rows() {
        use InsertOutcome::*;
        let attempts = [(1, Ok), (2, Ok), (3, Unknown), (4, Fail), (5, Unknown)];
        let fine: BTreeSet<i64> = [1, 2, 3].into();
        let r = check_set(&attempts, &fine);
        assert_eq!(r.anomalies(), 0);
        assert_eq!((r.unknown_present, r.unknown_absent), (1, 1));

        let lossy: BTreeSet<i64> = [1, 3].into();
        assert_eq!(check_set(&attempts, &lossy).lost, vec![2]);
        let invented: BTreeSet<i64> = [1, 2, 99].into();
        assert_eq!(check_set(&attempts, &invented).unexpected, vec![99]);
        let failed: BTreeSet<i64> = [1, 2, 4].into();
        assert_eq!(check_set(&attempts, &failed).failed_but_present, vec![4]);
    }
}
