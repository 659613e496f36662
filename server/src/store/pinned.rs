//! A thread that owns one SQLite connection for as long as a transaction
//! needs it, and runs that transaction's statements on it in order.
//!
//! A transaction's statements must run on the same connection (its
//! snapshot, its uncommitted writes), and SQLite work must stay off the
//! async runtime; so each open transaction talks to a thread of its own
//! through a queue of jobs. The caller awaits each job's answer; if it
//! stops waiting (cancel, timeout, hang-up), the job's statement is
//! interrupted inside SQLite.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use resqlite_wire::SqlError;
use rusqlite::InterruptHandle;
use tokio::sync::oneshot;

use super::db_file::DbGeneration;
use super::read_pool::{Answer, InterruptOnDrop};
use crate::sql::sqlstate;

/// What a pinned thread owns: something with a connection to interrupt.
pub(crate) trait PinnedState: Send + 'static {
    /// The handle that interrupts the connection's running statement, if
    /// it has a connection now.
    fn interrupt_handle(&self) -> Option<InterruptHandle>;

    /// The database file generation the connection follows, if each job
    /// must hold the file in place while it runs (see [`DbGeneration`]).
    fn generation(&self) -> Option<DbGeneration>;

    /// Called at the start of each job with the generation it holds (the
    /// connection must be on it; the lock is not taken again meanwhile).
    fn enter(&mut self, _generation: u64) {}
}

type Job<S> = Box<dyn FnOnce(&mut S) + Send>;

/// The caller's side of a pinned thread. Dropping every handle ends the
/// thread once its queued jobs are done.
pub(crate) struct Pinned<S> {
    jobs: mpsc::Sender<Job<S>>,
}

impl<S> Clone for Pinned<S> {
    fn clone(&self) -> Self {
        Pinned {
            jobs: self.jobs.clone(),
        }
    }
}

fn stopped() -> SqlError {
    SqlError::new(
        sqlstate::INTERNAL_ERROR,
        "the transaction's connection thread stopped",
    )
}

impl<S: PinnedState> Pinned<S> {
    /// Starts a thread named `name` that owns `state`.
    pub(crate) fn spawn(name: String, mut state: S) -> std::io::Result<Self> {
        let (jobs, queue) = mpsc::channel::<Job<S>>();
        std::thread::Builder::new().name(name).spawn(move || {
            while let Ok(job) = queue.recv() {
                job(&mut state);
            }
        })?;
        Ok(Pinned { jobs })
    }

    /// Queues `job` without waiting for it; false if the thread is gone.
    pub(crate) fn send(&self, job: impl FnOnce(&mut S) + Send + 'static) -> bool {
        self.jobs.send(Box::new(job)).is_ok()
    }

    /// Runs `f` on the thread and waits for its answer, which it may send
    /// before it returns (a streamed read). The guard interrupts `f`'s
    /// statement when dropped while `f` runs; keep it as long as the
    /// answer is in use.
    pub(crate) async fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut S, Answer<R>) + Send + 'static,
    ) -> Result<(R, InterruptOnDrop), SqlError> {
        let running = Arc::new(Mutex::new(None));
        let guard = InterruptOnDrop::new(running.clone());
        let (tx, rx) = oneshot::channel();
        let sent = self.send(move |state: &mut S| {
            if tx.is_closed() {
                return;
            }
            let generation = state.generation();
            let held = generation.as_ref().map(DbGeneration::hold);
            if let Some(held) = &held {
                state.enter(**held);
            }
            if let Ok(mut slot) = running.lock() {
                *slot = state.interrupt_handle();
            }
            f(state, Answer::new(tx));
            if let Ok(mut slot) = running.lock() {
                *slot = None;
            }
        });
        if !sent {
            return Err(stopped());
        }
        let answer = rx.await.map_err(|_| stopped())?;
        Ok((answer?, guard))
    }

    /// [`Pinned::call`] for a job that answers when it returns.
    pub(crate) async fn run<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut S) -> Result<R, SqlError> + Send + 'static,
    ) -> Result<R, SqlError> {
        let (value, _guard) = self
            .call(move |state, answer| {
                answer.send(f(state));
            })
            .await?;
        Ok(value)
    }
}
