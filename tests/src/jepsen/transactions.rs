//! The transactional workloads' ops, each one `BEGIN … COMMIT` on the
//! leader: bank transfers and balance reads, counter increments; and how a
//! failed one is read.
//!
//! Nothing of a transaction is replicated before its `COMMIT` (the leader
//! proposes its writes as one entry then), so a transaction that ends in
//! any way before `COMMIT` was sent certainly did not happen: fail. At
//! `COMMIT`, 40001 (rolled back: it read before another write committed,
//! or leadership changed), 25006 and 57P03 (refused) are fail too; 40003,
//! any other error, a timeout or a lost connection leave the outcome
//! unknown.

use std::future::Future;

use tokio_postgres::Client;

use super::history::{OpKind, OpValue, Outcome, TransferMode};
use super::workload::{classify, error_text, Endpoints, ErrorClass, Next, OpEnding, OP_TIMEOUT};

/// Bank accounts (ids `0..ACCOUNTS`) every run creates.
pub const ACCOUNTS: usize = 5;
/// Each account's balance at the start.
pub const INITIAL_BALANCE: i64 = 100;
/// What the balances must always add up to.
pub const TOTAL: i64 = ACCOUNTS as i64 * INITIAL_BALANCE;
/// The counter's row id.
pub const COUNTER_ID: i64 = 0;

/// The schema and initial rows of the bank and the counter; re-running
/// them is harmless.
pub fn setup_statements() -> Vec<String> {
    let mut s = vec![
        "CREATE TABLE IF NOT EXISTS accounts (id INTEGER PRIMARY KEY, balance INTEGER NOT NULL)"
            .to_string(),
        "CREATE TABLE IF NOT EXISTS counter (id INTEGER PRIMARY KEY, n INTEGER NOT NULL)"
            .to_string(),
    ];
    for id in 0..ACCOUNTS {
        s.push(format!(
            "INSERT INTO accounts (id, balance) VALUES ({id}, {INITIAL_BALANCE}) ON CONFLICT DO NOTHING"
        ));
    }
    s.push(format!(
        "INSERT INTO counter (id, n) VALUES ({COUNTER_ID}, 0) ON CONFLICT DO NOTHING"
    ));
    s
}

/// Why a transaction did not commit.
#[derive(Debug)]
pub enum Stop {
    /// A statement before `COMMIT` failed or timed out (`None`).
    Before(Option<tokio_postgres::Error>),
    /// `COMMIT` itself failed or timed out (`None`).
    AtCommit(Option<tokio_postgres::Error>),
}

/// One statement of a transaction before its `COMMIT`, within [`OP_TIMEOUT`].
async fn before<T>(f: impl Future<Output = Result<T, tokio_postgres::Error>>) -> Result<T, Stop> {
    match tokio::time::timeout(OP_TIMEOUT, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(Stop::Before(Some(e))),
        Err(_) => Err(Stop::Before(None)),
    }
}

async fn commit(client: &Client) -> Result<(), Stop> {
    match tokio::time::timeout(OP_TIMEOUT, client.batch_execute("COMMIT")).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(Stop::AtCommit(Some(e))),
        Err(_) => Err(Stop::AtCommit(None)),
    }
}

async fn select_one(client: &Client, sql: &str, id: i64) -> Result<i64, Stop> {
    let row = before(client.query_one(sql, &[&id])).await?;
    Ok(row.get::<_, i64>(0))
}

async fn balance(client: &Client, id: i64) -> Result<i64, Stop> {
    select_one(client, "SELECT balance FROM accounts WHERE id = $1", id).await
}

