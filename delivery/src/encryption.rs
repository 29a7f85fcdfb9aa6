//! Optional HLS AES-128 encryption per asset, applied by the origin on the
//! fly: objects at rest stay clear, so an operator turns encryption on (or
//! rotates the key, or turns it off) without re-transcoding.
//!
//! - `PUT /api/v1/assets/{id}/encryption {"enabled": bool}`: on generates a
//!   new 16-byte key (sealed with the field keys, bound to the asset row,
//!   like webhook secrets) with a new public key id; off forgets the key.
//! - Media of an encrypted asset lives under a path that names the key id:
//!   `/media/assets/<id>/aes-<kid>/out/<rest>` serves the object stored at
//!   `assets/<id>/out/<rest>`. A playlist requested on the plain path of an
//!   encrypted asset is rewritten to point there, and plain-path media
//!   segments of an encrypted asset answer 404 `encrypted_path`. Clear
//!   copies a CDN cached before encryption was turned on, and encrypted
//!   copies of an older key, sit under cache keys no playlist names any
//!   more, and `/media-auth` refuses them (403 `encrypted_path` /
//!   `stale_media_path`), so a CDN that asks it stops serving them
//!   without a purge (see `infra/cdn/README.md` for the bound).
//! - Media playlists under that path get one `#EXT-X-KEY:METHOD=AES-128`
//!   per segment, after any `#EXT-X-MAP` (init segments stay clear, RFC
//!   8216 §4.3.2.5) with an explicit IV derived from the key id and the
//!   segment's object key, so the origin computes the same IV from the
//!   segment request alone (no playlist lookup, no sequence numbers).
//! - Media segments (`.m4s`, `.ts`, `.aac`) are served AES-128-CBC with
//!   PKCS#7 padding; lengths, ranges and ETags describe the encrypted bytes.
//!   Init segments, playlists and images stay clear.
//! - `GET /media-key/<asset>/<kid>?token=…` returns the 16 key bytes, only
//!   for a playback token of that asset bound to a live sign-in session
//!   (the token of `POST /api/v1/lessons/{id}/playback`), `private,
//!   no-store`; a CDN must pass it through uncached.
//! - The state (with the opened key) is cached per asset: a change takes
//!   effect at once on the node that made it and on others within
//!   `Playback::key_recheck` (5 s); players must fetch a new playlist.

use aes::cipher::block_padding::Pkcs7;
use aes::cipher::{BlockEncryptMut, KeyIvInit};
use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderValue, Method};
use axum::response::{IntoResponse, Response};
use axum::Json;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use lectern_secrets::Keyring;
use lectern_web::ApiError;
use lectern_web::ErrorCode;
use lectern_web::{Access, ApiRouter, Permission, Principal};
use lectern_web::{ApiJson, ApiPath};

use crate::DeliveryState;

/// The sealed column, named in the AEAD's associated data.
const KEY_FIELD: &str = "assets.encryption_key";
/// Media segments are read whole to be encrypted; far above any segment
/// the ladder writes (a 6 s 1080p segment is a few MB).
pub const MAX_ENCRYPTED_SEGMENT: u64 = 64 * 1024 * 1024;

/// One asset's content key. `Debug` shows the id only.
#[derive(Clone)]
pub struct AssetKey {
    /// Public, URL-safe (16 hex digits); new with every key.
    pub id: String,
    key: [u8; 16],
}

impl std::fmt::Debug for AssetKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AssetKey({:?}, <redacted>)", self.id)
    }
}

impl AssetKey {
    pub fn generate() -> Self {
        let mut key = [0u8; 16];
        let mut id = [0u8; 8];
        rand::rng().fill_bytes(&mut key);
        rand::rng().fill_bytes(&mut id);
        Self {
            id: hex::encode(id),
            key,
        }
    }

    pub fn bytes(&self) -> &[u8; 16] {
        &self.key
    }

    /// The IV of the segment stored at `object_key`: distinct per segment
    /// and per key, computable from the request alone.
    pub fn iv(&self, object_key: &str) -> [u8; 16] {
        let digest = Sha256::new()
            .chain_update(b"lectern-hls-iv-v1\0")
            .chain_update(self.id.as_bytes())
            .chain_update(b"\0")
            .chain_update(object_key.as_bytes())
            .finalize();
        digest[..16].try_into().expect("16 of 32 bytes")
    }

