//! Captions per lesson and language: a partner (or an expert on a course
//! that credits them, or a content admin) uploads a WebVTT or SRT file for
//! a BCP-47 language; it is validated ([`parse`]), converted to WebVTT,
//! segmented as an HLS subtitle rendition against the lesson's video
//! (`lectern_packager::subtitles`, with the first frame's place on the
//! fMP4 timeline read by [`timeline`]) and stored under a prefix of its
//! own below the asset's `out/` (`lectern_assets::keys::captions_prefix`).
//! One row per lesson and language in `lesson_captions` names the prefix;
//! the media origin lists every track of a lesson whose video it is in the
//! master playlist it serves (`SUBTITLES` group), so captions appear
//! without re-packaging the video.
//!
//! - Objects are written before the row and never changed: a replacement
//!   is a new prefix, switched in one transaction, and the old prefix is
//!   deleted afterwards (a failed deletion leaves unreferenced objects,
//!   never a broken track). A refused file stores nothing.
//! - Captions are managed in every course state: they are an accessibility
//!   track of the video, not the reviewed content, and a published
//!   lecture is exactly when learners need them. Every change is audited
//!   by the identity middleware (method, route, lesson and language).
//! - Tracks are timed against the video they were uploaded for: when the
//!   lesson is given another video they stay listed (`current: false`)
//!   for their managers and are no longer played until replaced.
//! - Learners list and fetch the tracks of lessons they can play; another
//!   organisation's lesson is 404 to everyone.

mod language;
pub mod parse;
pub mod timeline;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderValue, Method};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use lectern_packager::subtitles::{self, SubtitleFile};
use lectern_packager::{Manifest, RenditionKind, MANIFEST};
use lectern_storage::{PutOptions, StorageError, Store};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{lock_course, nullable, CatalogueState};
use lectern_web::{Access, ApiError, ApiRouter, ErrorCode, Permission, Principal};
use lectern_web::{ApiJson, ApiPath, ApiQuery, NoContent};
use parse::SourceFormat;

/// Caption languages one lesson may have.
pub const MAX_TRACKS: i64 = 50;
/// Uploads written to storage at once.
const PARALLEL_PUTS: usize = 8;

pub fn routes(api: ApiRouter<CatalogueState>) -> ApiRouter<CatalogueState> {
    let manage = Access::Permission(Permission::ManageCaptions);
    api.route(
        Method::GET,
        "/api/v1/lessons/{lesson_id}/captions",
        Access::Authenticated,
        list,
    )
    .route(
        Method::PUT,
        "/api/v1/lessons/{lesson_id}/captions/{language}",
        manage,
        upload,
    )
    .describe(|op| {
        op.summary = Some("upload or replace the captions of a language (WebVTT or SRT)");
        op.request = Some((
            "text/vtt",
            schemars::json_schema!({
                "type": "string",
                "contentMediaType": "text/vtt",
                "description": "the caption file as it is: WebVTT, or SRT (application/x-subrip), \
                    UTF-8, at most 2 MiB; the format is recognised from the content"
            }),
        ));
    })
    .route(
        Method::PATCH,
        "/api/v1/lessons/{lesson_id}/captions/{language}",
        manage,
        update,
    )
    .route(
        Method::GET,
        "/api/v1/lessons/{lesson_id}/captions/{language}",
        Access::Authenticated,
        fetch,
    )
    .describe(|op| {
        op.summary = Some("the whole caption track as one WebVTT file");
        op.raw(
            200,
            "text/vtt",
            "the track's cues, normalised to WebVTT (an SRT upload as converted), timed \
             from the video's first frame",
        );
    })
    .route(
        Method::DELETE,
        "/api/v1/lessons/{lesson_id}/captions/{language}",
        manage,
        delete,
    )
}

/// The lesson's video as captions need it.
#[derive(sqlx::FromRow)]
struct LessonVideo {
    course_id: Uuid,
    published: bool,
    asset_id: Option<Uuid>,
    duration_s: Option<f64>,
    /// The finished ladder, when there is one.
    output_prefix: Option<String>,
    /// What a learner can play: the finished ladder or the growing preview.
    playable: Option<String>,
}

