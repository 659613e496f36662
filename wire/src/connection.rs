//! One client connection from accept to close: TLS negotiation, startup,
//! then the message loop that dispatches to the simple and extended query
//! protocols.

use std::collections::HashMap;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use futures::SinkExt;
use pgwire::api::{ClientInfo, ConnectionHandle, PgWireConnectionState};
use pgwire::messages::response::{ErrorResponse, ReadyForQuery};
use pgwire::messages::startup::ParameterStatus;
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use pgwire::tokio::server::negotiate_tls;
use tokio::net::TcpStream;
use tokio::time::{timeout_at, Instant};
use tokio_util::codec::{Framed, FramedParts};

use crate::block::{in_failed_block, Block};
use crate::client::Conn;
use crate::codec::{statement_too_large, Inbound, WireCodec};
use crate::errors::{error_info, protocol_violation};
use crate::executor::{Executor, Outcome, SqlError, Value};
use crate::extended::{Portal, Prepared};
use crate::interrupt::Interrupts;
use crate::large_statement::{statement_bytes, LargeStatements, LARGE_STATEMENT_BYTES};
use crate::rows::{Reply, RowStream};
use crate::server::Shared;
use crate::session::{self, Settings};

/// How long a client has to finish TLS negotiation and authentication.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a message handler stopped: the statement failed (the client gets an
/// ErrorResponse and the connection goes on) or the socket did.
#[derive(Debug)]
pub(crate) enum Failure {
    Sql(SqlError),
    Io(io::Error),
}

impl From<SqlError> for Failure {
    fn from(e: SqlError) -> Self {
        Failure::Sql(e)
    }
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Self {
        Failure::Io(e)
    }
}

/// Serves one accepted socket until the client leaves. A socket that is
/// not `admitted` (too many clients) is told so after its startup packet.
pub(crate) async fn run<E: Executor>(
    socket: TcpStream,
    shared: Arc<Shared<E>>,
    admitted: bool,
) -> io::Result<()> {
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    // With TLS configured an SSLRequest gets 'S' and the handshake; else
    // 'N'. GSSENCRequest always gets 'N'.
    let acceptor = shared.opts.tls.as_ref().map(|t| t.acceptor.clone());
    let negotiated = match timeout_at(deadline, negotiate_tls::<()>(socket, acceptor)).await {
        Ok(result) => result?,
        Err(_) => return Ok(()),
    };
    let Some(framed) = negotiated else {
        // Direct TLS (no SSLRequest) while TLS is off: nothing to say.
        return Ok(());
    };
    let parts = framed.into_parts();
    let codec = WireCodec::new(parts.codec.client_info, shared.opts.max_query_bytes)
        .with_budget(Arc::clone(&shared.receive_budget));
    let mut ours = FramedParts::new(parts.io, codec);
    ours.read_buf = parts.read_buf;
    ours.write_buf = parts.write_buf;
    let mut conn = Conn::new(Framed::from_parts(ours));

    while !matches!(conn.state(), PgWireConnectionState::ReadyForQuery) {
        let item = match timeout_at(deadline, conn.next()).await {
            Err(_) => {
                let e = protocol_violation("startup did not finish within 60 seconds");
                return send_fatal(&mut conn, &e).await;
            }
            Ok(None) => return Ok(()),
            Ok(Some(item)) => item?,
        };
        match item {
            Inbound::Message(PgWireFrontendMessage::CancelRequest(cancel)) => {
                // A wrong key matches nothing and does nothing.
                shared.cancels.cancel(cancel.pid, &cancel.secret_key).await;
                return Ok(());
            }
            Inbound::Message(PgWireFrontendMessage::Startup(_)) if !admitted => {
                return send_fatal(&mut conn, &too_many_clients()).await;
            }
            Inbound::Message(message) => {
                if let Err(e) = shared.startup.on_message(&mut conn, message).await {
                    return send_fatal(&mut conn, &e).await;
                }
            }
            Inbound::Refused { error, .. } | Inbound::Fatal(error) => {
                return send_fatal(&mut conn, &error).await;
            }
        }
    }

    let mut settings = Settings::new(&shared.opts.server_version, conn.metadata().iter());
    let user = conn.metadata().get(pgwire::api::METADATA_USER);
    settings.set_superuser(shared.startup.is_superuser(user.map_or("", String::as_str)));
    let cancel = conn
        .session_extensions()
        .get::<Arc<ConnectionHandle>>()
        .map(|handle| Arc::clone(&*handle));
    let (pid, _) = conn.pid_and_secret_key();
    tracing::debug!(pid, peer = %conn.socket_addr(), "connection ready");
    Connection {
        conn,
        executor: Arc::clone(&shared.executor),
        large: Arc::clone(&shared.large),
        max_statement_bytes: shared.opts.max_query_bytes,
        settings,
        cancel,
        statements: HashMap::new(),
        prepared_bytes: 0,
        portals: HashMap::new(),
        block: None,
    }
    .serve()
    .await
}

