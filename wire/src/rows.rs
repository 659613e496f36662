//! Result rows on their way from the thread that computes them to the
//! client, in bounded batches.
//!
//! A read is never collected whole: its producer (a reader thread of the
//! node) hands rows over in batches of at most [`BATCH_BYTES`], and at most
//! [`QUEUED_BATCHES`] wait for the connection, which writes each batch to
//! the socket before taking the next. A client that reads slowly slows its
//! producer down; one that stops reading stops it. So a result costs the
//! server a few hundred KiB however many rows it has.
//!
//! A producer whose queue stays full for its stall limit (see
//! [`row_channel`]) gives up: its thread is needed by other clients more
//! than by one that does not read. The rows it queued are freed and the
//! stream ends with an error, which the client gets if it reads again. When the consumer drops the stream (the
//! statement was cancelled, timed out, or its client left), the producer's
//! next send fails at once and the stream's guard (see
//! [`RowStream::guard`]) stops the work already under way.

use std::any::Any;
use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::executor::{Column, Outcome, SqlError, Value};

/// A batch is handed over once its rows take this many bytes (or at once
/// when one row is larger).
pub const BATCH_BYTES: usize = 256 << 10;

/// Batches waiting for the connection before the producer waits too.
pub const QUEUED_BATCHES: usize = 2;

/// How long a producer waits for room in its queue before it gives up on a
/// client that does not read (see the module documentation).
pub const STALLED_CLIENT_LIMIT: Duration = Duration::from_secs(5);

/// How long it waits instead while other work waits for its thread (see
/// [`RowSender::yield_to`]): clients that do not read must not keep every
/// reader from everyone else, even for [`STALLED_CLIENT_LIMIT`].
pub const CONTENDED_STALL_LIMIT: Duration = Duration::from_millis(250);

/// How often a waiting producer asks whether others wait for its thread.
const CONTENTION_CHECK: Duration = Duration::from_millis(25);

/// What a statement answers: everything at once, or rows as they come.
#[derive(Debug)]
pub enum Reply {
    /// The whole result: a write's, a session command's, a small read's.
    Done(Outcome),
    /// Rows in batches, then the tag.
    Rows(RowStream),
}

impl From<Outcome> for Reply {
    fn from(outcome: Outcome) -> Self {
        Reply::Done(outcome)
    }
}

impl Reply {
    /// The whole result in memory, for front ends that answer in one
    /// message (the ClientCommand RPC). Refused with 54000 once the rows
    /// take more than `max_bytes`; the work stops then.
    pub async fn collect(self, max_bytes: usize) -> Result<Outcome, SqlError> {
        let mut stream = match self {
            Reply::Done(outcome) => return Ok(outcome),
            Reply::Rows(stream) => stream,
        };
        let columns = std::mem::take(&mut stream.columns);
        let mut rows = Vec::new();
        let mut bytes = 0usize;
        loop {
            match stream.next().await? {
                Chunk::Rows(batch) => {
                    bytes = bytes.saturating_add(batch.iter().map(|r| row_bytes(r)).sum());
                    if bytes > max_bytes {
                        return Err(SqlError::new(
                            "54000",
                            format!(
                                "the result is larger than {max_bytes} bytes, the most this \
                                 interface returns at once; use the PostgreSQL protocol, which \
                                 streams rows, or add a LIMIT"
                            ),
                        ));
                    }
                    rows.extend(batch);
                }
                Chunk::Done(tag) => return Ok(Outcome { tag, columns, rows }),
            }
        }
    }
}

/// The next part of a result.
#[derive(Debug, PartialEq)]
pub enum Chunk {
    /// Some rows, in order.
    Rows(Vec<Vec<Value>>),
    /// No more rows: the CommandComplete tag (`SELECT 1000000`).
    Done(String),
}

