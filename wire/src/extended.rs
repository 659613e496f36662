//! The extended query protocol: Parse, Bind, Describe, Execute, Close
//! (Sync and Flush are in the connection loop).
//!
//! Parse asks the executor to describe the statement, so a client that sent
//! no parameter types (libpq, pgbench, tokio-postgres `prepare`) learns them
//! from ParameterDescription. Execute then encodes every row as Describe
//! announced it, whatever types the executor's outcome carries.

use std::collections::VecDeque;
use std::sync::Arc;

use futures::SinkExt;

use pgwire::messages::data::{NoData, ParameterDescription};
use pgwire::messages::extendedquery::{
    Bind, BindComplete, Close, CloseComplete, Describe, Execute, Parse, ParseComplete,
    PortalSuspended, TARGET_TYPE_BYTE_STATEMENT,
};
use pgwire::messages::response::{CommandComplete, EmptyQueryResponse};
use pgwire::messages::PgWireBackendMessage;

use crate::block::in_failed_block;
use crate::connection::{Connection, Failure};
use crate::errors::protocol_violation;
use crate::executor::{Column, Executor, SqlError, Value};
use crate::large_statement::LARGE_STATEMENT_BYTES;
use crate::options::{MAX_BOUND_BYTES, MAX_PORTALS, MAX_PREPARED_BYTES, MAX_PREPARED_STATEMENTS};
use crate::rows::{Chunk, RowStream};
use crate::session;
use crate::types::{data_row, decode_param, formats, row_description, type_oid, Format};

/// A parsed statement.
#[derive(Debug)]
pub(crate) struct Prepared {
    pub(crate) sql: String,
    kind: Kind,
    /// One OID per parameter: the client's where it gave one, else the
    /// executor's.
    param_types: Vec<u32>,
    /// What Describe announces and Execute encodes.
    columns: Vec<Column>,
}

impl Prepared {
    /// Whether a failed block accepts it: `COMMIT`, `ROLLBACK`, `ROLLBACK
    /// TO` (and an empty query, as PostgreSQL does).
    fn ends_failed_block(&self) -> bool {
        match &self.kind {
            Kind::Empty => true,
            Kind::Session(session::Command::Transaction(control)) => control.ends_failed_block(),
            Kind::Session(_) | Kind::Sql => false,
        }
    }
}

#[derive(Debug)]
enum Kind {
    /// An empty query string: EmptyQueryResponse.
    Empty,
    /// SET, SHOW, RESET, BEGIN, COMMIT …: answered here.
    Session(session::Command),
    /// Anything else: run by the executor.
    Sql,
}

/// A bound statement.
#[derive(Debug)]
pub(crate) struct Portal {
    statement: Arc<Prepared>,
    formats: Vec<Format>,
    state: PortalState,
    /// Bytes of the parameters as bound, counted while they are held.
    bound_bytes: usize,
}

impl Portal {
    /// Bytes of parameters this portal still holds (none once run).
    fn held_bytes(&self) -> usize {
        match self.state {
            PortalState::Bound(_) => self.bound_bytes,
            _ => 0,
        }
    }
}

/// The refusal of a statement or portal beyond a connection's limits.
fn connection_limit(what: &str, limit: String) -> SqlError {
    SqlError::new(
        "54000",
        format!("too many {what} on this connection (limit {limit}): close some first"),
    )
}

#[derive(Debug)]
enum PortalState {
    /// Bound, not run yet.
    Bound(Vec<Value>),
    /// Run; rows not yet sent wait here between Executes with a row limit:
    /// `pending` holds the rest of the batch last taken from `rows`.
    Running {
        rows: RowStream,
        pending: VecDeque<Vec<Value>>,
    },
    /// All rows sent.
    Done { tag: String },
}

fn name_of(name: Option<String>) -> String {
    name.unwrap_or_default()
}

fn statement_missing(name: &str) -> SqlError {
    SqlError::new(
        "26000",
        format!("prepared statement \"{name}\" does not exist"),
    )
}

fn portal_missing(name: &str) -> SqlError {
    SqlError::new("34000", format!("portal \"{name}\" does not exist"))
}

