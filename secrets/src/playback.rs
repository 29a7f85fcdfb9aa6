//! The keys that sign playback URLs (`LECTERN_PLAYBACK_KEYS`). The token
//! format itself belongs to the media origin (`lectern-delivery`); this is
//! only the key material, parsed by the shared [`crate::keylist`].

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

use crate::keylist::{parse_key_list, SecretLength};

/// The configuration variable holding the keys, named in every key error.
pub const PLAYBACK_KEYS_VAR: &str = "LECTERN_PLAYBACK_KEYS";

/// Shortest secret accepted: HMAC-SHA256's block of entropy.
const MIN_SECRET_LEN: usize = 32;

/// One signing/verification key. `Debug` shows the id only.
#[derive(Clone)]
pub struct PlaybackKey {
    id: String,
    secret: Vec<u8>,
}

impl std::fmt::Debug for PlaybackKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PlaybackKey({:?}, <redacted>)", self.id)
    }
}

impl PlaybackKey {
    pub fn id(&self) -> &str {
        &self.id
    }

    /// A fresh random key (256 bits).
    pub fn generate(id: &str) -> Self {
        let mut secret = vec![0u8; 32];
        rand::rng().fill_bytes(&mut secret);
        Self {
            id: id.to_string(),
            secret,
        }
    }

    /// `id:base64` as [`parse_keys`] reads it; for writing a generated key.
    pub fn to_setting(&self) -> String {
        format!("{}:{}", self.id, STANDARD.encode(&self.secret))
    }

    /// An HMAC-SHA256 keyed with this key's secret, for the token format
    /// to feed its framed fields into.
    pub fn hmac(&self) -> Hmac<Sha256> {
        <Hmac<Sha256> as Mac>::new_from_slice(&self.secret).expect("HMAC takes any key length")
    }
}

/// Parses `kid:base64secret,kid2:base64secret,…` (the first key signs).
/// Errors say what is wrong without echoing any secret.
pub fn parse_keys(text: &str) -> Result<Vec<PlaybackKey>, String> {
    Ok(parse_key_list(text, SecretLength::AtLeast(MIN_SECRET_LEN))?
        .into_iter()
        .map(|k| PlaybackKey {
            id: k.id,
            secret: k.secret,
        })
        .collect())
}