    /// `clear` as the player must receive it: AES-128-CBC, PKCS#7.
    pub fn encrypt(&self, object_key: &str, clear: &[u8]) -> Vec<u8> {
        cbc::Encryptor::<aes::Aes128>::new(&self.key.into(), &self.iv(object_key).into())
            .encrypt_padded_vec_mut::<Pkcs7>(clear)
    }

    /// The key as `assets.encryption_key_sealed` stores it for `asset`.
    pub fn seal(&self, keys: &Keyring, asset: Uuid) -> Vec<u8> {
        keys.seal(KEY_FIELD, asset, &hex::encode(self.key))
    }

    /// Opens a stored key. A key that does not open is an operator problem
    /// (field keys changed without rotation), never served as clear media.
    pub fn open(
        state: &DeliveryState,
        asset: Uuid,
        id: String,
        sealed: &[u8],
    ) -> Result<Self, ApiError> {
        let text = state
            .identity
            .keyring()?
            .open(KEY_FIELD, asset, sealed)
            .map_err(ApiError::internal)?;
        let key = hex::decode(text)
            .ok()
            .and_then(|k| <[u8; 16]>::try_from(k).ok())
            .ok_or_else(|| {
                ApiError::internal(format!("asset {asset}: stored key is not 16 bytes"))
            })?;
        Ok(Self { id, key })
    }
}

/// PKCS#7 always adds 1–16 bytes.
pub fn encrypted_len(clear_len: u64) -> u64 {
    (clear_len / 16 + 1) * 16
}

/// Objects served encrypted; everything else of an encrypted asset
/// (playlists, init segments, posters) stays clear.
pub fn is_encrypted_media(key: &str) -> bool {
    matches!(
        key.rsplit('.').next().unwrap_or_default(),
        "m4s" | "ts" | "aac"
    )
}

/// The path segment that marks an encrypted asset's media: `aes-<kid>`.
pub fn marker(kid: &str) -> String {
    format!("aes-{kid}")
}

/// The key's URI as playlists name it (the token is appended by the
/// playlist rewrite like for every other URI). Root-relative: the key
/// route is not under `/media/`, so a CDN's media cache rules never apply.
pub fn key_uri(asset: Uuid, kid: &str) -> String {
    format!("/media-key/{asset}/{kid}")
}

/// Current key of `asset`, read from PostgreSQL (the origin caches it).
/// An asset without a row (not ours, or media staged by hand) is clear.
pub async fn load(state: &DeliveryState, asset: Uuid) -> Result<Option<AssetKey>, ApiError> {
    let row: Option<(Option<String>, Option<Vec<u8>>)> =
        sqlx::query_as("SELECT encryption_key_id, encryption_key_sealed FROM assets WHERE id = $1")
            .bind(asset)
            .fetch_optional(&state.db)
            .await
            .map_err(|e| {
                tracing::warn!(%asset, error = %e, "cannot read the asset's encryption state");
                ApiError::new(
                    ErrorCode::DatabaseUnavailable,
                    "the video's delivery settings cannot be read right now; retry shortly",
                )
            })?;
    match row {
        Some((Some(id), Some(sealed))) => AssetKey::open(state, asset, id, &sealed).map(Some),
        _ => Ok(None),
    }
}

