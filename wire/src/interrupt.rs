//! What stops a running statement before its end: the client's
//! CancelRequest, its `statement_timeout`, or the client hanging up.
//!
//! The connection awaits the executor, and then each batch of rows, through
//! [`Interrupts::race`]. When one of the three comes first, the awaited
//! future (or the row stream, which the caller then drops) is dropped, and
//! the executor stops the statement's work: a read is interrupted inside
//! SQLite and its memory freed. A client that hung up is noticed while its
//! statement runs, not only when its rows are written, so a read that
//! produces no row for a long time (`SELECT count(*)` over a huge join) does
//! not keep its reader thread after its client has gone.

use std::future::{pending, Future};
use std::io;
use std::time::Duration;

use futures::channel::oneshot;
use pgwire::api::ConnectionHandle;
use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::connection::Failure;
use crate::errors::{query_canceled, statement_timeout};
use crate::executor::SqlError;

/// How often a client whose next message is already waiting is looked at
/// again for having hung up (readiness stays set until the message is read,
/// so it cannot be awaited).
const HANGUP_CHECK: Duration = Duration::from_millis(250);

/// The interruptions of one statement (one Query statement or one Execute).
pub(crate) struct Interrupts {
    /// Fires on a CancelRequest with this connection's key; `None` once
    /// fired or when the connection cannot be cancelled.
    cancel: Option<oneshot::Receiver<()>>,
    /// When the statement's time is up.
    deadline: Option<Instant>,
}

impl Interrupts {
    /// Starts watching a statement: cancels from `handle` count from now,
    /// and `timeout` (the session's `statement_timeout`) runs from now.
    pub(crate) async fn start(
        handle: Option<&ConnectionHandle>,
        timeout: Option<Duration>,
    ) -> Self {
        let cancel = match handle {
            Some(handle) => Some(handle.start_query().await),
            None => None,
        };
        Interrupts {
            cancel,
            deadline: timeout.map(|t| Instant::now() + t),
        }
    }

    /// Awaits `work` unless the statement is cancelled (57014), times out
    /// (57014) or its client hangs up (an I/O error: the connection ends).
    /// `socket` is the client's, watched for hanging up. A panic in `work`
    /// becomes XX000.
    pub(crate) async fn race<T>(
        &mut self,
        socket: Option<&TcpStream>,
        work: impl Future<Output = Result<T, SqlError>>,
    ) -> Result<T, Failure> {
        let Interrupts { cancel, deadline } = self;
        let cancelled = async {
            let Some(receiver) = cancel.as_mut() else {
                return pending().await;
            };
            let fired = receiver.await.is_ok();
            // A completed receiver must not be polled again.
            *cancel = None;
            if !fired {
                // The sender went away without a cancel: nothing will come.
                pending::<()>().await;
            }
        };
        let timed_out = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(*at).await,
                None => pending().await,
            }
        };
        // Interrupts first: a read whose next batch is always ready (a
        // fast endless stream) must still stop once its time is up.
        tokio::select! {
            biased;
            () = cancelled => Err(Failure::Sql(query_canceled())),
            () = timed_out => Err(Failure::Sql(statement_timeout())),
            () = hung_up(socket) => Err(Failure::Io(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "the client hung up while its statement ran",
            ))),
            result = crate::guard::catch(work) => result.map_err(Failure::Sql),
        }
    }
}

/// Resolves once the client closed its side of `socket` (or it failed).
async fn hung_up(socket: Option<&TcpStream>) {
    let Some(socket) = socket else {
        return pending().await;
    };
    loop {
        match socket.ready(Interest::READABLE).await {
            Ok(ready) if ready.is_read_closed() => return,
            // The client sent its next message (pipelining): it is there.
            Ok(_) => tokio::time::sleep(HANGUP_CHECK).await,
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn sqlstate<T: std::fmt::Debug>(result: Result<T, Failure>) -> String {
        match result {
            Err(Failure::Sql(e)) => e.sqlstate,
            other => panic!("expected an SQL error, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_cancel_drops_the_work() {
        let handle = Arc::new(ConnectionHandle::new());
        let (started_tx, started_rx) = tokio::sync::oneshot::channel();
        let h = Arc::clone(&handle);
        let task = tokio::spawn(async move {
            let mut interrupts = Interrupts::start(Some(&h), None).await;
            interrupts
                .race(None, async move {
                    let _ = started_tx.send(());
                    pending::<Result<(), SqlError>>().await
                })
                .await
        });
        started_rx.await.unwrap();
        assert!(handle.cancel().await);
        assert_eq!(sqlstate(task.await.unwrap()), "57014");
    }

    #[tokio::test]
    async fn the_timeout_drops_the_work() {
        let mut interrupts = Interrupts::start(None, Some(Duration::from_millis(50))).await;
        let result = interrupts
            .race(None, pending::<Result<(), SqlError>>())
            .await;
        match result {
            Err(Failure::Sql(e)) => {
                assert_eq!(e.sqlstate, "57014");
                assert_eq!(e.message, "canceling statement due to statement timeout");
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_hangup_drops_the_work() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let mut interrupts = Interrupts::start(None, None).await;
        drop(client);
        let result = interrupts
            .race(Some(&server), pending::<Result<(), SqlError>>())
            .await;
        assert!(matches!(result, Err(Failure::Io(_))), "{result:?}");
    }

    /// A client that sent its next message while the statement runs has
    /// not hung up; it has once it closes.
    #[tokio::test]
    async fn a_waiting_message_is_not_a_hangup() {
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        client.write_all(b"Q").await.unwrap();
        let mut interrupts = Interrupts::start(None, None).await;
        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
        let closer = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let _ = done_tx.send(());
            drop(client);
        });
        let result = interrupts
            .race(Some(&server), async {
                let _ = done_rx.await;
                // Finished only after the client is about to close: the
                // work won, the waiting byte was no hangup.
                Ok(())
            })
            .await;
        assert!(result.is_ok(), "{result:?}");
        closer.await.unwrap();
    }

    #[tokio::test]
    async fn results_and_errors_pass_through() {
        let handle = ConnectionHandle::new();
        let mut interrupts = Interrupts::start(Some(&handle), Some(Duration::from_secs(60))).await;
        assert_eq!(interrupts.race(None, async { Ok(5) }).await.unwrap(), 5);
        let error = interrupts
            .race(None, async { Err::<(), _>(SqlError::new("42601", "bad")) })
            .await;
        assert_eq!(sqlstate(error), "42601");
    }
}