/// Whether the caller manages captions (and so sees every track of the
/// organisation's lessons, current or not).
fn manages(principal: &Principal) -> bool {
    Permission::ManageCaptions.granted_to(principal.role)
}

/// The lesson, if the caller may see its captions: managers any lesson of
/// their organisation, learners the lessons they can play. 404 otherwise.
async fn lesson(
    state: &CatalogueState,
    principal: &Principal,
    lesson_id: Uuid,
) -> Result<LessonVideo, ApiError> {
    let found: Option<LessonVideo> = sqlx::query_as(
        "SELECT l.course_id, c.state = 'published' AS published, l.asset_id, a.duration_s,
                a.output_prefix, coalesce(a.output_prefix, a.playable_prefix) AS playable
         FROM lessons l
         JOIN courses c ON c.id = l.course_id
         LEFT JOIN assets a ON a.id = l.asset_id
         WHERE l.id = $1 AND ($2::uuid IS NULL OR l.organisation_id = $2)",
    )
    .bind(lesson_id)
    .bind(principal.org_scope())
    .fetch_optional(&state.db)
    .await?;
    found
        .filter(|l| manages(principal) || (l.published && l.playable.is_some()))
        .ok_or_else(|| ApiError::not_found(format!("no lesson {lesson_id}")))
}

// --- what the routes answer -------------------------------------------------

/// One caption track of a lesson.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct CaptionTrack {
    /// BCP-47 tag in canonical case (`zh-CN`, `en`).
    pub language: String,
    /// What the learner's caption menu shows (`中文`, `English`).
    pub label: String,
    /// Whether players turn this track on by themselves (at most one per lesson).
    pub default: bool,
    /// What was uploaded (an SRT file is served converted to WebVTT).
    pub format: SourceFormat,
    pub cues: i32,
    /// Size of the uploaded file.
    pub bytes: i32,
    /// The video the cues are timed against.
    pub asset_id: Uuid,
    /// Whether that is still the lesson's video: only current tracks are
    /// played (and listed to learners); replace the others.
    pub current: bool,
    /// The whole track as one WebVTT file (this API, same credentials).
    pub url: String,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct CaptionList {
    pub lesson_id: Uuid,
    /// The default track first, then by language.
    pub captions: Vec<CaptionTrack>,
}

#[derive(sqlx::FromRow)]
struct TrackRow {
    language: String,
    label: String,
    is_default: bool,
    source_format: String,
    cue_count: i32,
    source_bytes: i32,
    asset_id: Uuid,
    prefix: String,
    updated_at: DateTime<Utc>,
}

const TRACK_COLUMNS: &str =
    "language, label, is_default, source_format, cue_count, source_bytes, asset_id, prefix, updated_at";

impl TrackRow {
    fn view(self, lesson_id: Uuid, video: &LessonVideo) -> CaptionTrack {
        CaptionTrack {
            url: format!("/api/v1/lessons/{lesson_id}/captions/{}", self.language),
            current: video.asset_id == Some(self.asset_id),
            language: self.language,
            label: self.label,
            default: self.is_default,
            format: SourceFormat::from_db(&self.source_format),
            cues: self.cue_count,
            bytes: self.source_bytes,
            asset_id: self.asset_id,
            updated_at: self.updated_at,
        }
    }
}

/// `GET /api/v1/lessons/{lesson_id}/captions`: the lesson's tracks (for a
/// learner, those that play with its current video).
async fn list(
    State(state): State<CatalogueState>,
    principal: Principal,
    ApiPath(lesson_id): ApiPath<Uuid>,
) -> Result<Json<CaptionList>, ApiError> {
    let video = lesson(&state, &principal, lesson_id).await?;
    let rows: Vec<TrackRow> = sqlx::query_as(&format!(
        "SELECT {TRACK_COLUMNS} FROM lesson_captions WHERE lesson_id = $1
         ORDER BY is_default DESC, language"
    ))
    .bind(lesson_id)
    .fetch_all(&state.db)
    .await?;
    let captions = rows
        .into_iter()
        .map(|r| r.view(lesson_id, &video))
        .filter(|t| t.current || manages(&principal))
        .collect();
    Ok(Json(CaptionList {
        lesson_id,
        captions,
    }))
}

