//! The protocol byte by byte: startup parameters, Describe against Execute,
//! row limits, and every kind of bad input.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::fake::{server, start, Fake, INSERT};
use crate::raw::{cstr, error_fields, kinds, message, query, sqlstate, Raw};
use resqlite_wire::WireOptions;

pub(crate) fn parse(name: &str, sql: &str, types: &[u32]) -> Vec<u8> {
    let mut body = cstr(name);
    body.extend(cstr(sql));
    body.extend((types.len() as u16).to_be_bytes());
    for t in types {
        body.extend(t.to_be_bytes());
    }
    message(b'P', &body)
}

pub(crate) fn bind(
    portal: &str,
    statement: &str,
    param_formats: &[i16],
    params: &[Option<&[u8]>],
    result_formats: &[i16],
) -> Vec<u8> {
    let mut body = cstr(portal);
    body.extend(cstr(statement));
    body.extend((param_formats.len() as u16).to_be_bytes());
    for f in param_formats {
        body.extend(f.to_be_bytes());
    }
    body.extend((params.len() as u16).to_be_bytes());
    for p in params {
        match p {
            Some(bytes) => {
                body.extend((bytes.len() as i32).to_be_bytes());
                body.extend_from_slice(bytes);
            }
            None => body.extend((-1i32).to_be_bytes()),
        }
    }
    body.extend((result_formats.len() as u16).to_be_bytes());
    for f in result_formats {
        body.extend(f.to_be_bytes());
    }
    message(b'B', &body)
}

fn describe(target: u8, name: &str) -> Vec<u8> {
    let mut body = vec![target];
    body.extend(cstr(name));
    message(b'D', &body)
}

pub(crate) fn execute(portal: &str, max_rows: i32) -> Vec<u8> {
    let mut body = cstr(portal);
    body.extend(max_rows.to_be_bytes());
    message(b'E', &body)
}

pub(crate) fn sync() -> Vec<u8> {
    message(b'S', &[])
}

pub(crate) fn flush() -> Vec<u8> {
    message(b'H', &[])
}

/// (type OID, format code) of each field of a RowDescription body.
fn row_fields(body: &[u8]) -> Vec<(String, u32, i16)> {
    let count = i16::from_be_bytes(body[0..2].try_into().unwrap());
    let mut rest = &body[2..];
    let mut out = Vec::new();
    for _ in 0..count {
        let end = rest.iter().position(|b| *b == 0).unwrap();
        let name = String::from_utf8(rest[..end].to_vec()).unwrap();
        let f = &rest[end + 1..];
        let oid = u32::from_be_bytes(f[6..10].try_into().unwrap());
        let format = i16::from_be_bytes(f[16..18].try_into().unwrap());
        out.push((name, oid, format));
        rest = &f[18..];
    }
    out
}

fn param_oids(body: &[u8]) -> Vec<u32> {
    let count = i16::from_be_bytes(body[0..2].try_into().unwrap()) as usize;
    (0..count)
        .map(|i| u32::from_be_bytes(body[2 + 4 * i..6 + 4 * i].try_into().unwrap()))
        .collect()
}

fn tag(body: &[u8]) -> String {
    String::from_utf8(body[..body.len() - 1].to_vec()).unwrap()
}

#[tokio::test]
async fn startup_announces_what_libpq_needs_to_find_the_leader() {
    let (fake, addr) = server().await;
    let leader = Raw::connect(addr, &[("application_name", "probe")]).await;
    let p = &leader.params;
    for (name, want) in [
        ("server_version", "16.0"),
        ("server_encoding", "UTF8"),
        ("client_encoding", "UTF8"),
        ("DateStyle", "ISO, MDY"),
        ("integer_datetimes", "on"),
        ("standard_conforming_strings", "on"),
        ("TimeZone", "UTC"),
        ("in_hot_standby", "off"),
        ("default_transaction_read_only", "off"),
        ("application_name", "probe"),
    ] {
        assert_eq!(p.get(name).map(String::as_str), Some(want), "{name}");
    }
    assert_ne!(leader.pid, 0);

    fake.follower.store(true, Ordering::SeqCst);
    let follower = Raw::connect(addr, &[]).await;
    assert_eq!(follower.params["in_hot_standby"], "on");
    assert_eq!(follower.params["default_transaction_read_only"], "on");
    assert_ne!(follower.pid, leader.pid, "each connection has its own key");
}

