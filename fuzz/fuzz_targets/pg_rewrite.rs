//! `pg_syntax::to_sqlite` on arbitrary text: it never panics, and what it
//! returns is SQLite with nothing left to rewrite, which the classifier
//! (the next step on a real statement) accepts or refuses cleanly.

#![no_main]

use std::borrow::Cow;

use libfuzzer_sys::fuzz_target;
use resqlite::sql::{classify, pg_syntax::to_sqlite};

fuzz_target!(|sql: &str| {
    let Ok(rewritten) = to_sqlite(sql) else {
        return;
    };
    if let Cow::Owned(out) = &rewritten {
        match to_sqlite(out) {
            Ok(again) => assert_eq!(
                again.as_ref(),
                out.as_str(),
                "a rewritten statement was rewritten again"
            ),
            Err(e) => panic!("a rewritten statement is refused by the rewrite: {e}"),
        }
    }
    let _ = classify(&rewritten);
});