async fn track(
    state: &CatalogueState,
    lesson_id: Uuid,
    language: &str,
) -> Result<TrackRow, ApiError> {
    sqlx::query_as(&format!(
        "SELECT {TRACK_COLUMNS} FROM lesson_captions WHERE lesson_id = $1 AND language = $2"
    ))
    .bind(lesson_id)
    .bind(language)
    .fetch_optional(&state.db)
    .await?
    .ok_or_else(|| no_track(lesson_id, language))
}

fn no_track(lesson_id: Uuid, language: &str) -> ApiError {
    ApiError::not_found(format!("lesson {lesson_id} has no {language} captions"))
}

/// `GET /api/v1/lessons/{lesson_id}/captions/{language}`: the track as
/// one WebVTT file.
async fn fetch(
    State(state): State<CatalogueState>,
    principal: Principal,
    ApiPath((lesson_id, language)): ApiPath<(Uuid, String)>,
) -> Result<Response, ApiError> {
    let language = language::canonical(&language)?;
    let video = lesson(&state, &principal, lesson_id).await?;
    let row = track(&state, lesson_id, &language).await?;
    if video.asset_id != Some(row.asset_id) && !manages(&principal) {
        return Err(no_track(lesson_id, &language));
    }
    let key = format!("{}{}", row.prefix, subtitles::WHOLE_WEBVTT);
    let object = state
        .store
        .get(&key, None)
        .await
        .map_err(|e| storage_error(&key, e))?;
    let bytes = object.bytes().await.map_err(|e| storage_error(&key, e))?;
    let mut response = Body::from(bytes).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/vtt; charset=utf-8"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-cache"),
    );
    Ok(response)
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UploadQuery {
    /// What learners see in the caption menu: 1–40 characters on one line,
    /// no `"`. Defaults to the language's own name (`中文（简体）` for
    /// zh-CN, `English` for en), or the tag; a replacement keeps its label.
    label: Option<String>,
    /// Turn this track on by default (and the lesson's other tracks off).
    /// Absent: a new track is not the default, a replacement keeps its flag.
    default: Option<bool>,
}

fn label(value: &str) -> Result<String, ApiError> {
    let v = value.trim();
    let n = v.chars().count();
    if n == 0 || n > 40 || v.chars().any(|c| c.is_control() || c == '"') {
        return Err(ApiError::new(
            ErrorCode::InvalidName,
            "label is 1–40 characters on one line, without \"",
        ));
    }
    Ok(v.to_string())
}

/// 404 unless the caller may change this lesson's captions (an expert only
/// on courses that credit them: 403 `not_course_expert`).
async fn check_manager(
    state: &CatalogueState,
    principal: &Principal,
    course_id: Uuid,
) -> Result<(), ApiError> {
    let mut tx = state.db.begin().await?;
    lock_course(&mut tx, principal, course_id).await?;
    tx.rollback().await?;
    Ok(())
}

