//! Who may hold SQLite's write lock on this node: the apply thread, or the
//! leader's open write transaction (its speculation, see
//! [`super::speculation`]).
//!
//! A write transaction runs its statements on a connection of its own
//! inside `BEGIN IMMEDIATE`, and keeps SQLite's write lock between its
//! client's statements. The apply thread must never wait for a client: if
//! it had to, an idle client would stall every commit of the cluster, and
//! SQLite's busy timeout would end in a node-local failure. So the apply
//! thread always wins: before it writes, it asks the speculation to yield,
//! which rolls the transaction back (its client gets 40001 and may retry)
//! and gives up the lock. On a leader this only happens when something
//! other than a client write commits while a transaction is open (a
//! membership change, a consistency check, a new term's first entry):
//! client writes wait for the transaction (see `node::txn`).

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// Shared by the state machine and the speculation of one node.
#[derive(Clone, Default)]
pub struct WriteToken(Arc<Inner>);

#[derive(Default)]
struct Inner {
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Default)]
struct State {
    /// A transaction's speculation holds SQLite's write lock.
    speculating: bool,
    /// The apply thread is writing.
    applying: bool,
    /// The apply thread waits to write: no speculation may start.
    apply_waiting: bool,
    /// Asks the speculation to roll back and give the lock up.
    preempt: Option<Arc<dyn Fn() + Send + Sync>>,
}

/// How often the apply thread repeats its request to yield, in case the
/// speculation was busy with a statement when it came.
const PREEMPT_RETRY: Duration = Duration::from_millis(20);

impl WriteToken {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.0.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers how to ask the speculation to yield.
    pub(crate) fn set_preempt(&self, preempt: Arc<dyn Fn() + Send + Sync>) {
        self.lock().preempt = Some(preempt);
    }

    /// The apply thread's turn to write: waits until no speculation holds
    /// the lock, asking it to yield. No speculation starts until the turn
    /// ends.
    pub(crate) fn enter_apply(&self) -> ApplyTurn<'_> {
        let mut state = self.lock();
        state.apply_waiting = true;
        while state.speculating {
            let preempt = state.preempt.clone();
            drop(state);
            if let Some(preempt) = preempt {
                preempt();
            }
            state = self.lock();
            if state.speculating {
                state = self
                    .0
                    .changed
                    .wait_timeout(state, PREEMPT_RETRY)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
        }
        state.apply_waiting = false;
        state.applying = true;
        ApplyTurn(self)
    }

    /// The speculation takes the lock, once the apply thread is done.
    pub(crate) fn enter_speculation(&self) {
        let mut state = self.lock();
        while state.applying || state.apply_waiting {
            state = self
                .0
                .changed
                .wait(state)
                .unwrap_or_else(|e| e.into_inner());
        }
        state.speculating = true;
    }

    /// The speculation has given the lock up (rolled back).
    pub(crate) fn leave_speculation(&self) {
        self.lock().speculating = false;
        self.0.changed.notify_all();
    }

    /// Whether the apply thread waits for the speculation to yield.
    pub(crate) fn apply_waits(&self) -> bool {
        self.lock().apply_waiting
    }
}

/// The apply thread's turn; ends when dropped.
pub(crate) struct ApplyTurn<'a>(&'a WriteToken);

impl Drop for ApplyTurn<'_> {
    fn drop(&mut self) {
        self.0.lock().applying = false;
        self.0 .0.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn the_apply_thread_preempts_a_speculation_and_blocks_new_ones() {
        let token = WriteToken::default();
        let asked = Arc::new(AtomicUsize::new(0));
        {
            let token2 = token.clone();
            let asked = asked.clone();
            token.set_preempt(Arc::new(move || {
                asked.fetch_add(1, Ordering::SeqCst);
                token2.leave_speculation();
            }));
        }
        token.enter_speculation();
        let turn = token.enter_apply();
        assert!(
            asked.load(Ordering::SeqCst) >= 1,
            "the speculation was asked to yield"
        );
        let (tx, rx) = std::sync::mpsc::channel();
        let t2 = token.clone();
        let waiter = std::thread::spawn(move || {
            t2.enter_speculation();
            tx.send(()).unwrap();
        });
        assert!(
            rx.recv_timeout(Duration::from_millis(100)).is_err(),
            "no speculation starts during the apply thread's turn"
        );
        drop(turn);
        rx.recv_timeout(Duration::from_secs(10))
            .expect("the speculation starts after the turn");
        waiter.join().unwrap();
    }
}
