//! The apply thread: feeds committed entries to the state machine in log
//! order, answers the proposals waiting on them and publishes the applied
//! index.
//!
//! Waiters arrive on the same ordered channel as the entries, always before
//! the entry they wait for, so no outcome can be missed.
//!
//! Snapshots are prepared here, between two applies, and written by a
//! thread of their own while applies go on; a snapshot received from the
//! leader is restored here, in log order with the entries.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::thread::JoinHandle;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot, watch};

use super::snapshot_dir::SnapshotDir;
use super::{DriverError, Halt, Halted, ProposeError, StateMachine};
use crate::core::Message;
use crate::types::{Entry, NodeId, SnapshotMeta};

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
    /// Take a snapshot of the state machine.
    TakeSnapshot,
    /// Replace the state machine with the installed snapshot `meta` from
    /// `path`; then `messages` (the acknowledgement) may go.
    Restore {
        meta: SnapshotMeta,
        path: PathBuf,
        messages: Vec<Message>,
    },
}

/// What the apply thread and the snapshot writer report to the event loop.
#[derive(Debug)]
pub(crate) enum SnapshotEvent {
    /// A snapshot holding the state up to `index` is written (not yet
    /// durable) at `tmp`.
    Taken { index: u64, tmp: PathBuf },
    /// Taking a snapshot failed; `unsupported`: the state machine never
    /// takes any.
    Failed { why: String, unsupported: bool },
    /// The state machine was restored from an installed snapshot (or
    /// failed to be, which is fatal); the acknowledgement may go.
    Restored {
        result: Result<(), String>,
        messages: Vec<Message>,
    },
    /// The state machine stopped applying after a node-local failure
    /// ([`Halt`]): this node must no longer lead.
    Halted { reason: String },
}

/// Where the apply thread reports snapshot work and a halt.
pub(crate) struct SnapshotSide {
    pub(crate) dir: SnapshotDir,
    pub(crate) events: mpsc::Sender<SnapshotEvent>,
    /// Why the state machine halted, for every handle to read.
    pub(crate) halted: Halted,
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
    side: SnapshotSide,
) -> Result<JoinHandle<()>, DriverError> {
    std::thread::Builder::new()
        .name(format!("raft-apply-{node}"))
        .spawn(move || run(node, sm, cmds, applied, side))
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
    side: SnapshotSide,
) {
    let mut applier = Applier {
        node,
        applied: sm.applied_index(),
        waiters: BTreeMap::new(),
        halted: None,
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
                    applier.apply(&mut sm, &mut pending, &applied_tx, &side);
                    applier.fail_above(commit);
                }
                ApplyCmd::TakeSnapshot => {
                    applier.apply(&mut sm, &mut pending, &applied_tx, &side);
                    take_snapshot(node, &mut sm, &side);
                }
                ApplyCmd::Restore {
                    meta,
                    path,
                    messages,
                } => {
                    applier.apply(&mut sm, &mut pending, &applied_tx, &side);
                    let result = match &applier.halted {
                        // A halted state machine may hold a half-applied
                        // batch: stop the node; restarted, it restores
                        // from the installed snapshot.
                        Some(reason) => Err(format!(
                            "cannot restore a snapshot: the state machine halted: {reason}"
                        )),
                        None => applier.restore(&mut sm, &meta, &path, &applied_tx),
                    };
                    let event = SnapshotEvent::Restored { result, messages };
                    if side.events.blocking_send(event).is_err() {
                        break;
                    }
                }
            }
        }
        applier.apply(&mut sm, &mut pending, &applied_tx, &side);
    }
    // Shutting down: whatever still waits will not be answered here.
    for (_, w) in std::mem::take(&mut applier.waiters) {
        let _ = w.reply.send(Err(ProposeError::Shutdown));
    }
    tracing::debug!(node, applied = applier.applied, "apply thread stopped");
}

