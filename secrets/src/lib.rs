//! Secrets that come from configuration, never from the database: the
//! field keyring ([`Keyring`]: AES-256-GCM sealing of personal data, the
//! blind index, token signing), the keys that sign playback URLs
//! ([`PlaybackKey`]), and the one parser of the `kid:base64,…` key lists
//! both are configured with ([`keylist`]).
//!
//! **Invariant:** no type here prints key bytes; `Debug` shows key ids.

mod fields;
mod keylist;
pub mod playback;

pub use fields::{
    normalise_email, random_token, token_fingerprint, KeyError, Keyring, SealError,
    BLIND_INDEX_KEY_VAR, FIELD_KEYS_VAR, TOKEN_KEY_VAR,
};
pub use keylist::{parse_key_list, NamedKey};
pub use playback::{PlaybackKey, PLAYBACK_KEYS_VAR};
