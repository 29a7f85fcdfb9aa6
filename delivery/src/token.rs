//! Signed playback tokens: HMAC-SHA256 over (key id, asset id, expiry,
//! optional sign-in session), carried in media URLs as `?token=`.
//!
//! A token is five `.`-separated fields, every one URL-safe so it needs no
//! escaping in a query string or a playlist line:
//!
//! ```text
//! <kid>.<asset, base64url>.<expiry, unix seconds>.<session, base64url or empty>.<mac, base64url>
//! ```
//!
//! The MAC covers a length-framed binary message (not the text), so two
//! different field tuples can never produce the same signed bytes. The key
//! id names which verification key to use, so keys rotate without breaking
//! players mid-lecture: the first configured key signs, all of them verify.
//! The asset id travels in the token (not only in the path) so a token used
//! on another asset's objects is reported as such rather than as a forgery.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::Mac;
use lectern_secrets::PlaybackKey;
use subtle::ConstantTimeEq;
use uuid::Uuid;

/// Domain separation: these bytes are never valid for any other signer
/// that might share a key by operator mistake.
const CONTEXT: &[u8] = b"lectern-playback-v1";

/// What a valid token grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claims {
    pub asset: Uuid,
    /// Unix seconds after which the token is refused.
    pub expires: i64,
    /// The sign-in session the token lives and dies with, if bound.
    pub session: Option<Uuid>,
}

/// Why a token was refused; each maps to a stable error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    /// Not a token at all, an unknown key id, or a MAC that does not match.
    Invalid,
    /// Genuine, but for another asset.
    WrongAsset,
    /// Genuine, but past its expiry.
    Expired,
}

pub fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn mac(key: &PlaybackKey, claims: &Claims) -> [u8; 32] {
    let mut mac = key.hmac();
    mac.update(CONTEXT);
    mac.update(&[key.id().len() as u8]);
    mac.update(key.id().as_bytes());
    mac.update(claims.asset.as_bytes());
    mac.update(&claims.expires.to_be_bytes());
    match claims.session {
        Some(s) => {
            mac.update(&[1]);
            mac.update(s.as_bytes());
        }
        None => mac.update(&[0]),
    }
    mac.finalize().into_bytes().into()
}

/// Signs `claims` with `key`.
pub fn sign(key: &PlaybackKey, claims: &Claims) -> String {
    let session = claims
        .session
        .map(|s| URL_SAFE_NO_PAD.encode(s.as_bytes()))
        .unwrap_or_default();
    format!(
        "{}.{}.{}.{}.{}",
        key.id(),
        URL_SAFE_NO_PAD.encode(claims.asset.as_bytes()),
        claims.expires,
        session,
        URL_SAFE_NO_PAD.encode(mac(key, claims))
    )
}

fn uuid_field(text: &str) -> Option<Uuid> {
    let bytes = URL_SAFE_NO_PAD.decode(text).ok()?;
    Uuid::from_slice(&bytes).ok()
}