/// Runs one transactional op to its end (`COMMIT` answered), or to the
/// first statement that failed. The transaction is left open on a
/// failure: see [`run`].
pub async fn execute(client: &Client, kind: OpKind) -> Result<OpValue, Stop> {
    match kind {
        OpKind::Transfer {
            from,
            to,
            amount,
            mode,
        } => {
            before(client.batch_execute("BEGIN")).await?;
            if mode == TransferMode::LockFirst {
                before(client.execute(
                    "UPDATE accounts SET balance = balance WHERE id = $1",
                    &[&from],
                ))
                .await?;
            }
            let applied = if mode != TransferMode::Conditional {
                let have = balance(client, from).await?;
                let other = balance(client, to).await?;
                if have >= amount {
                    let set = "UPDATE accounts SET balance = $2 WHERE id = $1";
                    before(client.execute(set, &[&from, &(have - amount)])).await?;
                    before(client.execute(set, &[&to, &(other + amount)])).await?;
                }
                have >= amount
            } else {
                let debited = before(client.execute(
                    "UPDATE accounts SET balance = balance - CAST($2 AS INTEGER) WHERE id = $1 AND balance >= $2",
                    &[&from, &amount],
                ))
                .await?;
                if debited == 1 {
                    before(client.execute(
                        "UPDATE accounts SET balance = balance + CAST($2 AS INTEGER) WHERE id = $1",
                        &[&to, &amount],
                    ))
                    .await?;
                }
                debited == 1
            };
            commit(client).await?;
            Ok(OpValue::Applied(applied))
        }
        OpKind::ReadBalances => {
            before(client.batch_execute("BEGIN READ ONLY")).await?;
            let mut balances = [0i64; ACCOUNTS];
            for (id, b) in balances.iter_mut().enumerate() {
                *b = balance(client, id as i64).await?;
            }
            commit(client).await?;
            Ok(OpValue::Balances(balances))
        }
        OpKind::Increment { lock_first } => {
            before(client.batch_execute("BEGIN")).await?;
            if lock_first {
                before(client.execute("UPDATE counter SET n = n WHERE id = $1", &[&COUNTER_ID]))
                    .await?;
            }
            let n = select_one(client, "SELECT n FROM counter WHERE id = $1", COUNTER_ID).await?;
            before(client.execute(
                "UPDATE counter SET n = $2 WHERE id = $1",
                &[&COUNTER_ID, &(n + 1)],
            ))
            .await?;
            commit(client).await?;
            Ok(OpValue::Incremented(n + 1))
        }
        OpKind::Read { .. } | OpKind::Write { .. } | OpKind::Cas { .. } | OpKind::Insert { .. } => {
            unreachable!("single-statement ops run in workload::execute, not as transactions")
        }
    }
}

/// Runs one transactional op and reads its ending. A connection that is
/// kept is first rolled back, so the next op starts outside a block.
pub async fn run(client: &Client, kind: OpKind, ends: &Endpoints) -> OpEnding {
    let stop = match execute(client, kind).await {
        Ok(value) => {
            return OpEnding {
                outcome: Outcome::Ok,
                value,
                error: String::new(),
                next: Next::Stay,
                backoff: false,
            }
        }
        Err(stop) => stop,
    };
    let ending = read_stop(stop, ends);
    let ending = if kind == OpKind::ReadBalances && ending.outcome == Outcome::Unknown {
        // A read that may or may not have run changed nothing either way.
        OpEnding {
            outcome: Outcome::Fail,
            ..ending
        }
    } else {
        ending
    };
    // After a failed COMMIT the block is over and this is a no-op; if the
    // server says otherwise, the connection is dropped, which ends it too.
    if ending.next == Next::Stay {
        let rollback = tokio::time::timeout(OP_TIMEOUT, client.batch_execute("ROLLBACK")).await;
        if !matches!(rollback, Ok(Ok(()))) {
            return OpEnding {
                next: Next::Anywhere,
                ..ending
            };
        }
    }
    ending
}

/// How a transaction that stopped is to be read.
pub fn read_stop(stop: Stop, ends: &Endpoints) -> OpEnding {
    let (at_commit, error) = match stop {
        Stop::Before(e) => (false, e),
        Stop::AtCommit(e) => (true, e),
    };
    let where_ = if at_commit { " (at COMMIT)" } else { "" };
    let uncertain = if at_commit {
        Outcome::Unknown
    } else {
        Outcome::Fail
    };
    let Some(e) = error else {
        // Maybe stuck on a paused or cut-off node: go elsewhere.
        return OpEnding {
            outcome: uncertain,
            value: OpValue::None,
            error: format!("timeout{where_}"),
            next: Next::Anywhere,
            backoff: false,
        };
    };
    let error = format!("{}{where_}", error_text(&e));
    let (outcome, next, backoff) = match classify(&e, ends) {
        ErrorClass::NotLeader(leader) => (
            Outcome::Fail,
            leader.map_or(Next::Anywhere, Next::Node),
            leader.is_none(),
        ),
        ErrorClass::Unavailable => (Outcome::Fail, Next::Anywhere, true),
        ErrorClass::Indefinite => {
            let code = e.as_db_error().map(|d| d.code().code());
            let outcome = match code {
                // Rolled back, on every node alike.
                Some("40001") => Outcome::Fail,
                _ => uncertain,
            };
            let next = if e.is_closed() || code.is_none() {
                Next::Anywhere
            } else {
                Next::Stay
            };
            (outcome, next, code != Some("40001"))
        }
    };
    OpEnding {
        outcome,
        value: OpValue::None,
        error,
        next,
        backoff,
    }
}
