//! A scripted in-memory executor: one table `t(i int8, f float8, s text,
//! b bytea, flag bool)` in a Vec, a few statements that fail, sleep or
//! panic on purpose, and two that stream their rows from a thread of their
//! own, as the node's reader threads do (`SELECT many`: [`MANY`] rows;
//! `SELECT endless`: rows until nobody takes them).
//!
//! Its transactions work on a copy of the table, which `commit` puts in
//! place: a test sees a transaction's writes only once it committed.
//! Savepoints are copies too. `CREATE TABLE u` inside a transaction makes
//! `SELECT * FROM u` known there (and everywhere once committed).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use resqlite_wire::{
    row_channel, Column, Description, Executor, NodeRole, Outcome, PgType, Reply, Session,
    SqlError, Stopped, TransactionOptions, Value, WireOptions, STALLED_CLIENT_LIMIT,
};
use tokio::net::TcpListener;
use tokio::sync::Notify;

pub const INSERT: &str = "INSERT INTO t VALUES ($1, $2, $3, $4, $5)";

/// Rows of `SELECT many`: several batches.
pub const MANY: i64 = 100_000;

/// What the streaming statements' producer threads did.
#[derive(Default)]
pub struct Producers {
    /// Producer threads still running.
    pub running: AtomicUsize,
    /// Streams dropped by the front end (the node interrupts SQLite then).
    pub interrupted: AtomicUsize,
    /// Producers that gave up on a client that did not read.
    pub stalled: AtomicUsize,
}

/// Counts a stream's guard dropped: the front end let go of its rows.
struct Interrupt(Arc<Producers>);

impl Drop for Interrupt {
    fn drop(&mut self) {
        self.0.interrupted.fetch_add(1, Ordering::SeqCst);
    }
}

#[derive(Default)]
pub struct Fake {
    pub follower: AtomicBool,
    pub panic_in_role: AtomicBool,
    pub rows: Mutex<Vec<Vec<Value>>>,
    /// Every statement executed, with the session it ran in.
    pub log: Mutex<Vec<(String, Session)>>,
    /// `SLEEP` has started.
    pub started: Notify,
    /// Lets a `SLEEP` finish.
    pub release: Notify,
    /// `SLEEP`s dropped before they finished (cancelled).
    pub dropped: AtomicUsize,
    /// `SLEEP`s that ran to their end.
    pub finished: AtomicUsize,
    pub producers: Arc<Producers>,
    /// The producers' stall limit in milliseconds; 0: the node's.
    pub stall_ms: AtomicU64,
    /// What happened to transactions.
    pub txns: Arc<Txns>,
    /// Makes the next commits fail with 40001.
    pub fail_commit: AtomicBool,
    /// `u` exists (a transaction that created it committed).
    pub u_exists: AtomicBool,
}

/// What happened to the fake's transactions.
#[derive(Default)]
pub struct Txns {
    /// Every `begin`, with its options and session, in order.
    pub begun: Mutex<Vec<(TransactionOptions, Session)>>,
    pub committed: AtomicUsize,
    /// Passed to `rollback`.
    pub rolled_back: AtomicUsize,
    /// Dropped without `commit` or `rollback` (the connection went away).
    pub dropped: AtomicUsize,
}

/// A transaction: a private copy of the table.
pub struct FakeTxn {
    rows: Vec<Vec<Value>>,
    u_created: bool,
    read_only: bool,
    savepoints: Vec<(String, Vec<Vec<Value>>)>,
    txns: Arc<Txns>,
    /// Ended by `commit` or `rollback`.
    ended: bool,
}

impl Drop for FakeTxn {
    fn drop(&mut self) {
        if !self.ended {
            self.txns.dropped.fetch_add(1, Ordering::SeqCst);
        }
    }
}

fn col(name: &str, pg_type: PgType) -> Column {
    Column {
        name: name.into(),
        pg_type,
    }
}

