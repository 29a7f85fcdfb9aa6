//! The media origin: `GET`/`HEAD /media/<key>` serves published renditions
//! (playlists, init and media segments, posters) straight from object
//! storage, streaming, with byte ranges, validators, cache policies a CDN
//! can act on, and CORS for players on other origins.
//!
//! Access: the routes are `Access::Public` in the matrix because the
//! credential is not a session or API key but a signed playback token in
//! the URL (`?token=`, see [`token`]), checked here:
//! - no token → 401 `missing_token`;
//! - malformed, unknown key id, bad MAC → 403 `invalid_token`;
//! - a genuine token of another asset → 403 `wrong_asset`;
//! - past its expiry → 403 `expired_token`;
//! - bound to a sign-in session that was revoked or has expired → 403
//!   `session_ended`. Session state is cached per session for at most
//!   [`Playback::session_recheck`] (30 s by default), so revoking a session
//!   stops its media within that bound while a segment request costs no
//!   query in the common case.
//!
//! Playlists are rewritten per request so every nested URI carries the
//! same token (module [`playlist`]; answers to LL-HLS blocking reloads are
//! shared, below). A master playlist asked for with
//! `&lesson=<id>` (the learner's playback URL carries it) also lists that
//! lesson's caption tracks as a `SUBTITLES` group, read from
//! `lesson_captions` on each request: captions are uploaded after the
//! ladder was published, and the stored master stays what the packager
//! wrote. Only tracks of a lesson that plays the token's asset, timed
//! against it, are listed, so the unsigned parameter cannot reach another
//! video's captions. Such a master is `private, no-cache` with a validator
//! that covers the tracks, so a new or deleted track is seen on the next
//! load while an unchanged one still costs only a 304. A rewritten playlist embeds one
//! learner's token, so it is sent `private` (no shared cache may store it
//! and hand it to someone else) and its `max-age` never outlives the
//! token; segments, init segments and images are the same bytes for every
//! learner and keep their `public, immutable` policy, which is what lets a
//! CDN that checks the token itself (see `infra/cdn/README.md`) cache them
//! under a key without the token.
//!
//! Only the files a rendition is made of under `assets/<uuid>/out/…` are
//! servable (playlists, segments, init segments, images, storyboards, the
//! manifest: [`http::rendition_type`]): sources, upload scratch space, a
//! chunked encode's intermediates (`…/parts/chunk_0000.mkv`) and anything
//! else in the bucket answer 404, as do keys that do not exist; keys that
//! could not be object keys at all (`..`, `.`, empty segments,
//! backslashes, NUL, absolute paths) answer 400 `invalid_path`.
//!
//! A live media playlist asked for with LL-HLS delivery directives
//! (`_HLS_msn`, `_HLS_part`) is held until it has what was asked for
//! (module [`blocking`]).
//!
//! The exception to "rewritten per learner": a media playlist answering a
//! blocking reload (a live LL-HLS one, asked for with `_HLS_msn`) is the
//! same body for every viewer — every
//! URI (segments, `EXT-X-MAP`, parts, the preload hint, rendition reports,
//! an encrypted asset's key) carries `token={$token}`, and
//! `#EXT-X-DEFINE:QUERYPARAM="token"` has the player fill in the token of
//! the URL it asked by (module [`playlist`]). It embeds no token, so it is
//! sent `public` (`max-age` six part targets: the answer holds what that
//! URL asked for whenever it is read) with a validator without the token,
//! and a CDN that checks the token itself caches one copy per
//! `_HLS_msn`/`_HLS_part` for every viewer: a thousand viewers blocking on
//! the next part cost the origin one held request. A plain request for
//! the same playlist (a player's first load, or a client that does not
//! speak LL-HLS) gets it with the caller's token written in, `private`,
//! so a client that cannot substitute variables still plays.
//! The token is checked on the playlist request exactly as before.
//!
//! Segments, init segments and posters are served from memory when hot
//! (module [`cache`], after the token check), and so are an encrypted
//! asset's segments, encrypted once per key and held under the key-marked
//! path; playlists are always read from storage, since a growing one
//! changes while its lecture encodes.
//!
//! What a segment request needs from PostgreSQL — whether the token's
//! session is still alive, whether the asset is encrypted and with which
//! key — is cached per node (`session_recheck`, `key_recheck`), so the
//! hot path costs no query and each bound says how long a revocation or
//! key change takes to reach other nodes. While PostgreSQL cannot be read
//! (a restart, a failover) the last state read stands, however old, so a
//! class keeps watching; a session or asset this node never read answers
//! 503 `database_unavailable`, never a guess such as "served clear". The
//! routes are mounted outside the identity middleware: no caller lookup
//! per segment, and a refused token is a 4xx and at most a `debug` trace,
//! never an audit row, so forged-token floods cannot grow the audit log.
//!
//! CORS ([`Cors`], static headers: see its module for why not
//! tower-http's layer) is what the `api` crate puts around these routes: any origin may read media (public bytes gated by
//! a URL token), players may send `Range` and validators, and see
//! `Content-Range`, `Content-Length`, `Accept-Ranges` and `ETag`.

mod assets;
pub mod blocking;
pub mod cache;
mod captions;
mod cors;
mod encryption;
mod http;
mod playlist;
mod token;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use lectern_identity::Identity;
use lectern_storage::{ObjectMeta, StorageError, Store};
use lectern_web::doc::Operation;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use uuid::Uuid;

use lectern_web::ApiError;
use lectern_web::ApiPath;
use lectern_web::ErrorCode;
use lectern_web::{Access, ApiRouter};

use cache::{CachedObject, Lookup, MediaCache};
use encryption::AssetKey;
use http::RangeRequest;
use lectern_secrets::PlaybackKey;
use token::{Claims, TokenError};

pub use cors::Cors;

/// Default lifetime of a playback token: a long lecture plus pauses.
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(6 * 3600);
/// How long a session's state is believed before it is read again.
pub const DEFAULT_SESSION_RECHECK: Duration = Duration::from_secs(30);
/// How long an asset's encryption state is believed on nodes other than
/// the one that changed it.
pub const DEFAULT_KEY_RECHECK: Duration = Duration::from_secs(5);
/// Playlists are read whole to be rewritten; nothing legitimate is close.
const MAX_PLAYLIST_BYTES: u64 = 8 * 1024 * 1024;
/// Bound on remembered sessions, so a flood of distinct tokens cannot grow
/// memory without limit (the cache is cleared when it is reached).
const MAX_CACHED_SESSIONS: usize = 100_000;
/// Bound on remembered asset encryption states (same reasoning; only
/// assets a genuine token names get here).
const MAX_CACHED_KEYS: usize = 100_000;

