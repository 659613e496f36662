use super::{classify, Class};

const READS: &[&str] = &[
    "SELECT 1",
    "select * from t where a = $1",
    "VALUES (1, 2)",
    "WITH x AS (SELECT 1) SELECT * FROM x",
    "EXPLAIN QUERY PLAN SELECT * FROM t",
    "PRAGMA table_info(t)",
    "pragma table_info('t');",
    "PRAGMA main.index_list(t)",
    "PRAGMA user_version",
    // Reads may use the clock: they run on one node only.
    "SELECT random(), datetime('now')",
];

const WRITES: &[&str] = &[
    "INSERT INTO t VALUES (1, 'a')",
    "INSERT INTO t VALUES ($1) ON CONFLICT(a) DO UPDATE SET b = excluded.b RETURNING a",
    "REPLACE INTO t VALUES (1)",
    "UPDATE t SET a = a + 1 WHERE b = ?",
    "DELETE FROM t",
    "CREATE TABLE t (a INTEGER PRIMARY KEY, b TEXT DEFAULT 'x')",
    "CREATE INDEX i ON t (b)",
    "CREATE VIEW v AS SELECT a FROM t",
    "CREATE TRIGGER tr AFTER INSERT ON t BEGIN UPDATE u SET n = n + 1; END",
    "ALTER TABLE t ADD COLUMN c INT",
    "DROP TABLE t",
    "DROP INDEX i",
    "REINDEX",
    "INSERT INTO t VALUES (datetime('2024-01-01', '+1 day'))",
    "INSERT INTO t VALUES (strftime('%s', $1))",
    "CREATE TABLE c AS SELECT * FROM t",
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 5) \
     INSERT INTO t SELECT x FROM c",
    "WITH old AS (SELECT a FROM t) DELETE FROM u WHERE a IN (SELECT a FROM old)",
    "WITH n AS (SELECT 1 AS a) UPDATE t SET b = 2 WHERE a IN (SELECT a FROM n)",
];

const TRANSACTIONS: &[&str] = &[
    "BEGIN",
    "BEGIN TRANSACTION",
    "COMMIT",
    "END",
    "ROLLBACK",
    "SAVEPOINT a",
    "RELEASE a",
];

const NON_DETERMINISTIC_WRITES: &[&str] = &[
    "INSERT INTO t VALUES (random())",
    "INSERT INTO t VALUES (RANDOMBLOB(4))",
    "UPDATE t SET ts = CURRENT_TIMESTAMP",
    "INSERT INTO t VALUES (CURRENT_DATE)",
    "INSERT INTO t VALUES (current_time)",
    "INSERT INTO t VALUES (datetime('now'))",
    "INSERT INTO t VALUES (date())",
    "INSERT INTO t VALUES (strftime('%Y'))",
    "INSERT INTO t VALUES (strftime('%s', 'NOW'))",
    "INSERT INTO t VALUES (julianday('now', '+1 day'))",
    "INSERT INTO t VALUES (unixepoch())",
    "INSERT INTO t SELECT last_insert_rowid()",
    "CREATE TABLE t (a INT DEFAULT CURRENT_TIMESTAMP)",
    "CREATE TABLE t (a INT DEFAULT (random()))",
    "CREATE TABLE t (a INT, b INT AS (random()))",
    "CREATE TRIGGER tr AFTER INSERT ON t BEGIN INSERT INTO u VALUES (random()); END",
    "CREATE VIEW v AS SELECT datetime('now') AS now",
    "CREATE TABLE c AS SELECT random() AS r",
    "DELETE FROM t WHERE a < unixepoch('now')",
    // The server's time zone differs between machines too.
    "INSERT INTO t VALUES (datetime('2020-01-01 10:00', 'localtime'))",
    "INSERT INTO t VALUES (datetime('2020-01-01 10:00', ' UTC '))",
    "UPDATE t SET a = strftime('%H', b, 'localtime')",
];

const FILE_ACCESS: &[&str] = &[
    "ATTACH 'other.db' AS o",
    "ATTACH DATABASE '/etc/passwd' AS p",
    "DETACH o",
    "VACUUM INTO '/tmp/copy.db'",
    "INSERT INTO t VALUES (load_extension('x'))",
    "PRAGMA journal_mode = DELETE",
    "PRAGMA synchronous = OFF",
    "PRAGMA user_version = 5",
    "PRAGMA user_version(5)",
    "PRAGMA writable_schema",
    "PRAGMA temp_store_directory",
];

