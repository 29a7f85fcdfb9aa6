//! The field keyring, and everything done with it: AES-256-GCM field
//! encryption of personal data (with key ids, so keys rotate), the blind
//! index that makes encrypted emails searchable, token signing, and the
//! random tokens and their SHA-256 fingerprints.
//!
//! Keys come from configuration only, never from the database, and no type
//! here prints them: `Debug` shows key ids, never key bytes.
//!
//! A sealed value is `key id ‖ nonce ‖ ciphertext`, with the column name
//! and row id as associated data: a ciphertext copied into another row or
//! column does not open, and the key id lets an old key keep opening what
//! it sealed while the first key seals everything new. Rotation is adding
//! a key in front, then `lectern admin rotate-keys` (re-seals in batches,
//! one transaction each). Emails are found by their blind index (an HMAC
//! of the normalised address) since random nonces make equal plaintexts
//! differ.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::keylist::{parse_key_list, SecretLength};

type HmacSha256 = Hmac<Sha256>;

const NONCE_LEN: usize = 12;

/// A key setting that cannot be used, naming the variable that holds it.
#[derive(Debug, thiserror::Error)]
#[error("{variable}: {message}")]
pub struct KeyError {
    pub variable: &'static str,
    pub message: String,
}

fn key_error(variable: &'static str, message: impl Into<String>) -> KeyError {
    KeyError {
        variable,
        message: message.into(),
    }
}

/// A sealed value that does not open: wrong key, another row's value, or
/// tampered bytes. Never bad input from a client.
#[derive(Debug, thiserror::Error)]
#[error("sealed {field} does not open: {reason}")]
pub struct SealError {
    pub field: &'static str,
    pub reason: &'static str,
}

struct FieldKey {
    id: String,
    cipher: Aes256Gcm,
}

/// Field keys (the first is active; the others only decrypt), the blind
/// index key and the token signing key.
pub struct Keyring {
    field_keys: Vec<FieldKey>,
    blind_index_key: [u8; 32],
    token_key: [u8; 32],
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&str> = self.field_keys.iter().map(|k| k.id.as_str()).collect();
        write!(f, "Keyring {{ field key ids: {ids:?}, keys: <redacted> }}")
    }
}

pub const FIELD_KEYS_VAR: &str = "LECTERN_FIELD_KEYS";
pub const BLIND_INDEX_KEY_VAR: &str = "LECTERN_BLIND_INDEX_KEY";
pub const TOKEN_KEY_VAR: &str = "LECTERN_TOKEN_KEY";

fn key_bytes(variable: &'static str, text: &str) -> Result<[u8; 32], KeyError> {
    crate::keylist::parse_key32(text).map_err(|m| key_error(variable, m))
}

impl Keyring {
    /// `field_keys` is `id:base64,id:base64,…` with the active key first.
    pub fn parse(
        field_keys: &str,
        blind_index_key: &str,
        token_key: &str,
    ) -> Result<Self, KeyError> {
        let keys = parse_key_list(field_keys, SecretLength::Exactly(32))
            .map_err(|m| key_error(FIELD_KEYS_VAR, m))?
            .into_iter()
            .map(|k| FieldKey {
                cipher: Aes256Gcm::new_from_slice(&k.secret).expect("checked to be 32 bytes"),
                id: k.id,
            })
            .collect();
        Ok(Self {
            field_keys: keys,
            blind_index_key: key_bytes(BLIND_INDEX_KEY_VAR, blind_index_key)?,
            token_key: key_bytes(TOKEN_KEY_VAR, token_key)?,
        })
    }

    /// Fresh random settings `(field keys, blind index key, token key)`, as
    /// [`Keyring::parse`] reads them; embedded mode stores them in a file.
    pub fn generate_settings() -> (String, String, String) {
        let key = || {
            let mut k = [0u8; 32];
            rand::rng().fill_bytes(&mut k);
            STANDARD.encode(k)
        };
        (format!("k1:{}", key()), key(), key())
    }

    pub fn active_key_id(&self) -> &str {
        &self.field_keys[0].id
    }

