//! Jepsen-style fault tests of a real cluster: `resqlite serve` processes
//! with a fault-injecting proxy on every Raft link ([`proxy`]), concurrent
//! PostgreSQL clients recording a history ([`workload`], [`history`]), a
//! nemesis that kills, pauses and partitions ([`nemesis`]), and checkers for
//! linearizability, lost or invented rows and convergence ([`checker`]);
//! transactional workloads ([`transactions`]) with their own checks
//! ([`txn_checker`]): a bank whose total never changes, a counter whose
//! increments are neither lost nor invented.
//! [`harness::run`] runs one fault schedule end to end.

pub mod checker;
pub mod harness;
pub mod history;
pub mod nemesis;
pub mod proxy;
pub mod transactions;
pub mod txn_checker;
pub mod workload;