/// Playback signing settings and keys; `DeliveryState.playback: Arc<origin::Playback>`.
pub struct Playback {
    /// The first signs; all verify. Empty only with an external database
    /// and no `LECTERN_PLAYBACK_KEYS`: media then answers 503.
    keys: Vec<PlaybackKey>,
    pub token_ttl: Duration,
    /// `https://cdn.example.org` when players should fetch through a CDN.
    pub media_base_url: Option<String>,
    /// Upper bound on how long a revoked session's tokens keep working.
    pub session_recheck: Duration,
    sessions: Mutex<HashMap<Uuid, (Instant, SessionState)>>,
    /// Upper bound on how long another node serves an asset's previous
    /// encryption state after `PUT …/encryption`.
    pub key_recheck: Duration,
    asset_keys: Mutex<HashMap<Uuid, (Instant, CachedKey)>>,
    /// Hot immutable objects (segments, init segments, posters).
    pub media_cache: Arc<MediaCache>,
}

/// An asset's encryption state as cached: `None` = served clear.
type CachedKey = Option<Arc<AssetKey>>;

#[derive(Debug, Clone, Copy)]
enum SessionState {
    /// Usable until this unix time unless revoked meanwhile.
    Live {
        until: i64,
    },
    Ended,
}

impl std::fmt::Debug for Playback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Playback")
            .field("keys", &self.keys)
            .field("token_ttl", &self.token_ttl)
            .field("media_base_url", &self.media_base_url)
            .finish_non_exhaustive()
    }
}

impl Playback {
    /// Random signing key, defaults (used by DeliveryState::new and tests).
    pub fn generate() -> Self {
        Self::new(vec![PlaybackKey::generate("p1")], DEFAULT_TOKEN_TTL, None)
    }

    /// `keys` as [`token::parse_keys`] returns them (first signs); an
    /// empty list leaves media unavailable (503) rather than unprotected.
    pub fn new(
        keys: Vec<PlaybackKey>,
        token_ttl: Duration,
        media_base_url: Option<String>,
    ) -> Self {
        Self {
            keys,
            token_ttl,
            media_base_url: media_base_url.map(|u| u.trim_end_matches('/').to_string()),
            session_recheck: DEFAULT_SESSION_RECHECK,
            sessions: Mutex::new(HashMap::new()),
            key_recheck: DEFAULT_KEY_RECHECK,
            asset_keys: Mutex::new(HashMap::new()),
            media_cache: Arc::new(MediaCache::default()),
        }
    }

    /// The same signer with another object cache (`MediaCache::disabled()`
    /// to read storage on every request).
    pub fn with_media_cache(mut self, cache: MediaCache) -> Self {
        self.media_cache = Arc::new(cache);
        self
    }

    /// The asset's current HLS key (`None`: served clear), from the cache
    /// when younger than `key_recheck`, so a segment costs no query. While
    /// PostgreSQL cannot be read (a restart, a failover) the last state
    /// read is used, however old: learners keep watching what they were
    /// watching, and only assets this node never read answer 503.
    pub async fn asset_key(
        &self,
        state: &DeliveryState,
        asset: Uuid,
    ) -> Result<Option<Arc<AssetKey>>, ApiError> {
        let cached = self
            .asset_keys
            .lock()
            .expect("key cache lock")
            .get(&asset)
            .map(|(at, k)| (at.elapsed() < self.key_recheck, k.clone()));
        let last_known = match cached {
            Some((true, k)) => return Ok(k),
            Some((false, k)) => Some(k),
            None => None,
        };
        let key = match encryption::load(state, asset).await {
            Ok(key) => key.map(Arc::new),
            Err(e) => match last_known {
                Some(k) if e.status() == StatusCode::SERVICE_UNAVAILABLE => return Ok(k),
                _ => return Err(e),
            },
        };
        let mut cache = self.asset_keys.lock().expect("key cache lock");
        if cache.len() >= MAX_CACHED_KEYS {
            cache.clear();
        }
        cache.insert(asset, (Instant::now(), key.clone()));
        Ok(key)
    }

    /// Drops the cached encryption state of `asset` (after a change here).
    pub fn forget_key(&self, asset: Uuid) {
        self.asset_keys
            .lock()
            .expect("key cache lock")
            .remove(&asset);
    }

    pub fn has_keys(&self) -> bool {
        !self.keys.is_empty()
    }

    /// A token for `asset_id` valid for the configured TTL, or `None`
    /// when no key is configured.
    pub fn token(&self, asset_id: Uuid, session: Option<Uuid>) -> Option<String> {
        let ttl = i64::try_from(self.token_ttl.as_secs()).unwrap_or(i64::MAX / 2);
        self.token_until(asset_id, token::now_unix().saturating_add(ttl), session)
    }

    /// A token for `asset_id` expiring at `expires` (unix seconds).
    pub fn token_until(
        &self,
        asset_id: Uuid,
        expires: i64,
        session: Option<Uuid>,
    ) -> Option<String> {
        let key = self.keys.first()?;
        Some(token::sign(
            key,
            &Claims {
                asset: asset_id,
                expires,
                session,
            },
        ))
    }

    /// URL a player opens for an asset's master playlist, carrying a signed
    /// token scoped to this asset, expiring after the configured TTL and,
    /// when `session` is given, bound to that sign-in session.
    /// `output_prefix` is e.g. "assets/<id>/out/attempt-2/" (the asset's
    /// `output_prefix`, or `playable_prefix` while still encoding).
    /// Relative ("/media/...") unless a public media base URL (the CDN
    /// host) is configured.
    pub fn master_url(&self, asset_id: Uuid, output_prefix: &str, session: Option<Uuid>) -> String {
        let prefix = output_prefix.trim_matches('/');
        let base = self.media_base_url.as_deref().unwrap_or("");
        let master = lectern_master_playlist();
        match self.token(asset_id, session) {
            Some(t) => format!("{base}/media/{prefix}/{master}?token={t}"),
            None => format!("{base}/media/{prefix}/{master}"),
        }
    }

    /// [`Self::master_url`] for playing `lesson`: the origin adds the
    /// lesson's caption tracks to this master playlist (see the module docs).
    pub fn lesson_master_url(
        &self,
        asset_id: Uuid,
        output_prefix: &str,
        session: Option<Uuid>,
        lesson: Uuid,
    ) -> String {
        let url = self.master_url(asset_id, output_prefix, session);
        let separator = if url.contains('?') { '&' } else { '?' };
        format!("{url}{separator}lesson={lesson}")
    }

    pub fn verify(&self, token: &str, asset: Uuid) -> Result<Claims, TokenError> {
        token::verify(&self.keys, token, asset, token::now_unix())
    }

