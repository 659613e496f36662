//! The tokens of the statements the front end answers itself: words,
//! quoted strings and names, and a few symbols, with spaces and comments
//! skipped and a trailing `;` taken as the end.

/// A token of a session command.
#[derive(Debug, PartialEq)]
pub(super) enum Token<'a> {
    /// A bare word or number: `extra_float_digits`, `3`, `-1.5`, `a.b`.
    Word(&'a str),
    /// `'it''s'`, unescaped; `E'…'` strings are not supported.
    Quoted(String),
    /// `"Name"`, unescaped, case kept.
    QuotedName(String),
    Symbol(char),
}

/// A tokenizer that skips spaces and comments and treats a trailing `;` as
/// the end.
pub(super) struct Tokens<'a> {
    rest: &'a str,
}

impl<'a> Tokens<'a> {
    pub(super) fn new(sql: &'a str) -> Self {
        Tokens { rest: sql }
    }

    fn skip_space(&mut self) -> Result<(), String> {
        loop {
            self.rest = self.rest.trim_start();
            if let Some(r) = self.rest.strip_prefix("--") {
                self.rest = r.find('\n').map_or("", |i| &r[i + 1..]);
            } else if let Some(r) = self.rest.strip_prefix("/*") {
                let end = r.find("*/").ok_or("unterminated comment")?;
                self.rest = &r[end + 2..];
            } else {
                return Ok(());
            }
        }
    }

    /// The next token; None at the end (trailing semicolons included).
    pub(super) fn next(&mut self) -> Result<Option<Token<'a>>, String> {
        self.skip_space()?;
        let Some(c) = self.rest.chars().next() else {
            return Ok(None);
        };
        if c == ';' {
            let after = self.rest.trim_start_matches(';');
            let mut tail = Tokens { rest: after };
            tail.skip_space()?;
            if tail.rest.is_empty() {
                self.rest = "";
                return Ok(None);
            }
            return Err("only one statement is allowed".into());
        }
        if c == '\'' || c == '"' {
            let (text, len) = quoted(self.rest, c).ok_or("unterminated quoted string")?;
            self.rest = &self.rest[len..];
            return Ok(Some(if c == '\'' {
                Token::Quoted(text)
            } else {
                Token::QuotedName(text)
            }));
        }
        if c == '=' || c == ',' {
            self.rest = &self.rest[1..];
            return Ok(Some(Token::Symbol(c)));
        }
        let len = self
            .rest
            .find(|ch: char| ch.is_whitespace() || matches!(ch, '=' | ',' | ';' | '\'' | '"'))
            .unwrap_or(self.rest.len());
        let word = &self.rest[..len];
        self.rest = &self.rest[len..];
        Ok(Some(Token::Word(word)))
    }

    /// A setting name: words and quoted names joined by dots, lower-cased
    /// unless quoted.
    pub(super) fn expect_name(&mut self) -> Result<String, String> {
        match self.next()? {
            Some(Token::Word(w)) => Ok(w.to_ascii_lowercase()),
            Some(Token::QuotedName(n)) => Ok(n),
            _ => Err("expected a setting name".into()),
        }
    }

    pub(super) fn peek_is_name(&self) -> Result<bool, String> {
        let mut ahead = Tokens { rest: self.rest };
        Ok(match ahead.next()? {
            Some(Token::Word(w)) => !w.eq_ignore_ascii_case("to"),
            Some(Token::QuotedName(_)) => true,
            _ => false,
        })
    }

    /// Consumes `word` (any case) if it comes next.
    pub(super) fn eat_word(&mut self, word: &str) -> Result<bool, String> {
        let mut ahead = Tokens { rest: self.rest };
        if matches!(ahead.next()?, Some(Token::Word(w)) if w.eq_ignore_ascii_case(word)) {
            self.rest = ahead.rest;
            return Ok(true);
        }
        Ok(false)
    }

    pub(super) fn expect_end(&mut self) -> Result<(), String> {
        match self.next()? {
            None => Ok(()),
            Some(_) => Err("unexpected text at the end".into()),
        }
    }

    /// What is left to read.
    pub(super) fn rest(&self) -> &'a str {
        self.rest
    }

    pub(super) fn skip_rest(&mut self) {
        self.rest = "";
    }
}

/// The text of a quoted token at the start of `s` (quote char `q`, doubled
/// to escape) and the token's length.
fn quoted(s: &str, q: char) -> Option<(String, usize)> {
    let mut text = String::new();
    let mut chars = s.char_indices().skip(1).peekable();
    while let Some((i, c)) = chars.next() {
        if c == q {
            if matches!(chars.peek(), Some((_, next)) if *next == q) {
                chars.next();
                text.push(q);
            } else {
                return Some((text, i + 1));
            }
        } else {
            text.push(c);
        }
    }
    None
}
