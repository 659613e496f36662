//! Membership changes on whole clusters of cores with a perfect network
//! and instantly durable disks: the rules of single-server changes, and
//! what each role does when the configuration in force changes.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;

use super::{Config, Message, MessageBody, Persisted, ProposeError, Raft, Role};
use crate::types::{Entry, EntryKind, Membership, MembershipChange, NodeId};

struct Cluster {
    nodes: BTreeMap<NodeId, Raft>,
    /// Nodes that neither send nor receive.
    down: BTreeSet<NodeId>,
    /// Entries each node has applied, in order.
    applied: BTreeMap<NodeId, Vec<Entry>>,
}

fn config(id: NodeId, voters: &[NodeId]) -> Config {
    let mut cfg = Config::new(id, voters.to_vec());
    cfg.pre_vote = true;
    cfg.check_quorum = true;
    cfg
}

impl Cluster {
    fn new(voters: &[NodeId]) -> Self {
        let mut c = Cluster {
            nodes: BTreeMap::new(),
            down: BTreeSet::new(),
            applied: BTreeMap::new(),
        };
        for &id in voters {
            c.add_node(id, voters);
        }
        c
    }

    /// Starts node `id` with `voters` as its started-with configuration
    /// (empty: a node that joins).
    fn add_node(&mut self, id: NodeId, voters: &[NodeId]) {
        let core = Raft::new(config(id, voters), Persisted::default()).expect("valid config");
        self.nodes.insert(id, core);
        self.applied.insert(id, Vec::new());
    }

    fn node(&mut self, id: NodeId) -> &mut Raft {
        self.nodes.get_mut(&id).expect("node exists")
    }

    /// Delivers every message until the cluster is quiet.
    fn settle(&mut self) {
        for _ in 0..1000 {
            let mut msgs = Vec::new();
            for (&id, r) in self.nodes.iter_mut() {
                while r.has_ready() {
                    let rd = r.ready();
                    if let Some(last) = rd.entries.last() {
                        r.on_persisted(last.index, last.term);
                    }
                    self.applied
                        .get_mut(&id)
                        .expect("known")
                        .extend(rd.committed_entries);
                    if !self.down.contains(&id) {
                        msgs.extend(rd.messages);
                        msgs.extend(rd.persisted_messages);
                    }
                }
            }
            msgs.retain(|m| !self.down.contains(&m.to) && self.nodes.contains_key(&m.to));
            if msgs.is_empty() {
                return;
            }
            for m in msgs {
                let to = m.to;
                self.node(to).step(m);
            }
        }
        panic!("the cluster never went quiet");
    }

    /// Ticks every running node `n` times, settling after each.
    fn tick(&mut self, n: usize) {
        for _ in 0..n {
            for (id, r) in self.nodes.iter_mut() {
                if !self.down.contains(id) {
                    r.tick();
                }
            }
            self.settle();
        }
    }

    fn leader(&self) -> Option<NodeId> {
        let leaders: Vec<NodeId> = self
            .nodes
            .iter()
            .filter(|(id, r)| !self.down.contains(id) && r.status().role == Role::Leader)
            .map(|(&id, _)| id)
            .collect();
        assert!(leaders.len() <= 1, "two leaders: {leaders:?}");
        leaders.first().copied()
    }

    fn elect(&mut self, id: NodeId) {
        self.node(id).campaign();
        self.settle();
        assert_eq!(self.leader(), Some(id));
    }

    fn change(&mut self, leader: NodeId, change: MembershipChange) -> Result<u64, ProposeError> {
        let next = change
            .apply_to(self.node(leader).membership())
            .map_err(ProposeError::InvalidChange)?;
        let (index, _) = self.node(leader).propose_membership(next)?;
        Ok(index)
    }

    fn write(&mut self, leader: NodeId, what: &str) -> u64 {
        let (index, _) = self
            .node(leader)
            .propose(Bytes::from(what.to_string()))
            .expect("leader accepts");
        self.settle();
        index
    }

    fn commit(&self, id: NodeId) -> u64 {
        self.nodes[&id].status().commit
    }

    fn normal_applied(&self, id: NodeId) -> Vec<Bytes> {
        self.applied[&id]
            .iter()
            .filter(|e| e.kind == EntryKind::Normal)
            .map(|e| e.data.clone())
            .collect()
    }
}