/// Checks `token` for objects of `asset` at time `now`: the MAC first (in
/// constant time), so nothing about a forged token's fields is believed,
/// then the asset, then the expiry. Only the exact text [`sign`] writes is
/// accepted (no leading zeros in the expiry, canonical base64), so a
/// token cannot be altered into another string that still verifies: a
/// CDN caching verdicts by token, or anything else keyed by it, sees one
/// string per grant.
pub fn verify(
    keys: &[PlaybackKey],
    token: &str,
    asset: Uuid,
    now: i64,
) -> Result<Claims, TokenError> {
    // Anything longer is not one of ours; refuse before any work.
    if token.len() > 256 {
        return Err(TokenError::Invalid);
    }
    let mut fields = token.split('.');
    let (Some(kid), Some(token_asset), Some(expires), Some(session), Some(sig), None) = (
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
    ) else {
        return Err(TokenError::Invalid);
    };
    // Key ids are configuration, not secrets: finding one by id need not
    // be constant-time. The MAC comparison below is.
    let key = keys
        .iter()
        .find(|k| k.id() == kid)
        .ok_or(TokenError::Invalid)?;
    let claims = Claims {
        asset: uuid_field(token_asset).ok_or(TokenError::Invalid)?,
        expires: expires
            .parse::<i64>()
            .ok()
            .filter(|_| expires.bytes().all(|b| b.is_ascii_digit()))
            .filter(|_| expires == "0" || !expires.starts_with('0'))
            .ok_or(TokenError::Invalid)?,
        session: match session {
            "" => None,
            s => Some(uuid_field(s).ok_or(TokenError::Invalid)?),
        },
    };
    let given = URL_SAFE_NO_PAD
        .decode(sig)
        .map_err(|_| TokenError::Invalid)?;
    let expected = mac(key, &claims);
    if !bool::from(expected.as_slice().ct_eq(given.as_slice())) {
        return Err(TokenError::Invalid);
    }
    if claims.asset != asset {
        return Err(TokenError::WrongAsset);
    }
    if now >= claims.expires {
        return Err(TokenError::Expired);
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::STANDARD;
    use lectern_secrets::playback::parse_keys;

    fn claims(asset: Uuid, session: Option<Uuid>) -> Claims {
        Claims {
            asset,
            expires: 2_000_000_000,
            session,
        }
    }

    #[test]
    fn round_trips_and_refuses_every_kind_of_tampering() {
        let key = PlaybackKey::generate("k1");
        let ring = [key.clone()];
        let asset = Uuid::new_v4();
        let session = Uuid::new_v4();
        for c in [claims(asset, None), claims(asset, Some(session))] {
            let token = sign(&key, &c);
            assert!(token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)));
            assert_eq!(verify(&ring, &token, asset, 1_000), Ok(c));
            // Change each field in turn: only the MAC decides.
            let fields: Vec<&str> = token.split('.').collect();
            let mut forged_expiry = fields.clone();
            let later = (c.expires + 1).to_string();
            forged_expiry[2] = &later;
            assert_eq!(
                verify(&ring, &forged_expiry.join("."), asset, 1_000),
                Err(TokenError::Invalid)
            );
            let mut dropped_session = fields.clone();
            dropped_session[3] = "";
            if c.session.is_some() {
                assert_eq!(
                    verify(&ring, &dropped_session.join("."), asset, 1_000),
                    Err(TokenError::Invalid)
                );
            }
            assert_eq!(
                verify(&ring, &token, Uuid::new_v4(), 1_000),
                Err(TokenError::WrongAsset)
            );
            assert_eq!(
                verify(&ring, &token, asset, c.expires),
                Err(TokenError::Expired)
            );
        }
        for garbage in ["", "a.b", "k1....", "k1.x.1.y.z.w", &"k".repeat(300)] {
            assert_eq!(
                verify(&ring, garbage, asset, 1_000),
                Err(TokenError::Invalid)
            );
        }
    }

    #[test]
    fn rotation_verifies_with_any_key_by_id() {
        let old = PlaybackKey::generate("old");
        let new = PlaybackKey::generate("new");
        let asset = Uuid::new_v4();
        let token = sign(&old, &claims(asset, None));
        assert!(verify(&[new.clone(), old.clone()], &token, asset, 0).is_ok());
        assert_eq!(
            verify(std::slice::from_ref(&new), &token, asset, 0),
            Err(TokenError::Invalid)
        );
        // Same id, other secret: a forgery.
        let impostor = PlaybackKey::generate("old");
        assert_eq!(
            verify(&[impostor], &token, asset, 0),
            Err(TokenError::Invalid)
        );
    }

    #[test]
    fn a_zero_padded_expiry_is_not_the_signed_token() {
        let key = PlaybackKey::generate("k1");
        let asset = Uuid::new_v4();
        let token = sign(&key, &claims(asset, None));
        let padded = token.replacen(".2000000000.", ".02000000000.", 1);
        assert_ne!(padded, token);
        assert_eq!(verify(&[key], &padded, asset, 0), Err(TokenError::Invalid));
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// Where in a token an alteration happens.
        #[derive(Debug, Clone, Copy)]
        enum At {
            /// Anywhere.
            Index(usize),
            /// Just after the n-th `.` (the start of a field), where
            /// padding and sign characters could hide.
            FieldStart(usize),
            /// Just before the n-th `.` (the end of a field), where
            /// base64's unused bits are.
            FieldEnd(usize),
        }

        /// Ways a token can be altered in transit or by hand.
        #[derive(Debug, Clone)]
        enum Mutation {
            Replace(At, char),
            Insert(At, char),
            Remove(At),
            Truncate(usize),
            Append(String),
        }

        fn mutation() -> impl Strategy<Value = Mutation> {
            let at = prop_oneof![
                any::<usize>().prop_map(At::Index),
                (0usize..4).prop_map(At::FieldStart),
                (0usize..5).prop_map(At::FieldEnd),
            ];
            // The token alphabet, and what a decoder might skip or fold.
            let c = prop_oneof![
                proptest::char::ranges(vec!['a'..='z', 'A'..='Z', '0'..='9'].into()),
                proptest::sample::select(vec!['0', '0', '-', '_', '.', '=', '+', ' ', '%', 'é']),
            ];
            prop_oneof![
                (at.clone(), c.clone()).prop_map(|(at, c)| Mutation::Replace(at, c)),
                (at.clone(), c).prop_map(|(at, c)| Mutation::Insert(at, c)),
                at.prop_map(Mutation::Remove),
                any::<usize>().prop_map(Mutation::Truncate),
                "[A-Za-z0-9._=-]{1,8}".prop_map(Mutation::Append),
            ]
        }

        /// The char index `at` names in `chars` (`len` positions to choose
        /// from: one more than the chars when inserting).
        fn index(chars: &[char], at: At, len: usize) -> usize {
            let dots: Vec<usize> = (0..chars.len()).filter(|&i| chars[i] == '.').collect();
            let i = match at {
                At::Index(i) => i,
                At::FieldStart(n) => dots.get(n).map_or(0, |d| d + 1),
                At::FieldEnd(n) => dots.get(n).map_or(chars.len(), |d| *d).saturating_sub(1),
            };
            if len == 0 {
                0
            } else {
                i % len
            }
        }

        fn apply(token: &str, m: &Mutation) -> String {
            let mut chars: Vec<char> = token.chars().collect();
            let at = |i: usize, len: usize| if len == 0 { 0 } else { i % len };
            match m {
                Mutation::Replace(i, c) => {
                    let i = index(&chars, *i, chars.len());
                    chars[i] = *c;
                }
                Mutation::Insert(i, c) => {
                    let i = index(&chars, *i, chars.len() + 1);
                    chars.insert(i, *c);
                }
                Mutation::Remove(i) => {
                    let i = index(&chars, *i, chars.len());
                    chars.remove(i);
                }
                Mutation::Truncate(i) => chars.truncate(at(*i, chars.len())),
                Mutation::Append(s) => chars.extend(s.chars()),
            }
            chars.into_iter().collect()
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(1024))]

            /// Any text at all is refused without a panic, or accepted
            /// only if it is exactly what was signed.
            #[test]
            fn arbitrary_text_never_panics(text in ".{0,300}", asset in any::<u128>()) {
                let key = PlaybackKey::generate("k1");
                let asset = Uuid::from_u128(asset);
                if let Ok(c) = verify(std::slice::from_ref(&key), &text, asset, 0) {
                    prop_assert_eq!(sign(&key, &c), text);
                }
            }

            /// A genuine token altered in any way never verifies, whatever
            /// the alteration: the signed text is the only one accepted.
            #[test]
            fn a_mutated_token_never_verifies(
                asset in any::<u128>(),
                session in proptest::option::of(any::<u128>()),
                expires in 1i64..=i64::MAX,
                mutation in mutation(),
            ) {
                let key = PlaybackKey::generate("k1");
                let asset = Uuid::from_u128(asset);
                let c = Claims { asset, expires, session: session.map(Uuid::from_u128) };
                let token = sign(&key, &c);
                prop_assert_eq!(verify(std::slice::from_ref(&key), &token, asset, 0), Ok(c));
                let altered = apply(&token, &mutation);
                prop_assume!(altered != token);
                prop_assert_eq!(
                    verify(std::slice::from_ref(&key), &altered, asset, 0),
                    Err(TokenError::Invalid),
                    "{} accepted as {}", altered, token
                );
            }
        }
    }

    #[test]
    fn parses_key_settings_without_echoing_secrets() {
        let a = PlaybackKey::generate("a");
        let b = PlaybackKey::generate("b-2");
        let keys = parse_keys(&format!("{}, {}", a.to_setting(), b.to_setting())).unwrap();
        assert_eq!(keys[0].id(), "a");
        assert_eq!(keys[1].id(), "b-2");
        let short = format!("k:{}", STANDARD.encode([7u8; 8]));
        let e = parse_keys(&short).unwrap_err();
        assert!(e.contains("8 bytes"), "{e}");
        assert!(!e.contains(&STANDARD.encode([7u8; 8])), "{e}");
        assert!(parse_keys("").is_err());
        assert!(parse_keys("nocolon").is_err());
        assert!(parse_keys(&format!("{},{}", a.to_setting(), a.to_setting())).is_err());
        assert!(!format!("{keys:?}").contains(&a.to_setting()[2..]));
    }
}
