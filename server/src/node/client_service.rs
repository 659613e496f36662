//! The paper's ClientCommand RPC, served by every node through the same
//! path as the PostgreSQL front end.

use std::sync::Arc;

use resqlite_proto::client::client_command_request::Statement;
use resqlite_proto::client::client_server::Client;
use resqlite_proto::client::{
    ClientCommandRequest, ClientCommandResponse, ClientError, Column, Row,
};
use resqlite_wire::{
    statement_bytes, LargeStatements, Outcome, Session, SqlError, Value, LARGE_STATEMENT_BYTES,
};
use tonic::{Request, Response, Status};

use super::Node;
use crate::sql::sqlstate;
use crate::store::values::{from_proto, to_proto};

/// The most result rows one ClientCommand answers with, in bytes (as the
/// node holds them): the answer is one message, built in memory.
pub const MAX_RESULT_BYTES: usize = 64 << 20;

/// The gRPC service; add it to the node's tonic server.
pub struct ClientCommandService {
    node: Arc<Node>,
    /// Statements of 64 KiB or more are prepared off the async workers,
    /// as on the PostgreSQL port (see `resqlite_wire::LargeStatements`).
    large: Arc<LargeStatements>,
}

impl ClientCommandService {
    /// Serves `node`.
    pub fn new(node: Arc<Node>) -> Self {
        ClientCommandService {
            node,
            large: Arc::new(LargeStatements::new()),
        }
    }

    fn error(&self, e: SqlError) -> ClientCommandResponse {
        let leader_addr = if e.sqlstate == sqlstate::READ_ONLY_SQL_TRANSACTION {
            e.detail.clone().unwrap_or_default()
        } else {
            String::new()
        };
        let leader_grpc = if leader_addr.is_empty() {
            String::new()
        } else {
            self.node.leader_grpc().unwrap_or_default()
        };
        ClientCommandResponse {
            error: Some(ClientError {
                sqlstate: e.sqlstate,
                message: e.message,
                leader_client_addr: leader_addr,
                leader_grpc_addr: leader_grpc,
            }),
            ..Default::default()
        }
    }
}

#[tonic::async_trait]
impl Client for ClientCommandService {
    async fn client_command(
        &self,
        request: Request<ClientCommandRequest>,
    ) -> Result<Response<ClientCommandResponse>, Status> {
        let req = request.into_inner();
        // The classifier decides read or write; the field a client used is
        // only a label (the paper's client decided by itself).
        let sql = match req.statement {
            Some(Statement::Command(s)) | Some(Statement::Query(s)) => s,
            None => {
                let e = SqlError::new(
                    sqlstate::SYNTAX_ERROR,
                    "empty request: set command or query",
                );
                return Ok(Response::new(self.error(e)));
            }
        };
        let params: Vec<_> = req.params.into_iter().map(from_proto).collect();
        let node = Arc::clone(&self.node);
        let consistency = req.read_consistency;
        let result = if statement_bytes(&sql, &params) >= LARGE_STATEMENT_BYTES {
            let make = move || async move { answer(&node, &consistency, &sql, params).await };
            self.large.call(make).await
        } else {
            answer(&node, &consistency, &sql, params).await
        };
        let reply = match result {
            Ok(outcome) => ClientCommandResponse {
                columns: outcome
                    .columns
                    .iter()
                    .map(|c| Column {
                        name: c.name.clone(),
                        declared_type: format!("{:?}", c.pg_type).to_lowercase(),
                    })
                    .collect(),
                rows_affected: rows_affected(&outcome.tag),
                rows: outcome
                    .rows
                    .iter()
                    .map(|r| Row {
                        values: r.iter().map(to_proto).collect(),
                    })
                    .collect(),
                tag: outcome.tag,
                error: None,
            },
            Err(e) => self.error(e),
        };
        Ok(Response::new(reply))
    }
}

/// The count at the end of an INSERT/UPDATE/DELETE tag.
fn rows_affected(tag: &str) -> u64 {
    let mut words = tag.split_whitespace();
    match words.next() {
        Some("INSERT" | "UPDATE" | "DELETE") => {
            words.next_back().and_then(|n| n.parse().ok()).unwrap_or(0)
        }
        _ => 0,
    }
}

/// Runs one statement with the read consistency asked for and collects its
/// whole answer.
async fn answer(
    node: &Node,
    consistency: &str,
    sql: &str,
    params: Vec<Value>,
) -> Result<Outcome, SqlError> {
    let reply = match consistency {
        "" | "linearizable" => node.run(&operator_session(false), sql, params).await?,
        "weak" => node.run(&operator_session(true), sql, params).await?,
        "local" => node.read_local(sql, params).await?,
        other => {
            return Err(SqlError::new(
                "22023",
                format!(
                    "read_consistency must be 'linearizable', 'weak' or 'local', not {other:?}"
                ),
            ))
        }
    };
    // One message carries the whole answer: its size is bounded here,
    // where the PostgreSQL front end streams.
    reply.collect(MAX_RESULT_BYTES).await
}

/// ClientCommand callers hold an operator's or a node's certificate (or the
/// cluster runs without TLS): they act as a superuser.
fn operator_session(weak_reads: bool) -> Session {
    Session {
        lock_timeout: None,
        weak_reads,
        user: std::sync::Arc::from("resqlite"),
        superuser: true,
    }
}
