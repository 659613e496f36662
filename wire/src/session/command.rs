//! Recognising and parsing `SET`, `RESET` and `SHOW`, and sorting out the
//! transaction-control statements (parsed in `super::transaction`).

use super::settings::display_name;
use super::tokens::{Token, Tokens};
use super::transaction::{parse_control, parse_modes, Control};
use crate::executor::{Column, PgType, SqlError};

/// A statement the front end answers itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Command {
    /// `SET name TO value` (`value` None: `TO DEFAULT`).
    Set { name: String, value: Option<String> },
    /// A `SET` form with no plain setting behind it (`SET ROLE …`,
    /// `SET CONSTRAINTS …`): accepted and ignored.
    SetIgnored,
    /// `RESET name`, or `RESET ALL` (name None).
    Reset { name: Option<String> },
    /// `SHOW name`, or `SHOW ALL` (name None).
    Show { name: Option<String> },
    /// `BEGIN`, `COMMIT`, savepoints, `SET TRANSACTION` …: carried out by
    /// the connection, which keeps the transaction block.
    Transaction(Control),
    /// `DEALLOCATE [PREPARE] name`, or `DEALLOCATE ALL` (name None): drops
    /// prepared statements (the protocol's named ones share the namespace,
    /// as in PostgreSQL; drivers such as psycopg send this after a
    /// rollback). Carried out by the connection.
    Deallocate { name: Option<String> },
    /// `DISCARD ALL | PLANS | SEQUENCES | TEMP`, the word kept for the tag.
    /// `ALL` resets the session (what poolers send between clients).
    Discard { what: String },
}

impl Command {
    /// The result columns: SHOW returns rows, SET and RESET none.
    pub(crate) fn columns(&self) -> Vec<Column> {
        let text = |name: &str| Column {
            name: name.to_string(),
            pg_type: PgType::Text,
        };
        match self {
            Command::Show { name: Some(name) } => vec![text(display_name(name))],
            Command::Show { name: None } => {
                vec![text("name"), text("setting"), text("description")]
            }
            _ => Vec::new(),
        }
    }
}

/// Recognises a session command or a transaction-control statement.
/// `None`: neither, send it to the executor. `Some(Err)`: it is one but
/// malformed (42601, quoting the statement).
pub(crate) fn parse(sql: &str) -> Option<Result<Command, SqlError>> {
    let mut tokens = Tokens::new(sql);
    let Ok(Some(Token::Word(first))) = tokens.next() else {
        return None;
    };
    let first = first.to_ascii_lowercase();
    let command = match first.as_str() {
        "set" => parse_set(&mut tokens),
        "reset" => parse_reset(&mut tokens),
        "show" => parse_show(&mut tokens),
        "deallocate" => parse_deallocate(&mut tokens),
        "discard" => parse_discard(&mut tokens),
        other => parse_control(other, &mut tokens)?.map(Command::Transaction),
    };
    Some(command.map_err(|why| {
        SqlError::new(
            "42601",
            format!(
                "syntax error in \"{}\": {why}",
                sql.trim().trim_end_matches(';').trim_end()
            ),
        )
    }))
}

fn parse_set(tokens: &mut Tokens<'_>) -> Result<Command, String> {
    let mut name = tokens.expect_name()?;
    if matches!(name.as_str(), "session" | "local") && tokens.peek_is_name()? {
        name = tokens.expect_name()?;
    }
    match name.as_str() {
        "transaction" => {
            let modes = parse_modes(tokens, false)?;
            return Ok(Command::Transaction(Control::SetTransaction(modes)));
        }
        "characteristics" => {
            if !(tokens.eat_word("as")? && tokens.eat_word("transaction")?) {
                return Err("expected AS TRANSACTION after CHARACTERISTICS".into());
            }
            let modes = parse_modes(tokens, false)?;
            return Ok(Command::Transaction(Control::SetDefaults(modes)));
        }
        // `SET TIME ZONE 'UTC'`, `SET NAMES 'UTF8'`: no `=` or `TO`.
        "time" if tokens.eat_word("zone")? => {
            let value = parse_values(tokens)?;
            return Ok(Command::Set {
                name: "timezone".into(),
                value,
            });
        }
        "names" => {
            let value = parse_values(tokens)?;
            return Ok(Command::Set {
                name: "client_encoding".into(),
                value,
            });
        }
        "role" | "authorization" | "constraints" => {
            return Ok(Command::SetIgnored);
        }
        _ => {}
    }
    match tokens.next()? {
        Some(Token::Symbol('=')) => {}
        Some(Token::Word(w)) if w.eq_ignore_ascii_case("to") => {}
        _ => return Err(format!("expected = or TO after \"{name}\"")),
    }
    let value = parse_values(tokens)?;
    Ok(Command::Set { name, value })
}

/// A value list: `DEFAULT`, or comma-separated words, numbers and quoted
/// strings, joined as PostgreSQL shows list settings (`a, b`).
fn parse_values(tokens: &mut Tokens<'_>) -> Result<Option<String>, String> {
    let mut values = Vec::new();
    loop {
        match tokens.next()? {
            Some(Token::Word(w)) if values.is_empty() && w.eq_ignore_ascii_case("default") => {
                tokens.expect_end()?;
                return Ok(None);
            }
            Some(Token::Word(w)) => values.push(w.to_string()),
            Some(Token::Quoted(s)) | Some(Token::QuotedName(s)) => values.push(s),
            _ => return Err("expected a value".into()),
        }
        match tokens.next()? {
            None => return Ok(Some(values.join(", "))),
            Some(Token::Symbol(',')) => continue,
            Some(_) => return Err("unexpected text after the value".into()),
        }
    }
}

