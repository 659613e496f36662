//! Checkers of the transactional workloads: the bank's balances (every
//! snapshot adds up to the initial total, none is negative) and the
//! counter (no acknowledged increment lost, none invented, no two
//! acknowledged increments that read the same value).

use std::collections::BTreeMap;

use super::history::{describe, describe_value, OpKind, OpRecord, OpValue, Outcome, TransferMode};

/// Why a set of balances cannot be a state of the bank, if it cannot.
pub fn check_balances(total: i64, balances: &[i64]) -> Option<String> {
    let sum: i64 = balances.iter().sum();
    let negative: Vec<usize> = (0..balances.len()).filter(|&i| balances[i] < 0).collect();
    match (sum == total, negative.is_empty()) {
        (true, true) => None,
        (false, true) => Some(format!("total {sum}, not {total}: {balances:?}")),
        (true, false) => Some(format!("negative accounts {negative:?}: {balances:?}")),
        (false, false) => Some(format!(
            "total {sum}, not {total}, and negative accounts {negative:?}: {balances:?}"
        )),
    }
}

/// The bank's findings over a history.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BankReport {
    /// Reads that completed ok.
    pub reads: usize,
    /// Acknowledged transfers that moved money / found too little.
    pub applied: usize,
    pub refused: usize,
    /// Applied transfers that read before their first write (the others
    /// took the write gate first, or debited conditionally).
    pub applied_read_first: usize,
    /// Reads whose balances no state of the bank can have (ids), and why
    /// the first was wrong.
    pub bad_reads: Vec<usize>,
    pub first_bad: Option<String>,
}

impl BankReport {
    /// One line for all bad reads, if any.
    pub fn anomaly(&self, ops: &[OpRecord]) -> Option<String> {
        Some(format!(
            "{} reads saw balances no state of the bank can have, the first {}: {}",
            self.bad_reads.len(),
            self.first_bad.as_ref()?,
            first_few(ops, &self.bad_reads)
        ))
    }
}

/// Checks every read of the balances in `ops` against `total`.
pub fn check_bank(total: i64, ops: &[OpRecord]) -> BankReport {
    let mut r = BankReport::default();
    for (i, o) in ops.iter().enumerate() {
        if o.outcome != Outcome::Ok {
            continue;
        }
        match (o.kind, o.value) {
            (OpKind::ReadBalances, OpValue::Balances(b)) => {
                r.reads += 1;
                if let Some(why) = check_balances(total, &b) {
                    r.first_bad.get_or_insert(why);
                    r.bad_reads.push(i);
                }
            }
            (OpKind::Transfer { mode, .. }, OpValue::Applied(true)) => {
                r.applied += 1;
                if mode == TransferMode::ReadFirst {
                    r.applied_read_first += 1;
                }
            }
            (OpKind::Transfer { .. }, _) => r.refused += 1,
            _ => {}
        }
    }
    r
}

/// The counter's findings over a history and the final value.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CounterReport {
    pub final_value: i64,
    /// Increments acknowledged (COMMIT ok) / with an unknown outcome.
    pub acked: usize,
    /// Acknowledged increments that read before taking the write gate.
    pub acked_read_first: usize,
    pub unknown: usize,
    pub anomalies: Vec<String>,
}

/// Checks the counter: started at 0, every increment writes one more than
/// it read, so the committed increments wrote exactly `1..=final` once each.
/// Hence `acked <= final <= acked + unknown`, no two acknowledged
/// increments wrote the same value (one of them read a stale value and
/// the other's increment was lost), and none wrote more than `final`.
pub fn check_counter(ops: &[OpRecord], final_value: i64) -> CounterReport {
    let mut r = CounterReport {
        final_value,
        ..CounterReport::default()
    };
    let mut by_value: BTreeMap<i64, Vec<usize>> = BTreeMap::new();
    for (i, o) in ops.iter().enumerate() {
        if !matches!(o.kind, OpKind::Increment { .. }) {
            continue;
        }
        match o.outcome {
            Outcome::Ok => {
                r.acked += 1;
                if o.kind == (OpKind::Increment { lock_first: false }) {
                    r.acked_read_first += 1;
                }
                if let OpValue::Incremented(v) = o.value {
                    by_value.entry(v).or_default().push(i);
                }
            }
            Outcome::Unknown => r.unknown += 1,
            Outcome::Fail => {}
        }
    }
    let (acked, unknown) = (r.acked as i64, r.unknown as i64);
    if final_value < acked {
        r.anomalies.push(format!(
            "final value {final_value} < {acked} acknowledged increments: acknowledged increments lost"
        ));
    }
    if final_value > acked + unknown {
        r.anomalies.push(format!(
            "final value {final_value} > {acked} acknowledged + {unknown} unknown increments: \
             increments that failed took effect"
        ));
    }
    for (v, ids) in &by_value {
        if ids.len() > 1 {
            r.anomalies.push(format!(
                "{} acknowledged increments all wrote {v} (lost update): {}",
                ids.len(),
                first_few(ops, ids)
            ));
        }
    }
    let beyond: Vec<usize> = by_value
        .range(final_value + 1..)
        .flat_map(|(_, ids)| ids.iter().copied())
        .collect();
    if !beyond.is_empty() {
        r.anomalies.push(format!(
            "{} acknowledged increments wrote more than the final value {final_value}: {}",
            beyond.len(),
            first_few(ops, &beyond)
        ));
    }
    r
}

