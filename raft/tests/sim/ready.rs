//! Acting on a core's Ready as a careful driver would: send what may go
//! now, queue persistence (and the messages that wait for it) for a later
//! fsync, apply committed entries, answer reads.

use std::rc::Rc;

use rand::Rng;
use resqlite_raft::{Entry, Message, MessageBody, Ready, Role};

use super::checker::{entry_hash, Violation};
use super::node::{PersistJob, SimSnapshot};
use super::{Event, Sim, TICK};

impl Sim {
    /// After any input to node `n`: drain its Readys, then check it.
    pub(super) fn after_input(&mut self, n: usize) -> Result<(), Violation> {
        loop {
            let Some(core) = self.nodes[n].core.as_mut() else {
                return Ok(());
            };
            if !core.has_ready() {
                break;
            }
            let rd = core.ready();
            self.handle_ready(n, rd)?;
        }
        self.observe(n, false)
    }

    pub(super) fn observe(&mut self, n: usize, restarted: bool) -> Result<(), Violation> {
        let node = &mut self.nodes[n];
        let Some(core) = node.core.as_ref() else {
            return Ok(());
        };
        let st = core.status();
        if st.applied != node.applied() {
            return Err(Violation::new(
                "ready contract",
                format!(
                    "node {} says it applied {} but handed out {}",
                    st.id,
                    st.applied,
                    node.applied()
                ),
            ));
        }
        let on_disk = node.disk.last_index().max(node.applied());
        if st.persisted > on_disk {
            return Err(Violation::new(
                "ready contract",
                format!(
                    "node {} counts {} entries durable but its disk holds {}",
                    st.id, st.persisted, on_disk
                ),
            ));
        }
        let elected = st.role == Role::Leader && node.seen.role != Role::Leader;
        let in_force = (core.membership(), core.membership_index());
        self.checker
            .observe(&st, in_force, &node.view, &mut node.seen, restarted)?;
        let p = self.params.aimed.isolate_new_leader;
        if elected && self.chaos && p > 0.0 && self.rng.random_bool(p) {
            self.net.isolate(n);
            if self.trace.on() {
                self.trace
                    .push(format!("    fault: isolate new leader n{}", n + 1));
            }
        }
        Ok(())
    }

    /// Crashes node `n` within a few time units (before most in-flight
    /// messages land or its disk syncs).
    pub(super) fn crash_soon(&mut self, n: usize) {
        if self.chaos {
            let life = self.nodes[n].life;
            let at = self.now + self.rng.random_range(0..=2);
            self.schedule(at, Event::Crash { node: n, life });
        }
    }

    fn handle_ready(&mut self, n: usize, rd: Ready) -> Result<(), Violation> {
        let id = self.nodes[n].id;
        if self.trace.on() && (rd.must_persist() || !rd.committed_entries.is_empty()) {
            let span = |es: &[Entry]| match (es.first(), es.last()) {
                (Some(a), Some(b)) => format!("{}/{}..{}/{}", a.index, a.term, b.index, b.term),
                _ => "-".to_string(),
            };
            self.trace.push(format!(
                "    n{id} ready: hard state {:?}, write [{}], apply [{}]",
                rd.hard_state,
                span(&rd.entries),
                span(&rd.committed_entries)
            ));
        }
        let Ready {
            soft_state: _,
            hard_state,
            snapshot,
            entries,
            messages,
            persisted_messages,
            committed_entries,
            read_states,
            dropped_reads,
        } = rd;
        let snapshot = match snapshot {
            Some(meta) => {
                let node = &mut self.nodes[n];
                let file = match node.incoming.take() {
                    Some(file) if file.meta == meta => file,
                    other => {
                        return Err(Violation::new(
                            "ready contract",
                            format!(
                                "node {id} asked to install snapshot {}/{} but received {:?}",
                                meta.index,
                                meta.term,
                                other.map(|f| (f.meta.index, f.meta.term))
                            ),
                        ))
                    }
                };
                self.checker
                    .restore_log(id, &mut node.view, Some(&file.meta))?;
                self.checker
                    .check_snapshot_state(id, &file.meta, &file.state)?;
                node.snapshot_file = Some(file.clone());
                Some(file)
            }
            None => None,
        };
        {
            let node = &mut self.nodes[n];
            self.checker.replace_log(id, &mut node.view, &entries)?;
        }
        for m in messages {
            self.send(m)?;
        }
        if hard_state.is_some()
            || snapshot.is_some()
            || !entries.is_empty()
            || !persisted_messages.is_empty()
        {
            self.nodes[n].pending.push_back(PersistJob {
                hard_state,
                snapshot,
                entries,
                messages: persisted_messages,
            });
            self.schedule_sync(n);
        }
        let applied_any = !committed_entries.is_empty();
        for e in committed_entries {
            self.apply(n, e)?;
        }
        if applied_any && self.rng.random_bool(self.params.compact_p) {
            self.compact(n)?;
        }
        let commit = self.commit_of(n);
        for rs in read_states {
            self.checker.on_read_confirmed(id, rs, commit)?;
        }
        for ctx in dropped_reads {
            self.checker.on_read_dropped(id, ctx)?;
        }
        Ok(())
    }

