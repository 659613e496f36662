//! PostgreSQL is the oracle (issue 15): every statement of
//! `compat/differential/corpus.sql` runs, in order, against PostgreSQL 15
//! and against a 3-node ReSQLite cluster, and the outcomes are compared —
//! result column names, type OIDs, values (text form) and row counts, or
//! the SQLSTATE of an error.
//!
//! A statement whose outcome differs must be listed in
//! `compat/differential/differences.tsv` with a reason, and every reason
//! must be explained in docs/compat.md; the test fails on any difference
//! not listed, and on a listed statement that has become identical (take
//! it off the list). It prints
//! `differential: N statements, M identical, K documented differences, F failures`.
//!
//! PostgreSQL's server binaries come with Debian's `postgresql-15`, which
//! `.ci/run` installs; without them the test is skipped locally and fails
//! with `CI=true`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;
use std::time::Duration;

use resqlite_tests::postgres::Postgres;
use resqlite_tests::sql_cluster::SqlCluster;
use tokio_postgres::{Client, SimpleQueryMessage};

const BIN: &str = env!("CARGO_BIN_EXE_resqlite");
const ELECTION: Duration = Duration::from_secs(15);

/// What one statement did.
#[derive(Clone, PartialEq, Eq)]
enum Outcome {
    Error {
        sqlstate: String,
    },
    Done {
        /// Result column names and type OIDs (`None`: no row description).
        columns: Option<Vec<(String, u32)>>,
        rows: Vec<Vec<Option<String>>>,
        /// The row count of the last CommandComplete.
        count: u64,
    },
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Error { sqlstate } => write!(f, "ERROR {sqlstate}"),
            Outcome::Done {
                columns,
                rows,
                count,
            } => {
                if let Some(columns) = columns {
                    let cols: Vec<String> =
                        columns.iter().map(|(n, t)| format!("{n}:{t}")).collect();
                    write!(f, "[{}] ", cols.join(", "))?;
                }
                let shown: Vec<String> = rows
                    .iter()
                    .take(5)
                    .map(|r| {
                        let vals: Vec<&str> =
                            r.iter().map(|v| v.as_deref().unwrap_or("NULL")).collect();
                        format!("({})", vals.join(", "))
                    })
                    .collect();
                write!(f, "{} count={count}", shown.join(" "))?;
                if rows.len() > 5 {
                    write!(f, " …{} rows", rows.len())?;
                }
                Ok(())
            }
        }
    }
}

async fn run(client: &Client, sql: &str) -> Outcome {
    let messages = match client.simple_query(sql).await {
        Ok(m) => m,
        Err(e) => {
            return Outcome::Error {
                sqlstate: e
                    .as_db_error()
                    .map(|d| d.code().code().to_string())
                    .unwrap_or_else(|| format!("no SQLSTATE: {e}")),
            }
        }
    };
    let mut names = None;
    let mut rows = Vec::new();
    let mut count = 0;
    for m in messages {
        match m {
            SimpleQueryMessage::RowDescription(cols) => {
                names = Some(
                    cols.iter()
                        .map(|c| c.name().to_string())
                        .collect::<Vec<_>>(),
                );
            }
            SimpleQueryMessage::Row(row) => {
                rows.push(
                    (0..row.len())
                        .map(|i| row.get(i).map(str::to_string))
                        .collect(),
                );
            }
            SimpleQueryMessage::CommandComplete(n) => count = n,
            _ => {}
        }
    }
    // Types from a Describe of the same statement, which runs nothing.
    let columns = match names {
        None => None,
        Some(names) => {
            let types: Vec<u32> = match client.prepare(sql).await {
                Ok(statement) => statement
                    .columns()
                    .iter()
                    .map(|c| c.type_().oid())
                    .collect(),
                Err(_) => Vec::new(),
            };
            Some(
                names
                    .into_iter()
                    .enumerate()
                    .map(|(i, n)| (n, types.get(i).copied().unwrap_or(0)))
                    .collect(),
            )
        }
    };
    Outcome::Done {
        columns,
        rows,
        count,
    }
}

/// The statements of the corpus: `;` at the end of a line ends one; lines
/// starting with `--` are comments.
fn corpus(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with("--") || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        if !current.is_empty() {
            current.push(' ');
        }
        current.push_str(trimmed);
        if trimmed.ends_with(';') {
            out.push(one_line(&current));
            current.clear();
        }
    }
    assert!(
        current.trim().is_empty(),
        "corpus ends inside a statement: {current}"
    );
    out
}

/// A statement with its whitespace collapsed: how differences.tsv names it.
fn one_line(sql: &str) -> String {
    sql.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// differences.tsv: `reason<TAB>statement` per line.
fn documented(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (reason, sql) = l
                .split_once('\t')
                .unwrap_or_else(|| panic!("differences.tsv: no tab in {l:?}"));
            (one_line(sql), reason.trim().to_string())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_behave_as_in_postgresql() {
    if !Postgres::installed() {
        assert!(
            std::env::var("CI").is_err(),
            "PostgreSQL 15 server binaries are missing (.ci/run installs postgresql-15)"
        );
        eprintln!("skipped: PostgreSQL 15 is not installed");
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = root.join("compat/differential");
    let statements = corpus(&std::fs::read_to_string(dir.join("corpus.sql")).unwrap());
    let listed = documented(&std::fs::read_to_string(dir.join("differences.tsv")).unwrap());
    let compat_doc = std::fs::read_to_string(root.join("docs/compat.md")).unwrap();
    let reasons: BTreeSet<&String> = listed.values().collect();
    for reason in &reasons {
        assert!(
            compat_doc.contains(&format!("| `{reason}` |")),
            "reason {reason} of differences.tsv is not explained in docs/compat.md"
        );
    }

    let pg = Postgres::start().await.unwrap();
    let oracle = pg.connect().await.unwrap();
    let cluster = SqlCluster::start(BIN, 3).unwrap();
    let leader = cluster.wait_for_leader(ELECTION).await.unwrap();
    let ours = cluster.connect(leader).await.unwrap();

    let (mut identical, mut documented_differences) = (0, 0);
    let mut failures = Vec::new();
    // Per statement text (BEGIN and COMMIT come more than once): whether
    // any of its runs differed.
    let mut differed: BTreeMap<&String, bool> = BTreeMap::new();
    for sql in &statements {
        let want = run(&oracle, sql).await;
        let got = run(&ours, sql).await;
        let same = want == got;
        *differed.entry(sql).or_default() |= !same;
        match (same, listed.contains_key(sql)) {
            (true, false) => identical += 1,
            (false, true) => documented_differences += 1,
            (true, true) => {}
            (false, false) => failures.push(format!(
                "differs: {sql}\n    postgresql: {want}\n    resqlite:   {got}"
            )),
        }
    }
    let seen: BTreeSet<&String> = differed.keys().copied().collect();
    for (sql, reason) in &listed {
        if differed.get(sql) == Some(&false) {
            failures.push(format!(
                "now identical, take it off differences.tsv ({reason}): {sql}"
            ));
        }
    }
    for sql in listed.keys() {
        if !seen.contains(sql) {
            failures.push(format!(
                "differences.tsv names a statement not in the corpus: {sql}"
            ));
        }
    }
    for f in &failures {
        eprintln!("{f}");
    }
    let n = statements.len();
    println!(
        "differential: {n} statements, {identical} identical, {documented_differences} documented \
         differences, {} failures ({:.1} % identical)",
        failures.len(),
        100.0 * identical as f64 / n as f64
    );
    assert!(failures.is_empty(), "{} failures (above)", failures.len());
}
