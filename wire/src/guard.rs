//! Runs executor calls so that a panic ends only the statement, never the
//! connection or the server.

use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::errors::internal;
use crate::executor::SqlError;
use futures::FutureExt;

/// Awaits `call`, turning a panic into XX000. What interrupts a call
/// (cancel, timeout, hangup) is in [`crate::interrupt`].
pub(crate) async fn catch<T>(
    call: impl Future<Output = Result<T, SqlError>>,
) -> Result<T, SqlError> {
    AssertUnwindSafe(call)
        .catch_unwind()
        .await
        .unwrap_or_else(|panic| Err(panicked(&*panic)))
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

    #[tokio::test]
    async fn a_panic_becomes_an_internal_error() {
        let err = catch(async { panic!("boom") as Result<(), SqlError> })
            .await
            .unwrap_err();
        assert_eq!(err.sqlstate, "XX000");
        assert!(err.message.contains("boom"));
        let err = call_sync(|| -> Result<(), SqlError> { panic!("bang {}", 1) }).unwrap_err();
        assert!(err.message.contains("bang 1"));
    }

    #[tokio::test]
    async fn results_pass_through() {
        assert_eq!(catch(async { Ok(5) }).await.unwrap(), 5);
        let err = catch(async { Err::<(), _>(SqlError::new("42601", "bad")) })
            .await
            .unwrap_err();
        assert_eq!(err.sqlstate, "42601");
    }
}
