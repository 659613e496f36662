//! Plain data shared by the Raft core, the log store and the driver.

use bytes::Bytes;

/// A node's id in the cluster. Zero is reserved for "none".
pub type NodeId = u64;

/// The largest term or log index a node accepts or reaches (2^63 - 1).
///
/// A real cluster never gets near it: that takes 2^63 elections or entries.
/// The transport refuses a message carrying anything larger as malformed,
/// so the sum of any two terms or indexes fits in a `u64`; and the core
/// refuses to campaign rather than raise its own term past it (a term that
/// wrapped to 0 would make every later election lose).
pub const MAX_TERM_OR_INDEX: u64 = (1 << 63) - 1;

/// What an entry carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EntryKind {
    /// A command for the state machine, proposed by a client.
    Normal,
    /// Appended by a new leader so that it can commit entries of earlier terms.
    Noop,
    /// A membership change (filled in by the membership issue).
    Config,
}

impl EntryKind {
    /// The stable one-byte code of this kind, used on disk.
    pub fn code(self) -> u8 {
        match self {
            EntryKind::Normal => 0,
            EntryKind::Noop => 1,
            EntryKind::Config => 2,
        }
    }

    /// The kind for a code written by [`EntryKind::code`], if any.
    pub fn from_code(code: u8) -> Option<Self> {
        match code {
            0 => Some(EntryKind::Normal),
            1 => Some(EntryKind::Noop),
            2 => Some(EntryKind::Config),
            _ => None,
        }
    }
}

/// One record of the replicated log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Term of the leader that created the entry.
    pub term: u64,
    /// Position in the log, starting at 1.
    pub index: u64,
    /// What the entry carries.
    pub kind: EntryKind,
    /// Opaque payload for the state machine.
    pub data: Bytes,
}

impl Entry {
    /// Approximate size in bytes, used to bound batches and in-flight data.
    pub fn size(&self) -> usize {
        self.data.len() + 24
    }
}

/// The state that must be on disk before any message that depends on it is
/// sent: the current term and the vote cast in it, always written together.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HardState {
    /// The latest term this node has seen.
    pub term: u64,
    /// The candidate this node voted for in `term`, if any.
    pub vote: Option<NodeId>,
}

/// What a snapshot of the state machine covers: every entry up to and
/// including `index` (whose term is `term`), and the membership in force
/// there. A log compacted to a snapshot starts at `index + 1`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SnapshotMeta {
    /// Index of the last entry the snapshot includes (0: no snapshot).
    pub index: u64,
    /// Term of that entry.
    pub term: u64,
    /// The members as of `index`. It travels with the snapshot so that a
    /// node restored from one knows the configuration without the log
    /// entries that set it.
    pub membership: Membership,
}

/// One member of the cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Member {
    /// Whether it votes (and counts in quorums); a learner only receives
    /// the log.
    pub voter: bool,
    /// Its Raft (gRPC) address, `host:port`; empty when every node knows it
    /// from its own configuration (the members a cluster was started with).
    pub raft_addr: String,
    /// The address clients use (for ReSQLite: the PostgreSQL one), named in
    /// redirects; empty when unknown to the log.
    pub client_addr: String,
}

/// The cluster's members as of some log index: set by the configuration
/// the cluster was started with, then by each `Config` entry (Raft thesis
/// §4.1: one voter added or removed at a time; it takes effect on a node as
/// soon as it is in its log, committed or not).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Membership {
    /// Every member by id, voters and learners.
    pub members: std::collections::BTreeMap<NodeId, Member>,
}

/// Format version of an encoded [`Membership`].
const MEMBERSHIP_VERSION: u8 = 1;
/// More members than any cluster has: a larger count is damage.
const MAX_MEMBERS: u32 = 1 << 12;

impl Membership {
    /// Voters only, with no addresses: the configuration a cluster is
    /// started with.
    pub fn from_voters(voters: &[NodeId]) -> Self {
        let members = voters
            .iter()
            .map(|&id| {
                (
                    id,
                    Member {
                        voter: true,
                        ..Member::default()
                    },
                )
            })
            .collect();
        Membership { members }
    }

    /// The voters, ascending.
    pub fn voters(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.members
            .iter()
            .filter(|(_, m)| m.voter)
            .map(|(&id, _)| id)
    }

    /// The learners, ascending.
    pub fn learners(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.members
            .iter()
            .filter(|(_, m)| !m.voter)
            .map(|(&id, _)| id)
    }

    /// Whether `id` is a voter.
    pub fn is_voter(&self, id: NodeId) -> bool {
        self.members.get(&id).is_some_and(|m| m.voter)
    }

    /// Whether `id` is a member (voter or learner).
    pub fn contains(&self, id: NodeId) -> bool {
        self.members.contains_key(&id)
    }

    /// The stable byte form carried by `Config` entries and snapshots.
    ///
    /// ```text
    /// version u8 | count u32 | (id u64 | voter u8 | len u32 | raft_addr | len u32 | client_addr) × count
    /// ```
    pub fn encode(&self) -> Bytes {
        let mut buf = Vec::with_capacity(5 + self.members.len() * 40);
        buf.push(MEMBERSHIP_VERSION);
        buf.extend_from_slice(&(self.members.len() as u32).to_le_bytes());
        for (id, m) in &self.members {
            buf.extend_from_slice(&id.to_le_bytes());
            buf.push(u8::from(m.voter));
            for s in [&m.raft_addr, &m.client_addr] {
                buf.extend_from_slice(&(s.len() as u32).to_le_bytes());
                buf.extend_from_slice(s.as_bytes());
            }
        }
        Bytes::from(buf)
    }