const UNPARSABLE: &[&str] = &[
    "SELEC 1",
    "INSERT INTO",
    "SELECT 1; SELECT 2",
    "PRAGMA",
    "PRAGMA table_info t",
];

fn sqlstate(sql: &str) -> String {
    match classify(sql) {
        Ok(c) => panic!("{sql}: expected a refusal, got {c:?}"),
        Err(e) => e.sqlstate,
    }
}

#[test]
fn reads() {
    for sql in READS {
        assert_eq!(classify(sql).unwrap().class, Class::Read, "{sql}");
    }
}

#[test]
fn writes() {
    for sql in WRITES {
        assert_eq!(classify(sql).unwrap().class, Class::Write, "{sql}");
    }
}

#[test]
fn transactions_are_refused_as_not_supported() {
    for sql in TRANSACTIONS {
        assert_eq!(sqlstate(sql), "0A000", "{sql}");
    }
}

#[test]
fn non_deterministic_writes_are_refused_everywhere_they_would_run() {
    for sql in NON_DETERMINISTIC_WRITES {
        assert_eq!(sqlstate(sql), "0A000", "{sql}");
    }
}

#[test]
fn file_and_process_access_is_refused_as_insufficient_privilege() {
    for sql in FILE_ACCESS {
        assert_eq!(sqlstate(sql), "42501", "{sql}");
    }
}

#[test]
fn unparsable_input_is_a_syntax_error() {
    for sql in UNPARSABLE {
        assert_eq!(sqlstate(sql), "42601", "{sql}");
    }
}

#[test]
fn other_statements_are_not_supported() {
    assert_eq!(sqlstate("VACUUM"), "0A000");
    assert_eq!(sqlstate("GRANT SELECT ON t TO bob"), "0A000");
}

#[test]
fn command_tags_follow_postgres() {
    let tag = |sql: &str, n| classify(sql).unwrap().tag(n);
    assert_eq!(tag("INSERT INTO t VALUES (1)", 1), "INSERT 0 1");
    assert_eq!(tag("REPLACE INTO t VALUES (1)", 1), "INSERT 0 1");
    assert_eq!(tag("UPDATE t SET a = 1", 3), "UPDATE 3");
    assert_eq!(tag("DELETE FROM t", 0), "DELETE 0");
    assert_eq!(tag("SELECT 1", 1), "SELECT 1");
    assert_eq!(tag("CREATE TABLE t (a INT)", 0), "CREATE TABLE");
    assert_eq!(tag("DROP TABLE t", 0), "DROP TABLE");
    assert_eq!(tag("PRAGMA table_info(t)", 2), "SELECT 2");
}

/// Statements whose literals are where classification could look at them.
const LITERAL_EDGES: &[&str] = &[
    "SELECT v FROM kv WHERE k = 48213",
    "INSERT INTO kv VALUES (5, 5) ON CONFLICT (k) DO UPDATE SET v = excluded.v",
    "UPDATE t SET a = 'x', b = -3 WHERE c = 'now' AND d > 2.5",
    "INSERT INTO t VALUES (date('2020-01-01'))",
    "INSERT INTO t VALUES (strftime('%Y', '2020-01-01'))",
    "INSERT INTO t VALUES (julianday('2020-01-01', '+1 day'))",
    "INSERT INTO t VALUES (datetime(1700000000, 'unixepoch'))",
    "INSERT INTO t VALUES (datetime('2020-01-01', 'localtime'))",
    "INSERT INTO t VALUES (date('now' || ''))",
    "INSERT INTO t VALUES (date(\"now\"))",
    "INSERT INTO t VALUES (date(a => '2020-01-01'))",
    "INSERT INTO t VALUES (main.'abs'(1))",
    "INSERT INTO t VALUES ('abs'(1))",
    "INSERT INTO t SELECT s.'abs'(x) FROM s",
    "SELECT 'x'.* FROM t",
    "INSERT INTO t VALUES ('a' /* 'now' 1 */, -- 'x' 2\n 3)",
    "INSERT INTO t VALUES (1 -- a 'b\n, date('now') -- '\n)",
    "INSERT INTO t VALUES (1 /* a 'b */, date('now') /* ' */)",
    "INSERT INTO \"a 'b\" VALUES (date('now'), \"'\")",
    "INSERT INTO [a 'b] VALUES (date('now'), [' c])",
    "INSERT INTO `a 'b` VALUES (date('now'), `' c`)",
    "INSERT INTO \"t 1\" VALUES (1)",
    "INSERT INTO [t]]x] VALUES (1)",
    "INSERT INTO `t``x` VALUES ('1')",
    "INSERT INTO t VALUES (X'0102', x'ff', 0x1F)",
    "INSERT INTO t VALUES (1e5, 1.5e-3, -7, 1_000, .5, 1., 2L)",
    "INSERT INTO t VALUES ($1, ?2, :n, @m, 3)",
    "CREATE TABLE t (a VARCHAR(10), b DECIMAL(10, 2) DEFAULT 0, c TEXT DEFAULT 'x')",
    "CREATE TABLE t (a INT DEFAULT (date('2020-01-01')))",
    "SELECT * FROM t LIMIT 10 OFFSET 5",
    "SELECT * FROM t LIMIT 5, 10",
    "DELETE FROM t WHERE a < unixepoch('2020-01-01')",
    "SELECT '1'::int, 2::text",
    "SELECT 'a' 'b', 1 2",
    "SELECT 1; SELECT 2",
    "INSERT INTO t VALUES (load_extension('x'))",
    "ATTACH 'a.db' AS a",
    "VACUUM INTO 'x.db'",
    "PRAGMA table_info('t')",
    "PRAGMA user_version(5)",
    "  PRAGMA user_version = 5",
    "/* c */ INSERT INTO t VALUES (1)",
    "INSERT INTO t VALUES (CASE WHEN 1 THEN 'a' ELSE 2 END)",
];

