//! Read-only connections for reads on the leader, each owned by a reader
//! thread of its own. In WAL mode they never block the writer, and a read
//! whose caller goes away (cancel, timeout, disconnect) is interrupted
//! inside SQLite, or skipped if it has not started; its rows stream back
//! (`read_stream`), never collected whole. After a snapshot restore replaced the
//! file, a thread reopens its connection before its next read.
//!
//! Reads wait in one queue. A thread that finishes a read takes the next one
//! without sleeping, and a new read wakes a sleeping thread only when no
//! woken thread is already on its way to the queue: the reads a ReadIndex
//! round releases together then cost one thread wake-up, not one each (a
//! `spawn_blocking` per read cost the leader a fifth of its CPU time, see
//! docs/benchmarks.md).

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};

use resqlite_wire::{Description, Reply, SqlError, Value};
use rusqlite::{Connection, InterruptHandle, OpenFlags};
use tokio::sync::{oneshot, Semaphore};

use super::db_file::DbGeneration;
use super::errors::sql_error;
use super::exec::{parameter_count, result_types, RowSet};
use super::guard::guard_read_connection;
use super::read_stream;
use crate::sql::sqlstate;

/// Reads queued per reader thread before callers wait for room.
const QUEUED_PER_THREAD: usize = 32;

/// A fixed set of reader threads, each with a read-only connection, shared
/// by all client sessions.
pub struct ReadPool {
    queue: Arc<JobQueue>,
    /// Room in the queue.
    permits: Arc<Semaphore>,
}

/// A read for a reader thread: runs on its connection (or gets the error
/// that kept the thread from having one).
type Job = Box<dyn FnOnce(Result<&Connection, SqlError>) + Send>;

struct JobQueue {
    state: Mutex<QueueState>,
    ready: Condvar,
}

struct QueueState {
    jobs: VecDeque<Job>,
    /// Threads waiting on `ready`.
    idle: usize,
    /// Threads woken and not yet back at the queue.
    waking: usize,
    closed: bool,
}

impl JobQueue {
    /// Queues `job`; false once the pool is closed.
    fn push(&self, job: Job) -> bool {
        let Ok(mut state) = self.state.lock() else {
            return false;
        };
        if state.closed {
            return false;
        }
        state.jobs.push_back(job);
        let wake = state.wake_one();
        drop(state);
        if wake {
            self.ready.notify_one();
        }
        true
    }

    /// The next job, sleeping while there is none; `None` once the pool is
    /// closed and drained.
    fn pop(&self) -> Option<Job> {
        let mut state = self.state.lock().ok()?;
        loop {
            if let Some(job) = state.jobs.pop_front() {
                // A backlog: another thread may help.
                let wake = !state.jobs.is_empty() && state.wake_one();
                drop(state);
                if wake {
                    self.ready.notify_one();
                }
                return Some(job);
            }
            if state.closed {
                return None;
            }
            state.idle += 1;
            state = self.ready.wait(state).ok()?;
            state.idle -= 1;
            state.waking = state.waking.saturating_sub(1);
        }
    }

    /// Whether reads wait for a reader thread.
    fn has_waiting(&self) -> bool {
        self.state
            .lock()
            .map(|s| !s.jobs.is_empty())
            .unwrap_or(false)
    }

    fn close(&self) {
        if let Ok(mut state) = self.state.lock() {
            state.closed = true;
        }
        self.ready.notify_all();
    }
}

impl QueueState {
    /// Whether to wake a sleeping thread for the queued jobs: only if none
    /// is already waking (it will take them, or wake the next).
    fn wake_one(&mut self) -> bool {
        if self.idle > self.waking && self.waking == 0 {
            self.waking += 1;
            true
        } else {
            false
        }
    }
}

/// Interrupts a running read if its caller stops waiting for it.
pub(super) struct InterruptOnDrop(Arc<Mutex<Option<InterruptHandle>>>);

impl InterruptOnDrop {
    /// Interrupts whatever `running` holds when dropped.
    pub(super) fn new(running: Arc<Mutex<Option<InterruptHandle>>>) -> Self {
        InterruptOnDrop(running)
    }
}

impl Drop for InterruptOnDrop {
    fn drop(&mut self) {
        if let Ok(slot) = self.0.lock() {
            if let Some(handle) = slot.as_ref() {
                handle.interrupt();
            }
        }
    }
}