impl<E: Executor> Connection<E> {
    pub(crate) async fn on_parse(&mut self, parse: Parse) -> Result<(), Failure> {
        let name = name_of(parse.name);
        if !name.is_empty() && self.statements.contains_key(&name) {
            return Err(SqlError::new(
                "42P05",
                format!("prepared statement \"{name}\" already exists"),
            )
            .into());
        }
        let query = parse.query;
        let given = parse.type_oids;
        let prepared = if query
            .trim_matches(|c: char| c == ';' || c.is_whitespace())
            .is_empty()
        {
            Prepared {
                sql: query,
                kind: Kind::Empty,
                param_types: given,
                columns: Vec::new(),
            }
        } else if let Some(command) = session::parse(&query) {
            let command = command?;
            let exits =
                matches!(&command, session::Command::Transaction(c) if c.ends_failed_block());
            if self.in_failed_block() && !exits {
                return Err(in_failed_block().into());
            }
            if !given.is_empty() {
                return Err(too_many_types(given.len(), 0).into());
            }
            Prepared {
                sql: query,
                columns: command.columns(),
                kind: Kind::Session(command),
                param_types: Vec::new(),
            }
        } else {
            if self.in_failed_block() {
                return Err(in_failed_block().into());
            }
            let mut interrupts = self.interrupts().await;
            let description = if let Some(txn) = self.block.as_mut().and_then(|b| b.transaction()) {
                // Inside the block's transaction, which may have created
                // what the statement names. Inline, large or not: the
                // transaction cannot move to another thread.
                let describe = self.executor.describe_in(txn, &query);
                interrupts.race(self.conn.tcp(), describe).await?
            } else if query.len() >= LARGE_STATEMENT_BYTES {
                let socket = self.conn.tcp();
                let executor = Arc::clone(&self.executor);
                let sql = query.clone();
                let make = move || async move { executor.describe(&sql).await };
                interrupts.race(socket, self.large.call(make)).await?
            } else {
                interrupts
                    .race(self.conn.tcp(), self.executor.describe(&query))
                    .await?
            };
            if given.len() > description.params.len() {
                return Err(too_many_types(given.len(), description.params.len()).into());
            }
            let param_types = description
                .params
                .iter()
                .enumerate()
                .map(|(i, described)| match given.get(i) {
                    Some(&oid) if oid != 0 => oid,
                    _ => type_oid(*described),
                })
                .collect();
            Prepared {
                sql: query,
                kind: Kind::Sql,
                param_types,
                columns: description.columns,
            }
        };
        let replaced = self.statements.get(&name).map_or(0, |p| p.sql.len());
        let bytes = self.prepared_bytes - replaced + prepared.sql.len();
        if !self.statements.contains_key(&name) && self.statements.len() >= MAX_PREPARED_STATEMENTS
        {
            return Err(connection_limit(
                "prepared statements",
                MAX_PREPARED_STATEMENTS.to_string(),
            )
            .into());
        }
        if bytes > MAX_PREPARED_BYTES {
            return Err(connection_limit(
                "bytes of prepared statements",
                format!("{} MiB", MAX_PREPARED_BYTES >> 20),
            )
            .into());
        }
        self.prepared_bytes = bytes;
        self.statements.insert(name, Arc::new(prepared));
        self.feed(PgWireBackendMessage::ParseComplete(ParseComplete::new()))
            .await?;
        Ok(())
    }

    pub(crate) async fn on_bind(&mut self, bind: Bind) -> Result<(), Failure> {
        let statement_name = name_of(bind.statement_name);
        let statement = self
            .statements
            .get(&statement_name)
            .cloned()
            .ok_or_else(|| statement_missing(&statement_name))?;
        if self.in_failed_block() && !statement.ends_failed_block() {
            return Err(in_failed_block().into());
        }
        if bind.parameters.len() != statement.param_types.len() {
            return Err(protocol_violation(format!(
                "bind message supplies {} parameters, but prepared statement \"{statement_name}\" \
                 requires {}",
                bind.parameters.len(),
                statement.param_types.len()
            ))
            .into());
        }
        let param_formats = formats(
            &bind.parameter_format_codes,
            bind.parameters.len(),
            "parameter",
        )?;
        let params = bind
            .parameters
            .iter()
            .zip(&statement.param_types)
            .zip(&param_formats)
            .enumerate()
            .map(|(i, ((bytes, oid), format))| decode_param(bytes.as_deref(), *oid, *format, i + 1))
            .collect::<Result<Vec<_>, _>>()?;
        let result_formats = formats(
            &bind.result_column_format_codes,
            statement.columns.len(),
            "result column",
        )?;
        let portal_name = name_of(bind.portal_name);
        if !portal_name.is_empty() && self.portals.contains_key(&portal_name) {
            return Err(
                SqlError::new("42P03", format!("portal \"{portal_name}\" already exists")).into(),
            );
        }
        let replaced = self.portals.get(&portal_name);
        let is_new = replaced.is_none();
        let held: usize = self.portals.values().map(Portal::held_bytes).sum::<usize>()
            - replaced.map_or(0, Portal::held_bytes);
        if is_new && self.portals.len() >= MAX_PORTALS {
            return Err(connection_limit("portals", MAX_PORTALS.to_string()).into());
        }
        let bound_bytes: usize = bind
            .parameters
            .iter()
            .map(|p| p.as_ref().map_or(0, |b| b.len()))
            .sum();
        if held + bound_bytes > MAX_BOUND_BYTES {
            return Err(connection_limit(
                "bytes of bound parameters",
                format!("{} MiB", MAX_BOUND_BYTES >> 20),
            )
            .into());
        }
        self.portals.insert(
            portal_name,
            Portal {
                statement,
                formats: result_formats,
                state: PortalState::Bound(params),
                bound_bytes,
            },
        );
        self.feed(PgWireBackendMessage::BindComplete(BindComplete::new()))
            .await?;
        Ok(())
    }

