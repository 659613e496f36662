//! A bound on how deep a statement's expressions can nest, checked on its
//! tokens before anything builds a tree.
//!
//! sqlparser parses a chain of binary operators (`1+1+…`, `a OR b OR …`)
//! in a loop, but the tree it builds is as deep as the chain is long, and
//! walking or dropping that tree recurses once per level: 60,000 terms
//! (120 KB of SQL) overflowed a 2 MiB thread stack and aborted the node.
//! The tokenizer is iterative, so the estimate below costs one linear
//! pass and no recursion.
//!
//! The estimate: along the current path of parentheses, the operators and
//! keywords seen since the last list separator (comma, `WHEN`, `THEN`,
//! `ELSE`) at each level, summed. A left-deep chain of n operators scores
//! n; balanced expressions score more than their depth, never less.
//! SQLite itself refuses expressions deeper than 1,000, so the bound only
//! refuses statements SQLite would refuse too, but earlier and cleanly.

use resqlite_wire::SqlError;
use sqlparser::dialect::SQLiteDialect;
use sqlparser::keywords::Keyword;
use sqlparser::tokenizer::{Token, Tokenizer};

use super::sqlstate::STATEMENT_TOO_COMPLEX;

/// The largest score a statement may reach; 10,000 levels still walk and
/// drop on a 2 MiB stack in a debug build.
pub const MAX_EXPRESSION_SCORE: usize = 5_000;

/// Refuses a statement whose expressions could nest deeper than
/// [`MAX_EXPRESSION_SCORE`] (`54001`). Statements too short to reach the
/// bound are not scanned. One that does not tokenize is left to the
/// parser, which reports the syntax error.
pub fn check_expression_depth(sql: &str) -> Result<(), SqlError> {
    // Each counted token takes at least one byte, and so does each operand.
    if sql.len() <= MAX_EXPRESSION_SCORE {
        return Ok(());
    }
    let Ok(tokens) = Tokenizer::new(&SQLiteDialect {}, sql).tokenize() else {
        return Ok(());
    };
    // Counted tokens of the current list item at each open parenthesis.
    let mut levels: Vec<usize> = vec![0];
    let mut score = 0usize;
    for token in &tokens {
        let Some(top) = levels.last_mut() else {
            return Ok(()); // unreachable: the outermost level is never popped
        };
        match token {
            Token::LParen | Token::LBracket => levels.push(0),
            Token::RParen | Token::RBracket => {
                if levels.len() > 1 {
                    score -= levels.pop().unwrap_or(0);
                }
            }
            Token::Comma | Token::SemiColon => {
                score -= *top;
                *top = 0;
            }
            Token::Word(w)
                if matches!(w.keyword, Keyword::WHEN | Keyword::THEN | Keyword::ELSE) =>
            {
                score -= *top;
                *top = 0;
            }
            Token::Word(w) if w.keyword == Keyword::NoKeyword => {}
            Token::Whitespace(_)
            | Token::Number(..)
            | Token::SingleQuotedString(_)
            | Token::DoubleQuotedString(_)
            | Token::HexStringLiteral(_)
            | Token::Placeholder(_) => {}
            _ => {
                *top += 1;
                score += 1;
                if score > MAX_EXPRESSION_SCORE {
                    return Err(SqlError::new(
                        STATEMENT_TOO_COMPLEX,
                        format!(
                            "statement too complex: its expressions nest deeper than \
                             {MAX_EXPRESSION_SCORE} operators; split long chains of operators \
                             (for example into IN lists or several statements)"
                        ),
                    ));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_operator_chains_are_refused_lists_are_not() {
        let chain = format!("SELECT {}1", "1+".repeat(60_000));
        assert_eq!(
            check_expression_depth(&chain).unwrap_err().sqlstate,
            "54001"
        );
        let or_chain = format!("SELECT 1 WHERE {}1=1", "1=1 OR ".repeat(40_000));
        assert!(check_expression_depth(&or_chain).is_err());
        // Nested parentheses add up along the path.
        let nested = format!("SELECT {}", "(1+1+1+1+1+1+1+1+1+1+".repeat(600));
        assert!(check_expression_depth(&nested).is_err());
        // Wide is fine: an IN list, many VALUES rows, a long CASE.
        let list = format!("SELECT 1 WHERE a IN ({}1)", "1, ".repeat(100_000));
        assert!(check_expression_depth(&list).is_ok());
        let rows = format!(
            "INSERT INTO t VALUES {}(1, 'x')",
            "(1, 'x'), ".repeat(50_000)
        );
        assert!(check_expression_depth(&rows).is_ok());
        let case = format!(
            "SELECT CASE {} ELSE 0 END",
            "WHEN a = 1 THEN 2 ".repeat(5_000)
        );
        assert!(check_expression_depth(&case).is_ok());
    }

    #[test]
    fn a_long_cast_chain_is_refused_before_the_rewrite() {
        let casts = format!("SELECT 1{}", "::int".repeat(100_000));
        let e = crate::sql::pg_syntax::to_sqlite(&casts).unwrap_err();
        assert_eq!(e.sqlstate, "54001");
        let short = format!("SELECT 1{}", "::int".repeat(100));
        assert!(crate::sql::pg_syntax::to_sqlite(&short).is_ok());
    }
}