impl Drop for ReadPool {
    fn drop(&mut self) {
        // The threads finish what is queued (callers gone: skipped) and exit.
        self.queue.close();
    }
}

impl ReadPool {
    /// Opens `size` read-only connections to the database at `path` (which
    /// the state machine has already created), one per reader thread,
    /// following the state machine's `generation` of the file.
    pub fn open(path: &Path, size: usize, generation: DbGeneration) -> rusqlite::Result<Self> {
        let size = size.max(1);
        let current = generation.current();
        let mut conns = Vec::with_capacity(size);
        for _ in 0..size {
            conns.push(open_read_connection(path)?);
        }
        let queue = Arc::new(JobQueue {
            state: Mutex::new(QueueState {
                jobs: VecDeque::new(),
                idle: 0,
                waking: 0,
                closed: false,
            }),
            ready: Condvar::new(),
        });
        for (i, conn) in conns.into_iter().enumerate() {
            let reader = Reader {
                queue: queue.clone(),
                path: path.to_path_buf(),
                generation: generation.clone(),
                conn: Some((current, conn)),
            };
            let spawned = std::thread::Builder::new()
                .name(format!("resqlite-read-{i}"))
                .spawn(move || reader.run());
            if let Err(e) = spawned {
                queue.close();
                return Err(rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CANTOPEN),
                    Some(format!("cannot start a reader thread: {e}")),
                ));
            }
        }
        Ok(ReadPool {
            queue,
            permits: Arc::new(Semaphore::new(size * QUEUED_PER_THREAD)),
        })
    }

    /// Runs `f` on a reader thread's connection; `f` answers through its
    /// [`Answer`], possibly before it returns (a streamed read answers with
    /// its stream, then goes on producing rows). Also returns the guard
    /// that interrupts `f`'s statement when dropped, for the caller to keep
    /// as long as someone wants its work: if this future is dropped first,
    /// the statement is interrupted then.
    async fn with_connection<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection, Answer<R>) + Send + 'static,
    ) -> Result<(R, InterruptOnDrop), SqlError> {
        let closed = || SqlError::new(sqlstate::INTERNAL_ERROR, "read pool closed");
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| closed())?;
        let running = Arc::new(Mutex::new(None));
        let guard = InterruptOnDrop(running.clone());
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |conn| {
            // Room for the next read as soon as this one leaves the queue.
            drop(permit);
            if tx.is_closed() {
                // The caller went away while the read was queued.
                return;
            }
            let conn = match conn {
                Ok(conn) => conn,
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            if let Ok(mut slot) = running.lock() {
                *slot = Some(conn.get_interrupt_handle());
            }
            f(conn, Answer(tx));
            // Disarm before the connection can serve anyone else.
            if let Ok(mut slot) = running.lock() {
                *slot = None;
            }
        });
        if !self.queue.push(job) {
            return Err(closed());
        }
        let answer = rx.await.map_err(|_| {
            SqlError::new(
                sqlstate::INTERNAL_ERROR,
                "read thread stopped before answering",
            )
        })?;
        Ok((answer?, guard))
    }

    /// Runs a read with its parameters; `command` is its tag's command
    /// word (`SELECT`). A result larger than one batch streams: the reader
    /// thread stays with it until its last row is taken, it is dropped, or
    /// its client stops reading (see [`resqlite_wire::RowStream`]). SQLite
    /// has the last word: a statement it does not call read-only is never
    /// run here.
    pub async fn stream(
        &self,
        sql: String,
        params: Vec<Value>,
        command: &'static str,
    ) -> Result<Reply, SqlError> {
        let queue = Arc::clone(&self.queue);
        let others_wait = move || queue.has_waiting();
        let (reply, guard) = self
            .with_connection(move |conn, answer| {
                read_stream::run(conn, &sql, &params, command, others_wait, answer)
            })
            .await?;
        Ok(match reply {
            Reply::Rows(rows) => Reply::Rows(rows.guard(guard)),
            done => done,
        })
    }

    /// Runs a read and collects its rows, however many: for tests and
    /// tools, never for a client.
    pub async fn query(&self, sql: String, params: Vec<Value>) -> Result<RowSet, SqlError> {
        let outcome = self
            .stream(sql, params, "SELECT")
            .await?
            .collect(usize::MAX)
            .await?;
        Ok(RowSet {
            columns: outcome.columns,
            rows: outcome.rows,
        })
    }

    /// Parameter and result types of a statement, without running it
    /// (see [`describe_on`]).
    pub async fn describe(&self, sql: String) -> Result<Description, SqlError> {
        let (description, _guard) = self
            .with_connection(move |conn, answer| {
                answer.send(describe_on(conn, &sql));
            })
            .await?;
        Ok(description)
    }
}

