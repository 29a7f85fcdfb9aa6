//! The one parser of key lists: `kid:base64,kid2:base64,…`, the first key
//! active (it seals or signs), every key usable to open or verify, so keys
//! rotate by adding the new one first. Used by `LECTERN_FIELD_KEYS` and
//! `LECTERN_PLAYBACK_KEYS`.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;

/// One key of a list. `Debug` shows the id only.
#[derive(Clone)]
pub struct NamedKey {
    pub id: String,
    pub secret: Vec<u8>,
}

impl std::fmt::Debug for NamedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NamedKey({:?}, <redacted>)", self.id)
    }
}

/// How long a secret must be.
#[derive(Debug, Clone, Copy)]
pub enum SecretLength {
    Exactly(usize),
    AtLeast(usize),
}

/// Parses a key list. Errors say what is wrong without echoing a secret.
pub fn parse_key_list(text: &str, length: SecretLength) -> Result<Vec<NamedKey>, String> {
    let mut keys: Vec<NamedKey> = Vec::new();
    for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let Some((id, b64)) = entry.split_once(':') else {
            return Err("expected `id:base64key,…` (the active key first)".into());
        };
        if !is_key_id(id) {
            return Err("a key id is 1–32 letters, digits, `-` or `_`".into());
        }
        if keys.iter().any(|k| k.id == id) {
            return Err(format!("key id {id:?} appears twice"));
        }
        let b64 = b64.trim();
        let secret = STANDARD
            .decode(b64)
            .or_else(|_| URL_SAFE_NO_PAD.decode(b64.trim_end_matches('=')))
            .map_err(|_| format!("the secret of key {id:?} is not base64"))?;
        match length {
            SecretLength::Exactly(n) if secret.len() != n => {
                return Err(format!(
                    "the secret of key {id:?} must be {n} bytes (base64 of {n} random bytes, \
                     e.g. `openssl rand -base64 {n}`)"
                ))
            }
            SecretLength::AtLeast(n) if secret.len() < n => {
                return Err(format!(
                    "the secret of key {id:?} is {} bytes; use at least {n} random bytes \
                     (e.g. `openssl rand -base64 {n}`)",
                    secret.len()
                ))
            }
            _ => {}
        }
        keys.push(NamedKey {
            id: id.to_string(),
            secret,
        });
    }
    if keys.is_empty() {
        return Err("needs at least one key".into());
    }
    Ok(keys)
}

fn is_key_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 32
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// One 32-byte key in base64 (`LECTERN_BLIND_INDEX_KEY`, `LECTERN_TOKEN_KEY`).
pub fn parse_key32(text: &str) -> Result<[u8; 32], String> {
    let bytes = STANDARD
        .decode(text.trim())
        .map_err(|_| "is not base64".to_string())?;
    bytes
        .try_into()
        .map_err(|_| "must be 32 bytes (base64 of 32 random bytes)".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rotating_lists_and_refuses_what_would_hide_a_mistake() {
        let a = STANDARD.encode([1u8; 32]);
        let b = URL_SAFE_NO_PAD.encode([2u8; 40]);
        let keys = parse_key_list(&format!("a:{a}, b-2:{b}"), SecretLength::AtLeast(32)).unwrap();
        assert_eq!(keys[0].id, "a");
        assert_eq!(keys[1].secret, vec![2u8; 40]);
        assert!(parse_key_list(&format!("b:{b}"), SecretLength::Exactly(32)).is_err());
        assert!(parse_key_list("", SecretLength::AtLeast(32)).is_err());
        assert!(parse_key_list("nocolon", SecretLength::AtLeast(32)).is_err());
        assert!(parse_key_list(&format!("a:{a},a:{a}"), SecretLength::AtLeast(32)).is_err());
        assert!(parse_key_list(&format!("bad id:{a}"), SecretLength::AtLeast(32)).is_err());
        let short = STANDARD.encode([3u8; 8]);
        let e = parse_key_list(&format!("s:{short}"), SecretLength::AtLeast(32)).unwrap_err();
        assert!(!e.contains(&short), "{e}");
        assert!(!format!("{keys:?}").contains(&a), "Debug shows no secret");
    }
}