fn parse_deallocate(tokens: &mut Tokens<'_>) -> Result<Command, String> {
    let mut name = tokens.expect_name()?;
    if name == "prepare" && tokens.peek_is_name()? {
        name = tokens.expect_name()?;
    }
    tokens.expect_end()?;
    Ok(Command::Deallocate {
        name: (name != "all").then_some(name),
    })
}

fn parse_discard(tokens: &mut Tokens<'_>) -> Result<Command, String> {
    let what = tokens.expect_name()?;
    let what = match what.as_str() {
        "all" | "plans" | "sequences" => what,
        "temp" | "temporary" => "temp".to_string(),
        other => return Err(format!("unrecognized DISCARD target \"{other}\"")),
    };
    tokens.expect_end()?;
    Ok(Command::Discard {
        what: what.to_ascii_uppercase(),
    })
}

fn parse_reset(tokens: &mut Tokens<'_>) -> Result<Command, String> {
    let name = tokens.expect_name()?;
    let name = match name.as_str() {
        "all" => None,
        "time" if tokens.eat_word("zone")? => Some("timezone".to_string()),
        "session" | "role" => {
            // `RESET SESSION AUTHORIZATION`, `RESET ROLE`.
            tokens.skip_rest();
            return Ok(Command::SetIgnored);
        }
        _ => Some(name),
    };
    tokens.expect_end()?;
    Ok(Command::Reset { name })
}

fn parse_show(tokens: &mut Tokens<'_>) -> Result<Command, String> {
    let name = tokens.expect_name()?;
    let name = match name.as_str() {
        "all" => None,
        "time" if tokens.eat_word("zone")? => Some("timezone".to_string()),
        "transaction" if tokens.eat_word("isolation")? => {
            if !tokens.eat_word("level")? {
                return Err("expected LEVEL".into());
            }
            Some("transaction_isolation".to_string())
        }
        _ => Some(name),
    };
    tokens.expect_end()?;
    Ok(Command::Show { name })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(name: &str, value: &str) -> Command {
        Command::Set {
            name: name.into(),
            value: Some(value.into()),
        }
    }

    fn parsed(sql: &str) -> Command {
        parse(sql).expect("a session command").expect("well formed")
    }

    #[test]
    fn recognises_set_forms() {
        assert_eq!(
            parsed("SET extra_float_digits = 3"),
            set("extra_float_digits", "3")
        );
        assert_eq!(
            parsed("set Application_Name to 'my app';"),
            set("application_name", "my app")
        );
        assert_eq!(
            parsed("  SET SESSION DateStyle TO ISO, MDY ; "),
            set("datestyle", "ISO, MDY")
        );
        assert_eq!(
            parsed("SET LOCAL search_path = \"$user\", public"),
            set("search_path", "$user, public")
        );
        assert_eq!(
            parsed("SET resqlite.read_consistency='weak'"),
            set("resqlite.read_consistency", "weak")
        );
        assert_eq!(parsed("SET x = 'it''s'"), set("x", "it's"));
        assert_eq!(parsed("SET TIME ZONE 'UTC'"), set("timezone", "UTC"));
        assert_eq!(parsed("SET NAMES 'UTF8'"), set("client_encoding", "UTF8"));
        assert_eq!(parsed("/* hi */ SET x = -1.5 -- bye"), set("x", "-1.5"));
        assert_eq!(
            parsed("SET x TO DEFAULT"),
            Command::Set {
                name: "x".into(),
                value: None
            }
        );
        assert_eq!(parsed("SET session = 1"), set("session", "1"));
    }

    #[test]
    fn recognises_show_and_reset() {
        assert_eq!(
            parsed("SHOW transaction_read_only;"),
            Command::Show {
                name: Some("transaction_read_only".into())
            }
        );
        assert_eq!(parsed("show ALL"), Command::Show { name: None });
        assert_eq!(
            parsed("SHOW TIME ZONE"),
            Command::Show {
                name: Some("timezone".into())
            }
        );
        assert_eq!(
            parsed("SHOW TRANSACTION ISOLATION LEVEL"),
            Command::Show {
                name: Some("transaction_isolation".into())
            }
        );
        assert_eq!(parsed("RESET ALL"), Command::Reset { name: None });
        assert_eq!(
            parsed("reset resqlite.read_consistency"),
            Command::Reset {
                name: Some("resqlite.read_consistency".into())
            }
        );
    }

    #[test]
    fn other_statements_are_not_session_commands() {
        for sql in [
            "SELECT 1",
            "UPDATE t SET a = 1",
            "settings",
            "",
            "  ;",
            "INSERT INTO set VALUES (1)",
        ] {
            assert_eq!(parse(sql), None, "{sql}");
        }
    }

    #[test]
    fn malformed_session_commands_are_syntax_errors() {
        for sql in [
            "SET",
            "SET x",
            "SET x = ",
            "SET x = 'open",
            "SHOW",
            "SHOW a b",
            "SET x = 1; SELECT 1",
        ] {
            let err = parse(sql).expect("a session command").unwrap_err();
            assert_eq!(err.sqlstate, "42601", "{sql}");
        }
    }
}
