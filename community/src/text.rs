//! What a post's text may be: trimmed, within its kind's length (counted
//! in characters, so Chinese and English get the same room per
//! character), without control characters other than newlines and tabs.
//! Each way to fail has its own code (`text_empty`, `text_too_long`,
//! `invalid_text`).
//!
//! Text is stored exactly as validated and answered as a JSON string; the
//! API never renders it as HTML, never turns URLs into links and never
//! fetches them. Clients must escape it when they put it into a page (the
//! player SDK inserts it as text nodes).

use lectern_web::{ApiError, ErrorCode};

/// The longest review text, in characters.
pub const REVIEW_MAX: usize = 5_000;
/// The longest comment or reply.
pub const COMMENT_MAX: usize = 2_000;
/// The longest question.
pub const QUESTION_MAX: usize = 5_000;
/// The longest answer.
pub const ANSWER_MAX: usize = 10_000;
/// The longest reason (a report's, a moderator's, a course review's).
pub const REASON_MAX: usize = 500;
/// The longest free-text answer to a survey question.
pub const SURVEY_TEXT_MAX: usize = 2_000;

/// `value` trimmed, if it holds 1..=`max` characters (0..=`max` when
/// `may_be_empty`) and no control characters but `\n`, `\r`, `\t`.
pub fn checked(
    value: &str,
    field: &str,
    max: usize,
    may_be_empty: bool,
) -> Result<String, ApiError> {
    let v = value.trim();
    if v.is_empty() && !may_be_empty {
        return Err(ApiError::new(
            ErrorCode::TextEmpty,
            format!("{field} must not be empty"),
        ));
    }
    let n = v.chars().count();
    if n > max {
        return Err(ApiError::new(
            ErrorCode::TextTooLong,
            format!("{field} is {n} characters; at most {max} are allowed"),
        ));
    }
    if v.chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        return Err(ApiError::new(
            ErrorCode::InvalidText,
            format!("{field} holds control characters"),
        ));
    }
    Ok(v.to_string())
}

/// The first characters of a post, for notifications and the moderation
/// queue's overview.
pub fn excerpt(text: &str) -> String {
    const LEN: usize = 60;
    let mut out: String = text.chars().take(LEN).collect();
    if text.chars().nth(LEN).is_some() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_failure_has_its_code() {
        assert_eq!(
            checked("  ", "body", 10, false).unwrap_err().code,
            ErrorCode::TextEmpty
        );
        assert_eq!(checked("", "body", 10, true).unwrap(), "");
        assert_eq!(
            checked(&"字".repeat(11), "body", 10, false)
                .unwrap_err()
                .code,
            ErrorCode::TextTooLong
        );
        assert_eq!(
            checked(&"字".repeat(10), "body", 10, false)
                .unwrap()
                .chars()
                .count(),
            10
        );
        assert_eq!(
            checked("a\u{0}b", "body", 10, false).unwrap_err().code,
            ErrorCode::InvalidText
        );
        assert_eq!(checked(" a\nb\t ", "body", 10, false).unwrap(), "a\nb");
        // Markup is text like any other: stored and answered unchanged.
        assert_eq!(
            checked("<script>x</script>", "body", 100, false).unwrap(),
            "<script>x</script>"
        );
        assert_eq!(excerpt(&"好".repeat(61)).chars().count(), 61);
    }
}