    /// Whether `session` may still play, from the cache when the answer
    /// is younger than `session_recheck`. While PostgreSQL cannot be read
    /// the last answer stands (nobody can revoke a session then either);
    /// a session never seen is refused with 503.
    async fn session_alive(
        &self,
        db: &sqlx::PgPool,
        session: Uuid,
        now: i64,
    ) -> Result<bool, ApiError> {
        let cached = self
            .sessions
            .lock()
            .expect("session cache lock")
            .get(&session)
            .map(|(at, s)| (at.elapsed() < self.session_recheck, *s));
        let state = match cached {
            Some((true, s)) => s,
            last_known => {
                let row: Option<(chrono::DateTime<chrono::Utc>, bool)> = match sqlx::query_as(
                    "SELECT expires_at, revoked_at IS NOT NULL FROM sessions WHERE id = $1",
                )
                .bind(session)
                .fetch_optional(db)
                .await
                {
                    Ok(row) => row,
                    Err(e) => {
                        tracing::warn!(%session, error = %e, "cannot read the playback session");
                        return match last_known {
                            Some((_, s)) => {
                                Ok(matches!(s, SessionState::Live { until } if now < until))
                            }
                            None => Err(ApiError::new(
                                ErrorCode::DatabaseUnavailable,
                                "the playback session cannot be checked right now; retry shortly",
                            )),
                        };
                    }
                };
                let state = match row {
                    Some((expires, false)) => SessionState::Live {
                        until: expires.timestamp(),
                    },
                    _ => SessionState::Ended,
                };
                let mut cache = self.sessions.lock().expect("session cache lock");
                if cache.len() >= MAX_CACHED_SESSIONS {
                    cache.clear();
                }
                cache.insert(session, (Instant::now(), state));
                state
            }
        };
        Ok(matches!(state, SessionState::Live { until } if now < until))
    }
}

fn lectern_master_playlist() -> &'static str {
    // The packager's name for it; kept here as a literal so the API does
    // not depend on the packager crate for one constant.
    "master.m3u8"
}

/// Delivery's state, behind one `Arc`: axum clones a route's state for
/// every layer of every request, and on the media path (tens of thousands
/// of segments a second) one counter instead of four showed in profiles.
#[derive(Clone)]
pub struct DeliveryState(Arc<DeliveryParts>);

/// Where objects are, how tokens are signed, and the identity handle that
/// opens sealed asset keys.
pub struct DeliveryParts {
    pub db: PgPool,
    pub store: Arc<dyn Store>,
    pub playback: Arc<Playback>,
    pub identity: Identity,
    /// Live playlists written by this process: blocking reloads wake on them.
    pub changes: Arc<lectern_storage::changes::Changes>,
    /// This process, in the playlist-change notices it sends ([`blocking`]).
    pub node: Uuid,
}

impl DeliveryState {
    pub fn new(parts: DeliveryParts) -> Self {
        Self(Arc::new(parts))
    }
}

impl std::ops::Deref for DeliveryState {
    type Target = DeliveryParts;

    fn deref(&self) -> &DeliveryParts {
        &self.0
    }
}

/// The media routes, whose only credential is a playback token in the URL
/// (`/media/…`, the CDN's `/media-auth`, the key route). All are `Public`
/// to the matrix: the handlers check the token. The `api` crate mounts
/// them outside the identity middleware: no caller lookup per segment, and
/// no audit row per refused token (a 403 on a GET changes nothing, and a
/// flood of forged tokens must neither grow the audit log nor queue on
/// its lock).
pub fn media_routes(api: ApiRouter<DeliveryState>) -> ApiRouter<DeliveryState> {
    api.route(Method::GET, "/media/{*key}", Access::Public, media)
        .describe(|op| {
            op.summary = Some("a file of a published rendition, for players");
            media_parameters(op);
            op.raw(
                200,
                "*/*",
                "the whole object: a playlist (application/vnd.apple.mpegurl, rewritten \
                 so every URI carries the token, `private`; a media playlist answering a blocking reload (`_HLS_msn`) \
                 is the same for every viewer, its URIs carrying \
                 `token={$token}` with `EXT-X-DEFINE:QUERYPARAM=\"token\"`, `public`), a media segment \
                 (video/iso.segment, video/mp2t, audio/aac; AES-128 encrypted on an \
                 encrypted asset's `aes-<key_id>` path), an init segment (video/mp4), an \
                 image, a WebVTT storyboard or caption segment, or the package manifest. A \
                 master playlist asked for with `lesson=<id>` (the playback URL carries it) \
                 also lists that lesson's captions as a SUBTITLES group (`private, no-cache`)",
            );
            op.raw(
                206,
                "*/*",
                "the single byte range asked for with `Range: bytes=…`, with \
                 Content-Range (several ranges are answered whole, with 200)",
            );
            not_modified_response(op);
            unsatisfiable_response(op);
        })
        .route(Method::HEAD, "/media/{*key}", Access::Public, media)
        .describe(|op| {
            op.summary = Some("a rendition file's headers, without its body");
            media_parameters(op);
            op.response(
                200,
                "Content-Type, Content-Length, ETag, Last-Modified, Cache-Control of \
                 the object",
                None,
            );
            op.response(206, "the headers of the range asked for", None);
            not_modified_response(op);
            unsatisfiable_response(op);
        })
        .route(Method::OPTIONS, "/media/{*key}", Access::Public, preflight)
        .describe(|op| {
            op.summary = Some("CORS preflight");
            op.response(
                200,
                "any origin may GET and HEAD media with Range, If-None-Match, \
                 If-Modified-Since and If-Range (Access-Control-Max-Age: 86400)",
                None,
            );
        })
        .route(Method::GET, "/media-auth", Access::Public, media_auth)
        .describe(|op| {
            op.summary = Some("a CDN's token check (nginx auth_request) of X-Original-URI");
            op.response(
                204,
                "the token grants the URI named by the X-Original-URI header, and the \
                 asset's delivery state lets it be served (see infra/cdn/README.md); \
                 refusals are 401 or 403, with the code /media would have answered",
                None,
            );
        })
        .route(
            Method::GET,
            "/media-key/{asset_id}/{key_id}",
            Access::Public,
            encryption::key,
        )
        .describe(|op| {
            op.summary = Some("the AES-128 key of an encrypted asset, for its player");
            token_parameter(op);
            op.raw(
                200,
                "application/octet-stream",
                "the 16 key bytes (`private, no-store`), for a token of this asset bound \
                 to a live sign-in session",
            );
        })
}

/// The `token` query parameter of the media routes, in the contract.
fn token_parameter(op: &mut Operation) {
    op.query = Some(schemars::json_schema!({
        "type": "object",
        "properties": {
            "token": {
                "type": "string",
                "description": "the playback token the API put in the playback URL"
            }
        },
        "required": ["token"]
    }));
}

/// The query of `/media/{*key}`: the token, the lesson a master plays, and
/// a live playlist's delivery directives.
fn media_parameters(op: &mut Operation) {
    op.query = Some(schemars::json_schema!({
        "type": "object",
        "properties": {
            "token": {
                "type": "string",
                "description": "the playback token the API put in the playback URL"
            },
            "lesson": {
                "type": "string",
                "format": "uuid",
                "description": "on a master playlist: the lesson being played, whose captions \
                    it lists (the playback URL carries it)"
            },
            "_HLS_msn": {
                "type": "integer",
                "minimum": 0,
                "description": "on a live media playlist (LL-HLS blocking reload): answer once \
                    the playlist holds this media sequence number, at most three target \
                    durations later (then 503 `playlist_update_pending`)"
            },
            "_HLS_part": {
                "type": "integer",
                "minimum": 0,
                "description": "with `_HLS_msn`: once the playlist holds this part of that segment"
            }
        },
        "required": ["token"]
    }));
}