fn add(id: NodeId) -> MembershipChange {
    MembershipChange::AddLearner {
        id,
        raft_addr: format!("h:{id}"),
        client_addr: String::new(),
    }
}

#[test]
fn a_learner_gets_the_log_but_counts_in_no_quorum_and_never_campaigns() {
    let mut c = Cluster::new(&[1, 2, 3]);
    c.elect(1);
    c.write(1, "before");
    c.add_node(4, &[]);
    c.change(1, add(4)).expect("accepted");
    c.settle();
    assert!(c.node(4).membership().contains(4));
    assert!(!c.node(4).membership().is_voter(4));
    assert_eq!(c.normal_applied(4), vec![Bytes::from("before")]);

    // With two voters down, the leader and the learner are no quorum.
    c.down.extend([2, 3]);
    let index = c.write(1, "stuck");
    assert!(c.commit(1) < index, "a learner's ack must not commit");
    // The learner, cut off from the leader too, never starts an election.
    c.down.insert(1);
    c.tick(100);
    assert_eq!(c.node(4).status().role, Role::Follower);
    assert_eq!(c.node(4).status().term, c.nodes[&1].status().term);
}

#[test]
fn a_promoted_learner_counts_and_a_removed_voter_does_not() {
    let mut c = Cluster::new(&[1, 2, 3]);
    c.elect(1);
    c.add_node(4, &[]);
    c.change(1, add(4)).unwrap();
    c.settle();
    c.change(1, MembershipChange::Promote { id: 4 }).unwrap();
    c.settle();
    assert_eq!(c.node(2).membership().voters().count(), 4);
    // Four voters: the leader and one follower are no longer a quorum.
    c.down.extend([3, 4]);
    let index = c.write(1, "needs three");
    assert!(c.commit(1) < index);
    c.down.remove(&4);
    // Its lost batches stall until the leader probes again.
    c.tick(25);
    assert!(c.commit(1) >= index, "leader, 2 and the promoted 4 commit");

    // Remove 3 (down): three voters again, two of them make a quorum.
    c.change(1, MembershipChange::Remove { id: 3 }).unwrap();
    c.settle();
    assert!(!c.node(1).membership().contains(3));
    c.down.insert(4);
    let index = c.write(1, "two of three");
    assert!(c.commit(1) >= index);
}

#[test]
fn one_change_at_a_time_and_one_voter_per_change() {
    let mut c = Cluster::new(&[1, 2, 3]);
    c.elect(1);
    c.down.extend([2, 3]);
    c.change(1, add(4)).unwrap();
    // The first change cannot commit: the second must wait.
    let second = c.change(1, add(5));
    assert!(
        matches!(second, Err(ProposeError::ChangeInProgress(_))),
        "{second:?}"
    );
    c.down.clear();
    c.tick(2);
    c.change(1, add(5)).expect("the first one committed");
    c.settle();

    // Two voters at once is refused.
    let mut two = c.node(1).membership().clone();
    two.members.get_mut(&4).unwrap().voter = true;
    two.members.get_mut(&5).unwrap().voter = true;
    let refused = c.node(1).propose_membership(two);
    assert!(
        matches!(refused, Err(ProposeError::InvalidChange(_))),
        "{refused:?}"
    );
    let not_leader = c.change(2, add(6));
    assert!(matches!(not_leader, Err(ProposeError::NotLeader { .. })));
}

#[test]
fn a_new_leader_changes_membership_only_after_committing_in_its_term() {
    let mut cfg = config(2, &[1, 2, 3]);
    cfg.pre_vote = false;
    let mut r = Raft::new(cfg, Persisted::default()).unwrap();
    r.campaign();
    let drain = |r: &mut Raft| {
        while r.has_ready() {
            let rd = r.ready();
            if let Some(last) = rd.entries.last() {
                r.on_persisted(last.index, last.term);
            }
        }
    };
    drain(&mut r);
    let term = r.status().term;
    let from_3 = |body| Message {
        from: 3,
        to: 2,
        term,
        rpc_id: 0,
        body,
    };
    r.step(from_3(MessageBody::RequestVoteResponse {
        granted: true,
        pre_vote: false,
    }));
    drain(&mut r);
    assert_eq!(r.status().role, Role::Leader);
    // Its no-op (index 1) is not acknowledged yet.
    let next = add(4).apply_to(r.membership()).unwrap();
    let early = r.propose_membership(next.clone());
    assert!(
        matches!(early, Err(ProposeError::ChangeInProgress(_))),
        "{early:?}"
    );
    r.step(from_3(MessageBody::AppendEntriesResponse {
        success: true,
        index: 1,
        conflict_term: 0,
        conflict_index: 0,
    }));
    drain(&mut r);
    assert_eq!(r.status().commit, 1);
    r.propose_membership(next).expect("no-op committed");
}

