//! How many client sockets a server holds at once.
//!
//! Up to `max_connections` are served. The next ones, up to as many again
//! (at least [`MIN_REFUSAL_SLOTS`]), are read up to their startup packet
//! and told FATAL 53300 "sorry, too many clients already", as PostgreSQL
//! does, so a driver reports something better than a reset; a
//! CancelRequest on such a socket still works. Any socket beyond that is
//! closed at once, unread: a flood of connections then costs a file
//! descriptor for an instant each, and the process always has descriptors
//! left for its Raft and gRPC traffic.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Sockets above `max_connections` that are still told why they are
/// refused, at the least.
pub(crate) const MIN_REFUSAL_SLOTS: usize = 16;

/// The count of open client sockets.
pub(crate) struct Admission {
    open: AtomicUsize,
    max_connections: usize,
    ceiling: usize,
}

/// What to do with a new socket.
pub(crate) enum Admit {
    /// Serve it; the ticket holds its place until dropped.
    Serve(Ticket),
    /// Tell it 53300 and close it; the ticket holds its place meanwhile.
    Refuse(Ticket),
    /// Close it now.
    Close,
}

/// One open socket's place in the count.
pub(crate) struct Ticket(Arc<Admission>);

impl Drop for Ticket {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Admission {
    pub(crate) fn new(max_connections: usize) -> Arc<Self> {
        Arc::new(Admission {
            open: AtomicUsize::new(0),
            max_connections,
            ceiling: max_connections.saturating_add(max_connections.max(MIN_REFUSAL_SLOTS)),
        })
    }

    /// Counts a new socket in, or not.
    pub(crate) fn admit(self: &Arc<Self>) -> Admit {
        let before = self.open.fetch_add(1, Ordering::AcqRel);
        if before >= self.ceiling {
            self.open.fetch_sub(1, Ordering::AcqRel);
            return Admit::Close;
        }
        let ticket = Ticket(Arc::clone(self));
        if before < self.max_connections {
            Admit::Serve(ticket)
        } else {
            Admit::Refuse(ticket)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serves_then_refuses_then_closes_and_frees_places() {
        let admission = Admission::new(2);
        let served: Vec<Admit> = (0..2).map(|_| admission.admit()).collect();
        assert!(served.iter().all(|a| matches!(a, Admit::Serve(_))));
        let refused: Vec<Admit> = (0..MIN_REFUSAL_SLOTS).map(|_| admission.admit()).collect();
        assert!(refused.iter().all(|a| matches!(a, Admit::Refuse(_))));
        assert!(matches!(admission.admit(), Admit::Close));
        drop(refused);
        assert!(matches!(admission.admit(), Admit::Refuse(_)));
        drop(served);
        assert!(matches!(admission.admit(), Admit::Serve(_)));
    }
}