fn not_modified_response(op: &mut Operation) {
    op.response(
        304,
        "the copy named by If-None-Match or If-Modified-Since is current",
        None,
    );
}

fn unsatisfiable_response(op: &mut Operation) {
    op.response(
        416,
        "the range starts past the end; Content-Range: bytes */<length>",
        Some((
            "application/json",
            schemars::json_schema!({ "$ref": "#/components/schemas/ErrorBody" }),
        )),
    );
}

/// Delivery's API routes for signed-in callers: assets as partners and
/// operators read them, and turning encryption on or off.
pub fn routes(api: ApiRouter<DeliveryState>) -> ApiRouter<DeliveryState> {
    encryption::routes(assets::routes(api))
}

/// Registered so the route table, the authorisation matrix and the
/// contract list the preflight; the [`Cors`] layer answers it before it
/// gets here.
async fn preflight() -> StatusCode {
    StatusCode::NO_CONTENT
}

/// A servable `/media` path: the asset, the object it names and, on an
/// encrypted asset's path (`assets/<uuid>/aes-<kid>/out/<rest>`), the key
/// id it was asked under.
#[derive(Debug, PartialEq, Eq)]
struct MediaPath {
    asset: Uuid,
    /// `assets/<uuid>/out/<rest>`, the object key in storage.
    object: String,
    key_id: Option<String>,
}

/// The asset a servable key belongs to: `assets/<uuid>/out/<rest>` with the
/// id in its canonical (lower-case, hyphenated) form, as the pipeline
/// writes it, or `assets/<uuid>/aes-<kid>/out/<rest>` for the same object
/// served encrypted. Keys that could not be object keys at all are 400.
fn servable(key: &str) -> Result<MediaPath, ApiError> {
    if let Err(e) = lectern_storage::validate_key(key) {
        let reason = match e {
            StorageError::InvalidKey { reason, .. } => reason,
            other => other.to_string(),
        };
        return Err(ApiError::new(
            ErrorCode::InvalidPath,
            format!("not a media path: {reason}"),
        ));
    }
    let not_found = || ApiError::not_found(format!("no media at /media/{key}"));
    let mut parts = key.splitn(4, '/');
    let (id, key_id, rest) = match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some("assets"), Some(id), Some("out"), Some(rest)) => (id, None, rest),
        (Some("assets"), Some(id), Some(marker), Some(rest)) => {
            match (marker.strip_prefix("aes-"), rest.strip_prefix("out/")) {
                (Some(kid), Some(rest)) if !kid.is_empty() => (id, Some(kid), rest),
                _ => return Err(not_found()),
            }
        }
        _ => return Err(not_found()),
    };
    // Only the files a rendition is made of; never a chunked encode's
    // intermediates, whatever their names.
    if rest.is_empty()
        || http::rendition_type(rest).is_none()
        || lectern_assets::keys::is_intermediate(rest)
    {
        return Err(not_found());
    }
    let asset = lectern_assets::keys::canonical_id(id).ok_or_else(not_found)?;
    Ok(MediaPath {
        asset,
        object: match key_id {
            None => key.to_string(),
            Some(_) => format!("assets/{id}/out/{rest}"),
        },
        key_id: key_id.map(str::to_string),
    })
}

/// Only the asset (tests).
#[cfg(test)]
fn servable_asset(key: &str) -> Result<Uuid, ApiError> {
    servable(key).map(|p| p.asset)
}

fn query_token(query: Option<&str>) -> Option<&str> {
    query_param(query, "token")
}

/// The value of `name=` in a query string (the first one), when not empty.
fn query_param<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query?
        .split('&')
        .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
        .filter(|t| !t.is_empty())
}

/// The lesson whose captions a master playlist should list; a value that
/// is no id is ignored (the playlist is served without captions).
fn query_lesson(query: Option<&str>) -> Option<Uuid> {
    query_param(query, "lesson").and_then(|v| Uuid::parse_str(v).ok())
}

/// The token check shared by the origin and the CDN's auth subrequest.
async fn authorize(
    state: &DeliveryState,
    token: Option<&str>,
    asset: Uuid,
) -> Result<Claims, ApiError> {
    let playback = &state.playback;
    if !playback.has_keys() {
        return Err(ApiError::not_configured(lectern_secrets::PLAYBACK_KEYS_VAR));
    }
    let Some(token) = token else {
        return Err(ApiError::new(
            ErrorCode::MissingToken,
            "media needs a playback token: use the playback URL the API gave you, \
             which carries ?token=…",
        ));
    };
    let claims = playback.verify(token, asset).map_err(|e| match e {
        TokenError::Invalid => ApiError::new(
            ErrorCode::InvalidToken,
            "the playback token is not valid (altered, truncated or signed with a retired key); \
             fetch a new playback URL",
        ),
        TokenError::WrongAsset => ApiError::new(
            ErrorCode::WrongAsset,
            "this playback token was issued for another video",
        ),
        TokenError::Expired => ApiError::new(
            ErrorCode::ExpiredToken,
            "the playback token has expired; fetch a new playback URL",
        ),
    })?;
    if let Some(session) = claims.session {
        if !playback
            .session_alive(&state.db, session, token::now_unix())
            .await?
        {
            return Err(ApiError::new(
                ErrorCode::SessionEnded,
                "the sign-in this playback token belongs to has ended; sign in again",
            ));
        }
    }
    Ok(claims)
}

async fn media(
    State(state): State<DeliveryState>,
    method: Method,
    headers: HeaderMap,
    ApiPath(key): ApiPath<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let result = async {
        let path = servable(&key)?;
        let token = query_token(query.as_deref());
        let claims = authorize(&state, token, path.asset).await?;
        let token = token.unwrap_or_default();
        let object = path.object.as_str();
        let playlist = object.ends_with(".m3u8");
        let lesson = query_lesson(query.as_deref());
        // LL-HLS blocking reload; `None` (no `_HLS_` in the query) is the usual path.
        let directive = if playlist {
            blocking::Directive::parse(query.as_deref())?
        } else {
            None
        };
        let asset_key = state.playback.asset_key(&state, path.asset).await?;
        if let Some(refused) = delivery_refusal(asset_key.as_deref(), &path) {
            return Err(refused);
        }
        match (asset_key, path.key_id) {
            (None, _) => {
                if playlist {
                    serve_playlist(
                        &state, &method, &headers, object, token, &claims, None, lesson, directive,
                    )
                    .await
                } else {
                    match serve_object(&state, &method, &headers, object).await {
                        // A hinted LL-HLS part, asked for before it exists.
                        Err(e)
                            if e.code == ErrorCode::NotFound
                                && lectern_assets::keys::is_live_part(object) =>
                        {
                            blocking::wait_for_part(&state, object, || {
                                serve_object(&state, &method, &headers, object)
                            })
                            .await
                        }
                        answer => answer,
                    }
                }
            }
            // The plain path of an encrypted asset: its playlists send the
            // player to the key-marked path (its media segments were
            // refused above).
            (Some(k), None) => {
                if playlist {
                    let base = encrypted_dir(path.asset, &k.id, object);
                    let e = (&*k, Some(base.as_str()));
                    serve_playlist(
                        &state,
                        &method,
                        &headers,
                        object,
                        token,
                        &claims,
                        Some(e),
                        lesson,
                        directive,
                    )
                    .await
                } else {
                    serve_object(&state, &method, &headers, object).await
                }
            }
            (Some(k), Some(_)) => {
                if playlist {
                    let e = (&*k, None);
                    serve_playlist(
                        &state,
                        &method,
                        &headers,
                        object,
                        token,
                        &claims,
                        Some(e),
                        lesson,
                        directive,
                    )
                    .await
                } else if encryption::is_encrypted_media(object) {
                    serve_encrypted(&state, &method, &headers, &key, object, &k).await
                } else {
                    serve_object(&state, &method, &headers, object).await
                }
            }
        }
    }
    .await;
    let response = result.unwrap_or_else(IntoResponse::into_response);
    // The origin's own record of what it served; tests/cdn.rs counts these.
    tracing::debug!(%key, status = response.status().as_u16(), "media served");
    response
}

