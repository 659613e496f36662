//! The persist thread: makes the core's hard state and entries durable, in
//! order, and only then releases the messages that depend on them.
//!
//! Jobs queued while the disk was busy are coalesced: their entries are
//! written as one append and ONE `sync()` covers them (group commit across
//! Readys). The hard state is saved (durably) before the entries, so the log
//! never holds a term newer than the saved one. A failed write or sync is
//! fatal: nothing written after it is acknowledged.
//!
//! A job may also carry a snapshot operation (compaction after a local
//! snapshot, or the install of one received from the leader). It is done
//! after the jobs before it and before its own entries, and ends a batch.

use std::path::PathBuf;
use std::thread::JoinHandle;

use tokio::sync::mpsc;

use super::snapshot_dir::SnapshotDir;
use super::DriverError;
use crate::core::Message;
use crate::log_store::{LogStore, StoreError};
use crate::types::{Entry, HardState, NodeId, SnapshotMeta};

/// Persist jobs the event loop may have in flight; it stops producing Readys
/// at this many, so neither channel below can fill up.
pub(crate) const MAX_INFLIGHT_JOBS: usize = 256;

/// What one Ready asks to make durable, and what to send afterwards.
#[derive(Debug)]
pub(crate) struct PersistJob {
    pub(crate) hard_state: Option<HardState>,
    pub(crate) snapshot: Option<SnapshotOp>,
    pub(crate) entries: Vec<Entry>,
    pub(crate) messages: Vec<Message>,
}

/// A change of the snapshot the log starts after.
#[derive(Debug)]
pub(crate) enum SnapshotOp {
    /// A local snapshot at `meta.index` was written to `tmp`: publish it
    /// and compact the log up to it.
    Compact { meta: SnapshotMeta, tmp: PathBuf },
    /// A snapshot received from the leader (already published) replaces
    /// the log. The job's messages wait for the state machine's restore.
    Install(SnapshotMeta),
}

/// One or more jobs made durable.
#[derive(Debug)]
pub(crate) struct PersistDone {
    /// How many jobs this covers.
    pub(crate) jobs: usize,
    /// Index and term of the last entry written, if any.
    pub(crate) last: Option<(u64, u64)>,
    /// The jobs' messages, in order, now safe to send.
    pub(crate) messages: Vec<Message>,
    /// An installed snapshot, with the messages that must wait until the
    /// state machine is restored from it.
    pub(crate) installed: Option<(SnapshotMeta, Vec<Message>)>,
}

/// What the persist thread reports: a durable batch, or the storage error
/// that stopped it.
pub(crate) type PersistOutcome = Result<PersistDone, String>;

/// The event loop's side of the persist thread.
pub(crate) struct PersistHandle {
    pub(crate) jobs: mpsc::Sender<PersistJob>,
    pub(crate) thread: JoinHandle<()>,
}

/// Starts the persist thread, which owns `store`.
pub(crate) fn spawn(
    node: NodeId,
    store: LogStore,
    dir: SnapshotDir,
) -> Result<(PersistHandle, mpsc::Receiver<PersistOutcome>), DriverError> {
    let (jobs_tx, jobs_rx) = mpsc::channel(MAX_INFLIGHT_JOBS);
    let (done_tx, done_rx) = mpsc::channel(MAX_INFLIGHT_JOBS + 1);
    let thread = std::thread::Builder::new()
        .name(format!("raft-persist-{node}"))
        .spawn(move || run(node, store, dir, jobs_rx, done_tx))
        .map_err(|source| DriverError::Thread {
            name: "persist",
            source,
        })?;
    Ok((
        PersistHandle {
            jobs: jobs_tx,
            thread,
        },
        done_rx,
    ))
}