/// The receiving end of a result: its columns, then its rows in batches.
/// Dropping it stops the producer (see the module documentation).
pub struct RowStream {
    columns: Vec<Column>,
    source: Source,
    /// Dropped with the stream, before the channel is marked abandoned.
    guard: Option<Box<dyn Any + Send + Sync>>,
}

enum Source {
    /// Rows already here (a result converted from an [`Outcome`]).
    Ready {
        rows: Option<Vec<Vec<Value>>>,
        tag: Option<String>,
    },
    /// Rows still being produced.
    Channel(Arc<Channel>),
}

impl std::fmt::Debug for RowStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RowStream")
            .field("columns", &self.columns)
            .field("live", &self.is_live())
            .finish_non_exhaustive()
    }
}

impl From<Outcome> for RowStream {
    fn from(outcome: Outcome) -> Self {
        RowStream {
            columns: outcome.columns,
            source: Source::Ready {
                rows: Some(outcome.rows),
                tag: Some(outcome.tag),
            },
            guard: None,
        }
    }
}

impl From<Reply> for RowStream {
    fn from(reply: Reply) -> Self {
        match reply {
            Reply::Done(outcome) => outcome.into(),
            Reply::Rows(stream) => stream,
        }
    }
}

impl RowStream {
    /// The result columns, as RowDescription announces them.
    pub fn columns(&self) -> &[Column] {
        &self.columns
    }

    /// Whether rows are still being produced (not all in memory already):
    /// the connection then flushes each batch as it goes out.
    pub fn is_live(&self) -> bool {
        matches!(self.source, Source::Channel(_))
    }

    /// Keeps `guard` until the stream is dropped: the producer's way to
    /// stop work nobody waits for any more (interrupting SQLite).
    pub fn guard(mut self, guard: impl Any + Send + Sync) -> Self {
        self.guard = Some(Box::new(guard));
        self
    }

    /// The next batch of rows, or the end. An error ends the stream.
    pub async fn next(&mut self) -> Result<Chunk, SqlError> {
        match &mut self.source {
            Source::Ready { rows, tag } => {
                if let Some(rows) = rows.take().filter(|r| !r.is_empty()) {
                    return Ok(Chunk::Rows(rows));
                }
                match tag.take() {
                    Some(tag) => Ok(Chunk::Done(tag)),
                    None => Err(finished()),
                }
            }
            Source::Channel(channel) => channel.receive().await,
        }
    }
}

impl Drop for RowStream {
    fn drop(&mut self) {
        // The guard first: the producer's work is stopped before its send
        // fails, so it never starts on another row for nobody.
        self.guard.take();
        if let Source::Channel(channel) = &self.source {
            channel.abandon();
        }
    }
}

fn finished() -> SqlError {
    SqlError::new("XX000", "internal error: the result was read past its end")
}

/// Why a producer stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// The stream was dropped: nobody reads the rest.
    Abandoned,
    /// The queue stayed full for the stall limit: the client does not read.
    Stalled,
}

impl Stopped {
    /// The error the client gets where its rows stop, if it reads again.
    pub fn error(self, limit: Duration) -> SqlError {
        match self {
            Stopped::Abandoned => SqlError::new("57014", "canceling statement: nobody reads it"),
            Stopped::Stalled => SqlError::new(
                "57014",
                format!(
                    "canceling statement: the client read none of its rows for {} s, and the \
                     read connection it held is needed by others; read results as they come \
                     (or fetch them with a LIMIT)",
                    limit.as_secs_f64()
                ),
            ),
        }
    }
}

/// The rows of one statement, batched, as they are produced.
#[derive(Debug, Default)]
pub struct RowBatch {
    rows: Vec<Vec<Value>>,
    bytes: usize,
}

impl RowBatch {
    /// Adds a row.
    pub fn push(&mut self, row: Vec<Value>) {
        self.bytes = self.bytes.saturating_add(row_bytes(&row));
        self.rows.push(row);
    }

