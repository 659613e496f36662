//! Parameter type inference on an arbitrary statement and parameter
//! count: one type per parameter, whatever the text.
//!
//! Input: two bytes of count (big-endian, up to 65535 as the protocol
//! allows), then the statement.

#![no_main]

use libfuzzer_sys::fuzz_target;
use resqlite::sql::params::infer_param_types;

fuzz_target!(|data: &[u8]| {
    let Some((count, sql)) = data.split_first_chunk::<2>() else {
        return;
    };
    let Ok(sql) = std::str::from_utf8(sql) else {
        return;
    };
    let count = usize::from(u16::from_be_bytes(*count));
    let types = infer_param_types(sql, count, |_, _| None);
    assert_eq!(types.len(), count);
});
