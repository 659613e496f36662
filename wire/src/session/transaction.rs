//! Recognising transaction-control statements: `BEGIN`, `START
//! TRANSACTION`, `COMMIT`/`END`, `ROLLBACK`/`ABORT`, savepoints and `SET
//! TRANSACTION`, with PostgreSQL's grammar. The connection carries them
//! out (see `crate::block`); the executor never sees their text.

use super::tokens::{Token, Tokens};

/// A transaction-control statement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Control {
    /// `BEGIN [WORK|TRANSACTION] [modes]`, or `START TRANSACTION [modes]`
    /// (`start`: answered with that tag).
    Begin { modes: Modes, start: bool },
    /// `COMMIT`/`END [WORK|TRANSACTION] [AND [NO] CHAIN]`.
    Commit { chain: bool },
    /// `ROLLBACK`/`ABORT [WORK|TRANSACTION] [AND [NO] CHAIN]`.
    Rollback { chain: bool },
    /// `SAVEPOINT name`.
    Savepoint(String),
    /// `RELEASE [SAVEPOINT] name`.
    Release(String),
    /// `ROLLBACK [WORK|TRANSACTION] TO [SAVEPOINT] name`.
    RollbackTo(String),
    /// `SET TRANSACTION modes`: for the current block.
    SetTransaction(Modes),
    /// `SET SESSION CHARACTERISTICS AS TRANSACTION modes`: for the blocks
    /// begun after it.
    SetDefaults(Modes),
}

impl Control {
    /// Whether a failed block accepts it (PostgreSQL's "transaction exit"
    /// statements): everything else gets 25P02 there.
    pub(crate) fn ends_failed_block(&self) -> bool {
        matches!(
            self,
            Control::Commit { .. } | Control::Rollback { .. } | Control::RollbackTo(_)
        )
    }
}

/// The transaction modes a statement names. Every transaction is
/// serializable, so an isolation level is checked and then forgotten, and
/// so is `[NOT] DEFERRABLE` (a serializable read-only transaction never
/// waits here).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Modes {
    /// `READ ONLY` (true) or `READ WRITE` (false); the last one named wins,
    /// as in PostgreSQL.
    pub(crate) read_only: Option<bool>,
}

/// Parses what follows the first word of a transaction statement; `None`
/// when `first` starts no such statement.
pub(super) fn parse_control(
    first: &str,
    tokens: &mut Tokens<'_>,
) -> Option<Result<Control, String>> {
    let control = match first {
        "begin" => parse_begin(tokens, false),
        "start" => parse_begin(tokens, true),
        "commit" | "end" => {
            parse_end(tokens, first == "commit").map(|chain| Control::Commit { chain })
        }
        "abort" => parse_end(tokens, true).map(|chain| Control::Rollback { chain }),
        "rollback" => parse_rollback(tokens),
        "savepoint" => identifier(tokens).map(Control::Savepoint),
        "release" => parse_release(tokens),
        _ => return None,
    };
    Some(control)
}

fn parse_begin(tokens: &mut Tokens<'_>, start: bool) -> Result<Control, String> {
    if start {
        if !tokens.eat_word("transaction")? {
            return Err("expected TRANSACTION after START".into());
        }
    } else if !tokens.eat_word("work")? {
        tokens.eat_word("transaction")?;
    }
    let modes = parse_modes(tokens, true)?;
    Ok(Control::Begin { modes, start })
}

/// `[WORK|TRANSACTION]`, then `AND [NO] CHAIN` when `chain_allowed`
/// (`END` has no chain clause). The chain flag.
fn parse_end(tokens: &mut Tokens<'_>, chain_allowed: bool) -> Result<bool, String> {
    if !tokens.eat_word("work")? {
        tokens.eat_word("transaction")?;
    }
    let chain = chain_allowed && parse_chain(tokens)?;
    tokens.expect_end()?;
    Ok(chain)
}

fn parse_chain(tokens: &mut Tokens<'_>) -> Result<bool, String> {
    if !tokens.eat_word("and")? {
        return Ok(false);
    }
    let no = tokens.eat_word("no")?;
    if !tokens.eat_word("chain")? {
        return Err("expected CHAIN after AND".into());
    }
    Ok(!no)
}

fn parse_rollback(tokens: &mut Tokens<'_>) -> Result<Control, String> {
    if tokens.eat_word("prepared")? {
        return Err("prepared transactions are not supported".into());
    }
    if !tokens.eat_word("work")? {
        tokens.eat_word("transaction")?;
    }
    if tokens.eat_word("to")? {
        return savepoint_name(tokens).map(Control::RollbackTo);
    }
    let chain = parse_chain(tokens)?;
    tokens.expect_end()?;
    Ok(Control::Rollback { chain })
}

fn parse_release(tokens: &mut Tokens<'_>) -> Result<Control, String> {
    savepoint_name(tokens).map(Control::Release)
}

/// `[SAVEPOINT] name`: the word SAVEPOINT is optional, and may itself be
/// the name when nothing follows it.
fn savepoint_name(tokens: &mut Tokens<'_>) -> Result<String, String> {
    let mut ahead = Tokens::new(tokens.rest());
    if ahead.eat_word("savepoint")? && ahead.next()?.is_some() {
        tokens.eat_word("savepoint")?;
    }
    identifier(tokens)
}