    /// Whether the batch should be handed over now.
    pub fn is_full(&self) -> bool {
        self.bytes >= BATCH_BYTES
    }

    /// The rows so far.
    pub fn rows(&self) -> &[Vec<Value>] {
        &self.rows
    }

    /// How many rows.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether it holds no row.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The rows, in order.
    pub fn into_rows(self) -> Vec<Vec<Value>> {
        self.rows
    }
}

/// Memory a row takes, close enough to bound batches by.
fn row_bytes(row: &[Value]) -> usize {
    let heap: usize = row
        .iter()
        .map(|v| match v {
            Value::Text(s) => s.len(),
            Value::Blob(b) => b.len(),
            Value::Null | Value::Integer(_) | Value::Real(_) => 0,
        })
        .sum();
    std::mem::size_of::<Vec<Value>>() + std::mem::size_of_val(row) + heap
}

/// A stream of rows with `columns` and its producer's end. The producer
/// waits at most `stall_limit` for room before it gives up (the node uses
/// [`STALLED_CLIENT_LIMIT`]).
pub fn row_channel(columns: Vec<Column>, stall_limit: Duration) -> (RowSender, RowStream) {
    let channel = Arc::new(Channel {
        state: Mutex::new(ChannelState::default()),
        room: Condvar::new(),
        ready: Notify::new(),
    });
    let sender = RowSender {
        channel: Arc::clone(&channel),
        batch: RowBatch::default(),
        stall_limit,
        contended: None,
    };
    let stream = RowStream {
        columns,
        source: Source::Channel(channel),
        guard: None,
    };
    (sender, stream)
}

/// The producing end of a [`RowStream`], for a thread that may block.
pub struct RowSender {
    channel: Arc<Channel>,
    batch: RowBatch,
    stall_limit: Duration,
    contended: Option<Contended>,
}

/// The shorter stall limit that applies while others wait.
struct Contended {
    others_wait: Box<dyn Fn() -> bool + Send>,
    limit: Duration,
}

impl RowSender {
    /// Gives up on a client that does not read after `limit` instead of
    /// the stall limit while `others_wait()` says other work waits for
    /// this producer's thread (the node: reads queued for a reader).
    pub fn yield_to(
        mut self,
        others_wait: impl Fn() -> bool + Send + 'static,
        limit: Duration,
    ) -> Self {
        self.contended = Some(Contended {
            others_wait: Box::new(others_wait),
            limit,
        });
        self
    }

    /// Adds a row; hands the batch over when it is full, waiting for room
    /// (this blocks the thread, never a runtime worker's task: call it
    /// from a thread of its own).
    pub fn push(&mut self, row: Vec<Value>) -> Result<(), Stopped> {
        self.batch.push(row);
        if self.batch.is_full() {
            let batch = std::mem::take(&mut self.batch);
            self.channel
                .send(batch.into_rows(), self.stall_limit, self.contended.as_ref())?;
        }
        Ok(())
    }

    /// Ends the stream: the rows still batched, then `end` (the tag, or
    /// the error the statement stopped with).
    pub fn finish(mut self, end: Result<String, SqlError>) {
        let batch = std::mem::take(&mut self.batch);
        let end = match self.send_rest(batch) {
            Ok(()) => end,
            Err(stopped) => Err(stopped.error(self.stall_limit)),
        };
        self.channel.end(end);
    }

    /// Ends the stream with the error for `stopped`, after the rows
    /// already queued.
    pub fn stop(self, stopped: Stopped) {
        let error = stopped.error(self.stall_limit);
        self.channel.end(Err(error));
    }

    fn send_rest(&mut self, batch: RowBatch) -> Result<(), Stopped> {
        if batch.is_empty() {
            return Ok(());
        }
        self.channel
            .send(batch.into_rows(), self.stall_limit, self.contended.as_ref())
    }
}

