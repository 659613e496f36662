//! Compaction and InstallSnapshot, seen from the leader and the follower.

use bytes::Bytes;

use super::{CompactError, Config, Message, MessageBody, Persisted, Raft, Role};
use crate::types::{Entry, EntryKind, HardState, NodeId, SnapshotMeta};

fn entry(index: u64, term: u64) -> Entry {
    Entry {
        term,
        index,
        kind: EntryKind::Normal,
        data: Bytes::from(format!("{index}")),
    }
}

fn core_from(id: NodeId, term: u64, persisted: Persisted) -> Raft {
    let mut cfg = Config::new(id, vec![1, 2, 3]);
    cfg.pre_vote = false;
    cfg.snapshot_timeout_tick = 20;
    let persisted = Persisted {
        hard_state: HardState { term, vote: None },
        ..persisted
    };
    Raft::new(cfg, persisted).expect("valid recovered state")
}

fn core(id: NodeId, term: u64, log: Vec<Entry>, applied: u64) -> Raft {
    core_from(
        id,
        term,
        Persisted {
            entries: log,
            applied,
            ..Persisted::default()
        },
    )
}

/// Acts on every Ready as a driver with an instantly durable disk would;
/// returns the messages sent and the snapshots installed.
fn drain(r: &mut Raft) -> (Vec<Message>, Vec<SnapshotMeta>) {
    let (mut out, mut installed) = (Vec::new(), Vec::new());
    while r.has_ready() {
        let rd = r.ready();
        out.extend(rd.messages);
        installed.extend(rd.snapshot);
        if let Some(last) = rd.entries.last() {
            r.on_persisted(last.index, last.term);
        }
        out.extend(rd.persisted_messages);
    }
    (out, installed)
}

fn msg(from: NodeId, to: NodeId, term: u64, body: MessageBody) -> Message {
    Message {
        from,
        to,
        term,
        rpc_id: 7,
        body,
    }
}

/// Node 1 leads term 2 over a log of 10 entries of term 1, all applied and
/// compacted up to 8; node 2 acknowledged the no-op, node 3 is silent.
fn compacted_leader() -> Raft {
    let log: Vec<Entry> = (1..=10).map(|i| entry(i, 1)).collect();
    let mut r = core(1, 1, log, 10);
    r.campaign();
    drain(&mut r);
    let granted = MessageBody::RequestVoteResponse {
        granted: true,
        pre_vote: false,
    };
    r.step(msg(2, 1, 2, granted));
    assert_eq!(r.status().role, Role::Leader);
    drain(&mut r);
    let meta = r.compact(8).expect("applied");
    assert_eq!((meta.index, meta.term), (8, 1));
    assert_eq!(
        meta.membership,
        crate::types::Membership::from_voters(&[1, 2, 3])
    );
    r
}

#[test]
fn compaction_is_refused_below_the_offset_and_above_applied() {
    let mut r = compacted_leader();
    assert_eq!(
        r.compact(8),
        Err(CompactError::Compacted {
            index: 8,
            offset: 8
        })
    );
    assert!(matches!(
        r.compact(12),
        Err(CompactError::NotApplied { index: 12, .. })
    ));
    assert_eq!(r.status().snapshot, 8);
    assert_eq!(r.entry(8), None);
    assert_eq!(r.entry(9).map(|e| e.index), Some(9));
}

