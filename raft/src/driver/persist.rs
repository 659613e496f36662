//! The persist thread: makes the core's hard state and entries durable, in
//! order, and only then releases the messages that depend on them.
//!
//! Jobs queued while the disk was busy are coalesced: their entries are
//! written as one append and ONE `sync()` covers them (group commit across
//! Readys). The hard state is saved (durably) before the entries, so the log
//! never holds a term newer than the saved one. A failed write or sync is
//! fatal: nothing written after it is acknowledged.

use std::thread::JoinHandle;

use tokio::sync::mpsc;

use super::DriverError;
use crate::core::Message;
use crate::log_store::{LogStore, StoreError};
use crate::types::{Entry, HardState, NodeId};

/// Persist jobs the event loop may have in flight; it stops producing Readys
/// at this many, so neither channel below can fill up.
pub(crate) const MAX_INFLIGHT_JOBS: usize = 256;

/// What one Ready asks to make durable, and what to send afterwards.
#[derive(Debug)]
pub(crate) struct PersistJob {
    pub(crate) hard_state: Option<HardState>,
    pub(crate) entries: Vec<Entry>,
    pub(crate) messages: Vec<Message>,
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
) -> Result<(PersistHandle, mpsc::Receiver<PersistOutcome>), DriverError> {
    let (jobs_tx, jobs_rx) = mpsc::channel(MAX_INFLIGHT_JOBS);
    let (done_tx, done_rx) = mpsc::channel(MAX_INFLIGHT_JOBS + 1);
    let thread = std::thread::Builder::new()
        .name(format!("raft-persist-{node}"))
        .spawn(move || run(node, store, jobs_rx, done_tx))
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
    mut jobs: mpsc::Receiver<PersistJob>,
    done: mpsc::Sender<PersistOutcome>,
) {
    while let Some(first) = jobs.blocking_recv() {
        let mut batch = vec![first];
        while let Ok(job) = jobs.try_recv() {
            batch.push(job);
        }
        let outcome = persist_batch(&mut store, batch).map_err(|e| {
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
fn persist_batch(store: &mut LogStore, batch: Vec<PersistJob>) -> Result<PersistDone, StoreError> {
    let jobs = batch.len();
    let mut hard_state = None;
    let mut run: Vec<Entry> = Vec::new();
    let mut messages = Vec::new();
    for job in batch {
        hard_state = job.hard_state.or(hard_state);
        if !job.entries.is_empty() {
            merge_entries(store, &mut run, job.entries)?;
        }
        messages.extend(job.messages);
    }
    if let Some(hs) = hard_state {
        // Durable on return.
        store.save_hard_state(hs)?;
    }
    let last = run.last().map(|e| (e.index, e.term));
    if !run.is_empty() {
        store.append(&run)?;
        store.sync()?;
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
    })
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

    fn job(hs: Option<u64>, e: Vec<Entry>) -> PersistJob {
        PersistJob {
            hard_state: hs.map(|term| HardState {
                term,
                vote: Some(1),
            }),
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
        let done = persist_batch(&mut store, batch).unwrap();
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
        persist_batch(&mut store, vec![job(Some(1), entries(1, 4, 1))]).unwrap();
        let done = persist_batch(&mut store, vec![job(Some(3), entries(3, 3, 3))]).unwrap();
        assert_eq!(done.last, Some((3, 3)));
        drop(store);
        let (_, rec) = LogStore::open(dir.path(), LogStoreOptions::default()).unwrap();
        let mut want = entries(1, 2, 1);
        want.extend(entries(3, 3, 3));
        assert_eq!(rec.entries, want);
    }
}