    pub(crate) async fn on_describe(&mut self, describe: Describe) -> Result<(), Failure> {
        let name = name_of(describe.name);
        let (statement, formats) = if describe.target_type == TARGET_TYPE_BYTE_STATEMENT {
            let statement = self
                .statements
                .get(&name)
                .cloned()
                .ok_or_else(|| statement_missing(&name))?;
            self.feed(PgWireBackendMessage::ParameterDescription(
                ParameterDescription::new(statement.param_types.clone()),
            ))
            .await?;
            // Formats are not chosen until Bind: announce text.
            let formats = vec![Format::Text; statement.columns.len()];
            (statement, formats)
        } else {
            let portal = self
                .portals
                .get(&name)
                .ok_or_else(|| portal_missing(&name))?;
            (Arc::clone(&portal.statement), portal.formats.clone())
        };
        let message = if statement.columns.is_empty() {
            PgWireBackendMessage::NoData(NoData::new())
        } else {
            PgWireBackendMessage::RowDescription(row_description(&statement.columns, &formats))
        };
        self.feed(message).await?;
        Ok(())
    }

    pub(crate) async fn on_execute(&mut self, execute: Execute) -> Result<(), Failure> {
        let name = name_of(execute.name);
        // Out of the map while it runs; an error leaves it out, as a failed
        // portal cannot be run again (and its rows, if any, are dropped,
        // which stops their statement).
        let mut portal = self
            .portals
            .remove(&name)
            .ok_or_else(|| portal_missing(&name))?;
        let statement = Arc::clone(&portal.statement);
        // Each Execute has its own statement_timeout.
        let mut interrupts = self.interrupts().await;
        if let PortalState::Bound(params) = &mut portal.state {
            let params = std::mem::take(params);
            let rows = match &statement.kind {
                Kind::Empty => {
                    self.feed(PgWireBackendMessage::EmptyQueryResponse(
                        EmptyQueryResponse::new(),
                    ))
                    .await?;
                    self.portals.insert(name, portal);
                    return Ok(());
                }
                Kind::Session(command) => {
                    self.run_statement(&statement.sql, Some(command), params, &mut interrupts)
                        .await?
                }
                Kind::Sql => {
                    self.run_statement(&statement.sql, None, params, &mut interrupts)
                        .await?
                }
            };
            portal.state = PortalState::Running {
                rows,
                pending: VecDeque::new(),
            };
        }
        let limit = usize::try_from(execute.max_rows)
            .ok()
            .filter(|n| *n > 0)
            .unwrap_or(usize::MAX);
        match &mut portal.state {
            PortalState::Running { rows, pending } => {
                let mut sent = 0usize;
                let finished = loop {
                    while sent < limit {
                        let Some(row) = pending.pop_front() else {
                            break;
                        };
                        let row = data_row(&statement.columns, &portal.formats, &row)?;
                        self.feed(PgWireBackendMessage::DataRow(row)).await?;
                        sent += 1;
                    }
                    if !pending.is_empty() {
                        break None;
                    }
                    // Take the next batch, also after exactly `limit` rows:
                    // PortalSuspended is sent only when rows remain.
                    match interrupts.race(self.conn.tcp(), rows.next()).await? {
                        Chunk::Rows(batch) => {
                            pending.extend(batch);
                            if rows.is_live() && sent > 0 {
                                self.conn.flush().await?;
                            }
                        }
                        Chunk::Done(tag) => break Some(tag),
                    }
                };
                match finished {
                    None => {
                        self.feed(PgWireBackendMessage::PortalSuspended(PortalSuspended::new()))
                            .await?;
                    }
                    Some(tag) => {
                        self.feed(PgWireBackendMessage::CommandComplete(CommandComplete::new(
                            tag.clone(),
                        )))
                        .await?;
                        portal.state = PortalState::Done { tag };
                    }
                }
            }
            // Executing a finished portal again completes it again.
            PortalState::Done { tag } => {
                let tag = tag.clone();
                self.feed(PgWireBackendMessage::CommandComplete(CommandComplete::new(
                    tag,
                )))
                .await?;
            }
            PortalState::Bound(_) => unreachable!("invariant: a bound portal was just run"),
        }
        self.portals.insert(name, portal);
        Ok(())
    }

    pub(crate) async fn on_close(&mut self, close: Close) -> Result<(), Failure> {
        let name = name_of(close.name);
        // Closing something that does not exist is not an error.
        if close.target_type == TARGET_TYPE_BYTE_STATEMENT {
            if let Some(closed) = self.statements.remove(&name) {
                self.prepared_bytes -= closed.sql.len();
            }
        } else {
            self.portals.remove(&name);
        }
        self.feed(PgWireBackendMessage::CloseComplete(CloseComplete::new()))
            .await?;
        Ok(())
    }
}

fn too_many_types(given: usize, needed: usize) -> SqlError {
    protocol_violation(format!(
        "Parse gave {given} parameter types but the statement has {needed} parameters"
    ))
}