#[test]
fn a_follower_behind_the_snapshot_is_sent_it_and_then_entries_after_it() {
    let mut r = compacted_leader();
    // Node 3 rejects the probe at 10: its log matches at most up to 2.
    let reject = MessageBody::AppendEntriesResponse {
        success: false,
        index: 10,
        conflict_term: 1,
        conflict_index: 2,
    };
    r.step(msg(3, 1, 2, reject));
    let (sent, _) = drain(&mut r);
    let to3: Vec<&MessageBody> = sent.iter().filter(|m| m.to == 3).map(|m| &m.body).collect();
    assert_eq!(to3.len(), 1, "{to3:?}");
    let MessageBody::InstallSnapshot { snapshot } = to3[0] else {
        panic!("expected a snapshot, got {:?}", to3[0]);
    };
    assert_eq!((snapshot.index, snapshot.term), (8, 1));

    // Nothing else goes to node 3 while the snapshot is on its way.
    r.propose(Bytes::from_static(b"x")).expect("leader");
    let (sent, _) = drain(&mut r);
    assert!(sent.iter().all(|m| m.to != 3), "{sent:?}");

    r.step(msg(
        3,
        1,
        2,
        MessageBody::InstallSnapshotResponse { index: 8 },
    ));
    let (sent, _) = drain(&mut r);
    let append = sent
        .iter()
        .find(|m| m.to == 3)
        .map(|m| &m.body)
        .expect("entries follow the snapshot");
    let MessageBody::AppendEntries {
        prev_log_index,
        prev_log_term,
        entries,
        ..
    } = append
    else {
        panic!("expected AppendEntries, got {append:?}");
    };
    assert_eq!((*prev_log_index, *prev_log_term), (8, 1));
    assert_eq!(entries.first().map(|e| e.index), Some(9));
    assert_eq!(r.follower_match(3), Some(8));
}

#[test]
fn a_lost_snapshot_is_sent_again_after_a_failure_report_or_a_timeout() {
    let mut r = compacted_leader();
    let reject = MessageBody::AppendEntriesResponse {
        success: false,
        index: 10,
        conflict_term: 0,
        conflict_index: 0,
    };
    r.step(msg(3, 1, 2, reject));
    drain(&mut r);
    let snapshots_to_3 = |sent: &[Message]| {
        sent.iter()
            .filter(|m| m.to == 3 && matches!(m.body, MessageBody::InstallSnapshot { .. }))
            .count()
    };

    r.report_snapshot_failure(3);
    // Not at once: only when the follower shows it is up.
    assert_eq!(snapshots_to_3(&drain(&mut r).0), 0);
    r.step(msg(
        3,
        1,
        2,
        MessageBody::HeartbeatResponse { read_round: 0 },
    ));
    assert_eq!(snapshots_to_3(&drain(&mut r).0), 1);

    // No answer at all: after the timeout the next heartbeat reply retries.
    let mut resent = 0;
    for _ in 0..25 {
        r.tick();
        r.step(msg(
            2,
            1,
            2,
            MessageBody::HeartbeatResponse { read_round: 0 },
        ));
        r.step(msg(
            3,
            1,
            2,
            MessageBody::HeartbeatResponse { read_round: 0 },
        ));
        resent += snapshots_to_3(&drain(&mut r).0);
    }
    assert_eq!(resent, 1, "one retry per timeout");
}

#[test]
fn a_follower_installs_a_newer_snapshot_and_acknowledges_once_it_is_written() {
    // Node 2 holds 1..=5 of term 1, commit 3, and a divergent 4..=5.
    let mut r = core(2, 1, (1..=5).map(|i| entry(i, 1)).collect(), 3);
    let snapshot = SnapshotMeta {
        index: 8,
        term: 2,
        membership: crate::types::Membership::from_voters(&[1, 2, 3]),
    };
    r.step(msg(
        1,
        2,
        2,
        MessageBody::InstallSnapshot {
            snapshot: snapshot.clone(),
        },
    ));
    let rd = r.ready();
    assert_eq!(rd.snapshot.as_ref(), Some(&snapshot));
    assert!(rd.messages.is_empty(), "the ack waits for the disk");
    assert_eq!(
        rd.persisted_messages
            .iter()
            .map(|m| (&m.body, m.rpc_id))
            .collect::<Vec<_>>(),
        vec![(&MessageBody::InstallSnapshotResponse { index: 8 }, 7)]
    );
    assert!(rd.entries.is_empty() && rd.committed_entries.is_empty());
    let st = r.status();
    assert_eq!(
        (
            st.commit,
            st.applied,
            st.last_index,
            st.last_term,
            st.snapshot
        ),
        (8, 8, 8, 2, 8)
    );
    assert_eq!(r.entry(5), None, "the old log is gone");

    // Replication continues after the snapshot.
    r.step(msg(
        1,
        2,
        2,
        MessageBody::AppendEntries {
            prev_log_index: 8,
            prev_log_term: 2,
            entries: vec![entry(9, 2)],
            leader_commit: 9,
        },
    ));
    let rd = r.ready();
    assert_eq!(rd.entries.first().map(|e| e.index), Some(9));
    r.on_persisted(9, 2);
    let rd = r.ready();
    assert_eq!(
        rd.committed_entries
            .iter()
            .map(|e| e.index)
            .collect::<Vec<_>>(),
        vec![9]
    );
}

