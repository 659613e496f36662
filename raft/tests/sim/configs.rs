//! Membership safety: every configuration (`Config` entry) ever appended
//! anywhere, and the committed ones, checked from outside the cores.
//!
//! - single-server step: a configuration differs from its parent (the one
//!   in force in the appending leader's log just before it) by at most one
//!   voter;
//! - one change at a time: when a configuration B is first appended to
//!   any log, every other configuration ever appended is *decided*
//!   (committed, or doomed: the committed log already holds a different
//!   entry at its index, or an entry of a higher term below it, so it can
//!   never be committed), unless B itself is born doomed (a stale leader
//!   appending after a newer leader committed over it).
//!
//! Why this is sound for correct single-server Raft: the leader of term t
//! appends B only once B's parent is committed and once it has committed
//! an entry of term t. Every ancestor of B is then committed. A
//! configuration A outside the leader's log with a lower term is doomed by
//! that committed entry of term t (terms never decrease along a log). One
//! with a higher term was appended by a leader that had committed an entry
//! of that higher term first, which dooms B. So the check never fires on a
//! correct core; it fires as soon as two changes are open at once, which
//! is what lets two configurations with disjoint majorities commit.
//!
//! It implies the textbook statement "any two configurations in force at
//! once differ by at most one voter, or one of them was committed before
//! the other was appended", except for configurations doomed before the
//! other was appended. That exception is needed: a leader of term 1 may
//! hold an uncommitted change to voters {1,2,3,4} while the leader of term
//! 2, which never saw it, removes 3 from {1,2,3}. Both are in force, they
//! differ by two voters, neither was committed; the first can never be.

use std::collections::BTreeSet;

use resqlite_raft::{Membership, NodeId};

use super::checker::Violation;

/// One configuration entry as first seen in some log.
#[derive(Clone, Debug)]
struct Appended {
    index: u64,
    term: u64,
    voters: BTreeSet<NodeId>,
    /// Known decided (committed or doomed) already: never checked again.
    decided: bool,
}

/// The committed log's entry terms, for the doomed/committed test: entry
/// `i` (from 1) has term `terms(i)`.
pub trait CommittedTerms {
    fn len(&self) -> u64;
    fn entry_term(&self, index: u64) -> u64;
}

/// Every configuration appended, and the committed ones.
#[derive(Debug)]
pub struct ConfigHistory {
    appended: Vec<Appended>,
    /// Committed configurations, in log order, from the started-with one
    /// (index 0).
    committed: Vec<(u64, Membership)>,
    /// Every node that was a member of some committed configuration.
    ever_members: BTreeSet<NodeId>,
}

pub fn voters(m: &Membership) -> BTreeSet<NodeId> {
    m.voters().collect()
}

/// Voters added plus voters removed between `a` and `b`.
pub fn voter_distance(a: &BTreeSet<NodeId>, b: &BTreeSet<NodeId>) -> usize {
    a.symmetric_difference(b).count()
}

impl ConfigHistory {
    pub fn new(started_with: Membership) -> Self {
        let ever_members = started_with.members.keys().copied().collect();
        ConfigHistory {
            appended: Vec::new(),
            committed: vec![(0, started_with)],
            ever_members,
        }
    }

    /// Committed configurations, the started-with one included.
    pub fn committed_count(&self) -> u64 {
        self.committed.len() as u64 - 1
    }

    /// The newest committed configuration.
    pub fn latest_committed(&self) -> &Membership {
        &self.committed.last().expect("the started-with one").1
    }

    /// Whether `id` was a member of a committed configuration and is not
    /// one of the newest: its removal is committed, and since ids are
    /// never reused it can never come back.
    pub fn removal_committed(&self, id: NodeId) -> bool {
        self.ever_members.contains(&id) && !self.latest_committed().contains(id)
    }

    /// The committed configuration in force at `index`.
    pub fn committed_at(&self, index: u64) -> &Membership {
        let pos = self.committed.partition_point(|(i, _)| *i <= index);
        &self.committed[pos - 1].1
    }

    /// The configuration entry at `index` is committed.
    pub fn on_committed(&mut self, index: u64, membership: Membership) {
        self.ever_members.extend(membership.members.keys().copied());
        self.committed.push((index, membership));
    }

    /// A configuration entry (`index`, `term`) is in a log for the first
    /// time, appended by `node` after `parent` (the configuration in force
    /// in its log just before).
    pub fn on_appended(
        &mut self,
        node: NodeId,
        index: u64,
        term: u64,
        membership: &Membership,
        parent: &Membership,
        log: &impl CommittedTerms,
    ) -> Result<(), Violation> {
        let new_voters = voters(membership);
        let step = voter_distance(&voters(parent), &new_voters);
        if step > 1 {
            return Err(Violation::new(
                "single-server change",
                format!(
                    "node {node} appended configuration {index}/{term} with voters \
                     {new_voters:?}, {step} voters away from the one in force before it \
                     ({:?})",
                    voters(parent)
                ),
            ));
        }
        if !doomed(index, term, log) {
            for a in self.appended.iter_mut().filter(|a| !a.decided) {
                if committed(a.index, a.term, log) || doomed(a.index, a.term, log) {
                    a.decided = true;
                    continue;
                }
                return Err(Violation::new(
                    "one change at a time",
                    format!(
                        "node {node} appended configuration {index}/{term} (voters \
                         {new_voters:?}) while configuration {}/{} (voters {:?}) is neither \
                         committed nor superseded by the committed log",
                        a.index, a.term, a.voters
                    ),
                ));
            }
        }
        self.appended.push(Appended {
            index,
            term,
            voters: new_voters,
            decided: false,
        });
        Ok(())
    }
}

/// The committed log holds the entry (`index`, `term`).
fn committed(index: u64, term: u64, log: &impl CommittedTerms) -> bool {
    index <= log.len() && log.entry_term(index) == term
}

/// The committed log rules the entry (`index`, `term`) out: it holds
/// another entry at `index`, or (being shorter) ends with an entry of a
/// higher term, which no log can follow with a lower one.
fn doomed(index: u64, term: u64, log: &impl CommittedTerms) -> bool {
    let len = log.len();
    if len == 0 {
        return false;
    }
    if index <= len {
        log.entry_term(index) != term
    } else {
        log.entry_term(len) > term
    }
}
