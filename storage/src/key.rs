//! The rules every object key obeys, shared by all backends so a key valid on
//! one is valid on the other, and so the fs backend can join key segments onto
//! its root without any chance of escaping it.

use crate::{Result, StorageError};

/// Longest key accepted, in bytes: S3's own limit.
pub const MAX_KEY_LEN: usize = 1024;

/// Accepts keys that are non-empty, relative, `/`-separated paths with no
/// empty, `.` or `..` segments, no backslash or NUL, and at most
/// [`MAX_KEY_LEN`] bytes.
pub fn validate_key(key: &str) -> Result<()> {
    let invalid = |reason: &str| {
        Err(StorageError::InvalidKey {
            // Cap the echoed key so a hostile 1 MB key does not flood logs.
            key: key.chars().take(128).collect(),
            reason: reason.to_owned(),
        })
    };
    if key.is_empty() {
        return invalid("key is empty");
    }
    if key.len() > MAX_KEY_LEN {
        return invalid(&format!(
            "key is {} bytes, the limit is {MAX_KEY_LEN}",
            key.len()
        ));
    }
    if key.contains('\0') {
        return invalid("key contains a NUL byte");
    }
    if key.contains('\\') {
        return invalid("key contains a backslash; use `/` to separate segments");
    }
    if key.starts_with('/') {
        return invalid("key must be relative (must not start with `/`)");
    }
    for segment in key.split('/') {
        match segment {
            "" => return invalid("key has an empty segment (`//` or a trailing `/`)"),
            "." | ".." => return invalid("key has a `.` or `..` segment"),
            _ => {}
        }
    }
    Ok(())
}

/// Splits a listing prefix into its directory part (a valid key, or empty) and
/// the partial last segment, refusing prefixes no valid key could start with.
pub(crate) fn split_prefix(prefix: &str) -> Result<(&str, &str)> {
    let (dir, partial) = match prefix.rfind('/') {
        Some(i) => (&prefix[..i], &prefix[i + 1..]),
        None => ("", prefix),
    };
    if !dir.is_empty() {
        validate_key(dir).map_err(|e| match e {
            StorageError::InvalidKey { reason, .. } => StorageError::InvalidKey {
                key: prefix.chars().take(128).collect(),
                reason: format!("listing prefix: {reason}"),
            },
            other => other,
        })?;
    }
    if partial.contains(['\0', '\\']) {
        return Err(StorageError::InvalidKey {
            key: prefix.chars().take(128).collect(),
            reason: "listing prefix contains a NUL byte or backslash".to_owned(),
        });
    }
    Ok((dir, partial))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_keys() {
        for key in [
            "a",
            "videos/42/source.mp4",
            "hls/720p/seg-00001.ts",
            ".hidden/x",
            "a..b/c.",
        ] {
            validate_key(key).unwrap_or_else(|e| panic!("{key}: {e}"));
        }
        validate_key(&"k".repeat(MAX_KEY_LEN)).unwrap();
    }

    #[test]
    fn refuses_keys_that_could_escape_or_alias() {
        let long = "k".repeat(MAX_KEY_LEN + 1);
        for key in [
            "",
            "/abs",
            "../escape",
            "a/../../b",
            "a/./b",
            ".",
            "a//b",
            "a/",
            "a\\b",
            "a\0b",
            long.as_str(),
        ] {
            assert!(
                matches!(validate_key(key), Err(StorageError::InvalidKey { .. })),
                "{key:?} should be refused"
            );
        }
    }

    #[test]
    fn prefixes_split_into_directory_and_partial_segment() {
        assert_eq!(split_prefix("").unwrap(), ("", ""));
        assert_eq!(split_prefix("ite").unwrap(), ("", "ite"));
        assert_eq!(split_prefix("a/b/").unwrap(), ("a/b", ""));
        assert_eq!(split_prefix("a/b/it").unwrap(), ("a/b", "it"));
        assert!(split_prefix("../").is_err());
        assert!(split_prefix("a//b").is_err());
    }
}
