//! One node's request path, shared by every front end (PostgreSQL wire and
//! the ClientCommand RPC): classify, route to the leader, run the read on
//! the leader's SQLite (after a ReadIndex round unless weak) or propose the
//! write through Raft and answer with its applied result.

mod admin_service;
mod check;
mod client_service;
mod membership;
mod roles;
mod txn;

use std::collections::BTreeMap;
use std::sync::Arc;

use resqlite_raft::driver::{ProposeError, RaftNode};
use resqlite_raft::{NodeId, Role};
use resqlite_wire::{
    Description, Executor, NodeRole, Reply, Session, SqlError, TransactionOptions, Value,
};

pub use admin_service::{peer_status, role_name, AdminService, TRANSFER_WAIT};
pub use client_service::ClientCommandService;
pub use membership::{AddNode, MemberView};
pub use txn::NodeTransaction;

use crate::sql::{self, sqlstate, Class};
use crate::store::check::CheckLog;
use crate::store::roles::RoleCache;
use crate::store::{
    self, ReadPool, SnapshotReaders, Speculation, SqliteStateMachine, TransactionStores,
};

/// How to reach another node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerAddrs {
    /// Its PostgreSQL (client) address, named in redirects.
    pub client: String,
    /// Its gRPC address (Raft and ClientCommand).
    pub grpc: String,
}

/// A node's SQL engine on top of its Raft node.
pub struct Node {
    raft: RaftNode<SqliteStateMachine>,
    reads: ReadPool,
    /// Addresses from this node's own flags: itself and the members the
    /// cluster was started with. The log's configuration names the rest
    /// (see [`Node::members`]).
    configured: BTreeMap<NodeId, PeerAddrs>,
    /// Classes of recently seen statement texts.
    classes: sql::ClassifyCache,
    /// What the state machine learned from consistency checks.
    checks: CheckLog,
    /// The roles as this node applied them, and the bootstrap superuser.
    roles: RoleCache,
    /// The right to write on the leader: single writes share it, a write
    /// transaction holds it alone (see [`txn`]).
    gate: Arc<tokio::sync::RwLock<()>>,
    /// The leader's write transaction.
    speculation: Speculation,
    /// Snapshots of reading transactions.
    snapshots: SnapshotReaders,
    /// Numbers this node's transactions.
    txn_serials: std::sync::atomic::AtomicU64,
}

/// Statement texts whose class a node remembers.
const CLASSIFY_CACHE_SIZE: usize = 1024;

impl Node {
    /// Wraps a started Raft node and the read pool on the same database.
    /// `configured` holds the addresses this node knows from its flags: its
    /// own and those of the members the cluster was started with.
    /// `checks` is the state machine's [`SqliteStateMachine::checks`].
    pub fn new(
        raft: RaftNode<SqliteStateMachine>,
        reads: ReadPool,
        transactions: TransactionStores,
        configured: BTreeMap<NodeId, PeerAddrs>,
        checks: CheckLog,
        roles: RoleCache,
    ) -> Arc<Self> {
        Arc::new(Node {
            raft,
            reads,
            configured,
            classes: sql::ClassifyCache::new(CLASSIFY_CACHE_SIZE),
            checks,
            roles,
            gate: Arc::new(tokio::sync::RwLock::new(())),
            speculation: transactions.speculation,
            snapshots: transactions.snapshots,
            txn_serials: Default::default(),
        })
    }

    /// How many voters the configuration in force has.
    pub fn voter_count(&self) -> usize {
        self.raft.membership().voters().count()
    }

    /// The Raft node underneath.
    pub fn raft(&self) -> &RaftNode<SqliteStateMachine> {
        &self.raft
    }

    /// The error a client gets when this node cannot serve it: the leader's
    /// address when one is known (25006), otherwise "retry" (57P03).
    pub fn redirect(&self, leader: Option<NodeId>) -> SqlError {
        let leader = leader.filter(|&l| l != self.raft.id());
        match leader.and_then(|l| self.addrs_of(l)) {
            Some(addrs) => SqlError {
                sqlstate: sqlstate::READ_ONLY_SQL_TRANSACTION.to_string(),
                message: format!("not the leader; leader: {}", addrs.client),
                detail: Some(addrs.client.clone()),
            },
            None => SqlError::new(
                sqlstate::CANNOT_CONNECT_NOW,
                "no leader is elected right now; retry in a moment",
            ),
        }
    }

    /// The leader's gRPC address, if known and not this node.
    pub fn leader_grpc(&self) -> Option<String> {
        let leader = self.raft.leader().filter(|&l| l != self.raft.id())?;
        self.addrs_of(leader).map(|a| a.grpc)
    }

    fn propose_error(&self, e: ProposeError) -> SqlError {
        match e {
            ProposeError::NotLeader { leader } => self.redirect(leader),
            ProposeError::OutcomeUnknown => SqlError::new(
                sqlstate::STATEMENT_COMPLETION_UNKNOWN,
                "leadership changed before the write was confirmed: it may or may not have been \
                 applied; check before retrying",
            ),
            ProposeError::Dropped => SqlError::new(
                sqlstate::CANNOT_CONNECT_NOW,
                "leadership changed and the write was not applied; retry",
            ),
            ProposeError::Shutdown => {
                SqlError::new("57P01", "the node is shutting down; retry on another node")
            }
            ProposeError::Storage(why) => SqlError::new(
                "58030",
                format!("the node stopped after a storage failure: {why}"),
            ),
            // Only membership changes, never SQL, are refused these ways.
            ProposeError::ChangeInProgress(why) | ProposeError::InvalidChange(why) => {
                SqlError::new(sqlstate::CANNOT_CONNECT_NOW, why)
            }
        }
    }

