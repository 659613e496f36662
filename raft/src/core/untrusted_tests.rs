//! The core fed what a hostile or broken peer could send: terms at the
//! limit.

use super::{Config, Message, MessageBody, Persisted, Raft, Role};
use crate::types::{Entry, HardState, NodeId, MAX_TERM_OR_INDEX};

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

fn asks_for_votes(msgs: &[Message]) -> bool {
    msgs.iter()
        .any(|m| matches!(m.body, MessageBody::RequestVote { .. }))
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