fn too_many_clients() -> SqlError {
    SqlError::new("53300", "sorry, too many clients already")
}

async fn send_fatal(conn: &mut Conn, error: &SqlError) -> io::Result<()> {
    conn.send(PgWireBackendMessage::ErrorResponse(ErrorResponse::from(
        error_info(error, true),
    )))
    .await
}

/// An authenticated connection and its per-connection state.
pub(crate) struct Connection<E: Executor> {
    pub(crate) conn: Conn,
    pub(crate) executor: Arc<E>,
    /// Runs the executor's calls for large statements.
    pub(crate) large: Arc<LargeStatements>,
    /// The largest statement accepted (text and parameters together).
    pub(crate) max_statement_bytes: usize,
    pub(crate) settings: Settings,
    /// Fired by a CancelRequest with this connection's key.
    pub(crate) cancel: Option<Arc<ConnectionHandle>>,
    /// Prepared statements by name; the unnamed one is "".
    pub(crate) statements: HashMap<String, Arc<Prepared>>,
    /// Bytes of SQL text in `statements` (bounded by
    /// [`crate::options::MAX_PREPARED_BYTES`]).
    pub(crate) prepared_bytes: usize,
    /// Portals by name; the unnamed one is "".
    pub(crate) portals: HashMap<String, Portal>,
    /// The transaction block the client is in, if any.
    pub(crate) block: Option<Block<E::Transaction>>,
}

impl<E: Executor> Connection<E> {
    async fn serve(mut self) -> io::Result<()> {
        let served = self.serve_messages().await;
        // The client left (or was sent away) inside a block: its
        // transaction is rolled back.
        self.end_block();
        served
    }