    fn is_leader(&self) -> bool {
        self.raft.status().role == Role::Leader
    }

    /// Runs one statement: the single path every front end uses. A read's
    /// rows stream (see [`ReadPool::stream`]); dropping the future or the
    /// stream interrupts it. A write dropped before it is proposed is not
    /// proposed; once proposed it commits whether or not anyone waits.
    pub async fn run(
        &self,
        session: &Session,
        sql: &str,
        params: Vec<Value>,
    ) -> Result<Reply, SqlError> {
        if let Some(statement) = sql::roles::parse(sql) {
            return Ok(Reply::Done(self.change_roles(session, statement?).await?));
        }
        let sql = &*sql::pg_syntax::to_sqlite(sql)?;
        let classified = self.classes.classify(sql)?;
        match classified.class {
            Class::Write => {
                if !self.is_leader() {
                    return Err(self.redirect(self.raft.leader()));
                }
                let entry = store::encode_write(sql, &params, classified.command);
                let _gate = self.write_gate(session, self.gate.read()).await?;
                self.raft
                    .propose(entry)
                    .await
                    .map_err(|e| self.propose_error(e))?
                    .map(Reply::Done)
            }
            Class::Read => {
                if session.weak_reads {
                    if !self.is_leader() {
                        return Err(self.redirect(self.raft.leader()));
                    }
                } else {
                    self.raft
                        .read_barrier()
                        .await
                        .map_err(|e| self.propose_error(e))?;
                }
                self.reads
                    .stream(sql.to_string(), params, classified.command)
                    .await
            }
        }
    }

    /// Runs a read on this node's own SQLite, leader or not, without any
    /// consistency guarantee: an admin and debugging path (per-node content
    /// checks), reachable only through the ClientCommand RPC.
    pub async fn read_local(&self, sql: &str, params: Vec<Value>) -> Result<Reply, SqlError> {
        let sql = &*sql::pg_syntax::to_sqlite(sql)?;
        let classified = self.classes.classify(sql)?;
        if classified.class != Class::Read {
            return Err(SqlError::new(
                sqlstate::FEATURE_NOT_SUPPORTED,
                "read_consistency 'local' is for reads only",
            ));
        }
        self.reads
            .stream(sql.to_string(), params, classified.command)
            .await
    }

    /// Parameter and result types of a statement, for Parse/Describe.
    pub async fn describe_statement(&self, sql: &str) -> Result<Description, SqlError> {
        if let Some(statement) = sql::roles::parse(sql) {
            // No parameters, no rows.
            statement?;
            return Ok(Description {
                params: Vec::new(),
                columns: Vec::new(),
            });
        }
        let sql = &*sql::pg_syntax::to_sqlite(sql)?;
        self.classes.classify(sql)?;
        self.reads.describe(sql.to_string()).await
    }
}

/// The PostgreSQL front end's view of a node.
#[derive(Clone)]
pub struct NodeExecutor(pub Arc<Node>);

impl Executor for NodeExecutor {
    fn split(&self, sql: &str) -> Result<Vec<String>, SqlError> {
        Ok(sql::split_statements(sql))
    }

    async fn describe(&self, sql: &str) -> Result<Description, SqlError> {
        self.0.describe_statement(sql).await
    }

    async fn execute(
        &self,
        session: &Session,
        sql: &str,
        params: Vec<Value>,
    ) -> Result<Reply, SqlError> {
        self.0.run(session, sql, params).await
    }

    fn role(&self) -> NodeRole {
        NodeRole {
            is_leader: self.0.is_leader(),
        }
    }

    type Transaction = NodeTransaction;

    fn begin(
        &self,
        _session: &Session,
        options: TransactionOptions,
    ) -> Result<NodeTransaction, SqlError> {
        Ok(self.0.begin(options))
    }

    async fn execute_in(
        &self,
        txn: &mut NodeTransaction,
        session: &Session,
        sql: &str,
        params: Vec<Value>,
    ) -> Result<Reply, SqlError> {
        txn.execute(session, sql, params).await
    }

    async fn describe_in(
        &self,
        txn: &mut NodeTransaction,
        sql: &str,
    ) -> Result<Description, SqlError> {
        txn.describe(sql).await
    }

    async fn savepoint(&self, txn: &mut NodeTransaction, name: &str) -> Result<(), SqlError> {
        txn.savepoint(name).await
    }

    async fn release(&self, txn: &mut NodeTransaction, name: &str) -> Result<(), SqlError> {
        txn.release(name).await
    }

    async fn rollback_to(&self, txn: &mut NodeTransaction, name: &str) -> Result<(), SqlError> {
        txn.rollback_to(name).await
    }

    async fn commit(&self, txn: NodeTransaction) -> Result<(), SqlError> {
        txn.commit().await
    }
}
