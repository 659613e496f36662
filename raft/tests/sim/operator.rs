//! The operator of a cluster whose membership changes: it starts new
//! nodes (each with a new id and an empty disk, started with no voters so
//! that they join) and adds them as learners, promotes learners, removes
//! voters (the leader too) and learners, and shuts removed nodes down for
//! good once their removal is committed. A machine whose node was removed
//! comes back, wiped, only as a new node with a new id: ids are never
//! reused.

use rand::Rng;
use resqlite_raft::{MembershipChange, NodeId, Role};

use super::checker::Violation;
use super::{Event, Sim, TICK};

/// Members (voters and learners) the operator grows a cluster to.
const MAX_MEMBERS: usize = 7;

impl Sim {
    /// One operator action, then the next one a little later.
    pub(super) fn operator(&mut self) -> Result<(), Violation> {
        let what = self.change_membership()?;
        if self.trace.on() {
            self.trace.push(format!("    operator: {what}"));
        }
        let next = self.now + self.rng.random_range(2..=12) * TICK;
        self.schedule(next, Event::Operator);
        Ok(())
    }

    fn change_membership(&mut self) -> Result<String, Violation> {
        // Removed nodes often keep running for a while (stale, they think
        // they are still members); now and then one is shut down.
        if self.rng.random_bool(0.3) {
            if let Some(id) = self.retire_removed(true) {
                return Ok(format!("shut down removed n{id}"));
            }
        }
        let leader = (0..self.nodes.len())
            .filter_map(|i| {
                let st = self.nodes[i].core.as_ref()?.status();
                (st.role == Role::Leader).then_some((st.term, i))
            })
            .max();
        let Some((_, l)) = leader else {
            return Ok("no leader".to_string());
        };
        let leader_id = self.nodes[l].id;
        let current = self.nodes[l]
            .core
            .as_ref()
            .expect("a leader is alive")
            .membership()
            .clone();
        let members: Vec<NodeId> = current.members.keys().copied().collect();
        let learners: Vec<NodeId> = current.learners().collect();
        let free = (0..self.nodes.len()).find(|&i| !self.nodes[i].in_use);
        let add_p = match members.len() {
            0..=2 => 60,
            n if n >= MAX_MEMBERS => 0,
            _ => 35,
        };
        let roll = self.rng.random_range(0..100);
        let change = match free {
            Some(slot) if roll < add_p => {
                let id = self.nodes[slot].id;
                MembershipChange::AddLearner {
                    id,
                    raft_addr: format!("sim:{id}"),
                    client_addr: format!("sim:{}", 1000 + id),
                }
            }
            _ if !learners.is_empty() && self.rng.random_bool(0.5) => MembershipChange::Promote {
                id: learners[self.rng.random_range(0..learners.len())],
            },
            _ => {
                // The leader in a quarter of the removals: its step-down
                // and hand-over are the delicate part.
                let id = if self.rng.random_bool(0.25) {
                    leader_id
                } else {
                    members[self.rng.random_range(0..members.len())]
                };
                MembershipChange::Remove { id }
            }
        };
        let next = match change.apply_to(&current) {
            Ok(next) => next,
            Err(why) => return Ok(format!("{change:?} not tried: {why}")),
        };
        let core = self.nodes[l].core.as_mut().expect("a leader is alive");
        let result = core.propose_membership(next);
        self.after_input(l)?;
        if let Err(why) = result {
            return Ok(format!("n{leader_id} refused {change:?}: {why}"));
        }
        self.changes_proposed += 1;
        match change {
            MembershipChange::AddLearner { id, .. } => {
                let slot = id as usize - 1;
                self.nodes[slot].in_use = true;
                self.joins += 1;
                // Usually started as it is added; sometimes it is down
                // for a while first.
                if self.rng.random_bool(0.8) {
                    self.restart(slot)?;
                } else {
                    let at = self.now + self.rng.random_range(1..=30) * TICK;
                    let life = self.nodes[slot].life;
                    self.schedule(at, Event::Restart { node: slot, life });
                }
            }
            MembershipChange::Remove { id } if id == leader_id => self.leader_removals += 1,
            _ => {}
        }
        Ok(format!("n{leader_id} proposed {change:?}"))
    }

    /// Shuts down nodes whose removal is committed: one at random
    /// (`one`), or all of them. Returns the last one shut down.
    pub(super) fn retire_removed(&mut self, one: bool) -> Option<NodeId> {
        let removed: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| {
                let node = &self.nodes[i];
                node.in_use && !node.retired && self.checker.history.removal_committed(node.id)
            })
            .collect();
        let chosen = if one && !removed.is_empty() {
            vec![removed[self.rng.random_range(0..removed.len())]]
        } else if one {
            Vec::new()
        } else {
            removed
        };
        let mut last = None;
        for n in chosen {
            let node = &mut self.nodes[n];
            node.core = None;
            node.life += 1;
            node.retired = true;
            node.sync_scheduled = false;
            node.pending.clear();
            let id = node.id;
            self.checker.forget_reads(id);
            if self.trace.on() {
                self.trace.push(format!("    n{id} shut down for good"));
            }
            last = Some(id);
        }
        last
    }
}