#[tokio::test]
async fn server_version_comes_from_the_options() {
    let fake = Arc::new(Fake::default());
    let opts = WireOptions {
        server_version: "16.4".into(),
        ..Default::default()
    };
    let addr = start(fake, opts).await;
    let mut raw = Raw::connect(addr, &[]).await;
    assert_eq!(raw.params["server_version"], "16.4");
    let reply = raw.simple("SHOW server_version_num").await;
    assert_eq!(kinds(&reply), "TDC");
}

#[tokio::test]
async fn describe_announces_what_execute_sends_and_row_limits_suspend() {
    let (_fake, addr) = server().await;
    let mut raw = Raw::connect(addr, &[]).await;
    raw.simple("INSERT INTO t DEFAULT VALUES; INSERT INTO t DEFAULT VALUES")
        .await;

    let mut batch = parse("", "SELECT * FROM t", &[]);
    batch.extend(describe(b'S', ""));
    batch.extend(bind("p1", "", &[], &[], &[1]));
    batch.extend(describe(b'P', "p1"));
    batch.extend(execute("p1", 1));
    batch.extend(execute("p1", 0));
    batch.extend(sync());
    raw.send(&batch).await;
    let reply = raw.until_ready().await;
    assert_eq!(kinds(&reply), "1tT2TDsDC");
    assert!(param_oids(&reply[1].1).is_empty());
    let described = row_fields(&reply[2].1);
    let oids: Vec<u32> = described.iter().map(|f| f.1).collect();
    assert_eq!(oids, vec![20, 701, 25, 17, 16]);
    assert!(described.iter().all(|f| f.2 == 0), "statement: text");
    let portal = row_fields(&reply[4].1);
    assert_eq!(portal.iter().map(|f| f.1).collect::<Vec<_>>(), oids);
    assert!(portal.iter().all(|f| f.2 == 1), "portal: binary as bound");
    // The first value of each binary row is an 8-byte int8.
    let first = &reply[5].1;
    assert_eq!(&first[2..6], &8i32.to_be_bytes());
    assert_eq!(&first[6..14], &1i64.to_be_bytes());
    assert_eq!(tag(&reply[8].1), "SELECT 2");
    assert_eq!(raw.status, b'I');
}

#[tokio::test]
async fn parameter_description_lists_described_types() {
    let (_fake, addr) = server().await;
    let mut raw = Raw::connect(addr, &[]).await;
    // The client names the second type only (0 = unspecified).
    let mut batch = parse("ins", INSERT, &[0, 700]);
    batch.extend(describe(b'S', "ins"));
    batch.extend(sync());
    raw.send(&batch).await;
    let reply = raw.until_ready().await;
    assert_eq!(kinds(&reply), "1tn");
    assert_eq!(param_oids(&reply[1].1), vec![20, 700, 25, 17, 16]);
}

#[tokio::test]
async fn empty_queries_answer_empty_query_response() {
    let (_fake, addr) = server().await;
    let mut raw = Raw::connect(addr, &[]).await;
    assert_eq!(kinds(&raw.simple("").await), "I");
    assert_eq!(kinds(&raw.simple(";;").await), "I");
    let mut batch = parse("", "", &[]);
    batch.extend(bind("", "", &[], &[], &[]));
    batch.extend(describe(b'P', ""));
    batch.extend(execute("", 0));
    batch.extend(sync());
    raw.send(&batch).await;
    assert_eq!(kinds(&raw.until_ready().await), "12nI");
}

#[tokio::test]
async fn ready_for_query_follows_transactions() {
    let (_fake, addr) = server().await;
    let mut raw = Raw::connect(addr, &[]).await;
    raw.simple("BEGIN").await;
    assert_eq!(raw.status, b'T');
    raw.simple("INSERT INTO t DEFAULT VALUES").await;
    assert_eq!(raw.status, b'T');
    raw.simple("COMMIT").await;
    assert_eq!(raw.status, b'I');
}