pub fn routes(api: ApiRouter<DeliveryState>) -> ApiRouter<DeliveryState> {
    api.route(
        Method::PUT,
        "/api/v1/assets/{asset_id}/encryption",
        Access::Permission(Permission::ManageAssets),
        set_encryption,
    )
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct EncryptionRequest {
    /// `true` serves the asset HLS AES-128 encrypted under a new key (also
    /// when it already was: the key is replaced); `false` serves it clear.
    enabled: bool,
}

/// An asset's encryption state after a change.
#[derive(Serialize, schemars::JsonSchema)]
pub struct EncryptionState {
    pub asset_id: Uuid,
    pub enabled: bool,
    /// The new key's public id (it appears in media paths as
    /// `aes-<key_id>`); `null` when encryption is off.
    pub key_id: Option<String>,
    /// What changes for players and CDNs.
    pub note: &'static str,
}

/// `PUT /api/v1/assets/{id}/encryption {"enabled": bool}`: on (again)
/// generates a new key; off serves the asset clear. Takes effect on this
/// node at once and on other nodes within
/// [`crate::Playback::key_recheck`]; players must fetch a new playlist.
async fn set_encryption(
    State(state): State<DeliveryState>,
    principal: Principal,
    ApiPath(asset): ApiPath<Uuid>,
    ApiJson(request): ApiJson<EncryptionRequest>,
) -> Result<Json<EncryptionState>, ApiError> {
    let key = request.enabled.then(AssetKey::generate);
    let sealed = match &key {
        Some(k) => Some(k.seal(state.identity.keyring()?, asset)),
        None => None,
    };
    let updated = sqlx::query(
        "UPDATE assets SET encryption_key_id = $3, encryption_key_sealed = $4, updated_at = now()
         WHERE id = $1 AND ($2::uuid IS NULL OR organisation_id = $2)",
    )
    .bind(asset)
    .bind(principal.org_scope())
    .bind(key.as_ref().map(|k| k.id.as_str()))
    .bind(sealed)
    .execute(&state.db)
    .await?
    .rows_affected();
    if updated == 0 {
        return Err(ApiError::not_found(format!("no asset {asset}")));
    }
    state.playback.forget_key(asset);
    Ok(Json(EncryptionState {
        asset_id: asset,
        enabled: request.enabled,
        key_id: key.map(|k| k.id),
        note: "media paths change with the key (…/aes-<key_id>/out/…), so CDN copies of the \
               previous state are never served again; players must reload the playlist",
    }))
}

/// `GET /media-key/{asset}/{kid}?token=…`: the raw key for a learner
/// whose session-bound playback token covers this asset.
pub(crate) async fn key(
    State(state): State<DeliveryState>,
    ApiPath((asset, kid)): ApiPath<(Uuid, String)>,
    RawQuery(query): RawQuery,
) -> Response {
    let result = async {
        let claims = crate::authorize(&state, crate::query_token(query.as_deref()), asset).await?;
        if claims.session.is_none() {
            return Err(ApiError::new(
                ErrorCode::SessionRequired,
                "the key of an encrypted video is only given to a signed-in person: use the \
                 playback URL of POST /api/v1/lessons/{id}/playback, or the master_url of \
                 GET /api/v1/assets/{id} asked for while signed in",
            ));
        }
        match state.playback.asset_key(&state, asset).await? {
            Some(k) if k.id == kid => {
                let mut response = Response::new(Body::from(k.bytes().to_vec()));
                let h = response.headers_mut();
                h.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/octet-stream"),
                );
                h.insert(
                    header::CACHE_CONTROL,
                    HeaderValue::from_static("private, no-store"),
                );
                Ok(response)
            }
            _ => Err(ApiError::new(
                ErrorCode::KeyNotFound,
                "this video has no such key any more (encryption was turned off or the key \
                 was replaced); reload the playlist",
            )),
        }
    }
    .await;
    let response = result.unwrap_or_else(IntoResponse::into_response);
    tracing::debug!(%asset, status = response.status().as_u16(), "media key requested");
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use aes::cipher::BlockDecryptMut;

    #[test]
    fn encrypts_cbc_pkcs7_with_a_per_segment_iv() {
        let k = AssetKey::generate();
        assert_eq!(k.id.len(), 16);
        assert!(!format!("{k:?}").contains(&hex::encode(k.key)));
        let clear: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
        let a = k.encrypt("assets/x/out/a/seg_1.m4s", &clear);
        assert_eq!(a.len() as u64, encrypted_len(1000));
        assert_ne!(k.iv("a/seg_1.m4s"), k.iv("a/seg_2.m4s"));
        let back = cbc::Decryptor::<aes::Aes128>::new(
            &k.key.into(),
            &k.iv("assets/x/out/a/seg_1.m4s").into(),
        )
        .decrypt_padded_vec_mut::<Pkcs7>(&a)
        .unwrap();
        assert_eq!(back, clear);
        assert_eq!(encrypted_len(0), 16);
        assert_eq!(encrypted_len(16), 32);
        assert!(is_encrypted_media("a/seg_00001.m4s"));
        assert!(is_encrypted_media("a/seg_00001.ts"));
        assert!(!is_encrypted_media("a/init.mp4"));
        assert!(!is_encrypted_media("a/index.m3u8"));
    }
}
