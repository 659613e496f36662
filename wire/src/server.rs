//! The accept loop: every connection on its own task, a panic in one
//! logged and contained.

use std::io;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use pgwire::api::ConnectionManager;
use tokio::net::TcpListener;

use crate::admission::{Admission, Admit};
use crate::executor::Executor;
use crate::large_statement::LargeStatements;
use crate::options::WireOptions;
use crate::startup::Startup;

/// What every connection of one server shares.
pub(crate) struct Shared<E> {
    pub(crate) executor: Arc<E>,
    pub(crate) opts: WireOptions,
    pub(crate) startup: Startup<E>,
    /// Cancel keys of the connections that are in.
    pub(crate) cancels: Arc<ConnectionManager>,
    /// Large messages being received, over all connections.
    pub(crate) receive_budget: Arc<crate::codec::ReceiveBudget>,
    /// Where large statements are handled, off the async workers.
    pub(crate) large: Arc<LargeStatements>,
}

/// Serves PostgreSQL clients on `listener` until accepting fails for good.
///
/// Each connection runs on its own task; a panic there closes that
/// connection only. At most `opts.max_connections` are served at once (see
/// `crate::admission` for the ones beyond). Statements go to `executor`; `SET`, `SHOW` and `RESET`
/// are answered by the front end itself, and transaction blocks (`BEGIN`,
/// `COMMIT`, savepoints) are kept here and run through
/// [`Executor::begin`] and its kin (see `crate::block`).
pub async fn serve<E: Executor>(
    listener: TcpListener,
    executor: Arc<E>,
    opts: WireOptions,
) -> io::Result<()> {
    let cancels = Arc::new(ConnectionManager::new());
    let startup = Startup::new(Arc::clone(&executor), &opts, Arc::clone(&cancels))
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let shared = Arc::new(Shared {
        startup,
        executor,
        opts,
        cancels,
        large: Arc::new(LargeStatements::new()),
        receive_budget: crate::codec::ReceiveBudget::new(crate::options::MAX_RECEIVING_BYTES),
    });
    let admission = Admission::new(shared.opts.max_connections);
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "PostgreSQL front end listening");
    }
    loop {
        let (socket, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) if is_transient(&e) => {
                // Out of file descriptors or buffers: wait for some to be
                // released instead of spinning on the same error.
                tracing::warn!(error = %e, "accept failed; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        let (ticket, admitted) = match admission.admit() {
            Admit::Serve(ticket) => (ticket, true),
            Admit::Refuse(ticket) => (ticket, false),
            Admit::Close => {
                tracing::warn!(%peer, "too many client sockets; closed this one unread");
                drop(socket);
                continue;
            }
        };
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let _ticket = ticket;
            let connection = AssertUnwindSafe(crate::connection::run(socket, shared, admitted));
            match connection.catch_unwind().await {
                Ok(Ok(())) => tracing::debug!(%peer, "connection closed"),
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "connection lost"),
                Err(panic) => {
                    let what = panic
                        .downcast_ref::<&str>()
                        .copied()
                        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
                        .unwrap_or("unknown cause");
                    tracing::error!(%peer, panic = what, "connection task panicked; closed it");
                }
            }
        });
    }
}

/// Errors of one accept that say nothing about the listener itself.
fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
            | io::ErrorKind::TimedOut
            | io::ErrorKind::OutOfMemory
    ) || matches!(
        e.raw_os_error(),
        // ENOMEM, ENFILE, EMFILE, ENOBUFS, EPROTO, EPERM (firewall) on Linux.
        Some(12 | 23 | 24 | 105 | 71 | 1)
    )
}
