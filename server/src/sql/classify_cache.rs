//! Remembers how recent statements were classified. A prepared statement
//! is executed with the same text again and again, and apps send the same
//! few statements all day: parsing each with sqlparser on every execution
//! costs more than running a point SELECT in SQLite.
//!
//! Statements are remembered by their shape (`normalize.rs`): the text with
//! the literals that cannot change the class replaced by placeholders, so
//! `… WHERE k = 1` and `… WHERE k = 2` share one entry. Statements the
//! normaliser declines keep an entry per exact text, in a separate map so a
//! text can never be mistaken for a shape.
//!
//! Classification is a pure function of the text, and two texts with one
//! shape are classified the same, so a cached answer is always the answer.
//! What is stored (read or write, and the command word of the tag) holds no
//! literal. Refusals are not cached (they are rare, and their message is
//! rebuilt from the statement itself). The cache is bounded: when full it
//! starts over, which costs one parse per statement, never a wrong answer.

use std::collections::HashMap;
use std::sync::Mutex;

use resqlite_wire::SqlError;

use super::normalize::shape;
use super::{classify, Classified};

/// Statement texts longer than this are not kept (bulk INSERTs, scripts).
const MAX_CACHED_LEN: usize = 4096;

/// A bounded map from statement shape (or text) to its class.
pub struct ClassifyCache {
    entries: Mutex<Entries>,
    capacity: usize,
}

#[derive(Default)]
struct Entries {
    /// By [`shape`].
    shapes: HashMap<Box<str>, Classified>,
    /// By exact text, for statements [`shape`] declines.
    texts: HashMap<Box<str>, Classified>,
}

impl Entries {
    fn map(&mut self, by_shape: bool) -> &mut HashMap<Box<str>, Classified> {
        if by_shape {
            &mut self.shapes
        } else {
            &mut self.texts
        }
    }
}

impl ClassifyCache {
    /// A cache of at most `capacity` statement shapes and texts.
    pub fn new(capacity: usize) -> Self {
        ClassifyCache {
            entries: Mutex::new(Entries::default()),
            capacity: capacity.max(1),
        }
    }

    /// [`classify`], answered from the cache when a statement of the same
    /// shape was seen.
    pub fn classify(&self, sql: &str) -> Result<Classified, SqlError> {
        if sql.len() > MAX_CACHED_LEN {
            return classify(sql);
        }
        let shape = shape(sql);
        let key: &str = shape.as_deref().unwrap_or(sql);
        let by_shape = shape.is_some();
        let known = self
            .entries
            .lock()
            .ok()
            .and_then(|mut e| e.map(by_shape).get(key).copied());
        if let Some(known) = known {
            return Ok(known);
        }
        // Classified from the statement itself: the shape only files it.
        let classified = classify(sql)?;
        if let Ok(mut entries) = self.entries.lock() {
            if entries.shapes.len() + entries.texts.len() >= self.capacity {
                entries.shapes.clear();
                entries.texts.clear();
            }
            entries.map(by_shape).insert(key.into(), classified);
        }
        Ok(classified)
    }

    /// How many shapes and texts are remembered.
    pub fn len(&self) -> usize {
        self.entries
            .lock()
            .map(|e| e.shapes.len() + e.texts.len())
            .unwrap_or(0)
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
