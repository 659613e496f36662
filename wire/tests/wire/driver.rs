//! The front end as tokio-postgres sees it: simple and extended query,
//! binary results, errors, session commands, cancel.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio_postgres::error::SqlState;
use tokio_postgres::types::Type;
use tokio_postgres::{NoTls, SimpleQueryMessage};

use crate::fake::{connect, server, INSERT};
use crate::protocol::{bind, execute, parse, sync};
use crate::raw::{kinds, sqlstate, Raw};
use resqlite_wire::Value;

fn db_code(e: &tokio_postgres::Error) -> SqlState {
    e.code()
        .unwrap_or_else(|| panic!("not a database error: {e:?}"))
        .clone()
}

/// The values of the rows of a simple query, as text.
fn simple_rows(messages: &[SimpleQueryMessage]) -> Vec<Vec<Option<String>>> {
    messages
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(row) => Some(
                (0..row.len())
                    .map(|i| row.get(i).map(String::from))
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}

fn command_counts(messages: &[SimpleQueryMessage]) -> Vec<u64> {
    messages
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::CommandComplete(n) => Some(*n),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn simple_query_runs_statements_in_order_and_stops_at_the_first_error() {
    let (fake, addr) = server().await;
    let client = connect(addr).await;

    let messages = client
        .simple_query("INSERT INTO t DEFAULT VALUES; SELECT count(*) FROM t")
        .await
        .unwrap();
    assert_eq!(command_counts(&messages), vec![1, 1]);
    assert_eq!(simple_rows(&messages), vec![vec![Some("1".to_string())]]);

    let err = client
        .batch_execute("INSERT INTO t DEFAULT VALUES; FAIL; INSERT INTO t DEFAULT VALUES")
        .await
        .unwrap_err();
    assert_eq!(db_code(&err), SqlState::UNIQUE_VIOLATION);
    // The batch ran as one implicit transaction: the first INSERT ran but
    // was rolled back with it, the one after FAIL never ran.
    assert_eq!(fake.rows.lock().unwrap().len(), 1);
    assert_eq!(fake.txns.rolled_back.load(Ordering::SeqCst), 1);
    let ran: Vec<String> = fake
        .log
        .lock()
        .unwrap()
        .iter()
        .map(|(s, _)| s.clone())
        .collect();
    assert_eq!(ran.last().map(String::as_str), Some("FAIL"));

    // An empty query is fine, and the connection goes on.
    assert!(simple_rows(&client.simple_query("").await.unwrap()).is_empty());
    assert!(simple_rows(&client.simple_query(" ; ").await.unwrap()).is_empty());
    let messages = client.simple_query("SELECT 1").await.unwrap();
    assert_eq!(simple_rows(&messages), vec![vec![Some("1".to_string())]]);
}

#[tokio::test]
async fn prepare_learns_parameter_types_and_binds_every_type() {
    let (fake, addr) = server().await;
    let client = connect(addr).await;

    let insert = client.prepare(INSERT).await.unwrap();
    assert_eq!(
        insert.params(),
        &[
            Type::INT8,
            Type::FLOAT8,
            Type::TEXT,
            Type::BYTEA,
            Type::BOOL
        ]
    );
    assert!(insert.columns().is_empty());
    let n = client
        .execute(&insert, &[&7i64, &2.5f64, &"hé", &vec![0u8, 1, 255], &true])
        .await
        .unwrap();
    assert_eq!(n, 1);
    let n = client
        .execute(
            &insert,
            &[
                &None::<i64>,
                &None::<f64>,
                &None::<&str>,
                &None::<Vec<u8>>,
                &false,
            ],
        )
        .await
        .unwrap();
    assert_eq!(n, 1);
    assert_eq!(
        *fake.rows.lock().unwrap(),
        vec![
            vec![
                Value::Integer(7),
                Value::Real(2.5),
                Value::Text("hé".into()),
                Value::Blob(vec![0, 1, 255]),
                Value::Integer(1),
            ],
            vec![
                Value::Null,
                Value::Null,
                Value::Null,
                Value::Null,
                Value::Integer(0)
            ],
        ]
    );

    // Results come back in binary format, typed as described.
    let select = client.prepare("SELECT * FROM t").await.unwrap();
    let types: Vec<Type> = select.columns().iter().map(|c| c.type_().clone()).collect();
    assert_eq!(
        types,
        vec![
            Type::INT8,
            Type::FLOAT8,
            Type::TEXT,
            Type::BYTEA,
            Type::BOOL
        ]
    );
    let rows = client.query(&select, &[]).await.unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].get::<_, i64>(0), 7);
    assert_eq!(rows[0].get::<_, f64>(1), 2.5);
    assert_eq!(rows[0].get::<_, &str>(2), "hé");
    assert_eq!(rows[0].get::<_, Vec<u8>>(3), vec![0, 1, 255]);
    assert!(rows[0].get::<_, bool>(4));
    assert_eq!(rows[1].get::<_, Option<i64>>(0), None);
    assert_eq!(rows[1].get::<_, Option<f64>>(1), None);
    assert_eq!(rows[1].get::<_, Option<&str>>(2), None);
    assert_eq!(rows[1].get::<_, Option<Vec<u8>>>(3), None);
    assert!(!rows[1].get::<_, bool>(4));

    // The same rows in text format, through the simple protocol.
    let messages = client.simple_query("SELECT * FROM t").await.unwrap();
    let s = |v: &str| Some(v.to_string());
    assert_eq!(
        simple_rows(&messages),
        vec![
            vec![s("7"), s("2.5"), s("hé"), s("\\x0001ff"), s("t")],
            vec![None, None, None, None, s("f")],
        ]
    );
}

