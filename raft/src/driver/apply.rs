//! The apply thread: feeds committed entries to the state machine in log
//! order, answers the proposals waiting on them and publishes the applied
//! index.
//!
//! Waiters arrive on the same ordered channel as the entries, always before
//! the entry they wait for, so no outcome can be missed.

use std::collections::BTreeMap;
use std::thread::JoinHandle;

use tokio::sync::{mpsc, oneshot, watch};

use super::{DriverError, ProposeError, StateMachine};
use crate::types::{Entry, NodeId};

/// Where the outcome of one proposal goes.
pub(crate) type Reply<O> = oneshot::Sender<Result<O, ProposeError>>;

/// A command for the apply thread.
pub(crate) enum ApplyCmd<O> {
    /// A proposal was appended at `index` in `term`; answer it once that
    /// index is applied.
    Register {
        index: u64,
        term: u64,
        reply: Reply<O>,
    },
    /// Committed entries, contiguous, in log order.
    Apply(Vec<Entry>),
    /// Leadership was lost: every waiter above `commit` may or may not
    /// commit ([`ProposeError::OutcomeUnknown`]). Those at or below it are
    /// committed entries of our term and will be applied.
    FailPending { commit: u64 },
}

struct Waiter<O> {
    term: u64,
    reply: Reply<O>,
}

/// Starts the apply thread, which owns the state machine.
pub(crate) fn spawn<S: StateMachine>(
    node: NodeId,
    sm: S,
    cmds: mpsc::Receiver<ApplyCmd<S::Output>>,
    applied: watch::Sender<u64>,
) -> Result<JoinHandle<()>, DriverError> {
    std::thread::Builder::new()
        .name(format!("raft-apply-{node}"))
        .spawn(move || run(node, sm, cmds, applied))
        .map_err(|source| DriverError::Thread {
            name: "apply",
            source,
        })
}

fn run<S: StateMachine>(
    node: NodeId,
    mut sm: S,
    mut cmds: mpsc::Receiver<ApplyCmd<S::Output>>,
    applied_tx: watch::Sender<u64>,
) {
    let mut applier = Applier {
        node,
        applied: sm.applied_index(),
        waiters: BTreeMap::new(),
    };
    let mut pending: Vec<Entry> = Vec::new();
    while let Some(first) = cmds.blocking_recv() {
        // Coalesce what is queued into as few state machine calls as the
        // order of commands allows.
        let mut next = Some(first);
        while let Some(cmd) = next.take().or_else(|| cmds.try_recv().ok()) {
            match cmd {
                ApplyCmd::Register { index, term, reply } => applier.register(index, term, reply),
                ApplyCmd::Apply(entries) => pending.extend(entries),
                ApplyCmd::FailPending { commit } => {
                    applier.apply(&mut sm, &mut pending, &applied_tx);
                    applier.fail_above(commit);
                }
            }
        }
        applier.apply(&mut sm, &mut pending, &applied_tx);
    }
    // Shutting down: whatever still waits will not be answered here.
    for (_, w) in std::mem::take(&mut applier.waiters) {
        let _ = w.reply.send(Err(ProposeError::Shutdown));
    }
    tracing::debug!(node, applied = applier.applied, "apply thread stopped");
}

struct Applier<O> {
    node: NodeId,
    applied: u64,
    waiters: BTreeMap<u64, Waiter<O>>,
}

impl<O> Applier<O> {
    fn register(&mut self, index: u64, term: u64, reply: Reply<O>) {
        if index <= self.applied {
            // Cannot happen: a new proposal's index is above the commit index.
            tracing::error!(
                node = self.node,
                index,
                applied = self.applied,
                "waiter registered for an applied index"
            );
            let _ = reply.send(Err(ProposeError::OutcomeUnknown));
            return;
        }
        if let Some(old) = self.waiters.insert(index, Waiter { term, reply }) {
            let _ = old.reply.send(Err(ProposeError::OutcomeUnknown));
        }
    }

    fn fail_above(&mut self, commit: u64) {
        let failed = self.waiters.split_off(&(commit + 1));
        if !failed.is_empty() {
            tracing::info!(
                node = self.node,
                commit,
                waiters = failed.len(),
                "leadership lost; outcome of pending proposals unknown"
            );
        }
        for (_, w) in failed {
            let _ = w.reply.send(Err(ProposeError::OutcomeUnknown));
        }
    }

