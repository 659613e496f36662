//! Splits a simple-query string into statements the way SQLite reads them,
//! so a `;` inside a string, a comment or a trigger body does not split.

use std::ffi::CString;

/// Returns the statements of `sql` in order, trimmed, empty ones dropped.
/// A trailing statement without `;` is kept.
pub fn split_statements(sql: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut start = 0;
    for (pos, ch) in sql.char_indices() {
        if ch != ';' {
            continue;
        }
        let candidate = &sql[start..=pos];
        if is_complete(candidate) {
            push_trimmed(&mut out, candidate);
            start = pos + 1;
        }
    }
    push_trimmed(&mut out, &sql[start..]);
    out
}

fn push_trimmed(out: &mut Vec<String>, stmt: &str) {
    let s = stmt.trim();
    let body = s.trim_end_matches(';').trim();
    if !body.is_empty() && !is_only_comments(body) {
        out.push(s.to_string());
    }
}

/// Whether `sql` is nothing but comments.
fn is_only_comments(sql: &str) -> bool {
    let mut rest = sql.trim_start();
    loop {
        if rest.is_empty() {
            return true;
        }
        if let Some(r) = rest.strip_prefix("--") {
            rest = r.find('\n').map_or("", |i| &r[i + 1..]).trim_start();
        } else if let Some(r) = rest.strip_prefix("/*") {
            match r.find("*/") {
                Some(i) => rest = r[i + 2..].trim_start(),
                None => return true,
            }
        } else {
            return false;
        }
    }
}

/// SQLite's own judgement: does this text end a complete statement?
fn is_complete(sql: &str) -> bool {
    let Ok(c) = CString::new(sql) else {
        // An interior NUL: let the parser report it as a whole.
        return false;
    };
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call;
    // sqlite3_complete only reads it.
    unsafe { rusqlite::ffi::sqlite3_complete(c.as_ptr()) != 0 }
}

#[cfg(test)]
mod tests {
    use super::split_statements;

    #[test]
    fn splits_on_top_level_semicolons_only() {
        let sql = "INSERT INTO t VALUES('a;b'); -- c;\nSELECT 1;\n\
                   CREATE TRIGGER tr AFTER INSERT ON t BEGIN UPDATE t SET x = 1; DELETE FROM u; END;\
                   SELECT 2";
        let got = split_statements(sql);
        assert_eq!(got.len(), 4, "{got:?}");
        assert_eq!(got[0], "INSERT INTO t VALUES('a;b');");
        assert!(got[1].ends_with("SELECT 1;"));
        assert!(got[2].starts_with("CREATE TRIGGER") && got[2].ends_with("END;"));
        assert_eq!(got[3], "SELECT 2");
    }

    #[test]
    fn empty_and_comment_only_input_has_no_statements() {
        assert!(split_statements("").is_empty());
        assert!(split_statements(" ;; ").is_empty());
        assert!(split_statements("-- nothing\n/* at all */").is_empty());
    }
}
