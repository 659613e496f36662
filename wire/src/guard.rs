//! Runs executor calls so that a cancel request or a panic ends only the
//! statement, never the connection or the server.

use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};

use futures::FutureExt;
use pgwire::api::ConnectionHandle;

use crate::errors::{internal, query_canceled};
use crate::executor::SqlError;

/// Awaits `call` until it finishes, the client's CancelRequest arrives
/// (57014; `call` is dropped, which the executor turns into interrupting
/// SQLite) or it panics (XX000).
pub(crate) async fn call<T>(
    call: impl Future<Output = Result<T, SqlError>>,
    cancel: Option<&ConnectionHandle>,
) -> Result<T, SqlError> {
    let call = AssertUnwindSafe(call).catch_unwind();
    let result = match cancel {
        Some(handle) => {
            let cancelled = handle.start_query().await;
            tokio::select! {
                biased;
                result = call => result,
                // A dropped sender is not a cancel: that branch is then
                // disabled and the call runs to its end.
                Ok(()) = cancelled => return Err(query_canceled()),
            }
        }
        None => call.await,
    };
    result.unwrap_or_else(|panic| Err(panicked(&*panic)))
}

/// Runs a synchronous executor call, turning a panic into XX000.
pub(crate) fn call_sync<T>(call: impl FnOnce() -> Result<T, SqlError>) -> Result<T, SqlError> {
    catch_unwind(AssertUnwindSafe(call)).unwrap_or_else(|panic| Err(panicked(&*panic)))
}

fn panicked(panic: &(dyn std::any::Any + Send)) -> SqlError {
    let what = panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("unknown cause");
    tracing::error!(panic = what, "statement handler panicked");
    internal(format!(
        "internal error while running the statement ({what}); the connection is still usable"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn a_panic_becomes_an_internal_error() {
        let err = call(async { panic!("boom") as Result<(), SqlError> }, None)
            .await
            .unwrap_err();
        assert_eq!(err.sqlstate, "XX000");
        assert!(err.message.contains("boom"));
        let err = call_sync(|| -> Result<(), SqlError> { panic!("bang {}", 1) }).unwrap_err();
        assert!(err.message.contains("bang 1"));
    }

    #[tokio::test]
    async fn a_cancel_drops_the_call() {
        let handle = Arc::new(ConnectionHandle::new());
        let (started_tx, started_rx) = tokio::sync::oneshot::channel();
        let h = handle.clone();
        let task = tokio::spawn(async move {
            call(
                async move {
                    let _ = started_tx.send(());
                    futures::future::pending::<Result<(), SqlError>>().await
                },
                Some(&h),
            )
            .await
        });
        started_rx.await.unwrap();
        assert!(handle.cancel().await);
        assert_eq!(task.await.unwrap().unwrap_err().sqlstate, "57014");
    }

    #[tokio::test]
    async fn results_pass_through() {
        let handle = ConnectionHandle::new();
        assert_eq!(call(async { Ok(5) }, Some(&handle)).await.unwrap(), 5);
        let err = call(
            async { Err::<(), _>(SqlError::new("42601", "bad")) },
            Some(&handle),
        )
        .await
        .unwrap_err();
        assert_eq!(err.sqlstate, "42601");
    }
}