    fn apply<S: StateMachine<Output = O>>(
        &mut self,
        sm: &mut S,
        pending: &mut Vec<Entry>,
        applied_tx: &watch::Sender<u64>,
    ) {
        if pending.is_empty() {
            return;
        }
        let entries = std::mem::take(pending);
        // Entries the state machine already holds (after a restart its
        // applied index may be ahead of the core's view) are skipped.
        let start = entries.partition_point(|e| e.index <= self.applied);
        let entries = &entries[start..];
        if entries.is_empty() {
            return;
        }
        let outputs = sm.apply(entries);
        if outputs.len() != entries.len() {
            tracing::error!(
                node = self.node,
                entries = entries.len(),
                outputs = outputs.len(),
                "state machine returned the wrong number of outputs"
            );
        }
        let mut outputs = outputs.into_iter();
        for e in entries {
            let out = outputs.next();
            let Some(w) = self.waiters.remove(&e.index) else {
                continue;
            };
            let result = match out {
                Some(out) if e.term == w.term => Ok(out),
                None if e.term == w.term => Err(ProposeError::OutcomeUnknown),
                _ => Err(ProposeError::Dropped),
            };
            let _ = w.reply.send(result);
        }
        if let Some(last) = entries.last() {
            self.applied = last.index;
            applied_tx.send_replace(self.applied);
        }
        // Waiters below the applied index cannot be answered by a later
        // entry; none should exist, but never leave a caller hanging.
        let stale: Vec<u64> = self
            .waiters
            .range(..=self.applied)
            .map(|(&i, _)| i)
            .collect();
        for i in stale {
            if let Some(w) = self.waiters.remove(&i) {
                let _ = w.reply.send(Err(ProposeError::OutcomeUnknown));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::EntryKind;
    use bytes::Bytes;

    struct Recorder {
        applied: u64,
        seen: Vec<u64>,
    }

    impl StateMachine for Recorder {
        type Output = u64;
        fn apply(&mut self, entries: &[Entry]) -> Vec<u64> {
            entries
                .iter()
                .map(|e| {
                    self.applied = e.index;
                    self.seen.push(e.index);
                    e.index
                })
                .collect()
        }
        fn applied_index(&self) -> u64 {
            self.applied
        }
    }

    fn entry(index: u64, term: u64) -> Entry {
        Entry {
            term,
            index,
            kind: EntryKind::Normal,
            data: Bytes::new(),
        }
    }

    fn applier() -> Applier<u64> {
        Applier {
            node: 1,
            applied: 0,
            waiters: BTreeMap::new(),
        }
    }

    #[test]
    fn waiter_gets_output_when_its_term_matches_and_dropped_otherwise() {
        let mut sm = Recorder {
            applied: 0,
            seen: vec![],
        };
        let (tx, _) = watch::channel(0);
        let mut a = applier();
        let (ok_tx, mut ok_rx) = oneshot::channel();
        let (dropped_tx, mut dropped_rx) = oneshot::channel();
        a.register(1, 2, ok_tx);
        a.register(2, 2, dropped_tx);
        let mut pending = vec![entry(1, 2), entry(2, 3)];
        a.apply(&mut sm, &mut pending, &tx);
        assert_eq!(ok_rx.try_recv().unwrap(), Ok(1));
        assert_eq!(dropped_rx.try_recv().unwrap(), Err(ProposeError::Dropped));
        assert_eq!(*tx.borrow(), 2);
    }

    #[test]
    fn leadership_loss_fails_only_uncommitted_waiters() {
        let mut a = applier();
        let (committed_tx, mut committed_rx) = oneshot::channel();
        let (open_tx, mut open_rx) = oneshot::channel();
        a.register(5, 1, committed_tx);
        a.register(6, 1, open_tx);
        a.fail_above(5);
        assert!(
            committed_rx.try_recv().is_err(),
            "a committed entry's waiter stays"
        );
        assert_eq!(
            open_rx.try_recv().unwrap(),
            Err(ProposeError::OutcomeUnknown)
        );
    }

    #[test]
    fn entries_the_state_machine_already_holds_are_skipped() {
        let mut sm = Recorder {
            applied: 2,
            seen: vec![],
        };
        let (tx, _) = watch::channel(2);
        let mut a = applier();
        a.applied = 2;
        let mut pending = vec![entry(1, 1), entry(2, 1), entry(3, 1)];
        a.apply(&mut sm, &mut pending, &tx);
        assert_eq!(sm.seen, vec![3]);
    }
}