#[tokio::test]
async fn parameter_types_given_by_the_client_are_honoured() {
    let (fake, addr) = server().await;
    let client = connect(addr).await;
    let insert = client
        .prepare_typed(
            INSERT,
            &[
                Type::INT4,
                Type::FLOAT4,
                Type::VARCHAR,
                Type::BYTEA,
                Type::INT2,
            ],
        )
        .await
        .unwrap();
    assert_eq!(
        insert.params(),
        &[
            Type::INT4,
            Type::FLOAT4,
            Type::VARCHAR,
            Type::BYTEA,
            Type::INT2
        ]
    );
    client
        .execute(&insert, &[&-3i32, &0.5f32, &"v", &Vec::<u8>::new(), &9i16])
        .await
        .unwrap();
    assert_eq!(
        fake.rows.lock().unwrap()[0],
        vec![
            Value::Integer(-3),
            Value::Real(0.5),
            Value::Text("v".into()),
            Value::Blob(vec![]),
            Value::Integer(9),
        ]
    );
}

#[tokio::test]
async fn errors_carry_sqlstate_message_and_detail() {
    let (_fake, addr) = server().await;
    let client = connect(addr).await;
    for err in [
        client.execute("FAIL", &[]).await.unwrap_err(),
        client.batch_execute("FAIL").await.unwrap_err(),
    ] {
        let db = err.as_db_error().expect("a database error");
        assert_eq!(db.code(), &SqlState::UNIQUE_VIOLATION);
        assert_eq!(db.severity(), "ERROR");
        assert_eq!(
            db.message(),
            "duplicate key value violates unique constraint \"t_pkey\""
        );
        assert_eq!(db.detail(), Some("Key (i)=(1) already exists."));
    }
    // A statement the executor cannot describe fails at prepare.
    let err = client.prepare("GARBAGE").await.unwrap_err();
    assert_eq!(db_code(&err), SqlState::SYNTAX_ERROR);
    // And the connection is fine afterwards.
    assert_eq!(
        client
            .query_one("SELECT 1", &[])
            .await
            .unwrap()
            .get::<_, i64>(0),
        1
    );
}

#[tokio::test]
async fn a_value_that_does_not_fit_its_column_is_text_or_a_clear_error() {
    let (_fake, addr) = server().await;
    let client = connect(addr).await;
    // Text format: the value as stored.
    let messages = client.simple_query("SELECT mixed").await.unwrap();
    assert_eq!(simple_rows(&messages), vec![vec![Some("abc".to_string())]]);
    // Binary format: no honest int8 encoding of 'abc'.
    let err = client.query("SELECT mixed", &[]).await.unwrap_err();
    let db = err.as_db_error().expect("a database error");
    assert_eq!(db.code(), &SqlState::INVALID_TEXT_REPRESENTATION);
    assert!(
        db.message().contains("column \"n\" is announced as bigint"),
        "{}",
        db.message()
    );
    assert!(db.message().contains("CAST"), "{}", db.message());
}