/// Why `path` is not served in the asset's current delivery state
/// (`current`: its key, `None` when clear), or `None` when it is: a clear
/// media segment of an encrypted asset (a CDN would keep it), or anything
/// under a key that is no longer the asset's. 404 for `/media`;
/// `/media-auth` turns it into a 403.
fn delivery_refusal(current: Option<&AssetKey>, path: &MediaPath) -> Option<ApiError> {
    match (current, path.key_id.as_deref()) {
        (Some(k), None) if encryption::is_encrypted_media(&path.object) => Some(ApiError::new(
            ErrorCode::EncryptedPath,
            format!(
                "this video is encrypted: its segments are served under \
                 /media/assets/{}/{}/out/…; follow the master playlist",
                path.asset,
                encryption::marker(&k.id)
            ),
        )),
        (Some(k), Some(kid)) if k.id == kid => None,
        (_, Some(_)) => Some(ApiError::new(
            ErrorCode::StaleMediaPath,
            "this encrypted path is no longer current (encryption was turned off or its key \
             replaced); reload the playback URL",
        )),
        _ => None,
    }
}

/// For a CDN or proxy in front of the origin (nginx `auth_request`): the
/// same checks as `/media`, on the URI named by `X-Original-URI`, without
/// touching storage. 204 when the token grants that URI *and* the asset's
/// delivery state lets it be served: a CDN holding clear segments cached
/// before encryption was turned on must stop handing them out, so the
/// verdict on a clear segment of an encrypted asset is a refusal.
async fn media_auth(State(state): State<DeliveryState>, headers: HeaderMap) -> Response {
    let result = async {
        let original = headers
            .get("x-original-uri")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::MissingOriginalUri,
                    "send the URI to authorise in X-Original-URI (e.g. nginx \
                     `proxy_set_header X-Original-URI $request_uri`)",
                )
            })?;
        let (path, query) = match original.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (original, None),
        };
        let key = path
            .strip_prefix("/media/")
            .and_then(percent_decode)
            .ok_or_else(|| ApiError::not_found(format!("{path} is not a media path")))?;
        let path = servable(&key)?;
        authorize(&state, query_token(query), path.asset).await?;
        let current = state.playback.asset_key(&state, path.asset).await?;
        if let Some(refused) = delivery_refusal(current.as_deref(), &path) {
            // A CDN's auth subrequest denies on 401/403 only; anything
            // else is an error to it (nginx answers 500). The body keeps
            // the code `/media` would have answered.
            let mut response = refused.into_response();
            *response.status_mut() = StatusCode::FORBIDDEN;
            return Ok(response);
        }
        Ok::<_, ApiError>(StatusCode::NO_CONTENT.into_response())
    }
    .await;
    let response = result.unwrap_or_else(IntoResponse::into_response);
    tracing::debug!(status = response.status().as_u16(), "media token checked");
    response
}

/// `%XX` decoding of a URI path, exactly as the router decodes `/media`
/// itself (a `%` not followed by two hex digits stays as it is), so the
/// verdict is on the key `/media` would serve; `None` when the bytes are
/// not UTF-8.
fn percent_decode(s: &str) -> Option<std::borrow::Cow<'_, str>> {
    percent_encoding::percent_decode_str(s).decode_utf8().ok()
}

fn storage_error(key: &str, e: StorageError) -> ApiError {
    match e {
        StorageError::NotFound { .. } => ApiError::not_found(format!("no media at /media/{key}")),
        StorageError::InvalidKey { reason, .. } => ApiError::new(
            ErrorCode::InvalidPath,
            format!("not a media path: {reason}"),
        ),
        StorageError::RangeNotSatisfiable { size } => ApiError::new(
            ErrorCode::RangeNotSatisfiable,
            format!("the requested range is outside the object, which is {size} bytes"),
        ),
        other => {
            tracing::warn!(%key, error = %other, "media storage read failed");
            ApiError::new(
                ErrorCode::StorageUnavailable,
                "object storage did not answer; retry shortly",
            )
        }
    }
}

fn unsatisfiable(size: u64) -> Response {
    let mut response = ApiError::new(
        ErrorCode::RangeNotSatisfiable,
        format!("the requested range is outside the object, which is {size} bytes"),
    )
    .into_response();
    response.headers_mut().insert(
        header::CONTENT_RANGE,
        HeaderValue::from_str(&format!("bytes */{size}")).expect("ascii"),
    );
    response
}

fn header_value(s: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(s).ok()
}

/// Validators, type and cache policy of a stored object; the stored values
/// win (the packager chose them), extension defaults fill gaps.
fn object_headers(h: &mut HeaderMap, key: &str, meta: &ObjectMeta) {
    let content_type = meta
        .content_type
        .as_deref()
        .filter(|t| !t.is_empty() && *t != "binary/octet-stream")
        .unwrap_or_else(|| http::content_type_for(key));
    let cache_control = meta
        .cache_control
        .as_deref()
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| http::cache_control_for(key));
    if let Some(v) = header_value(content_type) {
        h.insert(header::CONTENT_TYPE, v);
    }
    if let Some(v) = header_value(cache_control) {
        h.insert(header::CACHE_CONTROL, v);
    }
    validators(h, &meta.etag, meta.last_modified);
}

fn validators(h: &mut HeaderMap, etag: &str, last_modified: chrono::DateTime<chrono::Utc>) {
    if !etag.is_empty() {
        if let Some(v) = header_value(&http::quoted(etag)) {
            h.insert(header::ETAG, v);
        }
    }
    if let Some(v) = header_value(&http::http_date(last_modified)) {
        h.insert(header::LAST_MODIFIED, v);
    }
}

