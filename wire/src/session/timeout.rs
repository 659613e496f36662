//! Timeout settings (`statement_timeout`, `lock_timeout`,
//! `idle_in_transaction_session_timeout`), read as PostgreSQL reads them: a
//! number of milliseconds, or a number with a unit (`us`, `ms`, `s`, `min`,
//! `h`, `d`), fractions allowed (`1.5s`); 0 turns the timeout off.

use std::time::Duration;

use crate::executor::SqlError;

/// PostgreSQL's upper bound for the setting: `INT_MAX` milliseconds.
const MAX_MILLIS: f64 = i32::MAX as f64;

/// The timeout `value` sets for the setting `name`; `None` for 0 (no
/// timeout).
pub(crate) fn parse_timeout(name: &str, value: &str) -> Result<Option<Duration>, SqlError> {
    let invalid = |hint: &str| {
        let mut e = SqlError::new(
            "22023",
            format!("invalid value for parameter \"{name}\": \"{value}\""),
        );
        e.detail = Some(hint.to_string());
        e
    };
    let text = value.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == '+'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| invalid("Use a number of milliseconds, or a number with a unit."))?;
    let scale = match unit.trim() {
        "" | "ms" => 1.0,
        "us" => 0.001,
        "s" => 1_000.0,
        "min" => 60_000.0,
        "h" => 3_600_000.0,
        "d" => 86_400_000.0,
        _ => return Err(invalid(
            "Valid units for this parameter are \"us\", \"ms\", \"s\", \"min\", \"h\", and \"d\".",
        )),
    };
    let millis = (number * scale).round();
    if !(0.0..=MAX_MILLIS).contains(&millis) {
        return Err(SqlError::new(
            "22023",
            format!(
                "{value} is outside the valid range for parameter \"{name}\" \
                 (0 .. 2147483647 ms)"
            ),
        ));
    }
    // A positive value under half a millisecond still means "a timeout".
    let millis = if millis == 0.0 && number * scale > 0.0 {
        1.0
    } else {
        millis
    };
    Ok((millis > 0.0).then(|| Duration::from_millis(millis as u64)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(value: &str) -> Option<u64> {
        parse_timeout("statement_timeout", value)
            .unwrap()
            .map(|d| d.as_millis() as u64)
    }

    #[test]
    fn numbers_are_milliseconds_and_units_scale_them() {
        assert_eq!(ms("1500"), Some(1500));
        assert_eq!(ms("1s"), Some(1000));
        assert_eq!(ms(" 1.5 s "), Some(1500));
        assert_eq!(ms("2min"), Some(120_000));
        assert_eq!(ms("1h"), Some(3_600_000));
        assert_eq!(ms("1d"), Some(86_400_000));
        assert_eq!(ms("250ms"), Some(250));
        assert_eq!(ms("2000us"), Some(2));
        assert_eq!(ms("100us"), Some(1));
    }

    #[test]
    fn zero_turns_it_off() {
        assert_eq!(ms("0"), None);
        assert_eq!(ms("0s"), None);
    }

    #[test]
    fn nonsense_and_out_of_range_are_refused() {
        for bad in ["", "abc", "1 fortnight", "1S", "-1", "30d"] {
            let e = parse_timeout("lock_timeout", bad).unwrap_err();
            assert_eq!(e.sqlstate, "22023", "{bad}");
            assert!(e.message.contains("\"lock_timeout\""), "{}", e.message);
        }
    }
}