/// `PUT /api/v1/lessons/{lesson_id}/captions/{language}?label=&default=`
/// with the file as the body: adds the track, or replaces the track of
/// that language. Answers the track as stored.
async fn upload(
    State(state): State<CatalogueState>,
    principal: Principal,
    ApiPath((lesson_id, language)): ApiPath<(Uuid, String)>,
    ApiQuery(query): ApiQuery<UploadQuery>,
    body: Body,
) -> Result<Json<CaptionTrack>, ApiError> {
    let language = language::canonical(&language)?;
    let given_label = query.label.as_deref().map(label).transpose()?;
    let video = lesson(&state, &principal, lesson_id).await?;
    check_manager(&state, &principal, video.course_id).await?;
    let (Some(asset_id), Some(prefix)) = (video.asset_id, video.output_prefix.as_deref()) else {
        return Err(ApiError::new(
            ErrorCode::LessonVideoNotReady,
            "captions are timed against the lesson's video: give the lesson a video and \
             upload the captions once it is ready",
        ));
    };
    let bytes = axum::body::to_bytes(body, parse::MAX_BYTES + 1)
        .await
        .map_err(|_| parse::too_large())?;
    let parsed = parse::parse(&bytes)?;
    let package = Package::read(&*state.store, prefix).await?;
    let duration_s = video.duration_s.unwrap_or(package.duration_s);
    parse::check_duration(&parsed.captions, duration_s)?;

    let files = subtitles::subtitle_rendition(
        &parsed.captions,
        &package.segments_s,
        package.presentation_start_s,
    );
    let new_prefix = lectern_assets::keys::captions_prefix(asset_id, Uuid::now_v7());
    if let Err(e) = write(&*state.store, &new_prefix, files).await {
        remove(&*state.store, &new_prefix).await;
        return Err(e);
    }
    let stored = store_row(
        &state,
        &principal,
        &video,
        StoredUpload {
            lesson_id,
            language: &language,
            label: given_label,
            default: query.default,
            format: parsed.format,
            cues: parsed.captions.cues.len(),
            bytes: bytes.len(),
            asset_id,
            prefix: &new_prefix,
        },
    )
    .await;
    match stored {
        Ok((row, replaced)) => {
            if let Some(old) = replaced {
                remove(&*state.store, &old).await;
            }
            Ok(Json(row.view(lesson_id, &video)))
        }
        Err(e) => {
            remove(&*state.store, &new_prefix).await;
            Err(e)
        }
    }
}

struct StoredUpload<'a> {
    lesson_id: Uuid,
    language: &'a str,
    label: Option<String>,
    default: Option<bool>,
    format: SourceFormat,
    cues: usize,
    bytes: usize,
    asset_id: Uuid,
    prefix: &'a str,
}

/// Points the lesson's track of the language at the new prefix, in one
/// transaction; returns the row and the prefix it replaced.
async fn store_row(
    state: &CatalogueState,
    principal: &Principal,
    video: &LessonVideo,
    upload: StoredUpload<'_>,
) -> Result<(TrackRow, Option<String>), ApiError> {
    #[derive(sqlx::FromRow)]
    struct Existing {
        prefix: String,
        label: String,
        is_default: bool,
    }
    let mut tx = state.db.begin().await?;
    let course = lock_course(&mut tx, principal, video.course_id).await?;
    let existing: Option<Existing> = sqlx::query_as(
        "SELECT prefix, label, is_default FROM lesson_captions
         WHERE lesson_id = $1 AND language = $2 FOR UPDATE",
    )
    .bind(upload.lesson_id)
    .bind(upload.language)
    .fetch_optional(&mut *tx)
    .await?;
    if existing.is_none() {
        let count: i64 =
            sqlx::query_scalar("SELECT count(*) FROM lesson_captions WHERE lesson_id = $1")
                .bind(upload.lesson_id)
                .fetch_one(&mut *tx)
                .await?;
        if count >= MAX_TRACKS {
            return Err(ApiError::new(
                ErrorCode::TooManyCaptions,
                format!("a lesson has at most {MAX_TRACKS} caption languages; delete one first"),
            ));
        }
    }
    let label = upload
        .label
        .or_else(|| existing.as_ref().map(|e| e.label.clone()))
        .unwrap_or_else(|| language::default_label(upload.language));
    let default = upload
        .default
        .unwrap_or_else(|| existing.as_ref().is_some_and(|e| e.is_default));
    if default {
        clear_default(&mut tx, upload.lesson_id, upload.language).await?;
    }
    let row: TrackRow = sqlx::query_as(&format!(
        "INSERT INTO lesson_captions (id, organisation_id, lesson_id, language, label, is_default,
             source_format, cue_count, source_bytes, asset_id, prefix)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
         ON CONFLICT (lesson_id, language) DO UPDATE SET
             label = excluded.label, is_default = excluded.is_default,
             source_format = excluded.source_format, cue_count = excluded.cue_count,
             source_bytes = excluded.source_bytes, asset_id = excluded.asset_id,
             prefix = excluded.prefix, updated_at = now()
         RETURNING {TRACK_COLUMNS}"
    ))
    .bind(Uuid::now_v7())
    .bind(course.organisation_id)
    .bind(upload.lesson_id)
    .bind(upload.language)
    .bind(&label)
    .bind(default)
    .bind(upload.format.as_str())
    .bind(i32::try_from(upload.cues).unwrap_or(i32::MAX))
    .bind(i32::try_from(upload.bytes).unwrap_or(i32::MAX))
    .bind(upload.asset_id)
    .bind(upload.prefix)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok((row, existing.map(|e| e.prefix)))
}