/// What the object's metadata alone answers, before any body moves: 304
/// for a matching conditional request, or the whole answer to a HEAD.
/// A failed `If-Range` turns `range` into the whole object.
fn answer_from_meta(
    method: &Method,
    headers: &HeaderMap,
    key: &str,
    meta: &ObjectMeta,
    range: &mut RangeRequest,
) -> Option<Response> {
    if http::not_modified(headers, &meta.etag, meta.last_modified) {
        let mut response = StatusCode::NOT_MODIFIED.into_response();
        object_headers(response.headers_mut(), key, meta);
        response.headers_mut().remove(header::CONTENT_TYPE);
        return Some(response);
    }
    if !http::if_range_holds(headers, &meta.etag, meta.last_modified) {
        *range = RangeRequest::Whole;
    }
    if method != Method::HEAD {
        return None;
    }
    let span = match *range {
        RangeRequest::Whole => None,
        RangeRequest::One(r) => match r.resolve(meta.size) {
            Ok(span) => Some(span),
            Err(_) => return Some(unsatisfiable(meta.size)),
        },
    };
    Some(object_response(key, meta, span, Body::empty()))
}
async fn serve_object(
    state: &DeliveryState,
    method: &Method,
    headers: &HeaderMap,
    key: &str,
) -> Result<Response, ApiError> {
    let store = &state.store;
    let cache = &state.playback.media_cache;
    let mut range = http::range(headers);
    if let Some(hit) = cache.get(key) {
        return Ok(answer_from_memory(method, headers, key, hit, range));
    }
    // Metadata first only when it decides the answer before any body
    // moves: HEAD, a conditional request (304 without a body transfer on
    // S3), or If-Range. A plain GET is one storage round trip.
    let needs_meta = method == Method::HEAD
        || http::is_conditional(headers)
        || headers.contains_key(header::IF_RANGE);
    if needs_meta {
        let meta = store.head(key).await.map_err(|e| storage_error(key, e))?;
        if let Some(answer) = answer_from_meta(method, headers, key, &meta, &mut range) {
            return Ok(answer);
        }
    }
    let requested = match range {
        RangeRequest::Whole => None,
        RangeRequest::One(r) => Some(r),
    };
    // A whole GET may fill the cache on its way through.
    let filler = match requested {
        None => match cache.lookup(key) {
            Lookup::Hit(hit) => return Ok(answer_from_memory(method, headers, key, hit, range)),
            Lookup::Fill(filler) => Some(filler),
            Lookup::Bypass => None,
        },
        Some(_) => None,
    };
    let object = match store.get(key, requested).await {
        Ok(o) => o,
        Err(StorageError::RangeNotSatisfiable { size }) => return Ok(unsatisfiable(size)),
        Err(e) => return Err(storage_error(key, e)),
    };
    let span = requested.map(|_| object.range.clone());
    let mut response = object_response(key, &object.meta, span, Body::empty());
    let body = match filler {
        // A whole answer: its headers are the held object's.
        Some(filler) => {
            let headers = Arc::new(response.headers().clone());
            filler.tee(Arc::new(object.meta), headers, object.body)
        }
        None => object.body,
    };
    *response.body_mut() = Body::from_stream(body);
    Ok(response)
}

/// The answer to any request for an object held whole in memory.
fn answer_from_memory(
    method: &Method,
    headers: &HeaderMap,
    key: &str,
    object: CachedObject,
    mut range: RangeRequest,
) -> Response {
    let meta = &*object.meta;
    if let Some(answer) = answer_from_meta(method, headers, key, meta, &mut range) {
        return answer;
    }
    match range {
        RangeRequest::Whole => {
            let mut response = Response::new(Body::from(object.body));
            *response.headers_mut() = HeaderMap::clone(&object.headers);
            response
        }
        RangeRequest::One(r) => match r.resolve(meta.size) {
            Ok(span) => {
                let body = object.body.slice(span.start as usize..span.end as usize);
                object_response(key, meta, Some(span), Body::from(body))
            }
            Err(_) => unsatisfiable(meta.size),
        },
    }
}

fn object_response(
    key: &str,
    meta: &ObjectMeta,
    span: Option<std::ops::Range<u64>>,
    body: Body,
) -> Response {
    let mut response = Response::new(body);
    let h = response.headers_mut();
    object_headers(h, key, meta);
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    let length = match &span {
        Some(span) => {
            *response.status_mut() = StatusCode::PARTIAL_CONTENT;
            let value = format!("bytes {}-{}/{}", span.start, span.end - 1, meta.size);
            response.headers_mut().insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&value).expect("ascii"),
            );
            span.end - span.start
        }
        None => meta.size,
    };
    response
        .headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    response
}

/// `/media/assets/<id>/aes-<kid>/out/<dir of object>/`, root-relative.
fn encrypted_dir(asset: Uuid, kid: &str, object: &str) -> String {
    let rest = object
        .strip_prefix(&format!("assets/{asset}/out/"))
        .unwrap_or_default();
    let dir = rest.rfind('/').map_or("", |i| &rest[..=i]);
    format!(
        "/media/assets/{asset}/{}/out/{dir}",
        encryption::marker(kid)
    )
}

/// A media segment of an encrypted asset, answered like any object with
/// lengths, ranges and validators of the encrypted bytes. It is encrypted
/// once per key and held in the media cache under `path` (the key-marked
/// path it was asked for by), so a range or a repeat costs no encryption,
/// and a crowd missing it at once waits for one encryption (see
/// [`MediaCache::derived`]): memory spent encrypting stays bounded however
/// many requests arrive.
async fn serve_encrypted(
    state: &DeliveryState,
    method: &Method,
    headers: &HeaderMap,
    path: &str,
    key: &str,
    asset_key: &Arc<AssetKey>,
) -> Result<Response, ApiError> {
    let cache = &state.playback.media_cache;
    let mut range = http::range(headers);
    if let Some(hit) = cache.get(path) {
        return Ok(answer_from_memory(method, headers, key, hit, range));
    }
    // What the metadata alone answers (HEAD, 304) needs no encryption.
    if method == Method::HEAD
        || http::is_conditional(headers)
        || headers.contains_key(header::IF_RANGE)
    {
        let clear = state
            .store
            .head(key)
            .await
            .map_err(|e| storage_error(key, e))?;
        let meta = encrypted_meta(&clear, &asset_key.id);
        if let Some(answer) = answer_from_meta(method, headers, key, &meta, &mut range) {
            return Ok(answer);
        }
    }
    let encrypted = cache
        .derived(path, encrypt_segment(state, key, asset_key))
        .await?;
    Ok(answer_from_memory(method, headers, key, encrypted, range))
}

/// The segment stored at `key`, encrypted whole, as the cache holds it.
async fn encrypt_segment(
    state: &DeliveryState,
    key: &str,
    asset_key: &Arc<AssetKey>,
) -> Result<CachedObject, ApiError> {
    // The clear bytes from memory when the asset was served clear lately.
    let (clear_meta, clear) = match state.playback.media_cache.get(key) {
        Some(hit) => (ObjectMeta::clone(&hit.meta), hit.body),
        None => {
            let object = state
                .store
                .get(key, None)
                .await
                .map_err(|e| storage_error(key, e))?;
            if object.meta.size > encryption::MAX_ENCRYPTED_SEGMENT {
                return Err(ApiError::internal(format!(
                    "segment {key} is {} bytes, too large to encrypt on the fly",
                    object.meta.size
                )));
            }
            let meta = object.meta.clone();
            (
                meta,
                object.bytes().await.map_err(|e| storage_error(key, e))?,
            )
        }
    };
    let meta = encrypted_meta(&clear_meta, &asset_key.id);
    let (k, object_key) = (asset_key.clone(), key.to_string());
    // AES-CBC is serial: a multi-MB segment is milliseconds of CPU, kept
    // off the async workers.
    let body = tokio::task::spawn_blocking(move || k.encrypt(&object_key, &clear))
        .await
        .map_err(ApiError::internal)?;
    let headers = object_response(key, &meta, None, Body::empty());
    Ok(CachedObject {
        meta: Arc::new(meta),
        body: axum::body::Bytes::from(body),
        headers: Arc::new(headers.headers().clone()),
    })
}

