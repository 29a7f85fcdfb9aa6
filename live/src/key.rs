//! Stream keys: `lsk_` and 43 URL-safe characters (256 random bits),
//! shown once when an event is created or its key rotated. The database
//! keeps only the SHA-256 (`live_events.stream_key_sha256`): a stolen table
//! yields no key, and a presented key is found with one indexed equality.
//! The digest found is compared again in constant time before it counts.

use subtle::ConstantTimeEq;

/// A fresh stream key.
pub fn generate() -> String {
    lectern_secrets::random_token("lsk_")
}

/// What the database stores of `key`.
pub fn digest(key: &str) -> Vec<u8> {
    lectern_secrets::token_fingerprint(key)
}

/// Whether `presented` is the key whose digest is `stored`, in constant time.
pub fn matches(presented: &str, stored: &[u8]) -> bool {
    digest(presented).ct_eq(stored).into()
}

/// A stream key is short printable text; anything else is not worth a query.
pub fn plausible(key: &str) -> bool {
    (8..=200).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_graphic())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_matches_only_its_own_digest() {
        let key = generate();
        assert!(key.starts_with("lsk_") && key.len() == 47);
        assert!(matches(&key, &digest(&key)));
        assert!(!matches(&generate(), &digest(&key)));
        assert!(!matches(&key, &[0u8; 32]));
        assert!(plausible(&key));
        assert!(!plausible("short") && !plausible("has space in it"));
    }
}
