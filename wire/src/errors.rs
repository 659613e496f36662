//! SQLSTATEs the front end raises itself, and the conversion of every error
//! into what an ErrorResponse carries.

use pgwire::error::{ErrorInfo, SEVERITY_ERROR, SEVERITY_FATAL, SEVERITY_WARNING};

use crate::executor::SqlError;

/// Messages are cut to this many bytes: an ErrorResponse that quotes a huge
/// statement helps no one and could exceed what a client accepts.
const MAX_MESSAGE_BYTES: usize = 8 * 1024;

/// 08P01: the client broke the protocol.
pub(crate) fn protocol_violation(message: impl Into<String>) -> SqlError {
    SqlError::new("08P01", message)
}

/// 57014: the statement was cancelled at the client's request.
pub(crate) fn query_canceled() -> SqlError {
    SqlError::new("57014", "canceling statement due to user request")
}

/// 57014: the statement ran longer than the session's `statement_timeout`.
pub(crate) fn statement_timeout() -> SqlError {
    SqlError::new("57014", "canceling statement due to statement timeout")
}

/// XX000: a bug on our side; the connection stays usable.
pub(crate) fn internal(message: impl Into<String>) -> SqlError {
    SqlError::new("XX000", message)
}

/// The ErrorResponse fields for `error`, at severity ERROR (the connection
/// goes on) or FATAL (it is closed right after).
pub(crate) fn error_info(error: &SqlError, fatal: bool) -> ErrorInfo {
    let severity = if fatal {
        SEVERITY_FATAL
    } else {
        SEVERITY_ERROR
    };
    info_at(severity, error)
}

/// The NoticeResponse fields for a WARNING: the statement goes on.
pub(crate) fn warning_info(warning: &SqlError) -> ErrorInfo {
    info_at(SEVERITY_WARNING, warning)
}

fn info_at(severity: &str, error: &SqlError) -> ErrorInfo {
    let mut info = ErrorInfo::new(
        severity.to_string(),
        sqlstate(&error.sqlstate).to_string(),
        truncate(&error.message),
    );
    info.severity_nonlocalized = Some(severity.to_string());
    info.detail = error.detail.as_deref().map(truncate);
    info
}

/// A SQLSTATE is five digits or upper-case letters; anything else the
/// executor produced is reported as an internal error rather than sent
/// malformed.
fn sqlstate(code: &str) -> &str {
    if code.len() == 5
        && code
            .bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase())
    {
        code
    } else {
        "XX000"
    }
}

fn truncate(text: &str) -> String {
    if text.len() <= MAX_MESSAGE_BYTES {
        return text.to_string();
    }
    let mut end = MAX_MESSAGE_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_sqlstate_message_and_detail() {
        let mut e = SqlError::new("23505", "duplicate key");
        e.detail = Some("Key (id)=(1) already exists.".into());
        let info = error_info(&e, false);
        assert_eq!(info.severity, "ERROR");
        assert_eq!(info.code, "23505");
        assert_eq!(info.message, "duplicate key");
        assert_eq!(info.detail.as_deref(), Some("Key (id)=(1) already exists."));
    }

    #[test]
    fn malformed_sqlstate_becomes_internal() {
        assert_eq!(error_info(&SqlError::new("oops", "x"), false).code, "XX000");
        assert_eq!(error_info(&SqlError::new("2350", "x"), false).code, "XX000");
    }

    #[test]
    fn long_messages_are_cut_on_a_char_boundary() {
        let long = "é".repeat(MAX_MESSAGE_BYTES);
        let info = error_info(&SqlError::new("42601", long), true);
        assert_eq!(info.severity, "FATAL");
        assert!(info.message.len() <= MAX_MESSAGE_BYTES + '…'.len_utf8());
        assert!(info.message.ends_with('…'));
    }
}
