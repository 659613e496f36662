//! Raft's safety properties, checked incrementally after every event.
//!
//! Only the node an event touched can have changed, so checking that node
//! against global records after each event is the same as checking every
//! pair of nodes after every event, at a fraction of the cost:
//!
//! - election safety: one leader per term, over the whole run;
//! - one vote per term: a node never grants two candidates a vote in one
//!   term (votes are recorded as they leave the node, i.e. once durable);
//! - log matching: every (index, term) ever held by any log maps to one
//!   hash of the whole log prefix up to it;
//! - leader completeness: a new leader of term T holds every entry
//!   committed in a term below T;
//! - state machine safety: one entry per index over every apply of every
//!   node, across crashes and re-applies;
//! - committed prefix: every node's log up to its commit index is the
//!   committed log;
//! - linearizable reads: a confirmed ReadIndex is at least the commit index
//!   known anywhere when the read was asked for;
//! - snapshots: a snapshot covers only committed entries, its metadata
//!   names the committed entry at its index, and its state equals the
//!   state every node applied up to that index, and its membership is the
//!   committed configuration in force at that index;
//! - membership: a node becomes leader only as a voter of the configuration
//!   in force on it; the configuration in force on every node is the
//!   newest in its log (or its snapshot's, or the one it was started
//!   with); plus the checks of [`ConfigHistory`].

use std::collections::hash_map::Entry as Slot;
use std::collections::{BTreeMap, HashMap};
use std::fmt;

use resqlite_raft::{
    Entry, EntryKind, Membership, Message, MessageBody, NodeId, ReadState, Role, SnapshotMeta,
    Status,
};

use super::configs::{CommittedTerms, ConfigHistory};
use super::log_view::chain;
pub use super::log_view::{entry_hash, verify_view, LogView};

/// A broken property: which one and the facts that break it.
#[derive(Clone, Debug)]
pub struct Violation {
    /// Short name of the property.
    pub invariant: &'static str,
    /// What was seen.
    pub detail: String,
}

impl Violation {
    pub fn new(invariant: &'static str, detail: String) -> Self {
        Violation { invariant, detail }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.invariant, self.detail)
    }
}

fn fail<T>(invariant: &'static str, detail: String) -> Result<T, Violation> {
    Err(Violation::new(invariant, detail))
}

/// The committed log as observed so far: one record per index.
#[derive(Clone, Copy, Debug)]
struct Committed {
    /// Hash of the committed log up to this index.
    prefix: u64,
    /// An upper bound on the term in which this index was committed (the
    /// term of a node that saw it committed; a leader of a later term must
    /// hold it). Non-decreasing along the log.
    term: u64,
    /// The term of the entry itself.
    entry_term: u64,
}

/// What the checker remembers about one node between events.
#[derive(Clone, Copy, Debug)]
pub struct Seen {
    pub role: Role,
    pub term: u64,
    pub commit: u64,
    /// Index of the configuration in force and the view's configuration
    /// generation, as last checked (None: compare the memberships in full
    /// at the next event).
    pub config_at: Option<(u64, u64)>,
}

impl Seen {
    pub fn fresh() -> Self {
        Seen {
            role: Role::Follower,
            term: 0,
            commit: 0,
            config_at: None,
        }
    }
}

/// Counters for the end-of-run summary.
#[derive(Clone, Copy, Debug, Default)]
pub struct CheckStats {
    pub leaders: u64,
    pub reads_confirmed: u64,
}

#[derive(Debug)]
pub struct Checker {
    /// term → its leader.
    leaders: BTreeMap<u64, NodeId>,
    /// (voter, term) → the candidate it granted its vote to.
    votes: BTreeMap<(NodeId, u64), NodeId>,
    /// (index, term) → hash of the log prefix that ends there. Only looked
    /// up, never iterated, so its order cannot change a run.
    histories: HashMap<(u64, u64), u64>,
    committed: Vec<Committed>,
    /// Hash of the entry each index was applied with, by any node.
    applied: Vec<u64>,
    /// Read ctx → (node asked, commit index known when it was asked).
    reads: BTreeMap<u64, (NodeId, u64)>,
    /// Every configuration appended, and the committed ones.
    pub history: ConfigHistory,
    pub stats: CheckStats,
}

/// The committed log's terms, for [`ConfigHistory`].
struct CommittedLog<'a>(&'a [Committed]);