#[tokio::test]
async fn show_transaction_read_only_follows_the_role() {
    let (fake, addr) = server().await;
    let client = connect(addr).await;
    let simple = client
        .simple_query("SHOW transaction_read_only")
        .await
        .unwrap();
    assert_eq!(simple_rows(&simple), vec![vec![Some("off".to_string())]]);
    fake.follower.store(true, Ordering::SeqCst);
    let simple = client
        .simple_query("show TRANSACTION_READ_ONLY;")
        .await
        .unwrap();
    assert_eq!(simple_rows(&simple), vec![vec![Some("on".to_string())]]);
    // Through the extended protocol too, as a text column.
    let row = client
        .query_one("SHOW transaction_read_only", &[])
        .await
        .unwrap();
    assert_eq!(row.columns()[0].name(), "transaction_read_only");
    assert_eq!(row.get::<_, &str>(0), "on");
    let row = client.query_one("SHOW server_version", &[]).await.unwrap();
    assert_eq!(row.get::<_, &str>(0), "16.0");
    // None of these reached the executor.
    assert!(fake.log.lock().unwrap().is_empty());
}

#[tokio::test]
async fn read_consistency_reaches_the_executor() {
    let (fake, addr) = server().await;
    let client = connect(addr).await;
    let weak = || async {
        client
            .query_one("SELECT weak", &[])
            .await
            .unwrap()
            .get::<_, bool>(0)
    };
    assert!(!weak().await);

    client
        .batch_execute("SET resqlite.read_consistency = 'weak'")
        .await
        .unwrap();
    assert!(weak().await);
    let last = fake.log.lock().unwrap().last().cloned().unwrap();
    assert!(last.1.weak_reads);

    // Extended protocol, TO form, no quotes.
    client
        .execute("SET resqlite.read_consistency TO linearizable", &[])
        .await
        .unwrap();
    assert!(!weak().await);
    client
        .execute("SET SESSION resqlite.read_consistency = WEAK;", &[])
        .await
        .unwrap();
    assert!(weak().await);

    for err in [
        client
            .batch_execute("SET resqlite.read_consistency = 'eventual'")
            .await
            .unwrap_err(),
        client
            .execute("SET resqlite.read_consistency = 'eventual'", &[])
            .await
            .unwrap_err(),
    ] {
        assert_eq!(db_code(&err), SqlState::INVALID_PARAMETER_VALUE);
    }
    // A refused value changes nothing.
    assert!(weak().await);

    // Settings drivers send are accepted and remembered.
    client
        .batch_execute("SET extra_float_digits = 3; SET application_name TO 'etl'")
        .await
        .unwrap();
    let row = client
        .query_one("SHOW application_name", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, &str>(0), "etl");
    client.batch_execute("RESET ALL").await.unwrap();
    assert!(!weak().await);
}

