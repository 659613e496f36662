//! The world outside the cores: clients, the fault schedule, crashes and
//! restarts, and the liveness probe.

use bytes::Bytes;
use rand::Rng;
use resqlite_raft::{EntryKind, NodeId, Persisted, Raft, Role};

use super::checker::{entry_hash, LogView, Seen, Violation};
use super::{Event, Sim, TICK};

impl Sim {
    /// Clients propose to, and read from, whichever nodes think they lead.
    pub(super) fn client(&mut self) -> Result<(), Violation> {
        for n in 0..self.nodes.len() {
            let id = self.nodes[n].id;
            let Some(core) = self.nodes[n].core.as_mut() else {
                continue;
            };
            if core.status().role != Role::Leader {
                continue;
            }
            if self.rng.random_bool(0.7) {
                for _ in 0..self.rng.random_range(1..=3) {
                    let data = Bytes::from(format!("p{}", self.next_proposal));
                    self.next_proposal += 1;
                    // Refused while leadership is being transferred.
                    let _ = core.propose(data);
                }
            }
            if self.rng.random_bool(0.3) {
                let ctx = self.next_ctx;
                self.next_ctx += 1;
                if core.read_index(ctx).is_ok() {
                    self.checker.on_read_requested(id, ctx);
                }
            }
            self.after_input(n)?;
        }
        let next = self.now + self.rng.random_range(TICK / 2..=3 * TICK);
        self.schedule(next, Event::Client);
        Ok(())
    }

    /// One random fault (or a heal), then the next one a little later.
    pub(super) fn fault(&mut self) -> Result<(), Violation> {
        let n = self.nodes.len();
        let roll = self.rng.random_range(0..100);
        let what = match roll {
            0..=11 => {
                let parts = self.rng.random_range(2..=3);
                let groups: Vec<usize> = (0..n).map(|_| self.rng.random_range(0..parts)).collect();
                self.net.partition(&groups);
                format!("partition {groups:?}")
            }
            12..=19 if n > 1 => {
                let from = self.rng.random_range(0..n);
                let to = (from + self.rng.random_range(1..n)) % n;
                self.net.cut_one_way(from, to);
                format!("cut {}->{}", from + 1, to + 1)
            }
            20..=24 => match self.pick_leader_or_any() {
                Some(node) => {
                    self.net.isolate(node);
                    format!("isolate n{}", node + 1)
                }
                None => "isolate: all down".to_string(),
            },
            25..=41 => {
                self.net.heal();
                "heal".to_string()
            }
            42..=55 => match self.pick_leader_or_any() {
                Some(node) => {
                    self.crash(node)?;
                    format!("crash n{}", node + 1)
                }
                None => "crash: all down".to_string(),
            },
            56..=59 => {
                // Correlated power loss: several nodes lose their caches at once.
                let mut down = Vec::new();
                for node in 0..n {
                    if self.nodes[node].alive() && self.rng.random_bool(0.6) {
                        self.crash(node)?;
                        down.push(node + 1);
                    }
                }
                format!("power loss {down:?}")
            }
            60..=64 => match self.pick(|s, i| s.nodes[i].restartable()) {
                Some(node) => {
                    self.restart(node)?;
                    format!("early restart n{}", node + 1)
                }
                None => "restart: all up".to_string(),
            },
            65..=72 => {
                self.net.reshape(&mut self.rng);
                format!("network {}", self.net.describe())
            }
            73..=80 => match self.pick(|s, i| s.role(i) == Some(Role::Leader)) {
                Some(node) => {
                    let to = (node + self.rng.random_range(1..n.max(2))) % n;
                    if let Some(core) = self.nodes[node].core.as_mut() {
                        let _ = core.transfer_leader(to as u64 + 1);
                    }
                    self.after_input(node)?;
                    format!("transfer n{} -> n{}", node + 1, to + 1)
                }
                None => "transfer: no leader".to_string(),
            },
            81..=89 => {
                // Several nodes at once, so that elections collide.
                let mut started = Vec::new();
                for node in 0..n {
                    if self.nodes[node].alive() && self.rng.random_bool(0.5) {
                        if let Some(core) = self.nodes[node].core.as_mut() {
                            core.campaign();
                        }
                        self.after_input(node)?;
                        started.push(node + 1);
                    }
                }
                format!("campaign {started:?}")
            }
            _ => "quiet".to_string(),
        };
        if self.trace.on() {
            self.trace.push(format!("    fault: {what}"));
        }
        let next = self.now + self.rng.random_range(1..=self.params.fault_every) * TICK;
        self.schedule(next, Event::Fault);
        Ok(())
    }

    /// Half the time the leader (faults there matter most), else any live node.
    fn pick_leader_or_any(&mut self) -> Option<usize> {
        let leader = self.pick(|s, i| s.role(i) == Some(Role::Leader));
        if leader.is_some() && self.rng.random_bool(0.5) {
            return leader;
        }
        self.pick(|s, i| s.nodes[i].alive())
    }

    /// Aimed fault: leader `leader` just took an acknowledgement from
    /// `follower`; if that advanced its commit index, maybe crash it, and
    /// often the follower too, before the rest of the cluster catches up.
    pub(super) fn after_ack(&mut self, leader: usize, follower: usize, commit_before: u64) {
        let p = self.params.aimed.crash_after_commit;
        if p > 0.0 && self.commit_of(leader) > commit_before && self.rng.random_bool(p) {
            self.crash_soon(leader);
            if self.rng.random_bool(0.7) {
                self.crash_soon(follower);
            }
        }
    }

    fn role(&self, n: usize) -> Option<Role> {
        self.nodes[n].core.as_ref().map(|c| c.status().role)
    }