fn run(
    node: NodeId,
    mut store: LogStore,
    dir: SnapshotDir,
    mut jobs: mpsc::Receiver<PersistJob>,
    done: mpsc::Sender<PersistOutcome>,
) {
    while let Some(first) = jobs.blocking_recv() {
        let mut batch = vec![first];
        // A snapshot operation ends the batch.
        while batch.last().is_some_and(|j| j.snapshot.is_none()) {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let outcome = persist_batch(&mut store, &dir, batch).map_err(|e| {
            tracing::error!(node, error = %e, "log store failed; stopping the node");
            e.to_string()
        });
        let failed = outcome.is_err();
        if done.blocking_send(outcome).is_err() || failed {
            break;
        }
    }
    tracing::debug!(node, "persist thread stopped");
}

/// Makes a batch of jobs durable with one write and one sync.
///
/// The log store can only tell a torn tail from corruption if at most its
/// last frame is unsynced, so the batch's entries are merged into one
/// contiguous run (a later job that truncates an earlier one's entries
/// replaces them, as the store would) and appended as one frame. Only the
/// newest hard state is saved, first: terms only grow and a vote belongs to
/// its term, so it covers every earlier one, and saving it before the
/// entries keeps the log from ever holding a term newer than the saved one.
fn persist_batch(
    store: &mut LogStore,
    dir: &SnapshotDir,
    mut batch: Vec<PersistJob>,
) -> Result<PersistDone, StoreError> {
    let jobs = batch.len();
    let last_job = batch.last_mut().and_then(|j| {
        j.snapshot
            .take()
            .map(|op| (op, std::mem::take(&mut j.entries)))
    });
    let mut hard_state = None;
    let mut run: Vec<Entry> = Vec::new();
    let mut messages = Vec::new();
    let mut op_messages = Vec::new();
    let op_index = batch.len().wrapping_sub(1);
    for (i, job) in batch.into_iter().enumerate() {
        hard_state = job.hard_state.or(hard_state);
        if !job.entries.is_empty() {
            merge_entries(store, &mut run, job.entries)?;
        }
        if last_job.is_some() && i == op_index {
            op_messages = job.messages;
        } else {
            messages.extend(job.messages);
        }
    }
    if let Some(hs) = hard_state {
        // Durable on return.
        store.save_hard_state(hs)?;
    }
    let mut last = run.last().map(|e| (e.index, e.term));
    if !run.is_empty() {
        store.append(&run)?;
        store.sync()?;
    }
    let mut installed = None;
    if let Some((op, entries)) = last_job {
        installed = apply_snapshot_op(store, dir, op, &mut messages, op_messages)?;
        if let Some(e) = entries.last() {
            last = Some((e.index, e.term));
            store.append(&entries)?;
            store.sync()?;
        }
    }
    tracing::trace!(
        jobs,
        entries = run.len(),
        last_index = last.map(|l| l.0),
        "batch durable"
    );
    Ok(PersistDone {
        jobs,
        last,
        messages,
        installed,
    })
}

/// Carries out a snapshot operation; durable on return. Returns the
/// installed snapshot with the messages that wait for its restore.
fn apply_snapshot_op(
    store: &mut LogStore,
    dir: &SnapshotDir,
    op: SnapshotOp,
    messages: &mut Vec<Message>,
    op_messages: Vec<Message>,
) -> Result<Option<(SnapshotMeta, Vec<Message>)>, StoreError> {
    let io = |op: &'static str, path: PathBuf| move |source| StoreError::Io { op, path, source };
    let installed = match op {
        SnapshotOp::Compact { meta, tmp } => {
            dir.publish(&tmp, &meta)
                .map_err(io("publish snapshot", tmp.clone()))?;
            store.save_snapshot(&meta)?;
            dir.set_current(&meta)
                .map_err(io("clean snapshot directory", dir.path_for(&meta)))?;
            tracing::info!(
                index = meta.index,
                term = meta.term,
                "log compacted to snapshot"
            );
            messages.extend(op_messages);
            None
        }
        SnapshotOp::Install(meta) => {
            store.install_snapshot(&meta)?;
            dir.set_current(&meta)
                .map_err(io("clean snapshot directory", dir.path_for(&meta)))?;
            Some((meta, op_messages))
        }
    };
    Ok(installed)
}

/// Adds a job's entries to the batch's run: they replace the run's entries
/// from their first index on, as an append to the store would.
fn merge_entries(
    store: &mut LogStore,
    run: &mut Vec<Entry>,
    next: Vec<Entry>,
) -> Result<(), StoreError> {
    let (Some(first), Some(run_first)) = (next.first(), run.first()) else {
        *run = next;
        return Ok(());
    };
    let run_end = run_first.index + run.len() as u64;
    if first.index < run_first.index {
        *run = next;
    } else if first.index <= run_end {
        run.truncate((first.index - run_first.index) as usize);
        run.extend(next);
    } else {
        // A gap cannot come out of the core; write what we have so the store
        // reports it rather than guessing.
        store.append(run)?;
        *run = next;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log_store::LogStoreOptions;
    use crate::types::EntryKind;
    use bytes::Bytes;

    fn entries(from: u64, to: u64, term: u64) -> Vec<Entry> {
        (from..=to)
            .map(|index| Entry {
                term,
                index,
                kind: EntryKind::Normal,
                data: Bytes::from(format!("{index}/{term}")),
            })
            .collect()
    }

    fn snapdir(dir: &std::path::Path) -> SnapshotDir {
        SnapshotDir::open(dir.join("snapshots")).unwrap()
    }

    fn job(hs: Option<u64>, e: Vec<Entry>) -> PersistJob {
        PersistJob {
            hard_state: hs.map(|term| HardState {
                term,
                vote: Some(1),
            }),
            snapshot: None,
            entries: e,
            messages: Vec::new(),
        }
    }

    #[test]
    fn a_batch_is_merged_into_one_run_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, _) = LogStore::open(dir.path(), LogStoreOptions::default()).unwrap();
        let batch = vec![
            job(Some(1), entries(1, 5, 1)),
            job(None, entries(6, 8, 1)),
            // A new leader's entries replace 7 and 8.
            job(Some(2), entries(7, 9, 2)),
        ];
        let done = persist_batch(&mut store, &snapdir(dir.path()), batch).unwrap();
        assert_eq!(done.jobs, 3);
        assert_eq!(done.last, Some((9, 2)));
        drop(store);
        let (_, rec) = LogStore::open(dir.path(), LogStoreOptions::default()).unwrap();
        assert_eq!(
            rec.hard_state,
            HardState {
                term: 2,
                vote: Some(1)
            }
        );
        let mut want = entries(1, 6, 1);
        want.extend(entries(7, 9, 2));
        assert_eq!(rec.entries, want);
    }

    #[test]
    fn a_batch_may_truncate_what_an_earlier_batch_wrote() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, _) = LogStore::open(dir.path(), LogStoreOptions::default()).unwrap();
        persist_batch(
            &mut store,
            &snapdir(dir.path()),
            vec![job(Some(1), entries(1, 4, 1))],
        )
        .unwrap();
        let done = persist_batch(
            &mut store,
            &snapdir(dir.path()),
            vec![job(Some(3), entries(3, 3, 3))],
        )
        .unwrap();
        assert_eq!(done.last, Some((3, 3)));
        drop(store);
        let (_, rec) = LogStore::open(dir.path(), LogStoreOptions::default()).unwrap();
        let mut want = entries(1, 2, 1);
        want.extend(entries(3, 3, 3));
        assert_eq!(rec.entries, want);
    }
}