/// A savepoint name: a bare identifier (folded to lower case) or a quoted
/// one (kept as written); nothing may follow it.
fn identifier(tokens: &mut Tokens<'_>) -> Result<String, String> {
    let name = match tokens.next()? {
        Some(Token::Word(w)) if is_identifier(w) => w.to_ascii_lowercase(),
        Some(Token::QuotedName(n)) if !n.is_empty() => n,
        Some(Token::QuotedName(_)) => return Err("a quoted name cannot be empty".into()),
        Some(other) => {
            return Err(format!(
                "expected a savepoint name, found {}",
                shown(&other)
            ))
        }
        None => return Err("expected a savepoint name".into()),
    };
    tokens.expect_end()?;
    Ok(name)
}

fn is_identifier(word: &str) -> bool {
    let mut chars = word.chars();
    chars.next().is_some_and(|c| c.is_alphabetic() || c == '_')
        && chars.all(|c| c.is_alphanumeric() || c == '_' || c == '$')
}

/// The modes after `SET TRANSACTION` (at least one) or `BEGIN` (maybe
/// none), separated by commas or spaces, to the end of the statement.
pub(super) fn parse_modes(tokens: &mut Tokens<'_>, may_be_empty: bool) -> Result<Modes, String> {
    let mut modes = Modes::default();
    let mut first = true;
    loop {
        let token = tokens.next()?;
        let word = match token {
            None if first && may_be_empty => return Ok(modes),
            None if first => return Err(expected_mode("nothing")),
            None => return Ok(modes),
            Some(Token::Symbol(',')) if !first => match tokens.next()? {
                Some(Token::Word(w)) => w,
                Some(other) => return Err(expected_mode(&shown(&other))),
                None => return Err(expected_mode("nothing")),
            },
            Some(Token::Word(w)) => w,
            Some(other) => return Err(expected_mode(&shown(&other))),
        };
        first = false;
        match word.to_ascii_lowercase().as_str() {
            "isolation" => {
                if !tokens.eat_word("level")? {
                    return Err("expected LEVEL after ISOLATION".into());
                }
                isolation_level(tokens)?;
            }
            "read" => {
                if tokens.eat_word("only")? {
                    modes.read_only = Some(true);
                } else if tokens.eat_word("write")? {
                    modes.read_only = Some(false);
                } else {
                    return Err("expected ONLY or WRITE after READ".into());
                }
            }
            "deferrable" => {}
            "not" => {
                if !tokens.eat_word("deferrable")? {
                    return Err("expected DEFERRABLE after NOT".into());
                }
            }
            _ => return Err(expected_mode(&format!("\"{word}\""))),
        }
    }
}

fn isolation_level(tokens: &mut Tokens<'_>) -> Result<(), String> {
    if tokens.eat_word("serializable")? {
        return Ok(());
    }
    if tokens.eat_word("repeatable")? {
        if tokens.eat_word("read")? {
            return Ok(());
        }
        return Err("expected READ after REPEATABLE".into());
    }
    if tokens.eat_word("read")?
        && (tokens.eat_word("committed")? || tokens.eat_word("uncommitted")?)
    {
        return Ok(());
    }
    Err(
        "expected an isolation level: SERIALIZABLE, REPEATABLE READ, READ COMMITTED or READ \
         UNCOMMITTED"
            .into(),
    )
}

fn expected_mode(found: &str) -> String {
    format!(
        "expected a transaction mode (ISOLATION LEVEL …, READ ONLY, READ WRITE, [NOT] \
         DEFERRABLE), found {found}"
    )
}

