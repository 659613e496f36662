//! The simple query protocol: one Query message, possibly several
//! statements, each answered in turn.

use std::io;
use std::sync::Arc;

use pgwire::messages::response::{CommandComplete, EmptyQueryResponse};
use pgwire::messages::PgWireBackendMessage;

use crate::connection::{Connection, Failure};
use crate::executor::{Executor, Outcome};
use crate::large_statement::LARGE_STATEMENT_BYTES;
use crate::session;
use crate::types::{data_row, row_description, Format};

impl<E: Executor> Connection<E> {
    /// Runs a Query message: its statements, split by the executor, one at
    /// a time, stopping at the first error. Each statement's result is sent
    /// as soon as it is known. Statements before a failing one stay done:
    /// each commits on its own (PostgreSQL would roll the batch back).
    pub(crate) async fn on_query(&mut self, query: String) -> io::Result<()> {
        if query
            .trim_matches(|c: char| c == ';' || c.is_whitespace())
            .is_empty()
        {
            return self.empty_query().await;
        }
        let split = if query.len() >= LARGE_STATEMENT_BYTES {
            let executor = Arc::clone(&self.executor);
            self.large.call_sync(move || executor.split(&query)).await
        } else {
            crate::guard::call_sync(|| self.executor.split(&query))
        };
        let statements = match split {
            Ok(statements) => statements,
            Err(error) => return self.fail(&error, false).await,
        };
        if statements.is_empty() {
            return self.empty_query().await;
        }
        for sql in &statements {
            let result = match session::parse(sql) {
                Some(Ok(command)) => self.run_statement(sql, Some(&command), Vec::new()).await,
                Some(Err(error)) => Err(error.into()),
                None => self.run_statement(sql, None, Vec::new()).await,
            };
            let sent = match result {
                Ok(outcome) => self.send_outcome(outcome).await,
                Err(failure) => Err(failure),
            };
            match sent {
                Ok(()) => {}
                Err(Failure::Sql(error)) => return self.fail(&error, false).await,
                Err(Failure::Io(e)) => return Err(e),
            }
        }
        self.ready_for_query().await
    }

    async fn empty_query(&mut self) -> io::Result<()> {
        self.feed(PgWireBackendMessage::EmptyQueryResponse(
            EmptyQueryResponse::new(),
        ))
        .await?;
        self.ready_for_query().await
    }

    /// RowDescription (for a statement with columns), the rows in text
    /// format, then CommandComplete with the executor's tag.
    async fn send_outcome(&mut self, outcome: Outcome) -> Result<(), Failure> {
        let formats = vec![Format::Text; outcome.columns.len()];
        if !outcome.columns.is_empty() {
            self.feed(PgWireBackendMessage::RowDescription(row_description(
                &outcome.columns,
                &formats,
            )))
            .await?;
        }
        for row in &outcome.rows {
            let row = data_row(&outcome.columns, &formats, row)?;
            self.feed(PgWireBackendMessage::DataRow(row)).await?;
        }
        self.feed(PgWireBackendMessage::CommandComplete(CommandComplete::new(
            outcome.tag,
        )))
        .await?;
        Ok(())
    }
}