    fn schedule_sync(&mut self, n: usize) {
        if self.nodes[n].sync_scheduled {
            return;
        }
        self.nodes[n].sync_scheduled = true;
        // Now and then the disk stalls for a while.
        let delay = if self.rng.random_bool(0.05) {
            self.rng.random_range(1..=2 * TICK)
        } else {
            self.rng.random_range(1..=self.params.disk_max)
        };
        let life = self.nodes[n].life;
        self.schedule(self.now + delay, Event::DiskSync { node: n, life });
    }

    /// An fsync completed: the oldest jobs (one or several, as with group
    /// commit) are durable. Tell the core, and let their messages go.
    pub(super) fn sync_disk(&mut self, n: usize) -> Result<(), Violation> {
        self.nodes[n].sync_scheduled = false;
        let queued = self.nodes[n].pending.len();
        if queued == 0 {
            return Ok(());
        }
        let durable = self.rng.random_range(1..=queued);
        for _ in 0..durable {
            let job = self.nodes[n].pending.pop_front().expect("counted above");
            self.write_job(n, &job, job.entries.len())?;
            if let Some(file) = &job.snapshot {
                // The driver restores the state machine once the snapshot
                // is durable, and only then lets the acknowledgement go.
                self.nodes[n].state_machine = file.state.clone();
                self.snapshots_installed += 1;
            }
            let node = &mut self.nodes[n];
            if let (Some(last), Some(core)) = (job.entries.last(), node.core.as_mut()) {
                core.on_persisted(last.index, last.term);
            }
            for m in job.messages {
                self.send(m)?;
            }
        }
        if !self.nodes[n].pending.is_empty() {
            self.schedule_sync(n);
        }
        self.after_input(n)
    }