fn shown(token: &Token<'_>) -> String {
    match token {
        Token::Word(w) => format!("\"{w}\""),
        Token::Quoted(s) => format!("'{s}'"),
        Token::QuotedName(n) => format!("\"{n}\""),
        Token::Symbol(c) => format!("\"{c}\""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::{parse, Command};

    fn control(sql: &str) -> Control {
        match parse(sql) {
            Some(Ok(Command::Transaction(control))) => control,
            other => panic!("{sql}: {other:?}"),
        }
    }

    fn read_only(read_only: Option<bool>) -> Modes {
        Modes { read_only }
    }

    fn begin(ro: Option<bool>, start: bool) -> Control {
        Control::Begin {
            modes: read_only(ro),
            start,
        }
    }

    #[test]
    fn begin_and_start_transaction_with_modes() {
        assert_eq!(control("BEGIN"), begin(None, false));
        assert_eq!(control("begin work;"), begin(None, false));
        assert_eq!(control("  Begin Transaction ; "), begin(None, false));
        assert_eq!(control("BEGIN READ ONLY"), begin(Some(true), false));
        assert_eq!(
            control("BEGIN TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ WRITE"),
            begin(Some(false), false)
        );
        assert_eq!(
            control("begin isolation level read committed read only not deferrable"),
            begin(Some(true), false)
        );
        assert_eq!(
            control("BEGIN READ ONLY, READ WRITE /* the last wins */"),
            begin(Some(false), false)
        );
        assert_eq!(control("START TRANSACTION"), begin(None, true));
        assert_eq!(
            control("start transaction isolation level serializable, deferrable -- x"),
            begin(None, true)
        );
        assert_eq!(
            control("START TRANSACTION ISOLATION LEVEL READ UNCOMMITTED"),
            begin(None, true)
        );
    }

    #[test]
    fn commit_rollback_and_chains() {
        let commit = |chain| Control::Commit { chain };
        let rollback = |chain| Control::Rollback { chain };
        assert_eq!(control("COMMIT"), commit(false));
        assert_eq!(control("commit work"), commit(false));
        assert_eq!(control("COMMIT TRANSACTION AND CHAIN"), commit(true));
        assert_eq!(control("COMMIT AND NO CHAIN;"), commit(false));
        assert_eq!(control("END"), commit(false));
        assert_eq!(control("end transaction"), commit(false));
        assert_eq!(control("ROLLBACK"), rollback(false));
        assert_eq!(control("rollback work and chain"), rollback(true));
        assert_eq!(control("ABORT"), rollback(false));
        assert_eq!(control("ABORT TRANSACTION AND CHAIN"), rollback(true));
    }

    #[test]
    fn savepoints_with_bare_and_quoted_names() {
        assert_eq!(control("SAVEPOINT a"), Control::Savepoint("a".into()));
        assert_eq!(
            control("savepoint My_Sp1"),
            Control::Savepoint("my_sp1".into())
        );
        assert_eq!(
            control("SAVEPOINT \"Mixed \"\"Case\"\"\""),
            Control::Savepoint("Mixed \"Case\"".into())
        );
        assert_eq!(control("RELEASE SAVEPOINT a"), Control::Release("a".into()));
        assert_eq!(control("release A;"), Control::Release("a".into()));
        assert_eq!(
            control("RELEASE savepoint"),
            Control::Release("savepoint".into())
        );
        assert_eq!(control("ROLLBACK TO a"), Control::RollbackTo("a".into()));
        assert_eq!(
            control("rollback work to savepoint \"B\""),
            Control::RollbackTo("B".into())
        );
        assert_eq!(
            control("ROLLBACK TRANSACTION TO SAVEPOINT b"),
            Control::RollbackTo("b".into())
        );
    }

    #[test]
    fn set_transaction_and_session_characteristics() {
        assert_eq!(
            control("SET TRANSACTION READ ONLY"),
            Control::SetTransaction(read_only(Some(true)))
        );
        assert_eq!(
            control("set transaction isolation level serializable"),
            Control::SetTransaction(read_only(None))
        );
        assert_eq!(
            control("SET SESSION TRANSACTION READ WRITE"),
            Control::SetTransaction(read_only(Some(false)))
        );
        assert_eq!(
            control("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY, DEFERRABLE"),
            Control::SetDefaults(read_only(Some(true)))
        );
    }

    #[test]
    fn only_exits_are_accepted_in_a_failed_block() {
        for sql in ["COMMIT", "END", "ROLLBACK", "ABORT", "ROLLBACK TO a"] {
            assert!(control(sql).ends_failed_block(), "{sql}");
        }
        for sql in [
            "BEGIN",
            "SAVEPOINT a",
            "RELEASE a",
            "SET TRANSACTION READ ONLY",
        ] {
            assert!(!control(sql).ends_failed_block(), "{sql}");
        }
    }

    #[test]
    fn other_statements_are_left_to_the_executor() {
        for sql in [
            "SELECT 1",
            "BEGINNING",
            "INSERT INTO begin VALUES (1)",
            "\"begin\"",
            "committed",
        ] {
            assert_eq!(parse(sql), None, "{sql}");
        }
    }

    #[test]
    fn malformed_transaction_statements_quote_the_client() {
        for sql in [
            "BEGIN REED ONLY",
            "BEGIN ISOLATION LEVEL",
            "BEGIN ISOLATION LEVEL CHAOS",
            "BEGIN READ",
            "BEGIN READ ONLY,",
            "BEGIN , READ ONLY",
            "BEGIN NOT",
            "START",
            "START WORK",
            "COMMIT NOW",
            "COMMIT AND",
            "END AND CHAIN",
            "ROLLBACK TO",
            "ROLLBACK TO SAVEPOINT a b",
            "SAVEPOINT",
            "SAVEPOINT 1a",
            "SAVEPOINT 'a'",
            "SAVEPOINT \"\"",
            "RELEASE",
            "SET TRANSACTION",
            "SET TRANSACTION SNAPSHOT '0001'",
            "SET SESSION CHARACTERISTICS TRANSACTION READ ONLY",
            "COMMIT; SELECT 1",
            "ROLLBACK PREPARED 'x'",
        ] {
            let err = parse(sql).expect("a transaction statement").unwrap_err();
            assert_eq!(err.sqlstate, "42601", "{sql}");
            assert!(
                err.message.contains(&format!("\"{sql}\"")),
                "{sql}: {}",
                err.message
            );
        }
    }
}