    /// Seals `plaintext` for one column of one row: the row id and column
    /// name are authenticated, so a ciphertext copied to another row or
    /// column does not open.
    pub fn seal(&self, field: &'static str, row: Uuid, plaintext: &str) -> Vec<u8> {
        let key = &self.field_keys[0];
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let aad = aad(field, row);
        let sealed = key
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext.as_bytes(),
                    aad: &aad,
                },
            )
            .expect("AES-GCM encryption of a short field cannot fail");
        let mut out = Vec::with_capacity(1 + key.id.len() + NONCE_LEN + sealed.len());
        out.push(key.id.len() as u8);
        out.extend_from_slice(key.id.as_bytes());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
    }

    pub fn open(&self, field: &'static str, row: Uuid, sealed: &[u8]) -> Result<String, SealError> {
        let err = |reason| SealError { field, reason };
        let (&id_len, rest) = sealed.split_first().ok_or(err("empty"))?;
        let id_len = usize::from(id_len);
        if rest.len() < id_len + NONCE_LEN {
            return Err(err("truncated"));
        }
        let (id, rest) = rest.split_at(id_len);
        let (nonce, body) = rest.split_at(NONCE_LEN);
        let key = self
            .field_keys
            .iter()
            .find(|k| k.id.as_bytes() == id)
            .ok_or(err("sealed with a key id that is not configured"))?;
        let plain = key
            .cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: body,
                    aad: &aad(field, row),
                },
            )
            .map_err(|_| err("authentication failed"))?;
        String::from_utf8(plain).map_err(|_| err("not UTF-8"))
    }

    /// The blind index of an email: HMAC-SHA-256 of its normalised form, so
    /// equal emails match without the database ever seeing one.
    pub fn email_index(&self, email: &str) -> Vec<u8> {
        let mut mac =
            <HmacSha256 as Mac>::new_from_slice(&self.blind_index_key).expect("any key length");
        mac.update(normalise_email(email).as_bytes());
        mac.finalize().into_bytes().to_vec()
    }

    /// The blind index of a phone number in E.164 form (`+8613800138000`;
    /// the caller normalises). Domain-separated from emails, so an email
    /// and a number never share an index.
    pub fn phone_index(&self, e164: &str) -> Vec<u8> {
        self.blind_index("phone", e164)
    }

    /// The blind index of `value` within `domain` (an external identity's
    /// kind and issuer, say): HMAC-SHA-256 under the blind-index key of
    /// `domain`, a NUL, then the value.
    pub fn blind_index(&self, domain: &str, value: &str) -> Vec<u8> {
        let mut mac =
            <HmacSha256 as Mac>::new_from_slice(&self.blind_index_key).expect("any key length");
        mac.update(domain.as_bytes());
        mac.update(&[0]);
        mac.update(value.as_bytes());
        mac.finalize().into_bytes().to_vec()
    }

    pub fn sign(&self, message: &[u8]) -> [u8; 32] {
        let mut mac = <HmacSha256 as Mac>::new_from_slice(&self.token_key).expect("any key length");
        mac.update(message);
        mac.finalize().into_bytes().into()
    }

    /// The key of the audit log's chain (HMAC-SHA-256), derived from the
    /// token key so a deployment configures nothing more. It lives only in
    /// configuration: whoever can write the database cannot re-chain rows
    /// they edited.
    pub fn audit_chain_key(&self) -> [u8; 32] {
        let mut mac = <HmacSha256 as Mac>::new_from_slice(&self.token_key).expect("any key length");
        mac.update(b"lectern audit chain v1");
        mac.finalize().into_bytes().into()
    }

    /// Constant-time check of a signature made by [`Keyring::sign`].
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        let mut mac = <HmacSha256 as Mac>::new_from_slice(&self.token_key).expect("any key length");
        mac.update(message);
        mac.verify_slice(signature).is_ok()
    }
}

fn aad(field: &str, row: Uuid) -> Vec<u8> {
    let mut aad = Vec::with_capacity(field.len() + 17);
    aad.extend_from_slice(field.as_bytes());
    aad.push(b':');
    aad.extend_from_slice(row.as_bytes());
    aad
}

pub fn normalise_email(email: &str) -> String {
    email.trim().to_lowercase()
}

/// A new random secret token, `prefix` + 256 bits in base64url.
pub fn random_token(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// What the database keeps of a token: its SHA-256, so a stolen table
/// yields no usable token and lookups stay one indexed equality.
pub fn token_fingerprint(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keyring(field_keys: &str) -> Keyring {
        let (_, blind, token) = Keyring::generate_settings();
        Keyring::parse(field_keys, &blind, &token).unwrap()
    }

    #[test]
    fn sealed_fields_open_only_for_their_row_and_column() {
        let (keys, _, _) = Keyring::generate_settings();
        let ring = keyring(&keys);
        let row = Uuid::new_v4();
        let sealed = ring.seal("users.email", row, "a@example.org");
        assert!(!sealed.windows(5).any(|w| w == b"a@exa"));
        assert_eq!(
            ring.open("users.email", row, &sealed).unwrap(),
            "a@example.org"
        );
        assert!(ring.open("users.phone", row, &sealed).is_err());
        assert!(ring.open("users.email", Uuid::new_v4(), &sealed).is_err());
    }

    #[test]
    fn old_keys_still_open_after_a_new_key_becomes_active() {
        let (old, _, _) = Keyring::generate_settings();
        let (new, _, _) = Keyring::generate_settings();
        let old_ring = keyring(&old);
        let row = Uuid::new_v4();
        let sealed = old_ring.seal("users.email", row, "x@y.z");
        let rotated = Keyring::parse(
            &format!("{},{}", new.replacen("k1", "k2", 1), old),
            &STANDARD.encode([1u8; 32]),
            &STANDARD.encode([2u8; 32]),
        )
        .unwrap();
        assert_eq!(rotated.active_key_id(), "k2");
        assert_eq!(rotated.open("users.email", row, &sealed).unwrap(), "x@y.z");
    }

    #[test]
    fn bad_settings_name_their_variable_and_debug_hides_keys() {
        let e = Keyring::parse("k1:short", "", "").unwrap_err();
        assert_eq!(e.variable, FIELD_KEYS_VAR);
        let (keys, blind, _) = Keyring::generate_settings();
        let e = Keyring::parse(&keys, &blind, "nope").unwrap_err();
        assert_eq!(e.variable, TOKEN_KEY_VAR);
        let ring = keyring(&keys);
        let shown = format!("{ring:?}");
        assert!(!shown.contains(keys.split(':').nth(1).unwrap()), "{shown}");
    }
}