    /// A random node that satisfies `ok`.
    fn pick(&mut self, ok: impl Fn(&Sim, usize) -> bool) -> Option<usize> {
        let candidates: Vec<usize> = (0..self.nodes.len()).filter(|&i| ok(self, i)).collect();
        if candidates.is_empty() {
            None
        } else {
            Some(candidates[self.rng.random_range(0..candidates.len())])
        }
    }

    /// Power loss: the core and every write not yet fsynced are gone,
    /// except that writes already issued may have reached the disk in
    /// order, the last one perhaps torn (a torn tail is cut on recovery).
    pub(super) fn crash(&mut self, n: usize) -> Result<(), Violation> {
        let jobs: Vec<_> = {
            let node = &mut self.nodes[n];
            node.core = None;
            node.life += 1;
            node.sync_scheduled = false;
            node.pending.drain(..).collect()
        };
        if !jobs.is_empty() && self.rng.random_bool(0.5) {
            let whole = self.rng.random_range(0..jobs.len());
            for job in &jobs[..whole] {
                self.write_job(n, job, job.entries.len())?;
            }
            let torn = &jobs[whole];
            let keep = self.rng.random_range(0..=torn.entries.len());
            self.write_job(n, torn, keep)?;
        }
        // SQLite need not fsync each apply (the log is the source of
        // truth), so the state machine may lose its last few applies.
        if self.rng.random_bool(0.25) {
            let sm = &mut self.nodes[n].state_machine;
            let lose = self.rng.random_range(0..=sm.len().min(3));
            sm.truncate(sm.len() - lose);
        }
        self.checker.forget_reads(self.nodes[n].id);
        self.crashes += 1;
        let life = self.nodes[n].life;
        // Often back at once (a process restart), sometimes much later.
        let down = if self.rng.random_bool(0.5) {
            1..=3
        } else {
            1..=30
        };
        let at = self.now + self.rng.random_range(down) * TICK;
        self.schedule(at, Event::Restart { node: n, life });
        Ok(())
    }

    /// Builds a fresh core from what the disk and the state machine hold.
    pub(super) fn restart(&mut self, n: usize) -> Result<(), Violation> {
        let cfg = self.config(n);
        {
            let others: Vec<(NodeId, &LogView)> = self
                .nodes
                .iter()
                .filter(|o| o.id != self.nodes[n].id)
                .map(|o| (o.id, &o.view))
                .collect();
            let (id, durable) = (self.nodes[n].id, self.nodes[n].disk.hard_state.term);
            self.checker
                .void_terms_never_durable(id, durable, &others)?;
        }
        let node = &mut self.nodes[n];
        let snapshot = node.disk.snapshot.clone();
        if let Some(file) = &snapshot {
            // The driver restores a state machine that is behind the
            // snapshot before it builds the core.
            if (node.state_machine.len() as u64) < file.meta.index {
                node.state_machine = file.state.clone();
            }
        }
        node.snapshot_file = snapshot.clone();
        let meta = snapshot.as_ref().map(|f| f.meta.clone());
        let persisted = Persisted {
            hard_state: node.disk.hard_state,
            snapshot: meta.clone().unwrap_or_default(),
            entries: node.disk.log.clone(),
            applied: node.applied(),
        };
        let core = Raft::new(cfg, persisted).map_err(|e| {
            Violation::new(
                "recovery",
                format!("node {} cannot restart from its disk: {e}", node.id),
            )
        })?;
        node.core = Some(core);
        node.in_use = true;
        node.life += 1;
        node.seen = Seen::fresh();
        self.checker
            .reset_log(node.id, &mut node.view, meta.as_ref(), &node.disk.log)?;
        let life = node.life;
        let first_tick = self.now + self.rng.random_range(1..=self.params.tick_interval[n]);
        self.schedule(first_tick, Event::Tick { node: n, life });
        self.observe(n, true)?;
        self.after_input(n)
    }

    /// Liveness phase: keep a probe proposal at the current leader until it
    /// is applied on every member of its configuration while exactly one
    /// node leads. The operator shuts down removed nodes as soon as their
    /// removal is committed.
    pub(super) fn probe(&mut self) -> Result<(), Violation> {
        self.retire_removed(false);
        let leader = (0..self.nodes.len())
            .filter_map(|i| {
                let st = self.nodes[i].core.as_ref()?.status();
                (st.role == Role::Leader).then_some((st.term, i))
            })
            .max();
        if let (Some((index, _, hash)), Some((_, l))) = (self.probe, leader) {
            let core = self.nodes[l].core.as_ref().expect("a leader is alive");
            let members = &core.membership().members;
            let everywhere = self.checker.applied_at(index) == Some(hash)
                && members
                    .keys()
                    .all(|&id| self.nodes[id as usize - 1].applied() >= index);
            let leaders = (0..self.nodes.len())
                .filter(|&i| self.role(i) == Some(Role::Leader))
                .count();
            if everywhere && leaders == 1 {
                self.recovered = true;
                return Ok(());
            }
        }
        if let Some((term, l)) = leader {
            let core = self.nodes[l].core.as_mut().expect("a leader is alive");
            let lost = match self.probe {
                None => true,
                Some((index, probe_term, hash)) => {
                    probe_term != term && core.entry(index).map(entry_hash) != Some(hash)
                }
            };
            if lost {
                let data = Bytes::from(format!("probe{}", self.next_proposal));
                self.next_proposal += 1;
                if let Ok((index, term)) = core.propose(data.clone()) {
                    let hash = entry_hash(&resqlite_raft::Entry {
                        term,
                        index,
                        kind: EntryKind::Normal,
                        data,
                    });
                    self.probe = Some((index, term, hash));
                }
                self.after_input(l)?;
            }
        }
        self.schedule(self.now + TICK, Event::Client);
        Ok(())
    }
}