    /// Reads what [`Membership::encode`] wrote.
    pub fn decode(buf: &[u8]) -> Result<Self, String> {
        let mut r = Reader { buf, at: 0 };
        let version = r.take(1)?[0];
        if version != MEMBERSHIP_VERSION {
            return Err(format!("unknown membership format version {version}"));
        }
        let count = r.u32()?;
        if count > MAX_MEMBERS {
            return Err(format!("membership of {count} members"));
        }
        let mut members = std::collections::BTreeMap::new();
        for _ in 0..count {
            let id = u64::from_le_bytes(r.take(8)?.try_into().expect("8 bytes"));
            let voter = match r.take(1)?[0] {
                0 => false,
                1 => true,
                b => return Err(format!("member {id}: bad voter flag {b}")),
            };
            let raft_addr = r.string()?;
            let client_addr = r.string()?;
            if id == 0 || members.contains_key(&id) {
                return Err(format!("member id {id} is reserved or repeated"));
            }
            members.insert(
                id,
                Member {
                    voter,
                    raft_addr,
                    client_addr,
                },
            );
        }
        if r.at != buf.len() {
            return Err(format!("{} bytes after the membership", buf.len() - r.at));
        }
        Ok(Membership { members })
    }
}

/// A cursor over an encoded membership.
struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.buf.len());
        let Some(end) = end else {
            return Err("membership is cut short".to_string());
        };
        let out = &self.buf[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }

    fn string(&mut self) -> Result<String, String> {
        let len = self.u32()? as usize;
        String::from_utf8(self.take(len)?.to_vec()).map_err(|_| "address is not UTF-8".to_string())
    }
}

/// One operator request on the membership (Raft thesis §4.1: one server
/// at a time).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MembershipChange {
    /// Add a node that receives the log but does not vote.
    AddLearner {
        /// The new node.
        id: NodeId,
        /// Its Raft address, `host:port`.
        raft_addr: String,
        /// Its client address.
        client_addr: String,
    },
    /// Make a learner a voter.
    Promote {
        /// The learner.
        id: NodeId,
    },
    /// Remove a voter or a learner (the leader too: it steps down once the
    /// change is committed).
    Remove {
        /// The member.
        id: NodeId,
    },
}

impl MembershipChange {
    /// The membership after this change to `current`, or why it cannot be
    /// made.
    pub fn apply_to(&self, current: &Membership) -> Result<Membership, String> {
        let mut next = current.clone();
        match self {
            MembershipChange::AddLearner {
                id,
                raft_addr,
                client_addr,
            } => {
                if *id == 0 {
                    return Err("node id 0 is reserved".to_string());
                }
                if current.contains(*id) {
                    return Err(format!("node {id} is already a member"));
                }
                if raft_addr.is_empty() {
                    return Err(format!("node {id}: a Raft address is required"));
                }
                next.members.insert(
                    *id,
                    Member {
                        voter: false,
                        raft_addr: raft_addr.clone(),
                        client_addr: client_addr.clone(),
                    },
                );
            }
            MembershipChange::Promote { id } => match next.members.get_mut(id) {
                None => return Err(format!("node {id} is not a member; add it first")),
                Some(m) if m.voter => return Err(format!("node {id} is already a voter")),
                Some(m) => m.voter = true,
            },
            MembershipChange::Remove { id } => {
                if next.members.remove(id).is_none() {
                    return Err(format!("node {id} is not a member"));
                }
                if next.voters().next().is_none() {
                    return Err(format!("node {id} is the last voter"));
                }
            }
        }
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn three() -> Membership {
        let mut m = Membership::from_voters(&[1, 2, 3]);
        m.members.get_mut(&2).unwrap().raft_addr = "h:2".into();
        m.members.insert(
            9,
            Member {
                voter: false,
                raft_addr: "h:9".into(),
                client_addr: "h:19".into(),
            },
        );
        m
    }

    #[test]
    fn membership_encoding_round_trips_and_damage_is_refused() {
        let m = three();
        let bytes = m.encode();
        assert_eq!(Membership::decode(&bytes).unwrap(), m);
        assert_eq!(
            Membership::decode(&Membership::default().encode()).unwrap(),
            Membership::default()
        );
        for cut in 0..bytes.len() {
            assert!(Membership::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut long = bytes.to_vec();
        long.push(0);
        assert!(Membership::decode(&long).is_err());
        let mut bad_version = bytes.to_vec();
        bad_version[0] = 7;
        assert!(Membership::decode(&bad_version).is_err());
    }

    #[test]
    fn changes_are_single_steps_with_reasons() {
        let m = three();
        let add = MembershipChange::AddLearner {
            id: 4,
            raft_addr: "h:4".into(),
            client_addr: String::new(),
        };
        let added = add.apply_to(&m).unwrap();
        assert!(added.contains(4) && !added.is_voter(4));
        assert!(add
            .apply_to(&added)
            .unwrap_err()
            .contains("already a member"));
        let promoted = MembershipChange::Promote { id: 4 }
            .apply_to(&added)
            .unwrap();
        assert!(promoted.is_voter(4));
        assert!(MembershipChange::Promote { id: 4 }
            .apply_to(&promoted)
            .unwrap_err()
            .contains("already a voter"));
        assert!(MembershipChange::Promote { id: 5 }
            .apply_to(&m)
            .unwrap_err()
            .contains("not a member"));
        let removed = MembershipChange::Remove { id: 1 }.apply_to(&m).unwrap();
        assert_eq!(removed.voters().collect::<Vec<_>>(), vec![2, 3]);
        let alone = Membership::from_voters(&[1]);
        assert!(MembershipChange::Remove { id: 1 }
            .apply_to(&alone)
            .unwrap_err()
            .contains("last voter"));
    }
}
