//! Remembers how recent statement texts were classified. A prepared
//! statement is executed with the same text again and again, and apps send
//! the same few statements all day: parsing each with sqlparser on every
//! execution costs more than running a point SELECT in SQLite.
//!
//! Classification is a pure function of the text, so a cached answer is
//! always the answer. Refusals are not cached (they are rare, and their
//! message is rebuilt). The cache is bounded: when full it starts over,
//! which costs one parse per statement, never a wrong answer.

use std::collections::HashMap;
use std::sync::Mutex;

use resqlite_wire::SqlError;

use super::{classify, Classified};

/// Statement texts longer than this are not kept (bulk INSERTs, scripts).
const MAX_CACHED_LEN: usize = 4096;

/// A bounded map from statement text to its class.
pub struct ClassifyCache {
    entries: Mutex<HashMap<Box<str>, Classified>>,
    capacity: usize,
}

impl ClassifyCache {
    /// A cache of at most `capacity` statement texts.
    pub fn new(capacity: usize) -> Self {
        ClassifyCache {
            entries: Mutex::new(HashMap::new()),
            capacity: capacity.max(1),
        }
    }

    /// [`classify`], answered from the cache when the text was seen.
    pub fn classify(&self, sql: &str) -> Result<Classified, SqlError> {
        let known = self.entries.lock().ok().and_then(|m| m.get(sql).copied());
        if let Some(known) = known {
            return Ok(known);
        }
        let classified = classify(sql)?;
        if sql.len() <= MAX_CACHED_LEN {
            if let Ok(mut entries) = self.entries.lock() {
                if entries.len() >= self.capacity {
                    entries.clear();
                }
                entries.insert(sql.into(), classified);
            }
        }
        Ok(classified)
    }

    /// How many texts are remembered.
    pub fn len(&self) -> usize {
        self.entries.lock().map(|m| m.len()).unwrap_or(0)
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::Class;

    #[test]
    fn answers_like_classify_and_stays_bounded() {
        let cache = ClassifyCache::new(2);
        for sql in [
            "SELECT 1",
            "INSERT INTO t VALUES (1)",
            "SELECT 1",
            "DELETE FROM t",
        ] {
            assert_eq!(
                cache.classify(sql).unwrap(),
                classify(sql).unwrap(),
                "{sql}"
            );
            assert_eq!(
                cache.classify(sql).unwrap(),
                classify(sql).unwrap(),
                "{sql}"
            );
            assert!(cache.len() <= 2);
        }
        assert_eq!(cache.classify("SELECT 1").unwrap().class, Class::Read);
    }

    #[test]
    fn refusals_are_answered_every_time_and_not_kept() {
        let cache = ClassifyCache::new(8);
        for _ in 0..2 {
            assert_eq!(cache.classify("BEGIN").unwrap_err().sqlstate, "0A000");
            assert_eq!(
                cache
                    .classify("INSERT INTO t VALUES (random())")
                    .unwrap_err()
                    .sqlstate,
                "0A000"
            );
        }
        assert!(cache.is_empty());
    }

    #[test]
    fn long_texts_are_not_kept() {
        let cache = ClassifyCache::new(8);
        let long = format!("SELECT '{}'", "x".repeat(MAX_CACHED_LEN));
        assert_eq!(cache.classify(&long).unwrap().class, Class::Read);
        assert!(cache.is_empty());
    }
}