#[tokio::test]
async fn set_reports_changed_parameters() {
    let (_fake, addr) = server().await;
    let mut raw = Raw::connect(addr, &[]).await;
    let reply = raw.simple("SET application_name = 'etl'").await;
    assert_eq!(kinds(&reply), "SC");
    assert_eq!(reply[0].1, [cstr("application_name"), cstr("etl")].concat());
    assert_eq!(tag(&reply[1].1), "SET");
}

#[tokio::test]
async fn malformed_messages_get_an_error_and_the_connection_goes_on() {
    let (_fake, addr) = server().await;
    let mut raw = Raw::connect(addr, &[]).await;
    // A Bind whose only parameter claims 16 bytes but has 2; what follows
    // up to Sync is skipped.
    let mut batch = message(b'B', b"\0\0\0\0\0\x01\0\0\0\x10ab");
    batch.extend(execute("", 0));
    batch.extend(sync());
    raw.send(&batch).await;
    let reply = raw.until_ready().await;
    assert_eq!(kinds(&reply), "E");
    assert_eq!(sqlstate(&reply), "08P01");
    assert_eq!(kinds(&raw.simple("SELECT 1").await), "TDC");

    // A Query with no terminating NUL.
    raw.send(&message(b'Q', b"SELECT 1")).await;
    assert_eq!(sqlstate(&raw.until_ready().await), "08P01");
    assert_eq!(kinds(&raw.simple("SELECT 1").await), "TDC");
}

#[tokio::test]
async fn invalid_utf8_is_refused() {
    let (fake, addr) = server().await;
    let mut raw = Raw::connect(addr, &[]).await;
    raw.send(&message(b'Q', b"SELECT '\xff\xfe'\0")).await;
    assert_eq!(sqlstate(&raw.until_ready().await), "22021");
    // In a text parameter too.
    let mut batch = parse("", INSERT, &[]);
    batch.extend(bind(
        "",
        "",
        &[],
        &[Some(b"1"), Some(b"1"), Some(b"\xc3"), None, None],
        &[],
    ));
    batch.extend(sync());
    raw.send(&batch).await;
    let reply = raw.until_ready().await;
    assert_eq!(kinds(&reply), "1E");
    assert_eq!(sqlstate(&reply), "22021");
    assert!(fake.log.lock().unwrap().is_empty());
    assert_eq!(kinds(&raw.simple("SELECT 1").await), "TDC");
}

#[tokio::test]
async fn a_query_over_the_size_limit_is_refused() {
    let fake = Arc::new(Fake::default());
    let opts = WireOptions {
        max_query_bytes: 1024,
        ..Default::default()
    };
    let addr = start(Arc::clone(&fake), opts).await;
    let mut raw = Raw::connect(addr, &[]).await;
    let long = format!("SELECT '{}'", "x".repeat(4096));
    let reply = raw.simple(&long).await;
    assert_eq!(sqlstate(&reply), "54000");
    // In the extended protocol the refusal waits for Sync.
    let mut batch = parse("", &long, &[]);
    batch.extend(bind("", "", &[], &[], &[]));
    batch.extend(sync());
    raw.send(&batch).await;
    let reply = raw.until_ready().await;
    assert_eq!(kinds(&reply), "E");
    assert_eq!(sqlstate(&reply), "54000");
    assert!(fake.log.lock().unwrap().is_empty());
    assert_eq!(kinds(&raw.simple("SELECT 1").await), "TDC");
}

