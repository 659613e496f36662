//! A scripted in-memory executor: one table `t(i int8, f float8, s text,
//! b bytea, flag bool)` in a Vec, a few statements that fail, sleep or
//! panic on purpose, and two that stream their rows from a thread of their
//! own, as the node's reader threads do (`SELECT many`: [`MANY`] rows;
//! `SELECT endless`: rows until nobody takes them).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use resqlite_wire::{
    row_channel, Column, Description, Executor, NodeRole, Outcome, PgType, Reply, Session,
    SqlError, Stopped, Value, WireOptions, STALLED_CLIENT_LIMIT,
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

fn describe(sql: &str) -> Result<Description, SqlError> {
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
        "INSERT INTO t DEFAULT VALUES" | "FAIL" | "SLEEP" | "PANIC" | "BEGIN" | "COMMIT" => {
            none(vec![])
        }
        "SELECT * FROM t" => none(table_columns()),
        "SELECT count(*) FROM t" => none(vec![col("count", PgType::Int8)]),
        "SELECT 1" => none(vec![col("?column?", PgType::Int8)]),
        "SELECT weak" => none(vec![col("weak", PgType::Bool)]),
        "SELECT many" | "SELECT endless" => none(vec![col("n", PgType::Int8)]),
        "SELECT mixed" => none(vec![col("n", PgType::Int8)]),
        other => Err(syntax_error(other)),
    }
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
        describe(sql)
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
            _ => self.run(session, sql, params).await.map(Reply::from),
        }
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

    async fn run(
        &self,
        session: &Session,
        sql: &str,
        params: Vec<Value>,
    ) -> Result<Outcome, SqlError> {
        self.log
            .lock()
            .unwrap()
            .push((sql.to_string(), session.clone()));
        let columns = describe(sql)?.columns;
        let sql = normal(sql);
        let done = |tag: &str, rows: Vec<Vec<Value>>| {
            Ok(Outcome {
                tag: tag.to_string(),
                columns: columns.clone(),
                rows,
            })
        };
        match sql {
            INSERT => {
                self.rows.lock().unwrap().push(params);
                done("INSERT 0 1", vec![])
            }
            "INSERT INTO t DEFAULT VALUES" => {
                self.rows.lock().unwrap().push(vec![
                    Value::Integer(1),
                    Value::Real(1.5),
                    Value::Text("x".into()),
                    Value::Blob(vec![0, 255]),
                    Value::Integer(1),
                ]);
                done("INSERT 0 1", vec![])
            }
            "SELECT * FROM t" => {
                let rows = self.rows.lock().unwrap().clone();
                done(&format!("SELECT {}", rows.len()), rows)
            }
            "SELECT count(*) FROM t" => {
                let n = self.rows.lock().unwrap().len() as i64;
                done("SELECT 1", vec![vec![Value::Integer(n)]])
            }
            "SELECT 1" => done("SELECT 1", vec![vec![Value::Integer(1)]]),
            "SELECT weak" => done(
                "SELECT 1",
                vec![vec![Value::Integer(session.weak_reads.into())]],
            ),
            "SELECT mixed" => done("SELECT 1", vec![vec![Value::Text("abc".into())]]),
            "BEGIN" => done("BEGIN", vec![]),
            "COMMIT" => done("COMMIT", vec![]),
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