    /// Writes a job's hard state and its first `keep` entries to the disk
    /// (all of them, unless a crash tore the write).
    pub(super) fn write_job(
        &mut self,
        n: usize,
        job: &PersistJob,
        keep: usize,
    ) -> Result<(), Violation> {
        let node = &mut self.nodes[n];
        if let Some(hs) = job.hard_state {
            node.disk.write_hard_state(hs);
        }
        if let Some(file) = &job.snapshot {
            node.disk.install(file.clone());
        }
        if let Some(first) = job.entries.first() {
            if !node.disk.write_entries(first.index, &job.entries[..keep]) {
                return Err(Violation::new(
                    "ready contract",
                    format!(
                        "node {}: entries from {} would leave a gap after the disk's last {} \
                         (or rewrite its snapshot up to {})",
                        node.id,
                        first.index,
                        node.disk.last_index(),
                        node.disk.offset()
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The driver's snapshot policy, at a random point: snapshot the state
    /// machine at a random applied index the log still holds (the state
    /// machine's snapshot is taken at its applied index; an older index
    /// stands for a snapshot that took a while), make it durable, compact.
    pub(super) fn compact(&mut self, n: usize) -> Result<(), Violation> {
        let node = &mut self.nodes[n];
        let Some(core) = node.core.as_mut() else {
            return Ok(());
        };
        let offset = core.status().snapshot;
        // A restore still waiting for the disk: the state machine is not
        // at the core's applied index yet.
        if node.pending.iter().any(|j| j.snapshot.is_some()) {
            return Ok(());
        }
        let applied = node.state_machine.len() as u64;
        if applied <= offset {
            return Ok(());
        }
        let index = self.rng.random_range(offset + 1..=applied);
        let meta = core.compact(index).map_err(|e| {
            Violation::new(
                "compaction",
                format!(
                    "node {} cannot compact to applied index {index}: {e}",
                    node.id
                ),
            )
        })?;
        let file = Rc::new(SimSnapshot {
            meta,
            state: node.state_machine[..index as usize].to_vec(),
        });
        self.checker
            .check_snapshot_state(node.id, &file.meta, &file.state)?;
        self.checker
            .check_snapshot_membership(node.id, &file.meta, Some(&node.view))?;
        node.disk.compact(file.clone());
        node.snapshot_file = Some(file);
        self.compactions += 1;
        if self.trace.on() {
            self.trace
                .push(format!("    n{} compacted to {index}", n + 1));
        }
        Ok(())
    }

    pub(super) fn send(&mut self, m: Message) -> Result<(), Violation> {
        self.checker.on_send(&m)?;
        let crash_p = match m.body {
            MessageBody::RequestVoteResponse {
                granted: true,
                pre_vote: false,
            } => self.params.aimed.crash_after_vote,
            MessageBody::AppendEntriesResponse { success: true, .. } => {
                self.params.aimed.crash_after_ack
            }
            _ => 0.0,
        };
        if crash_p > 0.0 && self.rng.random_bool(crash_p) {
            self.crash_soon(m.from as usize - 1);
        }
        let n = self.nodes.len();
        if m.from == 0 || m.to == 0 || m.from as usize > n || m.to as usize > n {
            return Err(Violation::new(
                "messages",
                format!("message between unknown nodes: {m:?}"),
            ));
        }
        let (from, to) = (m.from as usize - 1, m.to as usize - 1);
        if !self.net.up(from, to)
            || (self.net.drop_p > 0.0 && self.rng.random_bool(self.net.drop_p))
        {
            return Ok(());
        }
        self.messages += 1;
        let file = match &m.body {
            MessageBody::InstallSnapshot { snapshot } => {
                // The driver streams the newest snapshot file it holds.
                let file = self.nodes[from].snapshot_file.clone();
                match file {
                    Some(f) if f.meta.index >= snapshot.index => Some(f),
                    _ => {
                        return Err(Violation::new(
                            "snapshot",
                            format!(
                                "node {} must send snapshot {}/{} but holds no such file",
                                m.from, snapshot.index, snapshot.term
                            ),
                        ))
                    }
                }
            }
            _ => None,
        };
        if self.net.dup_p > 0.0 && self.rng.random_bool(self.net.dup_p) {
            let at = self.now + self.net.delay(&mut self.rng);
            self.schedule(at, Event::Deliver(m.clone(), file.clone()));
        }
        let at = self.now + self.net.delay(&mut self.rng);
        self.schedule(at, Event::Deliver(m, file));
        Ok(())
    }

    fn apply(&mut self, n: usize, e: Entry) -> Result<(), Violation> {
        let node = &mut self.nodes[n];
        let id = node.id;
        if e.index != node.applied() + 1 {
            return Err(Violation::new(
                "ready contract",
                format!(
                    "node {id} applies index {} after {}",
                    e.index,
                    node.applied()
                ),
            ));
        }
        if node.disk.entry(e.index) != Some(&e) {
            return Err(Violation::new(
                "durability",
                format!(
                    "node {id} applies entry {}/{} that is not on its disk",
                    e.index, e.term
                ),
            ));
        }
        let hash = entry_hash(&e);
        self.checker.on_apply(id, e.index, hash)?;
        self.nodes[n].state_machine.push(hash);
        Ok(())
    }
}
