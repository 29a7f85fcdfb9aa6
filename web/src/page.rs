//! Pagination, the same everywhere: a `limit` within the list's bounds
//! ([`Limit`]), lists that continue by keyset (the last item's sort key
//! and id, never an offset, so pages neither skip nor repeat while rows
//! arrive), and an opaque [`Cursor`] when the key has several parts.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::{ApiError, ErrorCode};

/// How many items a page may hold, as a list declares it.
#[derive(Debug, Clone, Copy)]
pub struct Limit {
    pub default: i64,
    pub max: i64,
}

impl Limit {
    pub const fn new(default: i64, max: i64) -> Self {
        Self { default, max }
    }

    /// The caller's `limit`, or the default; outside 1..=max is 400
    /// `invalid_limit`.
    pub fn of(self, asked: Option<i64>) -> Result<i64, ApiError> {
        match asked {
            None => Ok(self.default),
            Some(n) if (1..=self.max).contains(&n) => Ok(n),
            Some(n) => Err(ApiError::new(
                ErrorCode::InvalidLimit,
                format!("limit must be between 1 and {}, got {n}", self.max),
            )),
        }
    }
}

/// An opaque continuation token: the position after the last item, as
/// base64url JSON. Opaque so clients pass it back unchanged and lists can
/// change their key without breaking them.
pub struct Cursor;

impl Cursor {
    pub fn encode<K: Serialize>(key: &K) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(key).expect("a cursor key serialises"))
    }

    /// 400 `invalid_cursor` for anything this server did not issue.
    pub fn decode<K: DeserializeOwned>(text: &str) -> Result<K, ApiError> {
        URL_SAFE_NO_PAD
            .decode(text)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::InvalidCursor,
                    "the cursor is not one this list returned; start again without it",
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_and_cursors_refuse_what_they_did_not_issue() {
        let l = Limit::new(20, 100);
        assert_eq!(l.of(None).unwrap(), 20);
        assert_eq!(l.of(Some(100)).unwrap(), 100);
        assert_eq!(l.of(Some(0)).unwrap_err().code, ErrorCode::InvalidLimit);
        assert_eq!(l.of(Some(101)).unwrap_err().code, ErrorCode::InvalidLimit);
        let c = Cursor::encode(&("2026-12-04T00:00:00Z", 7));
        let back: (String, i32) = Cursor::decode(&c).unwrap();
        assert_eq!(back.1, 7);
        assert!(Cursor::decode::<(String, i32)>("not base64!").is_err());
        assert!(Cursor::decode::<(String, i32)>(&Cursor::encode(&"x")).is_err());
    }
}