/// The encrypted object's metadata: its length, and never the clear
/// object's tag (a client or cache holding the clear bytes must not be
/// told they are current).
fn encrypted_meta(clear: &ObjectMeta, kid: &str) -> ObjectMeta {
    ObjectMeta {
        size: encryption::encrypted_len(clear.size),
        etag: format!("{}.{}", clear.etag, encryption::marker(kid)),
        ..clear.clone()
    }
}

/// A playlist's metadata and bytes, read whole (it is rewritten).
async fn read_playlist(
    state: &DeliveryState,
    key: &str,
) -> Result<(ObjectMeta, bytes::Bytes), ApiError> {
    let object = state
        .store
        .get(key, None)
        .await
        .map_err(|e| storage_error(key, e))?;
    if object.meta.size > MAX_PLAYLIST_BYTES {
        return Err(ApiError::internal(format!(
            "playlist {key} is {} bytes, more than a playlist can be",
            object.meta.size
        )));
    }
    let meta = object.meta.clone();
    let bytes = object.bytes().await.map_err(|e| storage_error(key, e))?;
    Ok((meta, bytes))
}

#[allow(clippy::too_many_arguments)]
async fn serve_playlist(
    state: &DeliveryState,
    method: &Method,
    headers: &HeaderMap,
    key: &str,
    token: &str,
    claims: &Claims,
    encrypt: Option<(&AssetKey, Option<&str>)>,
    lesson: Option<Uuid>,
    directive: Option<blocking::Directive>,
) -> Result<Response, ApiError> {
    let (meta, bytes) = match directive {
        None => read_playlist(state, key).await?,
        Some(directive) => blocking::wait(state, key, directive).await?,
    };
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| ApiError::internal(format!("playlist {key} is not UTF-8")))?;
    let kind = playlist::kind(text);
    let key_uri;
    let dir = key.rfind('/').map_or("", |i| &key[..=i]);
    let subtitles = match (kind, lesson) {
        (playlist::Kind::Master, Some(lesson)) => {
            Some(captions::tracks(state, lesson, claims.asset).await)
        }
        _ => None,
    };
    let with_subtitles;
    let text = match &subtitles {
        Some(tracks) => {
            with_subtitles = playlist::with_subtitles(text, dir, tracks);
            with_subtitles.as_str()
        }
        None => text,
    };
    let encrypt = match encrypt {
        Some((asset_key, base)) => {
            key_uri = encryption::key_uri(claims.asset, &asset_key.id);
            Some(playlist::Encrypt {
                key: asset_key,
                key_uri: &key_uri,
                dir,
                base,
            })
        }
        None => None,
    };
    // A media playlist answering a blocking reload is one body for every
    // viewer (the token is a variable the player fills in from the URL it
    // asked by), which a CDN may cache per blocking reload (`blocking`,
    // `infra/cdn/README.md`). Only a player that sent delivery directives
    // gets it: such a player speaks LL-HLS, and every one of those we know
    // (hls.js, AVPlayer) substitutes variables, while a plain request may
    // come from a client that does not (ffmpeg's HLS demuxer, older
    // native players) and gets the playlist with its own token written in.
    // (Only a master carries captions, so a shared playlist never does.)
    let shared = match (kind, directive) {
        (playlist::Kind::Master, _) | (_, None) => None,
        (_, Some(_)) => playlist::shared(text, encrypt.as_ref()),
    };
    let is_shared = shared.is_some();
    let (body, token) = match shared {
        Some(body) => (body, playlist::TOKEN_REFERENCE),
        None => (
            playlist::rewrite_encrypted(text, token, encrypt.as_ref()),
            token,
        ),
    };

    // The rewritten bytes depend on the token, or on its being shared
    // (and on the key and path of an encrypted asset), so the validator
    // does too: a client holding another copy must not be told it is
    // current.
    let mut tag = Sha256::new().chain_update(token.as_bytes());
    if let Some(e) = &encrypt {
        tag.update(b"\0");
        tag.update(e.key.id.as_bytes());
        tag.update(b"\0");
        tag.update(e.base.unwrap_or_default().as_bytes());
    }
    if let Some(tracks) = &subtitles {
        for t in tracks {
            for part in [&t.language, &t.label, &t.prefix] {
                tag.update(b"\0");
                tag.update(part.as_bytes());
            }
            tag.update([u8::from(t.is_default)]);
        }
    }
    let token_tag = &hex::encode(tag.finalize())[..16];
    let etag = format!("{}-{token_tag}", meta.etag);
    let remaining = u64::try_from(claims.expires - token::now_unix()).unwrap_or(0);
    let stored = meta
        .cache_control
        .as_deref()
        .and_then(http::max_age)
        .unwrap_or(300);
    let max_age = match kind {
        playlist::Kind::Growing => 1,
        _ => stored.min(remaining),
    };
    // A lesson's master changes when its captions do: revalidated each
    // time, and only its tag can say it is current (its stored date is
    // older than a track changed).
    let cache_control = match &subtitles {
        Some(_) => "private, no-cache".to_string(),
        None if is_shared => format!("public, max-age={}", blocking::blocking_max_age_s(text)),
        None => format!("private, max-age={max_age}"),
    };
    Ok(playlist_response(
        method,
        headers,
        body,
        &etag,
        meta.last_modified,
        subtitles.is_some(),
        &cache_control,
    ))
}

