//! Large statements are handled off the async workers.
//!
//! The executor's work on a statement before it runs (splitting, rewriting,
//! classifying, encoding the Raft entry) costs CPU time in proportion to its
//! text: about a second for 16 MiB in a debug build, a tenth of that in a
//! release build. Done inside one poll on a tokio worker, that time stalls
//! more than the connection: the worker holds its LIFO-slot task, and the
//! other workers may sleep without anyone polling the I/O and timer drivers,
//! so the node's Raft event loop stops ticking and its heartbeats stop. The
//! followers then elect a new leader and the statement is lost (40003).
//!
//! So the executor's calls for a statement of at least
//! [`LARGE_STATEMENT_BYTES`] run on a blocking thread, at most
//! [`MAX_IN_FLIGHT`] at a time per server, which also bounds the memory
//! their copies take. Smaller statements stay on the workers: a blocking
//! thread per statement would cost more than it saves.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{oneshot, Semaphore};

use crate::errors::internal;
use crate::executor::SqlError;

/// Statements of at least this many bytes (text and parameters) are handled
/// on a blocking thread: below it, their preparation takes a few
/// milliseconds of a worker even in a debug build.
pub const LARGE_STATEMENT_BYTES: usize = 64 << 10;

/// Large statements handled at once per server; more wait for a turn.
pub const MAX_IN_FLIGHT: usize = 2;

/// The blocking threads large statements run on.
pub struct LargeStatements {
    turns: Arc<Semaphore>,
}

impl Default for LargeStatements {
    fn default() -> Self {
        Self::new()
    }
}

impl LargeStatements {
    pub fn new() -> Self {
        LargeStatements {
            turns: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
        }
    }

    /// Runs a synchronous executor call on a blocking thread.
    pub(crate) async fn call_sync<T: Send + 'static>(
        &self,
        call: impl FnOnce() -> Result<T, SqlError> + Send + 'static,
    ) -> Result<T, SqlError> {
        self.run(move || crate::guard::call_sync(call)).await
    }

    /// Awaits the future `make` builds on a blocking thread, with panics
    /// caught as [`crate::guard::catch`] does. `make` owns what the
    /// executor's call borrows. Dropping the returned future (a cancel, a
    /// timeout, a hangup) drops the call on its thread too.
    pub async fn call<T, F>(&self, make: impl FnOnce() -> F + Send + 'static) -> Result<T, SqlError>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, SqlError>>,
    {
        let runtime = tokio::runtime::Handle::current();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let result = self
            .run(move || {
                runtime.block_on(async move {
                    tokio::select! {
                        biased;
                        result = crate::guard::catch(make()) => result,
                        // Our caller went away; nobody reads this.
                        _ = stop_rx => Err(internal("the statement's caller went away")),
                    }
                })
            })
            .await;
        drop(stop_tx);
        result
    }

    async fn run<T: Send + 'static>(
        &self,
        job: impl FnOnce() -> Result<T, SqlError> + Send + 'static,
    ) -> Result<T, SqlError> {
        let _turn = self
            .turns
            .acquire()
            .await
            .map_err(|_| internal("the server is shutting down"))?;
        // A panic was already caught inside `job`; a join error means the
        // runtime is shutting down.
        tokio::task::spawn_blocking(job)
            .await
            .unwrap_or_else(|e| Err(internal(format!("statement handler stopped: {e}"))))
    }
}

/// Bytes a statement brings: its text and its parameters' values.
pub fn statement_bytes(sql: &str, params: &[crate::executor::Value]) -> usize {
    use crate::executor::Value;
    let params: usize = params
        .iter()
        .map(|v| match v {
            Value::Null => 0,
            Value::Integer(_) | Value::Real(_) => 8,
            Value::Text(s) => s.len(),
            Value::Blob(b) => b.len(),
        })
        .sum();
    sql.len().saturating_add(params)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn results_errors_and_panics_come_back() {
        let large = LargeStatements::new();
        assert_eq!(large.call_sync(|| Ok(7)).await.unwrap(), 7);
        let err = large
            .call_sync(|| -> Result<(), SqlError> { panic!("boom") })
            .await
            .unwrap_err();
        assert_eq!(err.sqlstate, "XX000");
        let err = large
            .call(|| async { Err::<(), _>(SqlError::new("42601", "bad")) })
            .await
            .unwrap_err();
        assert_eq!(err.sqlstate, "42601");
    }

    /// The call runs on another thread than the runtime's workers, so a
    /// worker stays free while it computes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn the_call_leaves_the_worker_free() {
        let large = LargeStatements::new();
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let call = tokio::spawn(async move {
            large
                .call(move || async move {
                    // Blocks its thread as a long parse would.
                    started_tx.send(()).unwrap();
                    release_rx.recv().unwrap();
                    Ok(1)
                })
                .await
        });
        tokio::task::spawn_blocking(move || started_rx.recv().unwrap())
            .await
            .unwrap();
        // The only worker still runs other tasks.
        let other = tokio::spawn(async { 2 }).await.unwrap();
        assert_eq!(other, 2);
        release_tx.send(()).unwrap();
        assert_eq!(call.await.unwrap().unwrap(), 1);
    }
}