fn table_columns() -> Vec<Column> {
    vec![
        col("i", PgType::Int8),
        col("f", PgType::Float8),
        col("s", PgType::Text),
        col("b", PgType::Bytea),
        col("flag", PgType::Bool),
    ]
}

fn syntax_error(sql: &str) -> SqlError {
    SqlError::new("42601", format!("syntax error near \"{sql}\""))
}

/// A statement as the script knows it: no trailing `;` (pgbench sends one).
fn normal(sql: &str) -> &str {
    sql.trim().trim_end_matches(';').trim_end()
}

fn describe(sql: &str, u_exists: bool) -> Result<Description, SqlError> {
    let sql = normal(sql);
    let none = |columns| {
        Ok(Description {
            params: vec![],
            columns,
        })
    };
    match sql {
        INSERT => Ok(Description {
            params: vec![
                PgType::Int8,
                PgType::Float8,
                PgType::Text,
                PgType::Bytea,
                PgType::Bool,
            ],
            columns: vec![],
        }),
        "INSERT INTO t DEFAULT VALUES" | "FAIL" | "SLEEP" | "PANIC" | "CREATE TABLE u" => {
            none(vec![])
        }
        "SELECT * FROM u" if u_exists => none(vec![col("x", PgType::Int8)]),
        "SELECT * FROM t" => none(table_columns()),
        "SELECT count(*) FROM t" => none(vec![col("count", PgType::Int8)]),
        "SELECT 1" => none(vec![col("?column?", PgType::Int8)]),
        "SELECT weak" => none(vec![col("weak", PgType::Bool)]),
        "SELECT many" | "SELECT endless" => none(vec![col("n", PgType::Int8)]),
        "SELECT mixed" => none(vec![col("n", PgType::Int8)]),
        other => Err(syntax_error(other)),
    }
}

fn savepoint_index(txn: &FakeTxn, name: &str) -> Result<usize, SqlError> {
    txn.savepoints
        .iter()
        .rposition(|(n, _)| n == name)
        .ok_or_else(|| SqlError::new("3B001", format!("savepoint \"{name}\" does not exist")))
}

/// Counts a `SLEEP` as dropped unless it reached its end.
struct SleepGuard<'a> {
    fake: &'a Fake,
    done: bool,
}

impl Drop for SleepGuard<'_> {
    fn drop(&mut self) {
        let counter = if self.done {
            &self.fake.finished
        } else {
            &self.fake.dropped
        };
        counter.fetch_add(1, Ordering::SeqCst);
    }
}

impl Executor for Fake {
    fn split(&self, sql: &str) -> Result<Vec<String>, SqlError> {
        Ok(sql
            .split(';')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect())
    }

    async fn describe(&self, sql: &str) -> Result<Description, SqlError> {
        describe(sql, self.u_exists.load(Ordering::SeqCst))
    }

    async fn execute(
        &self,
        session: &Session,
        sql: &str,
        params: Vec<Value>,
    ) -> Result<Reply, SqlError> {
        match normal(sql) {
            "SELECT many" => Ok(self.stream(Some(MANY))),
            "SELECT endless" => Ok(self.stream(None)),
            _ => self.run(None, session, sql, params).await.map(Reply::from),
        }
    }

    type Transaction = FakeTxn;

    fn begin(&self, session: &Session, options: TransactionOptions) -> Result<FakeTxn, SqlError> {
        self.txns
            .begun
            .lock()
            .unwrap()
            .push((options.clone(), session.clone()));
        Ok(FakeTxn {
            rows: self.rows.lock().unwrap().clone(),
            u_created: false,
            read_only: options.read_only,
            savepoints: Vec::new(),
            txns: Arc::clone(&self.txns),
            ended: false,
        })
    }

    async fn execute_in(
        &self,
        txn: &mut FakeTxn,
        session: &Session,
        sql: &str,
        params: Vec<Value>,
    ) -> Result<Reply, SqlError> {
        self.run(Some(txn), session, sql, params)
            .await
            .map(Reply::from)
    }

