//! Regression tests for bugs the deterministic simulator
//! (`raft/tests/simulator.rs`) found in the core.

use bytes::Bytes;

use super::{Config, Message, MessageBody, Persisted, Raft, Role};
use crate::types::{Entry, EntryKind, HardState, NodeId};

fn entry(index: u64, term: u64) -> Entry {
    Entry {
        term,
        index,
        kind: EntryKind::Normal,
        data: Bytes::new(),
    }
}

fn config(id: NodeId) -> Config {
    let mut cfg = Config::new(id, vec![1, 2, 3]);
    cfg.pre_vote = false;
    cfg.max_inflight_msgs = 64;
    // One entry per AppendEntries.
    cfg.max_batch_bytes = 1;
    cfg
}

fn core(id: NodeId, term: u64, log: Vec<Entry>) -> Raft {
    let hard_state = HardState { term, vote: None };
    Raft::new(
        config(id),
        Persisted {
            hard_state,
            snapshot: Default::default(),
            entries: log,
            applied: 0,
        },
    )
    .expect("valid recovered state")
}

/// Acts on every Ready as a driver with an instantly durable disk would,
/// and returns the messages to send.
fn drain(r: &mut Raft) -> Vec<Message> {
    let mut out = Vec::new();
    while r.has_ready() {
        let rd = r.ready();
        out.extend(rd.messages);
        if let Some(last) = rd.entries.last() {
            r.on_persisted(last.index, last.term);
        }
        out.extend(rd.persisted_messages);
    }
    out
}

/// Node 1 wins an election with node 3's vote.
fn elect(r: &mut Raft) {
    r.campaign();
    drain(r);
    let term = r.status().term;
    let body = MessageBody::RequestVoteResponse {
        granted: true,
        pre_vote: false,
    };
    r.step(Message {
        from: 3,
        to: 1,
        term,
        rpc_id: 0,
        body,
    });
    assert_eq!(r.status().role, Role::Leader);
}

fn appends_to(msgs: &[Message], to: NodeId) -> usize {
    msgs.iter()
        .filter(|m| m.to == to && matches!(m.body, MessageBody::AppendEntries { .. }))
        .count()
}

/// With several AppendEntries in flight, a reordered network makes the
/// follower reject every one that overtook its predecessor. Each rejection
/// used to restart replication (probe, then a whole new window), whose own
/// reordered messages drew more rejections: an exponential message storm.
#[test]
fn reordered_rejections_restart_replication_once_per_heartbeat() {
    let mut leader = core(1, 0, Vec::new());
    elect(&mut leader);
    let term = leader.status().term;
    let to_leader = |body| Message {
        from: 2,
        to: 1,
        term,
        rpc_id: 0,
        body,
    };
    let ack = |index| MessageBody::AppendEntriesResponse {
        success: true,
        index,
        conflict_term: 0,
        conflict_index: 0,
    };
    drain(&mut leader);
    // Node 2 acknowledges the no-op: the leader streams to it.
    leader.step(to_leader(ack(1)));
    for i in 0..20 {
        leader
            .propose(Bytes::from(format!("p{i}")))
            .expect("leader");
    }
    let first_window = appends_to(&drain(&mut leader), 2);
    assert_eq!(first_window, 20, "one AppendEntries per entry");

    // The stream arrives out of order: node 2 (log ending at 1) rejects
    // entries 3..=21, and old duplicates of its ack of 1 come in between.
    let mut sent = 0;
    for prev in 2..=20 {
        let body = MessageBody::AppendEntriesResponse {
            success: false,
            index: prev,
            conflict_term: term,
            conflict_index: 1,
        };
        leader.step(to_leader(body));
        leader.step(to_leader(ack(1)));
        sent += appends_to(&drain(&mut leader), 2);
    }
    // One restart: a probe and one window resending entries 2..=21.
    assert!(
        sent <= 21,
        "{sent} AppendEntries sent for one reordered window"
    );

    // The next heartbeat interval honours a rejection again.
    leader.tick();
    drain(&mut leader);
    let body = MessageBody::AppendEntriesResponse {
        success: false,
        index: 5,
        conflict_term: term,
        conflict_index: 1,
    };
    leader.step(to_leader(body));
    assert_eq!(
        appends_to(&drain(&mut leader), 2),
        1,
        "a probe after the heartbeat"
    );
}

/// A follower whose log has a long divergent tail of single-entry terms
/// (leaders elected one after another and cut off at once) used to cost
/// the new leader one round trip per term to find where the logs match.
#[test]
fn divergent_tail_of_many_terms_is_skipped_in_few_round_trips() {
    let common: Vec<Entry> = (1..=3).map(|i| entry(i, 1)).collect();
    let mut follower_log = common.clone();
    follower_log.extend((4..=103).map(|i| entry(i, i - 2)));
    let mut leader_log = common;
    leader_log.extend((4..=50).map(|i| entry(i, i + 146)));
    let mut follower = core(2, 101, follower_log);
    let mut leader = core(1, 196, leader_log);
    elect(&mut leader);

    let mut in_flight = drain(&mut leader);
    let mut rejections = 0;
    for _ in 0..1000 {
        let mut replies = Vec::new();
        for m in in_flight.drain(..).filter(|m| m.to == 2) {
            follower.step(m);
            replies.extend(drain(&mut follower));
        }
        if replies.is_empty() {
            break;
        }
        for m in replies.into_iter().filter(|m| m.to == 1) {
            if matches!(
                m.body,
                MessageBody::AppendEntriesResponse { success: false, .. }
            ) {
                rejections += 1;
            }
            leader.step(m);
            in_flight.extend(drain(&mut leader));
        }
    }
    let (l, f) = (leader.status(), follower.status());
    assert_eq!(
        (f.last_index, f.last_term),
        (l.last_index, l.last_term),
        "follower caught up"
    );
    assert_eq!(follower.entry(50), leader.entry(50));
    assert!(
        rejections <= 3,
        "{rejections} rejections to find the match point"
    );
}

/// A peer whose AppendEntries contradicts committed entries cannot rewrite
/// them: entries at or below the commit index are skipped (a legitimate
/// leader holds them all), so the log keeps its committed entries and
/// their terms.
#[test]
fn append_entries_never_rewrite_committed_entries() {
    let mut r = core(2, 1, vec![entry(1, 1), entry(2, 1), entry(3, 1)]);
    let append = |from, term, prev: u64, entries: Vec<Entry>, commit| Message {
        from,
        to: 2,
        term,
        rpc_id: 7,
        body: MessageBody::AppendEntries {
            prev_log_index: prev,
            prev_log_term: 1,
            entries,
            leader_commit: commit,
        },
    };
    r.step(append(1, 1, 3, vec![], 3));
    drain(&mut r);
    assert_eq!(r.status().commit, 3);

    r.step(append(3, 2, 1, vec![entry(2, 2), entry(3, 2)], 3));
    drain(&mut r);
    let s = r.status();
    assert_eq!((s.commit, s.last_index, s.last_term), (3, 3, 1));
}