async fn clear_default(
    conn: &mut sqlx::PgConnection,
    lesson_id: Uuid,
    except: &str,
) -> Result<(), ApiError> {
    sqlx::query(
        "UPDATE lesson_captions SET is_default = false, updated_at = now()
         WHERE lesson_id = $1 AND language <> $2 AND is_default",
    )
    .bind(lesson_id)
    .bind(except)
    .execute(conn)
    .await?;
    Ok(())
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CaptionPatch {
    /// 1–40 characters on one line, no `"`.
    label: Option<String>,
    /// Make this the default track (the others stop being it), or not.
    #[serde(default, deserialize_with = "nullable")]
    default: Option<Option<bool>>,
}

/// `PATCH /api/v1/lessons/{lesson_id}/captions/{language} {"label"?,
/// "default"?}`: renames a track or changes which one plays by default,
/// without uploading it again.
async fn update(
    State(state): State<CatalogueState>,
    principal: Principal,
    ApiPath((lesson_id, language)): ApiPath<(Uuid, String)>,
    ApiJson(patch): ApiJson<CaptionPatch>,
) -> Result<Json<CaptionTrack>, ApiError> {
    let language = language::canonical(&language)?;
    let new_label = patch.label.as_deref().map(label).transpose()?;
    let video = lesson(&state, &principal, lesson_id).await?;
    let mut tx = state.db.begin().await?;
    lock_course(&mut tx, &principal, video.course_id).await?;
    let default = patch.default.flatten();
    if default == Some(true) {
        clear_default(&mut tx, lesson_id, &language).await?;
    }
    let row: TrackRow = sqlx::query_as(&format!(
        "UPDATE lesson_captions SET label = coalesce($3, label),
             is_default = coalesce($4, is_default), updated_at = now()
         WHERE lesson_id = $1 AND language = $2
         RETURNING {TRACK_COLUMNS}"
    ))
    .bind(lesson_id)
    .bind(&language)
    .bind(&new_label)
    .bind(default)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(|| no_track(lesson_id, &language))?;
    tx.commit().await?;
    Ok(Json(row.view(lesson_id, &video)))
}

/// `DELETE /api/v1/lessons/{lesson_id}/captions/{language}`: the track
/// stops being listed at once; its objects are deleted after.
async fn delete(
    State(state): State<CatalogueState>,
    principal: Principal,
    ApiPath((lesson_id, language)): ApiPath<(Uuid, String)>,
) -> Result<NoContent, ApiError> {
    let language = language::canonical(&language)?;
    let video = lesson(&state, &principal, lesson_id).await?;
    let mut tx = state.db.begin().await?;
    lock_course(&mut tx, &principal, video.course_id).await?;
    let prefix: String = sqlx::query_scalar(
        "DELETE FROM lesson_captions WHERE lesson_id = $1 AND language = $2 RETURNING prefix",
    )
    .bind(lesson_id)
    .bind(&language)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(|| no_track(lesson_id, &language))?;
    tx.commit().await?;
    remove(&*state.store, &prefix).await;
    Ok(NoContent)
}

// --- the video's package and storage ------------------------------------------

/// What segmenting captions needs from the published ladder.
struct Package {
    duration_s: f64,
    /// The media segments' durations of the top video rung (or of the
    /// audio, for an audio-only lesson): subtitle segments match them.
    segments_s: Vec<f64>,
    /// Where the first frame is on the media timeline ([`timeline`]).
    presentation_start_s: f64,
}

impl Package {
    async fn read(store: &dyn Store, prefix: &str) -> Result<Self, ApiError> {
        let prefix = format!("{}/", prefix.trim_end_matches('/'));
        let read = |key: String| async move {
            let object = store
                .get(&key, None)
                .await
                .map_err(|e| storage_error(&key, e))?;
            object.bytes().await.map_err(|e| storage_error(&key, e))
        };
        let manifest = read(format!("{prefix}{MANIFEST}")).await?;
        let manifest: Manifest = serde_json::from_slice(&manifest)
            .map_err(|e| ApiError::internal(format!("{prefix}{MANIFEST} does not parse: {e}")))?;
        let rendition = manifest
            .renditions
            .iter()
            .find(|r| r.rendition.kind == RenditionKind::Video)
            .or_else(|| manifest.renditions.first())
            .map(|r| &r.rendition)
            .ok_or_else(|| ApiError::internal(format!("{prefix}{MANIFEST} lists no rendition")))?;
        let first = rendition
            .segments
            .first()
            .ok_or_else(|| ApiError::internal(format!("{prefix}{MANIFEST}: no segments")))?;
        let dir = format!("{prefix}{}/", rendition.dir.trim_matches('/'));
        let init_uri = first.init_uri.as_deref().unwrap_or(&rendition.init_uri);
        let init = read(format!("{dir}{init_uri}")).await?;
        let segment = read(format!("{dir}{}", first.uri)).await?;
        let presentation_start_s =
            timeline::presentation_start_s(&init, &segment).unwrap_or_else(|| {
                // Captions still play, at most a few frames early.
                tracing::warn!(%prefix, "cannot read the first frame's time; captions use 0");
                0.0
            });
        Ok(Self {
            duration_s: manifest.duration_s,
            segments_s: rendition.segments.iter().map(|s| s.duration_s).collect(),
            presentation_start_s,
        })
    }
}

fn storage_error(key: &str, e: StorageError) -> ApiError {
    match e {
        StorageError::NotFound { .. } => {
            ApiError::internal(format!("{key} is missing from object storage"))
        }
        other => {
            tracing::warn!(%key, error = %other, "captions storage failed");
            ApiError::new(
                ErrorCode::StorageUnavailable,
                "object storage did not answer; retry shortly",
            )
        }
    }
}

/// Writes the rendition's files under `prefix`, the playlist last (a
/// reader that finds it finds its segments); the prefix is new, so every
/// object is immutable.
async fn write(
    store: &dyn Store,
    prefix: &str,
    mut files: Vec<SubtitleFile>,
) -> Result<(), ApiError> {
    let playlist = files
        .iter()
        .position(|f| f.name == subtitles::SUBTITLE_PLAYLIST)
        .map(|i| files.remove(i));
    let put = |file: SubtitleFile| async move {
        let key = format!("{prefix}{}", file.name);
        store
            .put_bytes(&key, file.text.into_bytes().into(), put_options(&file.name))
            .await
            .map_err(|e| storage_error(&key, e))
    };
    let mut puts =
        futures::stream::iter(files.into_iter().map(&put)).buffer_unordered(PARALLEL_PUTS);
    while let Some(result) = puts.next().await {
        result?;
    }
    if let Some(playlist) = playlist {
        put(playlist).await?;
    }
    Ok(())
}

fn put_options(name: &str) -> PutOptions {
    let content_type = if name.ends_with(".m3u8") {
        "application/vnd.apple.mpegurl"
    } else {
        "text/vtt"
    };
    PutOptions {
        content_type: Some(content_type.to_string()),
        cache_control: Some("public, max-age=31536000, immutable".to_string()),
    }
}

/// Deletes every object under `prefix`, best effort: what is left is
/// unreferenced, never served as a track.
async fn remove(store: &dyn Store, prefix: &str) {
    match store.list(prefix).await {
        Ok(objects) => {
            for o in objects {
                if let Err(e) = store.delete(&o.key).await {
                    tracing::warn!(key = %o.key, error = %e, "cannot delete a caption object");
                }
            }
        }
        Err(e) => tracing::warn!(%prefix, error = %e, "cannot list caption objects to delete"),
    }
}