    async fn describe_in(&self, txn: &mut FakeTxn, sql: &str) -> Result<Description, SqlError> {
        describe(sql, txn.u_created || self.u_exists.load(Ordering::SeqCst))
    }

    async fn savepoint(&self, txn: &mut FakeTxn, name: &str) -> Result<(), SqlError> {
        txn.savepoints.push((name.to_string(), txn.rows.clone()));
        Ok(())
    }

    async fn release(&self, txn: &mut FakeTxn, name: &str) -> Result<(), SqlError> {
        let at = savepoint_index(txn, name)?;
        txn.savepoints.truncate(at);
        Ok(())
    }

    async fn rollback_to(&self, txn: &mut FakeTxn, name: &str) -> Result<(), SqlError> {
        let at = savepoint_index(txn, name)?;
        txn.savepoints.truncate(at + 1);
        txn.rows = txn.savepoints[at].1.clone();
        Ok(())
    }

    async fn commit(&self, mut txn: FakeTxn) -> Result<(), SqlError> {
        txn.ended = true;
        if self.fail_commit.load(Ordering::SeqCst) {
            txn.txns.rolled_back.fetch_add(1, Ordering::SeqCst);
            return Err(SqlError::new(
                "40001",
                "could not serialize access: the transaction was rolled back; retry it",
            ));
        }
        *self.rows.lock().unwrap() = std::mem::take(&mut txn.rows);
        if txn.u_created {
            self.u_exists.store(true, Ordering::SeqCst);
        }
        txn.txns.committed.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn rollback(&self, mut txn: FakeTxn) {
        txn.ended = true;
        txn.txns.rolled_back.fetch_add(1, Ordering::SeqCst);
    }

    fn role(&self) -> NodeRole {
        if self.panic_in_role.load(Ordering::SeqCst) {
            panic!("the fake role panics on purpose");
        }
        NodeRole {
            is_leader: !self.follower.load(Ordering::SeqCst),
        }
    }
}

impl Fake {
    /// Rows 0, 1, 2 … (`count` of them, or until nobody takes them) from a
    /// thread of their own.
    fn stream(&self, count: Option<i64>) -> Reply {
        let stall = match self.stall_ms.load(Ordering::SeqCst) {
            0 => STALLED_CLIENT_LIMIT,
            ms => Duration::from_millis(ms),
        };
        let (mut tx, rows) = row_channel(vec![col("n", PgType::Int8)], stall);
        let producers = Arc::clone(&self.producers);
        producers.running.fetch_add(1, Ordering::SeqCst);
        std::thread::spawn(move || {
            let mut n = 0;
            let end = loop {
                if count == Some(n) {
                    break Ok(format!("SELECT {n}"));
                }
                if let Err(stopped) = tx.push(vec![Value::Integer(n)]) {
                    if stopped == Stopped::Stalled {
                        producers.stalled.fetch_add(1, Ordering::SeqCst);
                    }
                    break Err(stopped);
                }
                n += 1;
            };
            match end {
                Ok(tag) => tx.finish(Ok(tag)),
                Err(stopped) => tx.stop(stopped),
            }
            producers.running.fetch_sub(1, Ordering::SeqCst);
        });
        Reply::Rows(rows.guard(Interrupt(Arc::clone(&self.producers))))
    }

    /// Applies `change` to the table: the transaction's copy, or the
    /// shared one.
    fn with_rows<R>(
        &self,
        txn: Option<&mut FakeTxn>,
        change: impl FnOnce(&mut Vec<Vec<Value>>) -> R,
    ) -> R {
        match txn {
            Some(txn) => change(&mut txn.rows),
            None => change(&mut self.rows.lock().unwrap()),
        }
    }

