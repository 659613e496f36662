//! The simple query protocol: one Query message, possibly several
//! statements, each answered in turn.

use std::io;
use std::sync::Arc;

use futures::SinkExt;

use pgwire::messages::response::{CommandComplete, EmptyQueryResponse};
use pgwire::messages::PgWireBackendMessage;

use crate::connection::{Connection, Failure};
use crate::executor::Executor;
use crate::interrupt::Interrupts;
use crate::large_statement::LARGE_STATEMENT_BYTES;
use crate::rows::{Chunk, RowStream};
use crate::session;
use crate::types::{data_row, row_description, Format};

impl<E: Executor> Connection<E> {
    /// Runs a Query message: its statements, split by the executor, one at
    /// a time, stopping at the first error. Each statement's result is sent
    /// as soon as it is known. Several statements outside a block run in an
    /// implicit one (see [`crate::block`]): after an error, none of them
    /// stays done. A single statement outside a block runs on its own,
    /// without a transaction.
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
        let implicit = statements.len() > 1;
        for sql in &statements {
            if implicit {
                // Again after a COMMIT or ROLLBACK in the message, as in
                // PostgreSQL.
                self.open_implicit_block();
            }
            // Each statement has its own statement_timeout, as in PostgreSQL.
            let mut interrupts = self.interrupts().await;
            let result = match session::parse(sql) {
                Some(Ok(command)) => {
                    self.run_statement(sql, Some(&command), Vec::new(), &mut interrupts)
                        .await
                }
                Some(Err(error)) => Err(error.into()),
                None => {
                    self.run_statement(sql, None, Vec::new(), &mut interrupts)
                        .await
                }
            };
            let sent = match result {
                Ok(rows) => self.send_rows(rows, &mut interrupts).await,
                Err(failure) => Err(failure),
            };
            match sent {
                Ok(()) => {}
                Err(Failure::Sql(error)) => return self.fail(&error, false).await,
                Err(Failure::Io(e)) => return Err(e),
            }
        }
        if let Err(error) = self.close_implicit_block().await {
            return self.fail(&error, false).await;
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
    /// format as they come, then CommandComplete with the executor's tag.
    /// Each batch of a live result is flushed before the next is taken, so
    /// a client that does not read holds its statement back (see
    /// [`crate::rows`]).
    async fn send_rows(
        &mut self,
        mut rows: RowStream,
        interrupts: &mut Interrupts,
    ) -> Result<(), Failure> {
        let columns = rows.columns().to_vec();
        let formats = vec![Format::Text; columns.len()];
        if !columns.is_empty() {
            self.feed(PgWireBackendMessage::RowDescription(row_description(
                &columns, &formats,
            )))
            .await?;
        }
        loop {
            match interrupts.race(self.conn.tcp(), rows.next()).await? {
                Chunk::Rows(batch) => {
                    for row in &batch {
                        let row = data_row(&columns, &formats, row)?;
                        self.feed(PgWireBackendMessage::DataRow(row)).await?;
                    }
                    if rows.is_live() {
                        self.conn.flush().await?;
                    }
                }
                Chunk::Done(tag) => {
                    self.feed(PgWireBackendMessage::CommandComplete(CommandComplete::new(
                        tag,
                    )))
                    .await?;
                    return Ok(());
                }
            }
        }
    }
}