#[test]
fn a_leader_that_removes_itself_steps_down_and_hands_over() {
    let mut c = Cluster::new(&[1, 2, 3]);
    c.elect(1);
    c.write(1, "a");
    c.change(1, MembershipChange::Remove { id: 1 }).unwrap();
    c.settle();
    // TimeoutNow went to a caught-up voter, which won at once.
    let leader = c
        .leader()
        .expect("a new leader without an election timeout");
    assert_ne!(leader, 1);
    assert_eq!(c.node(1).status().role, Role::Follower);
    c.write(leader, "b");
    assert_eq!(
        c.normal_applied(leader),
        vec![Bytes::from("a"), Bytes::from("b")]
    );
    // The removed node never campaigns, however long it waits.
    c.down.extend(
        c.nodes
            .keys()
            .copied()
            .filter(|&id| id != 1)
            .collect::<Vec<_>>(),
    );
    c.tick(100);
    assert_eq!(c.node(1).status().role, Role::Follower);
}

#[test]
fn a_truncated_configuration_entry_is_no_longer_in_force() {
    let mut c = Cluster::new(&[1, 2, 3]);
    c.elect(1);
    // Only node 2 gets the change; it is in force there, uncommitted.
    c.down.insert(3);
    c.down.insert(2);
    c.change(1, add(4)).unwrap();
    c.settle();
    assert!(c.node(1).membership().contains(4));
    // Node 1 dies; 2 and 3 elect 3 after 2 is back without the entry.
    c.down.insert(1);
    c.down.remove(&2);
    c.down.remove(&3);
    c.tick(40);
    let leader = c.leader().expect("2 and 3 elect a leader");
    assert_ne!(leader, 1);
    c.write(leader, "x");
    // Node 1 comes back: its uncommitted entry is replaced, and with it
    // the configuration it set.
    c.down.remove(&1);
    c.tick(3);
    assert!(!c.node(1).membership().contains(4));
    assert_eq!(c.node(1).membership_index(), 0);
}

#[test]
fn compaction_keeps_the_membership_with_the_snapshot() {
    let mut c = Cluster::new(&[1, 2, 3]);
    c.elect(1);
    c.change(1, add(4)).unwrap();
    c.settle();
    let index = c.write(1, "after");
    let meta = c.node(1).compact(index).expect("applied");
    assert!(meta.membership.contains(4) && !meta.membership.is_voter(4));
    assert_eq!(*c.node(1).membership(), meta.membership);
    // A node restored from that snapshot alone knows the members.
    let restored = Raft::new(
        config(5, &[]),
        Persisted {
            hard_state: crate::types::HardState {
                term: meta.term,
                vote: None,
            },
            snapshot: meta.clone(),
            entries: Vec::new(),
            applied: meta.index,
        },
    )
    .unwrap();
    assert_eq!(*restored.membership(), meta.membership);
}

#[test]
fn a_joining_node_learns_members_from_the_snapshot_it_is_sent() {
    let mut c = Cluster::new(&[1, 2, 3]);
    c.elect(1);
    c.change(1, add(4)).unwrap();
    c.settle();
    c.down.insert(4);
    let index = c.write(1, "w");
    c.node(1).compact(index).unwrap();
    // Node 4 lost its disk: it starts empty, as a joining node.
    c.nodes.remove(&4);
    c.add_node(4, &[]);
    assert!(c.node(4).membership().members.is_empty());
    c.down.remove(&4);
    c.tick(3);
    assert!(c.node(4).membership().contains(4));
    assert_eq!(c.node(4).status().snapshot, index);
}

#[test]
fn a_joining_node_needs_no_voters_and_other_nodes_must_list_themselves() {
    assert!(Raft::new(config(9, &[]), Persisted::default()).is_ok());
    assert!(Raft::new(config(9, &[1, 2]), Persisted::default()).is_err());
    let m = Membership::from_voters(&[1]);
    assert!(m.is_voter(1));
}