/// Values put in place of a statement's literals: the same kind and other
/// kinds, harmless and dangerous.
const LITERALS: &[&str] = &[
    "0",
    "42",
    "-7",
    "4294967296",
    "123456789012345678901",
    "1.5",
    "2.5e3",
    "0x1F",
    "1_000",
    "'x'",
    "''",
    "'it''s'",
    "'now'",
    "' NoW '",
    "'now\t'",
    "'localtime'",
    "'2020-01-01'",
    "'%s'",
    "'random'",
    "'abs'",
    "'+1 day'",
    "X'00'",
];

/// Where a naive scan sees literals: digit runs and '…' runs, wherever
/// they are (inside names and comments too, which makes siblings that
/// must not share a shape).
fn naive_literals(sql: &str) -> Vec<std::ops::Range<usize>> {
    let b = sql.as_bytes();
    let mut spans = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let start = i;
        if b[i].is_ascii_digit() {
            while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'.') {
                i += 1;
            }
            spans.push(start..i);
        } else if b[i] == b'\'' {
            i += 1;
            while i < b.len() && !(b[i] == b'\'' && b.get(i + 1) != Some(&b'\'')) {
                i += if b[i] == b'\'' { 2 } else { 1 };
            }
            i = (i + 1).min(b.len());
            spans.push(start..i);
        } else {
            i += 1;
        }
    }
    spans
}

/// The statement, and the statements made by replacing one or all of its
/// literals with each of [`LITERALS`].
fn with_siblings(sql: &str) -> Vec<String> {
    let spans = naive_literals(sql);
    let mut out = vec![sql.to_string()];
    for value in LITERALS {
        for span in &spans {
            let mut s = sql.to_string();
            s.replace_range(span.clone(), value);
            out.push(s);
        }
        let mut s = sql.to_string();
        for span in spans.iter().rev() {
            s.replace_range(span.clone(), value);
        }
        out.push(s);
    }
    out
}

fn all_cases() -> Vec<&'static str> {
    [
        READS,
        WRITES,
        TRANSACTIONS,
        NON_DETERMINISTIC_WRITES,
        FILE_ACCESS,
        UNPARSABLE,
        LITERAL_EDGES,
    ]
    .concat()
}

/// sqlparser's tokens, with the value of every literal blanked: statements
/// of one shape must give the same.
fn token_kinds(sql: &str) -> Option<Vec<String>> {
    use sqlparser::dialect::SQLiteDialect;
    use sqlparser::tokenizer::{Token, Tokenizer};
    let tokens = Tokenizer::new(&SQLiteDialect {}, sql).tokenize().ok()?;
    Some(
        tokens
            .into_iter()
            .map(|t| match t {
                Token::Number(..) => "number".to_string(),
                Token::SingleQuotedString(_) => "string".to_string(),
                t => format!("{t:?}"),
            })
            .collect(),
    )
}