/// Prepares a snapshot and starts the thread that writes it.
fn take_snapshot<S: StateMachine>(node: NodeId, sm: &mut S, side: &SnapshotSide) {
    let writer = match sm.snapshot() {
        Ok(w) => w,
        Err(e) => {
            let _ = side.events.blocking_send(SnapshotEvent::Failed {
                why: e.to_string(),
                unsupported: true,
            });
            return;
        }
    };
    let tmp = side.dir.temp_path();
    let events = side.events.clone();
    let spawned = std::thread::Builder::new()
        .name(format!("raft-snapshot-{node}"))
        .spawn(move || {
            let began = Instant::now();
            let event = match writer(&tmp) {
                Ok(index) => {
                    let bytes = std::fs::metadata(&tmp).map_or(0, |m| m.len());
                    tracing::info!(
                        node,
                        index,
                        bytes,
                        elapsed_ms = began.elapsed().as_millis() as u64,
                        "snapshot written"
                    );
                    SnapshotEvent::Taken { index, tmp }
                }
                Err(e) => {
                    let _ = std::fs::remove_file(&tmp);
                    SnapshotEvent::Failed {
                        why: e.to_string(),
                        unsupported: false,
                    }
                }
            };
            let _ = events.blocking_send(event);
        });
    if let Err(e) = spawned {
        let _ = side.events.blocking_send(SnapshotEvent::Failed {
            why: format!("cannot start the snapshot thread: {e}"),
            unsupported: false,
        });
    }
}

struct Applier<O> {
    node: NodeId,
    applied: u64,
    waiters: BTreeMap<u64, Waiter<O>>,
    /// Set once the state machine failed node-locally: nothing is applied
    /// after that, and nothing is skipped either.
    halted: Option<String>,
}

impl<O> Applier<O> {
    /// Restores the installed snapshot `meta`. Waiters it jumps over cannot
    /// learn their outcome here (none should exist: a node that installs a
    /// snapshot is a follower whose leadership waiters were failed).
    fn restore<S: StateMachine<Output = O>>(
        &mut self,
        sm: &mut S,
        meta: &SnapshotMeta,
        path: &std::path::Path,
        applied_tx: &watch::Sender<u64>,
    ) -> Result<(), String> {
        let began = Instant::now();
        sm.restore(path, meta.index).map_err(|e| {
            format!(
                "restoring snapshot {}/{} from {}: {e}",
                meta.index,
                meta.term,
                path.display()
            )
        })?;
        tracing::info!(
            node = self.node,
            index = meta.index,
            term = meta.term,
            elapsed_ms = began.elapsed().as_millis() as u64,
            "state machine restored from snapshot"
        );
        self.applied = meta.index;
        applied_tx.send_replace(self.applied);
        let jumped = self.waiters.split_off(&(meta.index + 1));
        for (_, w) in std::mem::replace(&mut self.waiters, jumped) {
            let _ = w.reply.send(Err(ProposeError::OutcomeUnknown));
        }
        Ok(())
    }

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
        side: &SnapshotSide,
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
        if self.halted.is_some() {
            self.answer_unknown(entries);
            return;
        }
        let wanted: Vec<bool> = entries
            .iter()
            .map(|e| self.waiters.get(&e.index).is_some_and(|w| w.term == e.term))
            .collect();
        let applied =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| sm.apply(entries, &wanted)))
                .unwrap_or_else(|panic| {
                    Err(Halt {
                        reason: format!("the state machine panicked: {}", panic_text(&panic)),
                    })
                });
        let outputs = match applied {
            Ok(outputs) => outputs,
            Err(halt) => {
                self.halt(halt, entries, side);
                return;
            }
        };
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

    /// The state machine failed node-locally on `entries`, holding none of
    /// their effects: stop applying for good and say why. The entries are
    /// committed, so the other nodes apply them; whoever waits here cannot
    /// learn how.
    fn halt(&mut self, halt: Halt, entries: &[Entry], side: &SnapshotSide) {
        tracing::error!(
            node = self.node,
            first = entries.first().map(|e| e.index),
            applied = self.applied,
            reason = %halt.reason,
            "state machine halted: applying stops here; restart the node to retry"
        );
        if let Ok(mut h) = side.halted.lock() {
            *h = Some(halt.reason.clone());
        }
        self.halted = Some(halt.reason.clone());
        self.answer_unknown(entries);
        let _ = side.events.blocking_send(SnapshotEvent::Halted {
            reason: halt.reason,
        });
    }

    fn answer_unknown(&mut self, entries: &[Entry]) {
        for e in entries {
            if let Some(w) = self.waiters.remove(&e.index) {
                let _ = w.reply.send(Err(ProposeError::OutcomeUnknown));
            }
        }
    }
}

fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::EntryKind;
    use bytes::Bytes;

    struct Recorder {
        applied: u64,
        seen: Vec<u64>,
        /// Entries at or above this index fail node-locally.
        fail_from: Option<u64>,
    }

    impl StateMachine for Recorder {
        type Output = u64;
        fn apply(&mut self, entries: &[Entry], _wanted: &[bool]) -> Result<Vec<u64>, Halt> {
            if let Some(bad) = self.fail_from {
                if entries.iter().any(|e| e.index >= bad) {
                    return Err(Halt {
                        reason: "disk full".into(),
                    });
                }
            }
            Ok(entries
                .iter()
                .map(|e| {
                    self.applied = e.index;
                    self.seen.push(e.index);
                    e.index
                })
                .collect())
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
            halted: None,
        }
    }

    /// The apply side of a node whose snapshot directory is never used.
    fn side() -> (SnapshotSide, mpsc::Receiver<SnapshotEvent>) {
        let (events, rx) = mpsc::channel(4);
        let dir = tempfile::tempdir().expect("temp dir");
        let side = SnapshotSide {
            dir: SnapshotDir::open(dir.path().join("snapshots")).expect("snapshot dir"),
            events,
            halted: Default::default(),
        };
        (side, rx)
    }

    #[test]
    fn waiter_gets_output_when_its_term_matches_and_dropped_otherwise() {
        let mut sm = Recorder {
            applied: 0,
            seen: vec![],
            fail_from: None,
        };
        let (tx, _) = watch::channel(0);
        let mut a = applier();
        let (ok_tx, mut ok_rx) = oneshot::channel();
        let (dropped_tx, mut dropped_rx) = oneshot::channel();
        a.register(1, 2, ok_tx);
        a.register(2, 2, dropped_tx);
        let mut pending = vec![entry(1, 2), entry(2, 3)];
        a.apply(&mut sm, &mut pending, &tx, &side().0);
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
            fail_from: None,
        };
        let (tx, _) = watch::channel(2);
        let mut a = applier();
        a.applied = 2;
        let mut pending = vec![entry(1, 1), entry(2, 1), entry(3, 1)];
        a.apply(&mut sm, &mut pending, &tx, &side().0);
        assert_eq!(sm.seen, vec![3]);
    }

    #[test]
    fn a_node_local_failure_halts_without_skipping_the_entry() {
        let mut sm = Recorder {
            applied: 0,
            seen: vec![],
            fail_from: Some(2),
        };
        let (tx, _) = watch::channel(0);
        let (side, mut events) = side();
        let mut a = applier();
        let (w_tx, mut w_rx) = oneshot::channel();
        a.register(2, 1, w_tx);
        let mut pending = vec![entry(1, 1)];
        a.apply(&mut sm, &mut pending, &tx, &side);
        let mut pending = vec![entry(2, 1), entry(3, 1)];
        a.apply(&mut sm, &mut pending, &tx, &side);
        assert_eq!(
            *tx.borrow(),
            1,
            "the applied index stays before the failure"
        );
        assert_eq!(w_rx.try_recv().unwrap(), Err(ProposeError::OutcomeUnknown));
        assert!(matches!(
            events.try_recv(),
            Ok(SnapshotEvent::Halted { reason }) if reason == "disk full"
        ));
        assert_eq!(side.halted.lock().unwrap().as_deref(), Some("disk full"));
        // Later entries are never applied past the hole, even if the state
        // machine would accept them.
        sm.fail_from = None;
        let mut pending = vec![entry(4, 1)];
        a.apply(&mut sm, &mut pending, &tx, &side);
        assert_eq!(sm.seen, vec![1]);
        assert_eq!(*tx.borrow(), 1);
    }
}