    async fn run(
        &self,
        mut txn: Option<&mut FakeTxn>,
        session: &Session,
        sql: &str,
        params: Vec<Value>,
    ) -> Result<Outcome, SqlError> {
        self.log
            .lock()
            .unwrap()
            .push((sql.to_string(), session.clone()));
        let u_exists =
            self.u_exists.load(Ordering::SeqCst) || txn.as_ref().is_some_and(|t| t.u_created);
        let columns = describe(sql, u_exists)?.columns;
        let sql = normal(sql);
        let done = |tag: &str, rows: Vec<Vec<Value>>| {
            Ok(Outcome {
                tag: tag.to_string(),
                columns: columns.clone(),
                rows,
            })
        };
        let writes = sql.starts_with("INSERT") || sql.starts_with("CREATE");
        if writes && txn.as_ref().is_some_and(|t| t.read_only) {
            return Err(SqlError::new(
                "25006",
                "cannot execute a write in a read-only transaction",
            ));
        }
        match sql {
            INSERT => {
                self.with_rows(txn, |rows| rows.push(params));
                done("INSERT 0 1", vec![])
            }
            "CREATE TABLE u" => match txn.as_deref_mut() {
                Some(txn) => {
                    txn.u_created = true;
                    done("CREATE TABLE", vec![])
                }
                None => Err(SqlError::new(
                    "0A000",
                    "the fake creates u in transactions only",
                )),
            },
            "SELECT * FROM u" => done("SELECT 0", vec![]),
            "INSERT INTO t DEFAULT VALUES" => {
                self.with_rows(txn, |rows| {
                    rows.push(vec![
                        Value::Integer(1),
                        Value::Real(1.5),
                        Value::Text("x".into()),
                        Value::Blob(vec![0, 255]),
                        Value::Integer(1),
                    ])
                });
                done("INSERT 0 1", vec![])
            }
            "SELECT * FROM t" => {
                let rows = self.with_rows(txn, |rows| rows.clone());
                done(&format!("SELECT {}", rows.len()), rows)
            }
            "SELECT count(*) FROM t" => {
                let n = self.with_rows(txn, |rows| rows.len()) as i64;
                done("SELECT 1", vec![vec![Value::Integer(n)]])
            }
            "SELECT 1" => done("SELECT 1", vec![vec![Value::Integer(1)]]),
            "SELECT weak" => done(
                "SELECT 1",
                vec![vec![Value::Integer(session.weak_reads.into())]],
            ),
            "SELECT mixed" => done("SELECT 1", vec![vec![Value::Text("abc".into())]]),
            "FAIL" => {
                let mut e = SqlError::new(
                    "23505",
                    "duplicate key value violates unique constraint \"t_pkey\"",
                );
                e.detail = Some("Key (i)=(1) already exists.".into());
                Err(e)
            }
            "SLEEP" => {
                let mut guard = SleepGuard {
                    fake: self,
                    done: false,
                };
                self.started.notify_one();
                self.release.notified().await;
                guard.done = true;
                done("SLEEP", vec![])
            }
            "PANIC" => panic!("the fake executor panics on purpose"),
            other => Err(syntax_error(other)),
        }
    }
}

/// A server on an OS-chosen port, stopped with the test's runtime.
pub async fn start(fake: Arc<Fake>, opts: WireOptions) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(resqlite_wire::serve(listener, fake, opts));
    addr
}

/// A fresh fake and a server on it with default options.
pub async fn server() -> (Arc<Fake>, SocketAddr) {
    let fake = Arc::new(Fake::default());
    let addr = start(Arc::clone(&fake), WireOptions::default()).await;
    (fake, addr)
}

/// A tokio-postgres client, its connection driven on a task.
pub async fn connect(addr: SocketAddr) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(
        &format!("host=127.0.0.1 port={} user=tester", addr.port()),
        tokio_postgres::NoTls,
    )
    .await
    .expect("connect");
    tokio::spawn(connection);
    client
}