/// Found by the simulator: the leader of {1, 2} removes itself, but the
/// entry never reaches 2. Check-quorum makes 1 step down; 2 still needs
/// 1's vote, which 1 refuses (its log is longer). 1 must be allowed to
/// campaign (it votes in the committed configuration), win with 2's vote,
/// commit its removal and hand over.
#[test]
fn a_leader_whose_self_removal_was_lost_can_be_replaced() {
    let mut c = Cluster::new(&[1, 2]);
    c.elect(1);
    c.write(1, "x");
    c.down.insert(2);
    c.change(1, MembershipChange::Remove { id: 1 }).unwrap();
    c.settle();
    c.tick(30); // check-quorum: 1 steps down
    assert_ne!(c.nodes[&1].status().role, Role::Leader);
    c.down.remove(&2);
    c.tick(300);
    assert_eq!(
        c.leader(),
        Some(2),
        "2 leads once 1 has committed its removal"
    );
    assert_eq!(c.node(2).membership().voters().collect::<Vec<_>>(), vec![2]);
}

/// Found by the simulator: a node that may not campaign used to reset its
/// election counter at every timeout, so its leader lease never lapsed and
/// it ignored the elections of nodes that count it as a voter.
#[test]
fn a_non_voters_leader_lease_lapses() {
    let mut c = Cluster::new(&[1, 2, 3]);
    c.elect(1);
    c.add_node(4, &[]);
    c.change(1, add(4)).unwrap();
    c.settle();
    c.down.insert(1);
    for _ in 0..100 {
        c.node(4).tick();
    }
    assert!(!c.node(4).in_leader_lease());
}

/// A lone voter becomes leader before its vote is on disk. Until an entry
/// of its term is durable, nothing it sends may leave ahead of the disk
/// (Ready::messages), or a crash that undid the term could leave a learner
/// holding entries of a term another leader then fills differently.
#[test]
fn a_lone_voter_sends_nothing_before_its_term_is_durable() {
    let mut c = Cluster::new(&[1]);
    c.elect(1);
    c.add_node(2, &[]);
    c.change(1, add(2)).unwrap();
    c.settle();
    assert!(c.node(2).membership().contains(2));
    // Restart node 1 from what it has, and let it win a new term without
    // reporting anything durable.
    let st = c.node(1).status();
    let log: Vec<Entry> = (1..=st.last_index)
        .map(|i| c.node(1).entry(i).unwrap().clone())
        .collect();
    let mut r = Raft::new(
        config(1, &[1]),
        Persisted {
            hard_state: crate::types::HardState {
                term: st.term,
                vote: Some(1),
            },
            snapshot: Default::default(),
            entries: log,
            applied: st.applied,
        },
    )
    .unwrap();
    r.campaign();
    assert_eq!(r.status().role, Role::Leader);
    let first = r.ready();
    assert!(first.hard_state.is_some());
    assert!(first.messages.is_empty(), "{:?}", first.messages);
    r.propose(Bytes::from("x")).unwrap();
    r.tick(); // a heartbeat to the learner
    let second = r.ready();
    assert!(second.hard_state.is_none());
    assert!(
        second.messages.is_empty(),
        "sent before the term was durable: {:?}",
        second.messages
    );
    assert!(second.persisted_messages.iter().any(|m| m.to == 2));
    // Once the no-op of its term is durable, it talks at once again.
    let noop = first.entries.last().unwrap();
    r.on_persisted(noop.index, noop.term);
    r.tick();
    let third = r.ready();
    assert!(third.messages.iter().any(|m| m.to == 2), "{third:?}");
}

#[test]
fn a_leader_whose_state_machine_halts_hands_over_and_never_leads_again() {
    let mut c = Cluster::new(&[1, 2, 3]);
    c.elect(1);
    c.write(1, "a");
    c.node(1).halt_state_machine();
    c.settle();
    let leader = c
        .leader()
        .expect("a new leader without an election timeout");
    assert_ne!(leader, 1);
    assert_eq!(c.node(1).status().role, Role::Follower);
    // Its log still counts: with the new leader's only other voter down,
    // the halted node's acknowledgement commits the next write.
    let other = [2, 3].into_iter().find(|&n| n != leader).expect("a voter");
    c.down.insert(other);
    let b = c.write(leader, "b");
    assert_eq!(c.commit(leader), b);
    // Alone with nobody else up, it never campaigns.
    c.down.remove(&other);
    c.down.extend([2, 3]);
    c.tick(100);
    assert_eq!(c.node(1).status().role, Role::Follower);
}