#[tokio::test]
async fn cancel_interrupts_the_running_statement() {
    let (fake, addr) = server().await;
    let client = Arc::new(connect(addr).await);
    let token = client.cancel_token();

    // Simple protocol.
    let c = Arc::clone(&client);
    let running = tokio::spawn(async move { c.simple_query("SLEEP").await });
    fake.started.notified().await;
    token.cancel_query(NoTls).await.unwrap();
    let err = running.await.unwrap().unwrap_err();
    assert_eq!(db_code(&err), SqlState::QUERY_CANCELED);
    assert_eq!(fake.dropped.load(Ordering::SeqCst), 1);

    // Extended protocol.
    let c = Arc::clone(&client);
    let running = tokio::spawn(async move { c.query("SLEEP", &[]).await });
    fake.started.notified().await;
    token.cancel_query(NoTls).await.unwrap();
    let err = running.await.unwrap().unwrap_err();
    assert_eq!(db_code(&err), SqlState::QUERY_CANCELED);
    assert_eq!(fake.dropped.load(Ordering::SeqCst), 2);

    // The connection is still usable.
    assert_eq!(
        client
            .query_one("SELECT 1", &[])
            .await
            .unwrap()
            .get::<_, i64>(0),
        1
    );
    assert_eq!(fake.finished.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_panic_in_the_executor_fails_one_statement_only() {
    let (_fake, addr) = server().await;
    let a = connect(addr).await;
    let b = connect(addr).await;
    let err = a.batch_execute("PANIC").await.unwrap_err();
    assert_eq!(db_code(&err), SqlState::INTERNAL_ERROR);
    let err = a.query("PANIC", &[]).await.unwrap_err();
    assert_eq!(db_code(&err), SqlState::INTERNAL_ERROR);
    assert_eq!(
        b.query_one("SELECT 1", &[]).await.unwrap().get::<_, i64>(0),
        1
    );
    assert_eq!(
        a.query_one("SELECT 1", &[]).await.unwrap().get::<_, i64>(0),
        1
    );
}

#[tokio::test]
async fn a_panic_outside_a_statement_closes_that_connection_only() {
    let (fake, addr) = server().await;
    let a = connect(addr).await;
    let b = connect(addr).await;
    fake.panic_in_role.store(true, Ordering::SeqCst);
    // SHOW asks the role, outside any executor call: the task panics.
    let err = a
        .simple_query("SHOW transaction_read_only")
        .await
        .unwrap_err();
    assert!(err.is_closed(), "{err:?}");
    fake.panic_in_role.store(false, Ordering::SeqCst);
    assert_eq!(
        b.query_one("SELECT 1", &[]).await.unwrap().get::<_, i64>(0),
        1
    );
    // New connections are still accepted.
    let c = connect(addr).await;
    assert_eq!(
        c.query_one("SELECT 1", &[]).await.unwrap().get::<_, i64>(0),
        1
    );
}

#[tokio::test]
async fn deallocate_and_discard_drop_prepared_statements_and_settings() {
    let (_fake, addr) = server().await;
    let client = connect(addr).await;
    // psycopg sends DEALLOCATE ALL after a ROLLBACK: every named
    // statement goes (raw messages, so the names are ours).
    let mut raw = Raw::connect(addr, &[]).await;
    let prepare = |name: &str| {
        let mut batch = parse(name, "SELECT 1", &[]);
        batch.extend(sync());
        batch
    };
    let run = |name: &str| {
        let mut batch = bind("", name, &[], &[], &[]);
        batch.extend(execute("", 0));
        batch.extend(sync());
        batch
    };
    for name in ["a", "b"] {
        raw.send(&prepare(name)).await;
        assert_eq!(kinds(&raw.until_ready().await), "1");
    }
    assert_eq!(kinds(&raw.simple("DEALLOCATE ALL").await), "C");
    for name in ["a", "b"] {
        raw.send(&run(name)).await;
        assert_eq!(sqlstate(&raw.until_ready().await), "26000", "{name}");
    }
    assert_eq!(sqlstate(&raw.simple("DEALLOCATE a").await), "26000");
    raw.send(&prepare("c")).await;
    raw.until_ready().await;
    assert_eq!(kinds(&raw.simple("DEALLOCATE PREPARE c").await), "C");
    raw.send(&run("c")).await;
    assert_eq!(sqlstate(&raw.until_ready().await), "26000");

    // DISCARD ALL resets the session, outside a transaction block only.
    client
        .batch_execute("SET statement_timeout = '5s'")
        .await
        .unwrap();
    let messages = client.simple_query("DISCARD ALL").await.unwrap();
    assert!(matches!(
        messages.last(),
        Some(SimpleQueryMessage::CommandComplete(0))
    ));
    let shown = client.simple_query("SHOW statement_timeout").await.unwrap();
    assert_eq!(simple_rows(&shown), vec![vec![Some("0".to_string())]]);
    client.batch_execute("BEGIN").await.unwrap();
    let err = client.batch_execute("DISCARD ALL").await.unwrap_err();
    assert_eq!(db_code(&err), SqlState::ACTIVE_SQL_TRANSACTION, "{err}");
    client
        .batch_execute("ROLLBACK; DISCARD PLANS")
        .await
        .unwrap();
}
