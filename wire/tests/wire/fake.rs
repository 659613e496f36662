//! A scripted in-memory executor: one table `t(i int8, f float8, s text,
//! b bytea, flag bool)` in a Vec, and a few statements that fail, sleep or
//! panic on purpose.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use resqlite_wire::{
    Column, Description, Executor, NodeRole, Outcome, PgType, Session, SqlError, Value, WireOptions,
};
use tokio::net::TcpListener;
use tokio::sync::Notify;

pub const INSERT: &str = "INSERT INTO t VALUES ($1, $2, $3, $4, $5)";

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

    fn role(&self) -> NodeRole {
        if self.panic_in_role.load(Ordering::SeqCst) {
            panic!("the fake role panics on purpose");
        }
        NodeRole {
            is_leader: !self.follower.load(Ordering::SeqCst),
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
