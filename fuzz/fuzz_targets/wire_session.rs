//! A whole client session on arbitrary bytes: the fuzz input is written to
//! a socket of a real front end (`resqlite_wire::serve`, trust
//! authentication, a trivial executor), the way a client writes it. The
//! connection's state machine (TLS and startup negotiation, simple and
//! extended query, session commands, parameter binding in both formats)
//! must not panic, and must close the connection once the client has sent
//! everything and hung up.

#![no_main]

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use resqlite_wire::{
    Column, Description, Executor, NodeRole, Outcome, PgType, Reply, Session, SqlError,
    TransactionOptions, Value, WireOptions,
};

/// How long the server may take to close a connection the client hung up.
const CLOSE_DEADLINE: Duration = Duration::from_secs(20);

const TYPES: [PgType; 5] = [
    PgType::Int8,
    PgType::Float8,
    PgType::Text,
    PgType::Bytea,
    PgType::Bool,
];

/// Describes every statement: one parameter per `$` (at most 8), typed in
/// turn int8, float8, text, bytea, bool, and one result column per
/// parameter, which echoes it. A statement starting with `ERR` fails.
struct Echo;

fn describe(sql: &str) -> Result<Description, SqlError> {
    if sql.starts_with("ERR") {
        return Err(SqlError::new("42601", "syntax error on purpose"));
    }
    let params: Vec<PgType> = (0..sql.matches('$').count().min(8))
        .map(|i| TYPES[i % TYPES.len()])
        .collect();
    let columns = params
        .iter()
        .enumerate()
        .map(|(i, &pg_type)| Column {
            name: format!("c{i}"),
            pg_type,
        })
        .collect();
    Ok(Description { params, columns })
}

impl Executor for Echo {
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
        _session: &Session,
        sql: &str,
        params: Vec<Value>,
    ) -> Result<Reply, SqlError> {
        let columns = describe(sql)?.columns;
        let mut row = params;
        row.resize(columns.len(), Value::Null);
        let rows = if columns.is_empty() {
            vec![]
        } else {
            vec![row]
        };
        Ok(Reply::Done(Outcome {
            tag: format!("SELECT {}", rows.len()),
            columns,
            rows,
        }))
    }

    fn role(&self) -> NodeRole {
        NodeRole { is_leader: true }
    }

    // Transactions echo like single statements: the session's transaction
    // states are what is fuzzed here, not a store.
    type Transaction = ();

    fn begin(&self, _session: &Session, _options: TransactionOptions) -> Result<(), SqlError> {
        Ok(())
    }

    async fn execute_in(
        &self,
        _txn: &mut (),
        session: &Session,
        sql: &str,
        params: Vec<Value>,
    ) -> Result<Reply, SqlError> {
        self.execute(session, sql, params).await
    }

    async fn describe_in(&self, _txn: &mut (), sql: &str) -> Result<Description, SqlError> {
        describe(sql)
    }

    async fn savepoint(&self, _txn: &mut (), _name: &str) -> Result<(), SqlError> {
        Ok(())
    }

    async fn release(&self, _txn: &mut (), _name: &str) -> Result<(), SqlError> {
        Ok(())
    }

    async fn rollback_to(&self, _txn: &mut (), _name: &str) -> Result<(), SqlError> {
        Ok(())
    }

    async fn commit(&self, _txn: ()) -> Result<(), SqlError> {
        Ok(())
    }
}

/// The server, started once for the whole run on a thread of its own.
fn server() -> SocketAddr {
    static ADDR: OnceLock<SocketAddr> = OnceLock::new();
    *ADDR.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind a port for the fuzzed server");
        let addr = listener.local_addr().expect("the listener's address");
        let opts = WireOptions {
            // Small, so that the fuzzer reaches the size limits.
            max_query_bytes: 4096,
            ..WireOptions::default()
        };
        std::thread::spawn(move || {
            let served = runtime.block_on(resqlite_wire::serve(listener, Arc::new(Echo), opts));
            panic!("the fuzzed server stopped: {served:?}");
        });
        addr
    })
}

fuzz_target!(|data: &[u8]| {
    let addr = server();
    let mut reader = TcpStream::connect(addr).expect("connect to the fuzzed server");
    reader
        .set_read_timeout(Some(Duration::from_millis(500)))
        .expect("set a read timeout");
    let mut writer = reader.try_clone().expect("clone the client socket");
    let input = data.to_vec();
    // Written from another thread, so that neither side can block the
    // other on a full socket buffer. The server may close first.
    let write = std::thread::spawn(move || {
        let _ = writer.write_all(&input);
        let _ = writer.shutdown(Shutdown::Write);
    });
    let deadline = Instant::now() + CLOSE_DEADLINE;
    let mut buf = [0u8; 16 << 10];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break, // reset by the server
        }
        assert!(
            Instant::now() < deadline,
            "the server did not close a connection the client hung up"
        );
    }
    write.join().expect("the writer thread");
});