impl CommittedTerms for CommittedLog<'_> {
    fn len(&self) -> u64 {
        self.0.len() as u64
    }

    fn entry_term(&self, index: u64) -> u64 {
        self.0[index as usize - 1].entry_term
    }
}

impl Checker {
    /// A checker for a cluster started with `started_with`.
    pub fn new(started_with: Membership) -> Self {
        Checker {
            leaders: BTreeMap::new(),
            votes: BTreeMap::new(),
            histories: HashMap::new(),
            committed: Vec::new(),
            applied: Vec::new(),
            reads: BTreeMap::new(),
            history: ConfigHistory::new(started_with),
            stats: CheckStats::default(),
        }
    }

    /// How many entries are known committed.
    pub fn committed_len(&self) -> u64 {
        self.committed.len() as u64
    }

    /// The entry hash applied at `index`, if any node applied it.
    pub fn applied_at(&self, index: u64) -> Option<u64> {
        index
            .checked_sub(1)
            .and_then(|i| self.applied.get(i as usize))
            .copied()
    }

    /// The core handed `entries` to storage: its log now ends with them.
    pub fn replace_log(
        &mut self,
        node: NodeId,
        view: &mut LogView,
        entries: &[Entry],
    ) -> Result<(), Violation> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        if first.index == 0 || first.index > view.len() + 1 {
            return fail(
                "ready contract",
                format!(
                    "node {node} handed entries from {} to storage but its log ends at {}",
                    first.index,
                    view.len()
                ),
            );
        }
        view.terms.truncate(first.index as usize - 1);
        view.prefix.truncate(first.index as usize - 1);
        view.configs.retain(|(i, _)| *i < first.index);
        view.config_gen += 1;
        self.extend_log(node, view, entries)
    }

    /// `node` restarts with `durable_term` on its disk. A term above it
    /// in which it led never reached its disk: a lone voter wins before
    /// its vote is written, and a crash then undoes the whole leadership.
    /// The core lets nothing of such a term leave the node before the
    /// term is durable, so nobody else may hold an entry of it: checked
    /// here against `others`. Then the term is free again (the node may
    /// win it anew, with other entries), so its records are dropped.
    pub fn void_terms_never_durable(
        &mut self,
        node: NodeId,
        durable_term: u64,
        others: &[(NodeId, &LogView)],
    ) -> Result<(), Violation> {
        let voided: Vec<u64> = self
            .leaders
            .range(durable_term + 1..)
            .filter(|(_, &l)| l == node)
            .map(|(&t, _)| t)
            .collect();
        for &term in &voided {
            if let Some((other, _)) = others.iter().find(|(_, v)| v.terms.contains(&term)) {
                return fail(
                    "durable term",
                    format!(
                        "node {other} holds entries of term {term}, led by node {node}, which \
                         restarted without that term on its disk"
                    ),
                );
            }
            if self.committed.iter().any(|c| c.entry_term == term) {
                return fail(
                    "durable term",
                    format!("an entry of term {term} committed before the term was durable"),
                );
            }
            self.leaders.remove(&term);
        }
        if !voided.is_empty() {
            self.histories.retain(|(_, t), _| !voided.contains(t));
        }
        Ok(())
    }

    /// A restarted node's log is exactly its disk: its snapshot, then its
    /// log.
    pub fn reset_log(
        &mut self,
        node: NodeId,
        view: &mut LogView,
        snapshot: Option<&SnapshotMeta>,
        disk: &[Entry],
    ) -> Result<(), Violation> {
        self.restore_log(node, view, snapshot)?;
        self.extend_log(node, view, disk)
    }

    /// A node's log was replaced by `snapshot`: up to its index it is the
    /// committed log, which the snapshot must therefore match.
    pub fn restore_log(
        &mut self,
        node: NodeId,
        view: &mut LogView,
        snapshot: Option<&SnapshotMeta>,
    ) -> Result<(), Violation> {
        view.terms.clear();
        view.prefix.clear();
        view.configs.clear();
        view.base = view.started_with.clone();
        view.config_gen += 1;
        let Some(meta) = snapshot else {
            return Ok(());
        };
        if meta.index > self.committed_len() {
            return fail(
                "snapshot",
                format!(
                    "node {node} holds a snapshot up to {} but only {} entries are known committed",
                    meta.index,
                    self.committed_len()
                ),
            );
        }
        let covered = &self.committed[..meta.index as usize];
        if covered.last().map_or(0, |c| c.entry_term) != meta.term {
            return fail(
                "snapshot",
                format!(
                    "node {node} holds a snapshot whose last entry is {}/{}, but the committed                      entry there has term {}",
                    meta.index,
                    meta.term,
                    covered.last().map_or(0, |c| c.entry_term)
                ),
            );
        }
        view.terms.extend(covered.iter().map(|c| c.entry_term));
        view.prefix.extend(covered.iter().map(|c| c.prefix));
        self.check_snapshot_membership(node, meta, None)?;
        if !meta.membership.members.is_empty() {
            view.base = meta.membership.clone();
        }
        Ok(())
    }

    /// A snapshot names the committed configuration in force at its index
    /// (`view`: that of the node that just took it, whose commit index the
    /// checker may not have seen yet; its log up to there is committed).
    pub fn check_snapshot_membership(
        &self,
        node: NodeId,
        meta: &SnapshotMeta,
        view: Option<&LogView>,
    ) -> Result<(), Violation> {
        let expected = match view {
            Some(v) => v.in_force_at(meta.index),
            None => self.history.committed_at(meta.index),
        };
        if !meta.membership.members.is_empty() && &meta.membership != expected {
            return fail(
                "snapshot",
                format!(
                    "node {node}: snapshot at {} names voters {:?} learners {:?}, but the \
                     committed configuration there has voters {:?} learners {:?}",
                    meta.index,
                    meta.membership.voters().collect::<Vec<_>>(),
                    meta.membership.learners().collect::<Vec<_>>(),
                    expected.voters().collect::<Vec<_>>(),
                    expected.learners().collect::<Vec<_>>()
                ),
            );
        }
        Ok(())
    }

    /// A state machine restored from a snapshot (or a snapshot taken of
    /// one) must equal what every node applied up to its index.
    pub fn check_snapshot_state(
        &self,
        node: NodeId,
        meta: &SnapshotMeta,
        state: &[u64],
    ) -> Result<(), Violation> {
        if state.len() as u64 != meta.index {
            return fail(
                "snapshot",
                format!(
                    "node {node}: snapshot at {} holds the state of {} entries",
                    meta.index,
                    state.len()
                ),
            );
        }
        if let Some(i) = state
            .iter()
            .zip(&self.applied)
            .position(|(a, b)| a != b)
            .or_else(|| (state.len() > self.applied.len()).then_some(self.applied.len()))
        {
            return fail(
                "snapshot",
                format!(
                    "node {node}: snapshot at {} differs from the applied state at index {}",
                    meta.index,
                    i + 1
                ),
            );
        }
        Ok(())
    }

    fn extend_log(
        &mut self,
        node: NodeId,
        view: &mut LogView,
        entries: &[Entry],
    ) -> Result<(), Violation> {
        for e in entries {
            if e.index != view.len() + 1 {
                return fail(
                    "ready contract",
                    format!(
                        "node {node}: entry {} follows index {}",
                        e.index,
                        view.len()
                    ),
                );
            }
            let prefix = chain(view.prefix(view.len()), entry_hash(e));
            view.terms.push(e.term);
            view.prefix.push(prefix);
            let config = if e.kind == EntryKind::Config {
                match Membership::decode(&e.data) {
                    Ok(m) => Some(m),
                    Err(why) => {
                        return fail(
                            "membership",
                            format!(
                                "node {node}: configuration entry {} is garbled: {why}",
                                e.index
                            ),
                        )
                    }
                }
            } else {
                None
            };
            match self.histories.entry((e.index, e.term)) {
                Slot::Vacant(slot) => {
                    slot.insert(prefix);
                    if let Some(m) = &config {
                        let log = CommittedLog(&self.committed);
                        self.history.on_appended(
                            node,
                            e.index,
                            e.term,
                            m,
                            view.in_force(),
                            &log,
                        )?;
                    }
                }
                Slot::Occupied(slot) if *slot.get() != prefix => {
                    return fail(
                        "log matching",
                        format!(
                            "node {node} holds index {} term {} after a log that differs from \
                             another log holding the same index and term (or the entries differ)",
                            e.index, e.term
                        ),
                    );
                }
                Slot::Occupied(_) => {}
            }
            if let Some(m) = config {
                view.configs.push((e.index, m));
                view.config_gen += 1;
            }
        }
        Ok(())
    }

    /// A message leaves a node: a granted vote is on its disk by now.
    pub fn on_send(&mut self, m: &Message) -> Result<(), Violation> {
        if let MessageBody::RequestVoteResponse {
            granted: true,
            pre_vote: false,
        } = m.body
        {
            match self.votes.get(&(m.from, m.term)) {
                None => {
                    self.votes.insert((m.from, m.term), m.to);
                }
                Some(&c) if c != m.to => {
                    return fail(
                        "one vote per term",
                        format!(
                            "node {} voted for {c} and then for {} in term {}",
                            m.from, m.to, m.term
                        ),
                    );
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// Checks a node's state after an event. `restarted`: the core was just
    /// rebuilt from disk (its commit index is its applied index).
    /// `in_force`: the configuration the core says is in force, and the
    /// index of the entry that set it.
    pub fn observe(
        &mut self,
        st: &Status,
        in_force: (&Membership, u64),
        view: &LogView,
        seen: &mut Seen,
        restarted: bool,
    ) -> Result<(), Violation> {
        let node = st.id;
        let expected_index = view.in_force_index(st.snapshot);
        // Memberships are compared in full only when the index moved (the
        // comparison costs more than the rest of the checks in debug).
        let moved = seen.config_at != Some((in_force.1, view.config_gen));
        if in_force.1 != expected_index || (moved && in_force.0 != view.in_force()) {
            return fail(
                "configuration in force",
                format!(
                    "node {node} has members {:?} (voters {:?}) set at index {} in force, but \
                     the newest configuration of its log is {:?} (voters {:?}) set at {}",
                    in_force.0.members.keys().collect::<Vec<_>>(),
                    in_force.0.voters().collect::<Vec<_>>(),
                    in_force.1,
                    view.in_force().members.keys().collect::<Vec<_>>(),
                    view.in_force().voters().collect::<Vec<_>>(),
                    expected_index
                ),
            );
        }
        if st.last_index != view.len() || st.last_term != view.last_term() {
            return fail(
                "ready contract",
                format!(
                    "node {node}'s log ends at {}/{} but it reported a log ending at {}/{}",
                    st.last_index,
                    st.last_term,
                    view.len(),
                    view.last_term()
                ),
            );
        }
        if st.applied > st.commit || st.commit > st.last_index {
            return fail(
                "commit bounds",
                format!(
                    "node {node}: applied {} commit {} last index {}",
                    st.applied, st.commit, st.last_index
                ),
            );
        }
        if st.role == Role::Leader {
            match self.leaders.get(&st.term) {
                None => {
                    self.leaders.insert(st.term, node);
                    self.stats.leaders += 1;
                }
                Some(&other) if other != node => {
                    return fail(
                        "election safety",
                        format!(
                            "nodes {other} and {node} are both leaders of term {}",
                            st.term
                        ),
                    );
                }
                Some(_) => {}
            }
            if seen.role != Role::Leader || seen.term != st.term {
                // A node whose own removal is not committed may still lead
                // (it votes in the committed configuration): it commits the
                // removal and hands over.
                let committed = view.in_force_at(st.commit);
                if !in_force.0.is_voter(node) && !committed.is_voter(node) {
                    return fail(
                        "leader is a voter",
                        format!(
                            "node {node} became leader of term {} but is a voter neither of the \
                             configuration in force on it (voters {:?}) nor of the committed one \
                             (voters {:?})",
                            st.term,
                            in_force.0.voters().collect::<Vec<_>>(),
                            committed.voters().collect::<Vec<_>>()
                        ),
                    );
                }
                self.check_leader_completeness(st, view)?;
            }
        }
        if !restarted && st.commit < seen.commit {
            return fail(
                "commit bounds",
                format!(
                    "node {node}'s commit index went back from {} to {}",
                    seen.commit, st.commit
                ),
            );
        }
        if restarted || st.commit > seen.commit {
            self.observe_commit(st, view, !restarted)?;
        }
        *seen = Seen {
            role: st.role,
            term: st.term,
            commit: st.commit,
            config_at: Some((in_force.1, view.config_gen)),
        };
        Ok(())
    }

    fn check_leader_completeness(&self, st: &Status, view: &LogView) -> Result<(), Violation> {
        let must_hold = self.committed.partition_point(|c| c.term < st.term) as u64;
        if must_hold == 0 {
            return Ok(());
        }
        let holds = view.len() >= must_hold
            && view.prefix(must_hold) == self.committed[must_hold as usize - 1].prefix;
        if !holds {
            return fail(
                "leader completeness",
                format!(
                    "node {} became leader of term {} but its log (last index {}) lacks entries \
                     up to {} committed in earlier terms",
                    st.id, st.term, st.last_index, must_hold
                ),
            );
        }
        Ok(())
    }

    /// `live`: the commit index was learned in the node's current term, so
    /// everything up to it was committed in that term or earlier.
    fn observe_commit(&mut self, st: &Status, view: &LogView, live: bool) -> Result<(), Violation> {
        let commit = st.commit;
        let known = self.committed_len();
        let overlap = commit.min(known);
        if overlap > 0 && view.prefix(overlap) != self.committed[overlap as usize - 1].prefix {
            return fail(
                "committed log",
                format!(
                    "node {} (commit {commit}) holds a log up to index {overlap} that differs \
                     from the committed log",
                    st.id
                ),
            );
        }
        if !live && commit > known {
            return fail(
                "durability",
                format!(
                    "node {} restarted having applied {commit}, beyond any commit index seen ({known})",
                    st.id
                ),
            );
        }
        for index in known + 1..=commit {
            self.committed.push(Committed {
                prefix: view.prefix(index),
                term: st.term,
                entry_term: view.term(index),
            });
        }
        if commit > known {
            let newly = view
                .configs
                .iter()
                .filter(|(i, _)| *i > known && *i <= commit);
            for (index, m) in newly {
                self.history.on_committed(*index, m.clone());
            }
        }
        if live {
            let mut i = commit as usize;
            while i > 0 && self.committed[i - 1].term > st.term {
                self.committed[i - 1].term = st.term;
                i -= 1;
            }
        }
        Ok(())
    }

    /// A node applies the entry with hash `hash` at `index`.
    pub fn on_apply(&mut self, node: NodeId, index: u64, hash: u64) -> Result<(), Violation> {
        let known = self.applied.len() as u64;
        if index <= known {
            if self.applied[index as usize - 1] != hash {
                return fail(
                    "state machine safety",
                    format!(
                        "node {node} applied a different entry at index {index} than another node"
                    ),
                );
            }
        } else if index == known + 1 {
            self.applied.push(hash);
        } else {
            return fail(
                "state machine safety",
                format!(
                    "node {node} applied index {index} but nothing was ever applied at {known}+1"
                ),
            );
        }
        Ok(())
    }

    /// A client asked `node` for a linearizable read.
    pub fn on_read_requested(&mut self, node: NodeId, ctx: u64) {
        self.reads.insert(ctx, (node, self.committed_len()));
    }

    /// `commit`: the confirming node's commit index now.
    pub fn on_read_confirmed(
        &mut self,
        node: NodeId,
        rs: ReadState,
        commit: u64,
    ) -> Result<(), Violation> {
        let Some((asked, floor)) = self.reads.remove(&rs.ctx) else {
            return fail(
                "read index",
                format!("node {node} confirmed read {} nobody asked it for", rs.ctx),
            );
        };
        if asked != node {
            return fail(
                "read index",
                format!(
                    "node {node} confirmed read {} that was asked of node {asked}",
                    rs.ctx
                ),
            );
        }
        if rs.index < floor {
            return fail(
                "linearizable read",
                format!(
                    "node {node} confirmed read {} at index {} but index {floor} was already \
                     committed when the read was asked (stale read)",
                    rs.ctx, rs.index
                ),
            );
        }
        if rs.index > commit {
            return fail(
                "read index",
                format!(
                    "node {node} confirmed read {} at index {} beyond its commit index {commit}",
                    rs.ctx, rs.index
                ),
            );
        }
        self.stats.reads_confirmed += 1;
        Ok(())
    }

    pub fn on_read_dropped(&mut self, node: NodeId, ctx: u64) -> Result<(), Violation> {
        match self.reads.remove(&ctx) {
            Some((asked, _)) if asked == node => Ok(()),
            _ => fail(
                "read index",
                format!("node {node} dropped read {ctx} it was not asked for"),
            ),
        }
    }

    /// A crashed node forgets the reads it was asked for.
    pub fn forget_reads(&mut self, node: NodeId) {
        self.reads.retain(|_, (asked, _)| *asked != node);
    }
}
