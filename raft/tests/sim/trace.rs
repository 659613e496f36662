//! The event trace. Off in normal runs (formatting costs more than the
//! simulation); a failing seed is replayed with it on, which the
//! determinism of the simulator makes exact.

use std::collections::VecDeque;

use resqlite_raft::{Message, MessageBody};

#[derive(Debug, Default)]
pub struct Trace {
    /// Lines kept (the tail); 0 keeps none.
    keep: usize,
    /// Also print every line to stderr as it happens.
    echo: bool,
    lines: VecDeque<String>,
}

impl Trace {
    pub fn new(keep: usize, echo: bool) -> Self {
        Trace {
            keep,
            echo,
            lines: VecDeque::new(),
        }
    }

    pub fn on(&self) -> bool {
        self.keep > 0 || self.echo
    }

    pub fn push(&mut self, line: String) {
        if self.echo {
            eprintln!("{line}");
        }
        if self.keep > 0 {
            if self.lines.len() == self.keep {
                self.lines.pop_front();
            }
            self.lines.push_back(line);
        }
    }

    pub fn take(&mut self) -> Vec<String> {
        self.lines.drain(..).collect()
    }
}

/// One line for a message.
pub fn describe(m: &Message) -> String {
    let body = match &m.body {
        MessageBody::RequestVote {
            last_log_index,
            last_log_term,
            pre_vote,
            transfer,
        } => format!(
            "{}Vote last {last_log_index}/{last_log_term}{}",
            if *pre_vote { "Pre" } else { "" },
            if *transfer { " transfer" } else { "" }
        ),
        MessageBody::RequestVoteResponse { granted, pre_vote } => format!(
            "{}VoteResp {}",
            if *pre_vote { "Pre" } else { "" },
            if *granted { "granted" } else { "rejected" }
        ),
        MessageBody::AppendEntries {
            prev_log_index,
            prev_log_term,
            entries,
            leader_commit,
        } => {
            let span = match (entries.first(), entries.last()) {
                (Some(a), Some(b)) => format!("{}/{}..{}/{}", a.index, a.term, b.index, b.term),
                _ => "-".to_string(),
            };
            format!("Append prev {prev_log_index}/{prev_log_term} [{span}] commit {leader_commit}")
        }
        MessageBody::AppendEntriesResponse {
            success,
            index,
            conflict_term,
            conflict_index,
        } => {
            if *success {
                format!("AppendResp ok {index}")
            } else {
                format!("AppendResp reject {index} conflict {conflict_index}/{conflict_term}")
            }
        }
        MessageBody::Heartbeat { commit, read_round } => {
            format!("Heartbeat commit {commit} round {read_round}")
        }
        MessageBody::HeartbeatResponse { read_round } => {
            format!("HeartbeatResp round {read_round}")
        }
        MessageBody::TimeoutNow => "TimeoutNow".to_string(),
        MessageBody::InstallSnapshot { snapshot } => {
            format!("InstallSnapshot {}/{}", snapshot.index, snapshot.term)
        }
        MessageBody::InstallSnapshotResponse { index } => format!("SnapshotResp {index}"),
    };
    format!("{}->{} t{} {body}", m.from, m.to, m.term)
}