/// The first few of `ids` described, and how many more there are.
fn first_few(ops: &[OpRecord], ids: &[usize]) -> String {
    const FEW: usize = 3;
    let mut s: Vec<String> = ids
        .iter()
        .take(FEW)
        .map(|&i| format!("op#{i} {}", who(&ops[i])))
        .collect();
    if ids.len() > FEW {
        s.push(format!("and {} more", ids.len() - FEW));
    }
    s.join("; ")
}

fn who(o: &OpRecord) -> String {
    format!(
        "{}{} by p{} on node {} at {}..{} us",
        describe(&o.kind),
        describe_value(&o.value),
        o.process,
        o.node,
        o.invoke_us,
        o.complete_us
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jepsen::transactions::ACCOUNTS;

    fn op(kind: OpKind, outcome: Outcome, value: OpValue, t: u64) -> OpRecord {
        OpRecord {
            process: 0,
            node: 1,
            kind,
            outcome,
            value,
            invoke_us: t,
            complete_us: t + 5,
            error: String::new(),
        }
    }

    #[test]
    fn balances_must_add_up_and_stay_positive() {
        assert_eq!(check_balances(10, &[3, 7, 0]), None);
        assert!(check_balances(10, &[3, 6, 0]).unwrap().contains("total 9"));
        assert!(check_balances(10, &[-1, 11, 0])
            .unwrap()
            .contains("negative accounts [0]"));
    }

    #[test]
    fn bank_checker_flags_a_read_with_a_wrong_total() {
        let good = [100i64; ACCOUNTS];
        let mut bad = good;
        bad[0] -= 7;
        let t = OpKind::Transfer {
            from: 0,
            to: 1,
            amount: 7,
            mode: crate::jepsen::history::TransferMode::ReadFirst,
        };
        let ops = [
            op(t, Outcome::Ok, OpValue::Applied(true), 0),
            op(
                OpKind::ReadBalances,
                Outcome::Ok,
                OpValue::Balances(good),
                10,
            ),
            // A failed read carries nothing to check.
            op(OpKind::ReadBalances, Outcome::Fail, OpValue::None, 20),
            op(
                OpKind::ReadBalances,
                Outcome::Ok,
                OpValue::Balances(bad),
                30,
            ),
        ];
        let r = check_bank(500, &ops);
        assert_eq!((r.reads, r.applied), (2, 1));
        assert_eq!(r.bad_reads, vec![3]);
        let a = r.anomaly(&ops).unwrap();
        assert!(a.contains("total 493, not 500"), "{a}");
        assert!(a.contains("op#3 read balances"), "{a}");
        assert_eq!(check_bank(500, &ops[..3]).anomaly(&ops), None);
    }

    #[test]
    fn counter_checker_bounds_the_final_value_and_catches_lost_updates() {
        let inc = OpKind::Increment { lock_first: false };
        let ops = [
            op(inc, Outcome::Ok, OpValue::Incremented(1), 0),
            op(inc, Outcome::Ok, OpValue::Incremented(2), 10),
            op(inc, Outcome::Unknown, OpValue::None, 20),
            op(inc, Outcome::Fail, OpValue::None, 30),
        ];
        for fine in [2, 3] {
            assert_eq!(check_counter(&ops, fine).anomalies, Vec::<String>::new());
        }
        let lost = check_counter(&ops, 1);
        assert!(lost.anomalies[0].contains("increments lost"), "{lost:?}");
        assert!(lost.anomalies[1].contains("wrote more than the final value 1: op#1"));
        let invented = check_counter(&ops, 4);
        assert!(invented.anomalies[0].contains("failed took effect"));

        // Two acknowledged increments that both read 1: one update is lost,
        // even when an unknown increment makes up the final count.
        let stale = [
            op(inc, Outcome::Ok, OpValue::Incremented(1), 0),
            op(inc, Outcome::Ok, OpValue::Incremented(2), 10),
            op(inc, Outcome::Ok, OpValue::Incremented(2), 12),
            op(inc, Outcome::Unknown, OpValue::None, 20),
        ];
        let r = check_counter(&stale, 3);
        assert_eq!(r.anomalies.len(), 1, "{r:?}");
        assert!(r.anomalies[0].contains("2 acknowledged increments all wrote 2"));
    }
}
