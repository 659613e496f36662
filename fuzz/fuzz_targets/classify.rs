//! The classifier on arbitrary text: splitting a query string, classifying
//! each statement (with and without the cache), and the role statements.
//! Nothing may panic or overflow the stack, and the cache must agree with
//! the classifier.

#![no_main]

use libfuzzer_sys::fuzz_target;
use resqlite::sql::{classify, result_types::infer_result_types, roles, split_statements};
use resqlite::sql::{Class, ClassifyCache};

fuzz_target!(|sql: &str| {
    let cache = ClassifyCache::new(4);
    let _ = roles::parse(sql);
    let direct = classify(sql);
    assert_eq!(format!("{direct:?}"), format!("{:?}", cache.classify(sql)));
    // Twice: the second answer comes from the cache.
    assert_eq!(format!("{direct:?}"), format!("{:?}", cache.classify(sql)));
    if let Ok(c) = &direct {
        if c.class == Class::Read {
            let _ = infer_result_types(sql, 3, &|_: &[String], _: &str| None);
        }
    }
    for statement in split_statements(sql).iter().take(16) {
        let _ = roles::parse(statement);
        let _ = classify(statement);
    }
});
