//! The core fed what a hostile or broken peer could send: terms at the
//! limit, and elections called by nodes that may not call them.

use bytes::Bytes;

use super::{Config, Message, MessageBody, Persisted, Raft, Role};
use crate::types::{Entry, EntryKind, HardState, NodeId, MAX_TERM_OR_INDEX};

fn core(id: NodeId, pre_vote: bool, term: u64, log: Vec<Entry>) -> Raft {
    let mut cfg = Config::new(id, vec![1, 2, 3]);
    cfg.pre_vote = pre_vote;
    Raft::new(
        cfg,
        Persisted {
            hard_state: HardState { term, vote: None },
            snapshot: Default::default(),
            entries: log,
            applied: 0,
        },
    )
    .expect("valid recovered state")
}

fn entry(index: u64, term: u64) -> Entry {
    Entry {
        term,
        index,
        kind: EntryKind::Normal,
        data: Bytes::new(),
    }
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

fn to(to: NodeId, from: NodeId, term: u64, body: MessageBody) -> Message {
    Message {
        from,
        to,
        term,
        rpc_id: 7,
        body,
    }
}

fn heartbeat() -> MessageBody {
    MessageBody::Heartbeat {
        commit: 0,
        read_round: 0,
    }
}

fn vote_request(last: (u64, u64), pre_vote: bool, transfer: bool) -> MessageBody {
    MessageBody::RequestVote {
        last_log_index: last.0,
        last_log_term: last.1,
        pre_vote,
        transfer,
    }
}

fn asks_for_votes(msgs: &[Message]) -> bool {
    msgs.iter()
        .any(|m| matches!(m.body, MessageBody::RequestVote { .. }))
}

fn grants(msgs: &[Message]) -> bool {
    msgs.iter().any(|m| {
        matches!(
            m.body,
            MessageBody::RequestVoteResponse { granted: true, .. }
        )
    })
}

/// The attack, with the transport's check bypassed: a peer put this
/// node's term at the top of the range. `term += 1` used to wrap it to 0
/// (in a release build), after which every election lost; the node now
/// refuses to campaign and keeps its term.
#[test]
fn a_node_at_the_largest_term_refuses_to_campaign_instead_of_wrapping() {
    for term in [u64::MAX, MAX_TERM_OR_INDEX] {
        for pre_vote in [true, false] {
            let mut r = core(1, pre_vote, 1, Vec::new());
            r.step(to(1, 2, term, heartbeat()));
            drain(&mut r);
            assert_eq!(r.status().term, term);
            r.campaign();
            let mut sent = drain(&mut r);
            for _ in 0..100 {
                r.tick();
                sent.extend(drain(&mut r));
            }
            let what = format!("term {term}, pre-vote {pre_vote}");
            assert_eq!(r.status().term, term, "{what}: the term moved");
            assert_eq!(r.status().role, Role::Follower, "{what}");
            assert!(!asks_for_votes(&sent), "{what}: it campaigned");
            // Leadership transfer takes the same path.
            r.step(to(1, 2, term, MessageBody::TimeoutNow));
            assert_eq!(r.status().term, term, "{what}: TimeoutNow moved the term");
        }
    }
}

/// The same term read back from a disk written before the fix.
#[test]
fn a_node_recovered_at_the_largest_term_refuses_to_campaign() {
    let mut r = core(1, true, u64::MAX, Vec::new());
    for _ in 0..100 {
        r.tick();
        assert!(!asks_for_votes(&drain(&mut r)));
    }
    assert_eq!(r.status().term, u64::MAX);
}

/// Node 9 is in no configuration of node 2. Its vote requests, whatever
/// their term or flags, change nothing and get no grant; the same request
/// from voter 3 does, so the difference is membership alone.
#[test]
fn a_vote_request_from_a_non_member_is_ignored() {
    let log = vec![entry(1, 1)];
    for pre_vote in [true, false] {
        for transfer in [true, false] {
            let request = vote_request((1, 1), pre_vote, transfer);
            let what = format!("pre-vote {pre_vote}, transfer {transfer}");

            let mut r = core(2, true, 1, log.clone());
            r.step(to(2, 9, 7, request.clone()));
            let sent = drain(&mut r);
            assert_eq!(r.status().term, 1, "{what}: the outsider moved the term");
            assert_eq!(r.status().vote, None, "{what}");
            assert!(sent.is_empty(), "{what}: answered the outsider: {sent:?}");

            let mut r = core(2, true, 1, log.clone());
            r.step(to(2, 3, 7, request));
            assert!(grants(&drain(&mut r)), "{what}: a voter is granted");
        }
    }
}

/// The liveness exception: a candidate whose log is ahead of ours may hold
/// the configuration that made it a voter while we do not yet, so it is
/// heard; but it never skips the leader lease.
#[test]
fn a_non_member_ahead_of_us_is_heard_but_never_skips_the_lease() {
    let log = vec![entry(1, 1)];
    let ahead = vote_request((2, 1), false, true);

    let mut r = core(2, true, 1, log.clone());
    r.step(to(2, 9, 7, ahead.clone()));
    assert!(grants(&drain(&mut r)));
    assert_eq!((r.status().term, r.status().vote), (7, Some(9)));

    // In a leader's lease, only a voter's transfer election is heard.
    let mut r = core(2, true, 1, log.clone());
    r.step(to(2, 1, 1, heartbeat()));
    drain(&mut r);
    r.step(to(2, 9, 7, ahead.clone()));
    assert!(drain(&mut r).is_empty());
    assert_eq!(r.status().term, 1);
    r.step(to(2, 3, 7, ahead));
    assert!(grants(&drain(&mut r)));
}

/// TimeoutNow starts an election only when the leader this node follows
/// sends it in the current term.
#[test]
fn time_out_now_is_obeyed_only_from_the_leader_of_the_current_term() {
    let follower = || {
        let mut r = core(2, true, 1, vec![entry(1, 1)]);
        r.step(to(2, 1, 1, heartbeat()));
        drain(&mut r);
        r
    };
    for (from, term) in [(9, 1), (9, 8), (3, 1), (3, 8), (1, 0)] {
        let mut r = follower();
        r.step(to(2, from, term, MessageBody::TimeoutNow));
        let sent = drain(&mut r);
        assert_eq!(r.status().term, 1, "TimeoutNow from {from} in term {term}");
        assert!(
            !asks_for_votes(&sent),
            "TimeoutNow from {from} in term {term}"
        );
    }
    let mut r = follower();
    r.step(to(2, 1, 1, MessageBody::TimeoutNow));
    assert!(asks_for_votes(&drain(&mut r)), "the leader's TimeoutNow");
    assert_eq!((r.status().role, r.status().term), (Role::Candidate, 2));
}

/// A candidate left behind in term learns the term from the voters it
/// asks: it may hear of it from no one else, since it ignores the
/// elections of nodes outside its configuration.
#[test]
fn a_stale_vote_request_is_answered_with_the_current_term() {
    let mut r = core(2, true, 5, Vec::new());
    r.step(to(2, 3, 3, vote_request((0, 0), false, false)));
    let sent = drain(&mut r);
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].term, 5);
    assert_eq!(
        sent[0].body,
        MessageBody::RequestVoteResponse {
            granted: false,
            pre_vote: false
        }
    );
}