#[test]
fn statements_of_one_shape_are_classified_alike() {
    use std::collections::HashMap;
    let mut by_shape: HashMap<String, Vec<String>> = HashMap::new();
    for case in all_cases() {
        for sql in with_siblings(case) {
            if let Some(shape) = crate::sql::normalize::shape(&sql) {
                by_shape.entry(shape.into_owned()).or_default().push(sql);
            }
        }
    }
    let mut shared = 0;
    for (shape, members) in &by_shape {
        let first = &members[0];
        let class = classify(first).ok();
        let tokens = token_kinds(first);
        for other in &members[1..] {
            shared += 1;
            assert_eq!(
                classify(other).ok(),
                class,
                "{first:?} and {other:?} share the shape {shape:?}"
            );
            assert_eq!(
                token_kinds(other),
                tokens,
                "{first:?} and {other:?} share the shape {shape:?}"
            );
        }
    }
    // The test means something only if literals were actually replaced.
    assert!(shared > 500, "only {shared} statements shared a shape");
}

#[test]
fn the_cache_answers_like_classify_whatever_primed_it() {
    use crate::sql::ClassifyCache;
    use std::collections::HashMap;
    for case in all_cases() {
        // Statements of different shapes (or texts) never meet in the
        // cache: each group is tried with each member priming it.
        let mut groups: HashMap<(bool, String), Vec<String>> = HashMap::new();
        for sql in with_siblings(case) {
            let key = match crate::sql::normalize::shape(&sql) {
                Some(shape) => (true, shape.into_owned()),
                None => (false, sql.clone()),
            };
            groups.entry(key).or_default().push(sql);
        }
        for members in groups.values() {
            for primer in members {
                let cache = ClassifyCache::new(64);
                let _ = cache.classify(primer);
                for sql in members {
                    assert_eq!(
                        cache.classify(sql).map_err(|e| e.sqlstate),
                        classify(sql).map_err(|e| e.sqlstate),
                        "{sql:?} after {primer:?}"
                    );
                }
            }
        }
    }
}

#[test]
fn a_harmless_literal_does_not_let_now_through() {
    use crate::sql::ClassifyCache;
    let cache = ClassifyCache::new(64);
    for (harmless, dangerous) in [
        (
            "INSERT INTO t VALUES (date('2020-01-01'))",
            "INSERT INTO t VALUES (date('now'))",
        ),
        (
            "INSERT INTO t VALUES (strftime('%s', '2020-01-01'))",
            "INSERT INTO t VALUES (strftime('%s', ' NOW '))",
        ),
        (
            "UPDATE t SET a = julianday('2020-01-01', '+1 day') WHERE k = 1",
            "UPDATE t SET a = julianday('Now', '+1 day') WHERE k = 2",
        ),
        (
            "CREATE TABLE t (a INT DEFAULT (date('2020-01-01')))",
            "CREATE TABLE t (a INT DEFAULT (date('now')))",
        ),
    ] {
        assert_eq!(cache.classify(harmless).unwrap().class, Class::Write);
        let refused = cache.classify(dangerous);
        assert_eq!(
            refused.map_err(|e| e.sqlstate),
            classify(dangerous).map_err(|e| e.sqlstate),
            "{dangerous}"
        );
    }
    assert_eq!(
        cache
            .classify("INSERT INTO t VALUES (date('now'))")
            .unwrap_err()
            .sqlstate,
        "0A000"
    );
}

#[test]
fn statements_differing_in_literals_share_one_cache_entry() {
    use crate::sql::ClassifyCache;
    let cache = ClassifyCache::new(64);
    for k in [1, 48213, 99_999, 7] {
        let sql = format!("SELECT v FROM kv WHERE k = {k}");
        assert_eq!(cache.classify(&sql).unwrap().class, Class::Read);
        let sql = format!("UPDATE kv SET v = {k}, s = 'name {k}' WHERE k = {k};");
        assert_eq!(cache.classify(&sql).unwrap().class, Class::Write);
        let sql = format!(
            "INSERT INTO kv VALUES ({k}, {k}) ON CONFLICT (k) DO UPDATE SET v = excluded.v"
        );
        assert_eq!(cache.classify(&sql).unwrap().command, "INSERT");
    }
    assert_eq!(cache.len(), 3);
    // A literal that can change the class gets its own entry.
    cache
        .classify("UPDATE kv SET v = 1, s = 'now' WHERE k = 1;")
        .unwrap();
    assert_eq!(cache.len(), 4);
}