impl Drop for RowSender {
    fn drop(&mut self) {
        // A producer that panicked or forgot to finish: the consumer must
        // not wait forever.
        self.channel.end(Err(SqlError::new(
            "XX000",
            "internal error: the statement stopped without finishing its result",
        )));
    }
}

struct Channel {
    state: Mutex<ChannelState>,
    /// The producer waits here for room.
    room: Condvar,
    /// The consumer waits here for a batch or the end.
    ready: Notify,
}

#[derive(Default)]
struct ChannelState {
    batches: VecDeque<Vec<Vec<Value>>>,
    /// Set once; later ends are ignored.
    end: Option<Result<String, SqlError>>,
    abandoned: bool,
}

impl Channel {
    fn lock(&self) -> MutexGuard<'_, ChannelState> {
        // The state stays consistent across a panic: every change is one
        // assignment or push.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn send(
        &self,
        rows: Vec<Vec<Value>>,
        stall_limit: Duration,
        contended: Option<&Contended>,
    ) -> Result<(), Stopped> {
        let start = Instant::now();
        let mut state = self.lock();
        loop {
            if state.abandoned {
                return Err(Stopped::Abandoned);
            }
            if state.batches.len() < QUEUED_BATCHES {
                break;
            }
            let waited = start.elapsed();
            let yields = contended.is_some_and(|c| waited >= c.limit && (c.others_wait)());
            if waited >= stall_limit || yields {
                // A client that does not read may never: free its rows now
                // rather than when it leaves. It gets the error instead.
                state.batches.clear();
                return Err(Stopped::Stalled);
            }
            let mut wait = stall_limit - waited;
            if contended.is_some() {
                wait = wait.min(CONTENTION_CHECK);
            }
            state = self
                .room
                .wait_timeout(state, wait)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        state.batches.push_back(rows);
        drop(state);
        self.ready.notify_one();
        Ok(())
    }

    fn end(&self, end: Result<String, SqlError>) {
        let mut state = self.lock();
        if state.end.is_none() {
            state.end = Some(end);
        }
        drop(state);
        self.ready.notify_one();
    }

    fn abandon(&self) {
        let mut state = self.lock();
        state.abandoned = true;
        // What is queued will never be read: free it now.
        state.batches.clear();
        drop(state);
        self.room.notify_all();
    }

    async fn receive(&self) -> Result<Chunk, SqlError> {
        loop {
            {
                let mut state = self.lock();
                if let Some(rows) = state.batches.pop_front() {
                    drop(state);
                    self.room.notify_one();
                    return Ok(Chunk::Rows(rows));
                }
                if let Some(end) = state.end.take() {
                    // A second read past the end gets an error, not a hang.
                    state.end = Some(Err(finished()));
                    return end.map(Chunk::Done);
                }
            }
            // A notification sent between the unlock and here is kept as
            // a permit (one consumer), so none is lost.
            self.ready.notified().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executor::PgType;

    fn columns() -> Vec<Column> {
        vec![Column {
            name: "v".into(),
            pg_type: PgType::Text,
        }]
    }

    fn big_row() -> Vec<Value> {
        vec![Value::Text("x".repeat(BATCH_BYTES))]
    }

    #[tokio::test]
    async fn rows_arrive_in_order_then_the_tag() {
        let (mut tx, mut rx) = row_channel(columns(), STALLED_CLIENT_LIMIT);
        let producer = std::thread::spawn(move || {
            for i in 0..10_000 {
                tx.push(vec![Value::Integer(i)]).unwrap();
            }
            tx.finish(Ok("SELECT 10000".into()));
        });
        let mut seen = 0;
        loop {
            match rx.next().await.unwrap() {
                Chunk::Rows(rows) => {
                    for row in rows {
                        assert_eq!(row, vec![Value::Integer(seen)]);
                        seen += 1;
                    }
                }
                Chunk::Done(tag) => {
                    assert_eq!(tag, "SELECT 10000");
                    break;
                }
            }
        }
        assert_eq!(seen, 10_000);
        producer.join().unwrap();
    }

    /// The producer never runs more than the queue ahead of the consumer:
    /// with nobody reading, its third full batch waits.
    #[test]
    fn a_full_queue_holds_the_producer_back_then_stalls_it() {
        let (mut tx, rx) = row_channel(columns(), Duration::from_millis(200));
        for _ in 0..QUEUED_BATCHES {
            tx.push(big_row()).unwrap();
        }
        assert_eq!(tx.push(big_row()), Err(Stopped::Stalled));
        tx.stop(Stopped::Stalled);
        // The rows it did not read were freed; if it comes back, it gets
        // the error.
        let mut rx = rx;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime.block_on(async {
            let error = rx.next().await.unwrap_err();
            assert_eq!(error.sqlstate, "57014");
            assert!(error.message.contains("read none of its rows"), "{error:?}");
        });
    }

    /// Dropping the stream runs its guard and releases a waiting producer
    /// at once, without its stall limit.
    #[test]
    fn dropping_the_stream_stops_the_producer() {
        struct Flag(Arc<std::sync::atomic::AtomicBool>);
        impl Drop for Flag {
            fn drop(&mut self) {
                self.0.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        }
        let interrupted = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (mut tx, rx) = row_channel(columns(), Duration::from_secs(3600));
        let rx = rx.guard(Flag(Arc::clone(&interrupted)));
        let producer = std::thread::spawn(move || loop {
            if let Err(stopped) = tx.push(big_row()) {
                return stopped;
            }
        });
        std::thread::sleep(Duration::from_millis(50));
        drop(rx);
        assert_eq!(producer.join().unwrap(), Stopped::Abandoned);
        assert!(interrupted.load(std::sync::atomic::Ordering::SeqCst));
    }

    /// While others wait for its thread, a producer gives up on a client
    /// that does not read after the short limit, not the long one.
    #[test]
    fn a_producer_yields_sooner_when_others_wait() {
        let others_wait = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = Arc::clone(&others_wait);
        let (tx, _rx) = row_channel(columns(), Duration::from_secs(3600));
        let mut tx = tx.yield_to(
            move || flag.load(std::sync::atomic::Ordering::SeqCst),
            Duration::from_millis(50),
        );
        for _ in 0..QUEUED_BATCHES {
            tx.push(big_row()).unwrap();
        }
        let producer = std::thread::spawn(move || tx.push(big_row()));
        std::thread::sleep(Duration::from_millis(200));
        assert!(!producer.is_finished(), "nobody waits: it keeps waiting");
        others_wait.store(true, std::sync::atomic::Ordering::SeqCst);
        assert_eq!(producer.join().unwrap(), Err(Stopped::Stalled));
    }

    #[tokio::test]
    async fn collect_refuses_results_over_its_bound() {
        let (mut tx, rx) = row_channel(columns(), STALLED_CLIENT_LIMIT);
        let producer = std::thread::spawn(move || loop {
            if tx.push(big_row()).is_err() {
                return;
            }
        });
        let error = Reply::Rows(rx).collect(4 * BATCH_BYTES).await.unwrap_err();
        assert_eq!(error.sqlstate, "54000");
        producer.join().unwrap();
    }

    #[tokio::test]
    async fn an_outcome_is_one_chunk_and_its_tag() {
        let mut stream = RowStream::from(Outcome {
            tag: "SELECT 1".into(),
            columns: columns(),
            rows: vec![vec![Value::Integer(1)]],
        });
        assert!(!stream.is_live());
        assert_eq!(
            stream.next().await.unwrap(),
            Chunk::Rows(vec![vec![Value::Integer(1)]])
        );
        assert_eq!(stream.next().await.unwrap(), Chunk::Done("SELECT 1".into()));
        assert!(stream.next().await.is_err());
    }
}