    /// The next message; `Ok(None)` once the client hung up. Inside a
    /// block, a client silent for longer than its
    /// `idle_in_transaction_session_timeout` is told so and dropped
    /// (`Err`): its transaction may hold the cluster's write lock.
    async fn next_message(&mut self) -> io::Result<Option<Inbound>> {
        let limit = self
            .settings
            .idle_in_transaction_timeout()
            .filter(|_| self.block.is_some());
        let next = match limit {
            None => self.conn.next().await,
            Some(limit) => match tokio::time::timeout(limit, self.conn.next()).await {
                Ok(next) => next,
                Err(_) => {
                    tracing::debug!(?limit, "idle in transaction for too long");
                    self.end_block();
                    let error = SqlError::new(
                        "25P03",
                        "terminating connection due to idle-in-transaction timeout",
                    );
                    send_fatal(&mut self.conn, &error).await?;
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "idle in transaction for longer than idle_in_transaction_session_timeout",
                    ));
                }
            },
        };
        next.transpose()
    }

    async fn serve_messages(&mut self) -> io::Result<()> {
        while let Some(item) = self.next_message().await? {
            let awaiting_sync = matches!(self.conn.state(), PgWireConnectionState::AwaitingSync);
            match item {
                Inbound::Fatal(error) => return send_fatal(&mut self.conn, &error).await,
                // After an extended-protocol error everything up to Sync is
                // skipped, refused messages included.
                Inbound::Refused { .. } if awaiting_sync => {}
                Inbound::Refused { error, extended } => self.fail(&error, extended).await?,
                Inbound::Message(PgWireFrontendMessage::Terminate(_)) => return Ok(()),
                Inbound::Message(PgWireFrontendMessage::Sync(_)) => self.on_sync().await?,
                Inbound::Message(_) if awaiting_sync => {}
                Inbound::Message(message) => self.dispatch(message).await?,
            }
        }
        Ok(())
    }

    async fn dispatch(&mut self, message: PgWireFrontendMessage) -> io::Result<()> {
        let extended = message.is_extended_query();
        let result = match message {
            PgWireFrontendMessage::Query(query) => return self.on_query(query.query).await,
            PgWireFrontendMessage::Parse(parse) => self.on_parse(parse).await,
            PgWireFrontendMessage::Bind(bind) => self.on_bind(bind).await,
            PgWireFrontendMessage::Describe(describe) => self.on_describe(describe).await,
            PgWireFrontendMessage::Execute(execute) => self.on_execute(execute).await,
            PgWireFrontendMessage::Close(close) => self.on_close(close).await,
            PgWireFrontendMessage::Flush(_) => return self.conn.flush().await,
            // Like PostgreSQL: COPY messages outside COPY are ignored, so a
            // client recovering from an error does not get a second one.
            PgWireFrontendMessage::CopyData(_)
            | PgWireFrontendMessage::CopyDone(_)
            | PgWireFrontendMessage::CopyFail(_) => Ok(()),
            _ => Err(protocol_violation("unexpected message after startup").into()),
        };
        match result {
            Ok(()) => Ok(()),
            Err(Failure::Sql(error)) => self.fail(&error, extended).await,
            Err(Failure::Io(e)) => Err(e),
        }
    }

    /// Reports a failed message. In the extended protocol the client is then
    /// ignored until its Sync; in the simple one it may send the next query.
    /// Inside a block, the block fails (see [`crate::block`]).
    pub(crate) async fn fail(&mut self, error: &SqlError, extended: bool) -> io::Result<()> {
        tracing::debug!(sqlstate = %error.sqlstate, message = %error.message, "statement failed");
        self.abort_statement();
        self.feed(PgWireBackendMessage::ErrorResponse(ErrorResponse::from(
            error_info(error, false),
        )))
        .await?;
        if extended {
            self.conn.set_state(PgWireConnectionState::AwaitingSync);
            self.conn.flush().await
        } else {
            self.ready_for_query().await
        }
    }

    async fn on_sync(&mut self) -> io::Result<()> {
        self.conn.set_state(PgWireConnectionState::ReadyForQuery);
        // Portals live until their transaction ends, as in PostgreSQL.
        self.portals.remove("");
        if self.block.is_none() {
            self.portals.clear();
        }
        self.ready_for_query().await
    }

    pub(crate) async fn ready_for_query(&mut self) -> io::Result<()> {
        let status = self.transaction_status();
        self.feed(PgWireBackendMessage::ReadyForQuery(ReadyForQuery::new(
            status,
        )))
        .await?;
        self.conn.flush().await
    }

    /// Queues a message; it goes out at the next flush (or sooner, when the
    /// buffer fills).
    pub(crate) async fn feed(&mut self, message: PgWireBackendMessage) -> io::Result<()> {
        self.conn.feed(message).await
    }

    /// Runs one statement: a session command or a transaction-control
    /// statement here, anything else on the executor (inside the block's
    /// transaction when in one), interruptible (see [`Interrupts`]) and
    /// with panics caught. The result comes back as a stream of rows,
    /// whatever its size.
    pub(crate) async fn run_statement(
        &mut self,
        sql: &str,
        command: Option<&session::Command>,
        params: Vec<Value>,
        interrupts: &mut Interrupts,
    ) -> Result<RowStream, Failure> {
        if let Some(session::Command::Transaction(control)) = command {
            let outcome = self.run_control(control, interrupts).await?;
            return Ok(outcome.into());
        }
        if self.in_failed_block() {
            return Err(in_failed_block().into());
        }
        let reply = match command {
            Some(session::Command::Deallocate { name }) => Reply::Done(self.deallocate(name)?),
            Some(session::Command::Discard { what }) => Reply::Done(self.discard(what)?),
            Some(command) => {
                let role = self.executor.role();
                let block_read_only = self.block_read_only();
                let reply = self.settings.run(command, &role, block_read_only)?;
                for (name, value) in reply.reports {
                    self.feed(PgWireBackendMessage::ParameterStatus(ParameterStatus::new(
                        name, value,
                    )))
                    .await?;
                }
                Reply::Done(reply.outcome)
            }
            None => {
                let bytes = statement_bytes(sql, &params);
                if bytes > self.max_statement_bytes {
                    return Err(statement_too_large(bytes, self.max_statement_bytes).into());
                }
                let session = self.settings.session();
                if self.block.is_some() {
                    self.begin_transaction()?;
                    let Some(txn) = self.block.as_mut().and_then(Block::transaction) else {
                        return Err(crate::errors::internal("the block has no transaction").into());
                    };
                    // `execute_in` borrows the transaction, so it cannot
                    // move to a large-statement thread: the node does the
                    // heavy work off the runtime itself.
                    let execute = self.executor.execute_in(txn, &session, sql, params);
                    interrupts.race(self.conn.tcp(), execute).await?
                } else if bytes >= LARGE_STATEMENT_BYTES {
                    let socket = self.conn.tcp();
                    let executor = Arc::clone(&self.executor);
                    let sql = sql.to_string();
                    let make =
                        move || async move { executor.execute(&session, &sql, params).await };
                    interrupts.race(socket, self.large.call(make)).await?
                } else {
                    let execute = self.executor.execute(&session, sql, params);
                    interrupts.race(self.conn.tcp(), execute).await?
                }
            }
        };
        Ok(reply.into())
    }

    /// `DEALLOCATE name` / `DEALLOCATE ALL`: drops named prepared
    /// statements (the unnamed one is not PostgreSQL's to deallocate).
    fn deallocate(&mut self, name: &Option<String>) -> Result<Outcome, SqlError> {
        match name {
            Some(name) => {
                let closed = self.statements.remove(name).ok_or_else(|| {
                    SqlError::new(
                        "26000",
                        format!("prepared statement \"{name}\" does not exist"),
                    )
                })?;
                self.prepared_bytes -= closed.sql.len();
                Ok(tag_only("DEALLOCATE"))
            }
            None => {
                self.statements.retain(|name, _| name.is_empty());
                self.prepared_bytes = self.statements.values().map(|s| s.sql.len()).sum();
                Ok(tag_only("DEALLOCATE ALL"))
            }
        }
    }

    /// `DISCARD …`. `ALL` is `RESET ALL` and `DEALLOCATE ALL` with the
    /// portals closed, outside a transaction block only; the others have
    /// nothing to discard here (no plan cache, sequences or temporary
    /// objects are kept per session).
    fn discard(&mut self, what: &str) -> Result<Outcome, SqlError> {
        if what == "ALL" {
            if self.block.is_some() {
                return Err(SqlError::new(
                    "25001",
                    "DISCARD ALL cannot run inside a transaction block",
                ));
            }
            let role = self.executor.role();
            self.settings
                .run(&session::Command::Reset { name: None }, &role, None)?;
            self.deallocate(&None)?;
            self.portals.clear();
        }
        Ok(tag_only(&format!("DISCARD {what}")))
    }

    /// Watches the next statement for a cancel, its timeout and a hangup.
    pub(crate) async fn interrupts(&self) -> Interrupts {
        Interrupts::start(self.cancel.as_deref(), self.settings.statement_timeout()).await
    }
}

/// An outcome that is only a command tag.
fn tag_only(tag: &str) -> Outcome {
    Outcome {
        tag: tag.to_string(),
        columns: Vec::new(),
        rows: Vec::new(),
    }
}