#[test]
fn a_follower_that_holds_the_snapshot_entry_keeps_its_log_and_commits() {
    let mut r = core(2, 2, (1..=6).map(|i| entry(i, 1)).collect(), 2);
    let snapshot = SnapshotMeta {
        index: 4,
        term: 1,
        membership: crate::types::Membership::from_voters(&[1, 2, 3]),
    };
    r.step(msg(2 - 1, 2, 2, MessageBody::InstallSnapshot { snapshot }));
    let (sent, installed) = drain(&mut r);
    assert!(installed.is_empty(), "nothing to restore");
    assert_eq!(
        sent.iter().map(|m| &m.body).collect::<Vec<_>>(),
        vec![&MessageBody::InstallSnapshotResponse { index: 4 }]
    );
    let st = r.status();
    assert_eq!((st.commit, st.applied, st.last_index), (4, 4, 6));
}

#[test]
fn a_snapshot_older_than_the_commit_index_changes_nothing() {
    let mut r = core(2, 2, (1..=6).map(|i| entry(i, 1)).collect(), 5);
    let snapshot = SnapshotMeta {
        index: 3,
        term: 9,
        membership: crate::types::Membership::from_voters(&[1, 2, 3]),
    };
    r.step(msg(1, 2, 2, MessageBody::InstallSnapshot { snapshot }));
    let (sent, installed) = drain(&mut r);
    assert!(installed.is_empty());
    assert_eq!(
        sent.iter().map(|m| &m.body).collect::<Vec<_>>(),
        vec![&MessageBody::InstallSnapshotResponse { index: 5 }]
    );
    assert_eq!(r.status().commit, 5, "commit never moves back");
    assert_eq!(r.status().last_index, 6);
}

#[test]
fn a_node_restarts_from_a_snapshot_and_the_log_after_it() {
    let snapshot = SnapshotMeta {
        index: 5,
        term: 2,
        membership: crate::types::Membership::from_voters(&[1, 2, 3]),
    };
    let r = core_from(
        1,
        3,
        Persisted {
            snapshot: snapshot.clone(),
            entries: vec![entry(6, 3), entry(7, 3)],
            applied: 6,
            ..Persisted::default()
        },
    );
    let st = r.status();
    assert_eq!(
        (st.snapshot, st.applied, st.last_index, st.last_term),
        (5, 6, 7, 3)
    );

    let mut cfg = Config::new(1, vec![1, 2, 3]);
    cfg.pre_vote = false;
    let gap = Persisted {
        hard_state: HardState {
            term: 3,
            vote: None,
        },
        snapshot: snapshot.clone(),
        entries: vec![entry(7, 3)],
        applied: 5,
    };
    assert!(
        Raft::new(cfg.clone(), gap).is_err(),
        "a gap after the snapshot"
    );
    let behind = Persisted {
        hard_state: HardState {
            term: 3,
            vote: None,
        },
        snapshot,
        entries: vec![entry(6, 3)],
        applied: 4,
    };
    assert!(
        Raft::new(cfg, behind).is_err(),
        "a state machine behind the snapshot"
    );
}