/// Each message under the limit, but the statement's text and its bound
/// parameters together over it: refused at Execute, before the executor
/// sees anything, and the limit is in the message.
#[tokio::test]
async fn a_bound_statement_over_the_size_limit_is_refused() {
    let fake = Arc::new(Fake::default());
    let opts = WireOptions {
        max_query_bytes: 1024,
        ..Default::default()
    };
    let addr = start(Arc::clone(&fake), opts).await;
    let mut raw = Raw::connect(addr, &[]).await;
    let long_insert = format!("{INSERT}{}", " ".repeat(600));
    let text = "x".repeat(600);
    let params = [Some(&b"1"[..]), None, Some(text.as_bytes()), None, None];
    let mut batch = parse("", &long_insert, &[]);
    batch.extend(bind("", "", &[], &params, &[]));
    batch.extend(execute("", 0));
    batch.extend(sync());
    raw.send(&batch).await;
    let reply = raw.until_ready().await;
    assert_eq!(kinds(&reply), "12E");
    assert_eq!(sqlstate(&reply), "54000");
    let message = error_fields(&reply[2].1).remove(&b'M').unwrap();
    assert!(message.contains("1024 bytes"), "{message}");
    assert!(fake.log.lock().unwrap().is_empty());
    // Within the limit, the same statement runs.
    let short = [Some(&b"1"[..]), None, Some(&b"x"[..]), None, None];
    let mut batch = parse("", &long_insert, &[]);
    batch.extend(bind("", "", &[], &short, &[]));
    batch.extend(execute("", 0));
    batch.extend(sync());
    raw.send(&batch).await;
    assert_eq!(kinds(&raw.until_ready().await), "12C");
    assert_eq!(fake.log.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn bind_errors_are_clear() {
    let (fake, addr) = server().await;
    let mut raw = Raw::connect(addr, &[]).await;
    raw.send(&[parse("ins", INSERT, &[]), sync()].concat())
        .await;
    assert_eq!(kinds(&raw.until_ready().await), "1");

    let cases: Vec<(Vec<u8>, &str)> = vec![
        // One parameter for five.
        (bind("", "ins", &[], &[Some(b"1")], &[]), "08P01"),
        // Two format codes for five parameters.
        (
            bind("", "ins", &[0, 1], &[None, None, None, None, None], &[]),
            "08P01",
        ),
        // A 3-byte binary int8.
        (
            bind(
                "",
                "ins",
                &[1],
                &[Some(b"abc"), None, None, None, None],
                &[],
            ),
            "22P03",
        ),
        // Text that is no integer.
        (
            bind("", "ins", &[], &[Some(b"abc"), None, None, None, None], &[]),
            "22P02",
        ),
        (bind("", "nope", &[], &[], &[]), "26000"),
        (execute("nope", 0), "34000"),
        (describe(b'S', "nope"), "26000"),
        (parse("ins", "SELECT 1", &[]), "42P05"),
        (parse("", "SELECT 1", &[23]), "08P01"),
        (parse("", "GARBAGE", &[]), "42601"),
    ];
    for (bad, code) in cases {
        raw.send(&[bad, sync()].concat()).await;
        let reply = raw.until_ready().await;
        assert_eq!(kinds(&reply), "E", "{code}");
        assert_eq!(sqlstate(&reply), code);
    }
    assert!(fake.log.lock().unwrap().is_empty());
    let ok = bind(
        "",
        "ins",
        &[],
        &[
            Some(b"1"),
            Some(b"2.5"),
            Some(b"x"),
            Some(b"\\x00"),
            Some(b"t"),
        ],
        &[],
    );
    raw.send(&[ok, execute("", 0), sync()].concat()).await;
    let reply = raw.until_ready().await;
    assert_eq!(kinds(&reply), "2C");
    assert_eq!(tag(&reply[1].1), "INSERT 0 1");
}

#[tokio::test]
async fn an_unknown_message_type_is_fatal() {
    let (_fake, addr) = server().await;
    let mut raw = Raw::connect(addr, &[]).await;
    raw.send(&message(b'z', b"")).await;
    let reply = raw.until_closed().await;
    assert_eq!(kinds(&reply), "E");
    let fields = error_fields(&reply[0].1);
    assert_eq!(fields[&b'S'], "FATAL");
    assert_eq!(fields[&b'C'], "08P01");
}

#[tokio::test]
async fn a_non_postgres_client_gets_a_fatal_error() {
    let (_fake, addr) = server().await;
    let mut socket = TcpStream::connect(addr).await.unwrap();
    socket
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let reply = read_all(socket).await;
    assert_eq!(reply.first(), Some(&b'E'));
    let text = String::from_utf8_lossy(&reply);
    assert!(text.contains("08P01"), "{text}");
    assert!(text.contains("startup packet"), "{text}");
    // The server carries on.
    let mut raw = Raw::connect(addr, &[]).await;
    assert_eq!(kinds(&raw.simple("SELECT 1").await), "TDC");
}

async fn read_all(mut socket: TcpStream) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut out = Vec::new();
    socket.read_to_end(&mut out).await.unwrap();
    out
}

fn cancel_request(pid: i32, secret: i32) -> Vec<u8> {
    [16i32, 80877102, pid, secret]
        .iter()
        .flat_map(|v| v.to_be_bytes())
        .collect()
}

#[tokio::test]
async fn a_cancel_with_the_wrong_key_does_nothing() {
    let (fake, addr) = server().await;
    let mut raw = Raw::connect(addr, &[]).await;
    raw.send(&query("SLEEP")).await;
    fake.started.notified().await;

    let mut canceller = TcpStream::connect(addr).await.unwrap();
    canceller
        .write_all(&cancel_request(raw.pid, raw.secret.wrapping_add(1)))
        .await
        .unwrap();
    // The server closes a cancel connection once it has acted on it.
    assert!(read_all(canceller).await.is_empty());

    fake.release.notify_one();
    let reply = raw.until_ready().await;
    assert_eq!(kinds(&reply), "C");
    assert_eq!(fake.dropped.load(Ordering::SeqCst), 0);
    assert_eq!(fake.finished.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_cancel_with_the_right_key_interrupts() {
    let (fake, addr) = server().await;
    let mut raw = Raw::connect(addr, &[]).await;
    raw.send(&query("SLEEP")).await;
    fake.started.notified().await;
    let mut canceller = TcpStream::connect(addr).await.unwrap();
    canceller
        .write_all(&cancel_request(raw.pid, raw.secret))
        .await
        .unwrap();
    let reply = raw.until_ready().await;
    assert_eq!(sqlstate(&reply), "57014");
    assert_eq!(fake.dropped.load(Ordering::SeqCst), 1);
    assert_eq!(kinds(&raw.simple("SELECT 1").await), "TDC");
}

#[tokio::test]
async fn a_client_leaving_mid_query_disturbs_no_one() {
    let (fake, addr) = server().await;
    let mut leaving = Raw::connect(addr, &[]).await;
    leaving.send(&query("SLEEP")).await;
    fake.started.notified().await;
    drop(leaving);
    let mut other = Raw::connect(addr, &[]).await;
    assert_eq!(kinds(&other.simple("SELECT 1").await), "TDC");
    fake.release.notify_one();
    assert_eq!(kinds(&other.simple("SELECT 1").await), "TDC");
    let mut late = Raw::connect(addr, &[]).await;
    assert_eq!(kinds(&late.simple("SELECT 1").await), "TDC");
}

fn close_statement(name: &str) -> Vec<u8> {
    let mut body = vec![b'S'];
    body.extend(cstr(name));
    message(b'C', &body)
}

#[tokio::test]
async fn a_connection_holds_a_bounded_number_of_statements_and_portals() {
    use resqlite_wire::{MAX_PORTALS, MAX_PREPARED_STATEMENTS};
    let (_fake, addr) = server().await;
    let mut raw = Raw::connect(addr, &[]).await;

    let mut batch = Vec::new();
    for i in 0..MAX_PREPARED_STATEMENTS {
        batch.extend(parse(&format!("s{i}"), "SELECT 1", &[]));
    }
    batch.extend(sync());
    raw.send(&batch).await;
    let reply = raw.until_ready().await;
    assert_eq!(reply.len(), MAX_PREPARED_STATEMENTS, "all parsed");
    let mut one_more = parse("extra", "SELECT 1", &[]);
    one_more.extend(sync());
    raw.send(&one_more).await;
    let reply = raw.until_ready().await;
    assert_eq!(sqlstate(&reply), "54000");
    // Closing one makes room.
    let mut again = close_statement("s0");
    again.extend(parse("extra", "SELECT 1", &[]));
    again.extend(sync());
    raw.send(&again).await;
    assert_eq!(kinds(&raw.until_ready().await), "31");

    // Portals: all bound before one Sync, the one beyond the limit refused.
    let mut batch = Vec::new();
    for i in 0..=MAX_PORTALS {
        batch.extend(bind(&format!("p{i}"), "s1", &[], &[], &[]));
    }
    batch.extend(sync());
    raw.send(&batch).await;
    let reply = raw.until_ready().await;
    assert_eq!(reply.len(), MAX_PORTALS + 1, "{}", kinds(&reply));
    assert_eq!(sqlstate(&reply), "54000");
}