/// Parameter count and result columns of a statement prepared on `conn`,
/// without running it. Parameters and result columns whose type nothing
/// settles are described as text.
pub(super) fn describe_on(conn: &Connection, sql: &str) -> Result<Description, SqlError> {
    refresh_schema(conn)?;
    let stmt = conn.prepare(sql).map_err(|e| sql_error(&e))?;
    let count = parameter_count(&stmt)?;
    let columns = result_types(conn, sql, &stmt)
        .into_iter()
        .map(|(name, t)| resqlite_wire::Column {
            name,
            pg_type: t.unwrap_or(resqlite_wire::PgType::Text),
        })
        .collect();
    drop(stmt);
    let params = crate::sql::params::infer_param_types(sql, count, |tables, column| {
        super::exec::declared_column_type(conn, tables, column)
    });
    Ok(Description { params, columns })
}

/// Makes `conn` notice a schema another connection changed. SQLite
/// prepares from the schema a connection last loaded and checks it only
/// when a statement steps; a Describe never steps, so without this it
/// announced the columns a table had before `ALTER TABLE … ADD COLUMN`.
fn refresh_schema(conn: &Connection) -> Result<(), SqlError> {
    conn.prepare_cached("SELECT 1 FROM sqlite_schema LIMIT 1")
        .and_then(|mut s| s.raw_query().next().map(|_| ()))
        .map_err(|e| sql_error(&e))
}

/// Where a read's result goes back to its caller; at most once.
pub(super) struct Answer<R>(oneshot::Sender<Result<R, SqlError>>);

impl<R> Answer<R> {
    /// Answers through `tx`.
    pub(super) fn new(tx: oneshot::Sender<Result<R, SqlError>>) -> Self {
        Answer(tx)
    }

    /// Sends the result; false when the caller has gone.
    pub(super) fn send(self, result: Result<R, SqlError>) -> bool {
        self.0.send(result).is_ok()
    }
}

/// One reader thread: its connection, reopened when the file changes.
struct Reader {
    queue: Arc<JobQueue>,
    path: PathBuf,
    generation: DbGeneration,
    /// The connection and the file generation it was opened on; `None`
    /// after a reopen failed (retried at the next read).
    conn: Option<(u64, Connection)>,
}

impl Reader {
    fn run(mut self) {
        while let Some(job) = self.queue.pop() {
            // The file stays in place while the read runs.
            let generation = self.generation.clone();
            let held = generation.hold();
            let current = *held;
            if self.conn.as_ref().is_some_and(|(g, _)| *g != current) {
                // Close the connection to the old file before opening anew.
                self.conn = None;
            }
            if self.conn.is_none() {
                match open_read_connection(&self.path) {
                    Ok(conn) => self.conn = Some((current, conn)),
                    Err(e) => {
                        job(Err(sql_error(&e)));
                        continue;
                    }
                }
            }
            if let Some((_, conn)) = &self.conn {
                job(Ok(conn));
            }
            drop(held);
        }
    }
}

pub(super) fn open_read_connection(path: &Path) -> rusqlite::Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_URI;
    let mut conn = Connection::open_with_flags(path, flags)?;
    // Before query_only: it makes a TEMP view.
    super::pg_types::register(&conn)?;
    conn.pragma_update(None, "query_only", "ON")?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.set_prepared_statement_cache_capacity(256);
    register_version(&conn)?;
    super::pg_functions::register(&conn)?;
    super::txid::register_txid(&conn, Default::default())?;
    super::txid::register_status(&conn)?;
    guard_read_connection(&mut conn)?;
    Ok(conn)
}

/// `SELECT version()` answers like PostgreSQL first (psql, pgjdbc and
/// SQLAlchemy read it), then names ReSQLite and its SQLite.
fn register_version(conn: &Connection) -> rusqlite::Result<()> {
    let text = format!(
        "PostgreSQL {} (ReSQLite {}, SQLite {})",
        crate::PG_VERSION,
        env!("CARGO_PKG_VERSION"),
        rusqlite::version()
    );
    conn.create_scalar_function(
        "version",
        0,
        rusqlite::functions::FunctionFlags::SQLITE_UTF8,
        move |_| Ok(text.clone()),
    )
}