/// A playlist's answer: 304 when the client's copy is current (by tag
/// alone when `tag_only`), else the body, with its validators and policy.
fn playlist_response(
    method: &Method,
    headers: &HeaderMap,
    body: String,
    etag: &str,
    last_modified: chrono::DateTime<chrono::Utc>,
    tag_only: bool,
    cache_control: &str,
) -> Response {
    let current = if tag_only {
        headers.contains_key(header::IF_NONE_MATCH)
            && http::not_modified(headers, etag, last_modified)
    } else {
        http::not_modified(headers, etag, last_modified)
    };
    let mut response = if current {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let length = body.len();
        let mut response = if method == Method::HEAD {
            Response::new(Body::empty())
        } else {
            Response::new(Body::from(body))
        };
        let h = response.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/vnd.apple.mpegurl"),
        );
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
        response
    };
    let h = response.headers_mut();
    validators(h, etag, last_modified);
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_str(cache_control).expect("ascii"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_rendition_keys_of_an_asset_are_servable() {
        let id = Uuid::new_v4();
        assert_eq!(
            servable_asset(&format!("assets/{id}/out/attempt-1/seg_00001.m4s")).unwrap(),
            id
        );
        for key in [
            format!("assets/{id}/source"),
            format!("assets/{id}/out"),
            lectern_assets::keys::chunk_key(&format!("assets/{id}/out/attempt-1/"), 0),
            format!("assets/{id}/out/attempt-1/parts/p1.m4s"),
            format!("assets/{id}/aes-0123/out/attempt-1/parts/p1.m4s"),
            format!("assets/{id}/out/attempt-1/360p/seg_00001.mkv"),
            format!("assets/{id}/out/attempt-1/360p/seg_00001"),
            format!("assets/{id}/out/attempt-1/360p.m4s/seg"),
            format!("assets/{}/out/x.m4s", id.to_string().to_uppercase()),
            format!("assets/{}/out/x.m4s", id.simple()),
            "uploads/x".to_string(),
            "assets/not-a-uuid/out/x".to_string(),
        ] {
            assert_eq!(
                servable_asset(&key).unwrap_err().status(),
                StatusCode::NOT_FOUND,
                "{key}"
            );
        }
        for key in [
            format!("assets/{id}/out/../source"),
            format!("assets/{id}/out//x"),
            "/etc/passwd".to_string(),
            format!("assets/{id}/out/a\\b"),
            format!("assets/{id}/out/a\0b"),
        ] {
            assert_eq!(
                servable_asset(&key).unwrap_err().status(),
                StatusCode::BAD_REQUEST,
                "{key:?}"
            );
        }
    }

    #[test]
    fn master_urls_are_relative_unless_a_cdn_is_configured() {
        let asset = Uuid::new_v4();
        let p = Playback::generate();
        let url = p.master_url(asset, &format!("assets/{asset}/out/attempt-2/"), None);
        assert!(
            url.starts_with(&format!(
                "/media/assets/{asset}/out/attempt-2/master.m3u8?token="
            )),
            "{url}"
        );
        let token = url.split_once("?token=").unwrap().1;
        assert!(p.verify(token, asset).is_ok());
        let cdn = Playback::new(
            vec![PlaybackKey::generate("k")],
            DEFAULT_TOKEN_TTL,
            Some("https://cdn.example.org/".into()),
        );
        assert!(cdn
            .master_url(asset, &format!("assets/{asset}/out/attempt-1"), None)
            .starts_with(&format!(
                "https://cdn.example.org/media/assets/{asset}/out/attempt-1/master.m3u8?token="
            )));
    }

    #[test]
    fn lesson_master_urls_name_the_lesson() {
        let (asset, lesson) = (Uuid::new_v4(), Uuid::new_v4());
        let p = Playback::generate();
        let url = p.lesson_master_url(
            asset,
            &format!("assets/{asset}/out/attempt-1/"),
            None,
            lesson,
        );
        let query = url.split_once('?').unwrap().1;
        assert_eq!(query_lesson(Some(query)), Some(lesson));
        assert!(p.verify(query_token(Some(query)).unwrap(), asset).is_ok());
        assert_eq!(query_lesson(Some("token=x&lesson=nope")), None);
        assert_eq!(query_lesson(Some("token=x&lessons=1")), None);
        assert_eq!(
            query_param(Some("a=1&tokens=2&token=3"), "token"),
            Some("3")
        );
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%2e%2E/b").as_deref(), Some("a../b"));
        // As the router: an escape that is not one stays as it is.
        assert_eq!(percent_decode("%zz").as_deref(), Some("%zz"));
        assert_eq!(percent_decode("%ff"), None);
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        const EXTENSIONS: [&str; 13] = [
            "m3u8", "m4s", "mp4", "ts", "aac", "jpg", "png", "vtt", "json", "mkv", "", "M4S", "exe",
        ];

        /// Media paths as a client may write them: canonical ones, near
        /// misses of every part, and noise.
        fn media_path() -> impl Strategy<Value = String> {
            let id = prop_oneof![
                6 => any::<u128>().prop_map(|n| Uuid::from_u128(n).to_string()),
                1 => any::<u128>().prop_map(|n| Uuid::from_u128(n).simple().to_string()),
                1 => any::<u128>().prop_map(|n| Uuid::from_u128(n).to_string().to_uppercase()),
                1 => "[0-9a-f-]{0,40}",
            ];
            let marker = prop_oneof![
                4 => Just("out".to_string()),
                4 => "aes-[0-9a-f]{0,16}/out",
                1 => "aes-",
                1 => "[a-z-]{0,6}",
            ];
            let segment = prop_oneof![
                6 => "[A-Za-z0-9_-]{1,12}",
                1 => "[A-Za-z0-9_.-]{1,12}",
                3 => Just("parts".to_string()),
                1 => Just("..".to_string()),
                1 => Just(".".to_string()),
                1 => Just(String::new()),
                1 => "[^/]{0,6}",
            ];
            let ext = proptest::sample::select(EXTENSIONS.to_vec());
            prop_oneof![
                (id, marker, proptest::collection::vec(segment, 0..5), ext).prop_map(
                    |(id, marker, dirs, ext)| {
                        let mut key = format!("assets/{id}/{marker}/");
                        for d in dirs {
                            key.push_str(&d);
                            key.push('/');
                        }
                        key.push_str("seg_00001");
                        if !ext.is_empty() {
                            key.push('.');
                            key.push_str(ext);
                        }
                        key
                    }
                ),
                ".{0,120}",
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(1024))]

            /// No path makes the parser panic, and what it accepts is a
            /// rendition file of one asset under its `out/`, never an
            /// intermediate, never anything a traversal could reach.
            #[test]
            fn servable_paths_are_rendition_files_of_one_asset(key in media_path()) {
                let Ok(path) = servable(&key) else {
                    return Ok(());
                };
                let prefix = format!("assets/{}/out/", path.asset);
                let rest = path.object.strip_prefix(&prefix);
                prop_assert!(rest.is_some(), "{} -> {:?}", key, path);
                let rest = rest.unwrap();
                prop_assert!(http::rendition_type(rest).is_some(), "{}", key);
                prop_assert!(!lectern_assets::keys::is_intermediate(rest), "{}", key);
                prop_assert!(lectern_storage::validate_key(&path.object).is_ok(), "{}", key);
                prop_assert!(rest.split('/').all(|s| !s.is_empty() && s != "." && s != ".."));
                match &path.key_id {
                    None => prop_assert_eq!(&path.object, &key),
                    Some(kid) => {
                        prop_assert!(!kid.is_empty());
                        let marked = format!("assets/{}/aes-{kid}/out/{rest}", path.asset);
                        prop_assert_eq!(&marked, &key);
                    }
                }
            }

            /// The URI a CDN hands `/media-auth` and the query of any
            /// request: read without a panic.
            #[test]
            fn uris_and_queries_never_panic(uri in ".{0,120}", query in ".{0,120}") {
                if let Some(key) = percent_decode(&uri) {
                    let _ = servable(&key);
                }
                let _ = query_token(Some(&query));
            }
        }
    }
}
