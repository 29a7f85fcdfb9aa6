//! The tus 1.0.0 resumable upload server (<https://tus.io/protocols/resumable-upload>):
//! core protocol plus the creation, creation-with-upload, termination,
//! expiration and checksum (sha1, sha256) extensions.
//!
//! State lives in the `uploads` table, never in this process: `received`
//! only advances after storage has durably taken the bytes, so any node
//! resumes any upload after a restart.
//!
//! A PATCH checks the upload and takes its write lease in one short
//! transaction, then streams its body to storage holding no database
//! connection (see [`lease`]): a second writer is refused with 409
//! `upload_busy` at once instead of interleaving bytes, and a client that
//! trickles its body holds a socket, never the pool. A refused or failed
//! PATCH rolls back and gives the lease up before it answers, so the upload
//! is free again by the time the client hears of it. A body slower than
//! [`TusConfig::min_transfer`] is ended with the bytes that arrived kept.
//!
//! Bounds per organisation ([`OrganisationQuota`]): unfinished uploads at
//! once and the sum of their declared lengths, checked at creation with
//! the organisation's row locked so two creations cannot both squeeze
//! under it. An upload expires [`TusConfig::upload_ttl`] after its last
//! progress; [`sweep`] (run by `serve` every five minutes on any node)
//! aborts expired uploads, freeing their storage and quota.
//!
//! Completion runs in two steps so a crash between them loses nothing:
//! the final PATCH commits `completing`, then [`finish`] publishes the
//! object (idempotent in storage), sniffs it and records the asset under the
//! upload's id in one transaction. A `completing` upload is finished by the
//! next HEAD, PATCH or [`sweep`].

mod body;
mod error;
mod lease;
mod metadata;

use lectern_web::ErrorCode;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{OriginalUri, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use chrono::{DateTime, Utc};
use lectern_storage::{ByteRange, ByteStream, PutOptions, ResumableUpload, Store};
use sqlx::types::Json;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::auth::{Partner, PartnerAuthenticator};
use crate::sniff::{sniff, SNIFF_LEN};
pub use body::TransferFloor;
use body::{ChunkRefusal, ExpectedChecksum, GuardedBody, CHECKSUM_ALGORITHMS};
pub use error::TusError;
use lease::Lease;
use lectern_assets::{self as assets, keys, NewAsset};
use metadata::UploadMetadata;
use tracing::Instrument;

pub const TUS_VERSION: &str = "1.0.0";
const EXTENSIONS: &str = "creation,creation-with-upload,termination,expiration,checksum";
const OFFSET_STREAM: &str = "application/offset+octet-stream";
/// PostgreSQL's `lock_not_available`, raised by `FOR UPDATE NOWAIT`.
const LOCK_NOT_AVAILABLE: &str = "55P03";

/// Limits of one deployment.
#[derive(Debug, Clone)]
pub struct TusConfig {
    /// Largest single upload, in bytes (`Tus-Max-Size`).
    pub max_upload_size: u64,
    /// How long an upload may sit without progress before it expires.
    pub upload_ttl: Duration,
    pub quota: OrganisationQuota,
    /// Encoding profile for assets born from uploads.
    pub profile: String,
    /// The slowest a PATCH body may arrive before the request is ended
    /// (keeping what arrived); also what cuts off a client gone silent.
    pub min_transfer: TransferFloor,
    /// The term of a PATCH's lease on its upload, renewed while it
    /// streams. After a crash mid-PATCH the upload answers `upload_busy`
    /// (retryable) until its lease lapses.
    pub lease: Duration,
}

/// What one organisation may have in flight at once.
#[derive(Debug, Clone)]
pub struct OrganisationQuota {
    /// Sum of the declared lengths of unfinished uploads.
    pub max_bytes_in_flight: u64,
    pub max_concurrent_uploads: u32,
}

impl Default for TusConfig {
    fn default() -> Self {
        TusConfig {
            max_upload_size: 20 * 1024 * 1024 * 1024,
            upload_ttl: Duration::from_secs(24 * 60 * 60),
            quota: OrganisationQuota {
                max_bytes_in_flight: 100 * 1024 * 1024 * 1024,
                max_concurrent_uploads: 20,
            },
            profile: "default".to_owned(),
            min_transfer: TransferFloor::default(),
            lease: Duration::from_secs(15),
        }
    }
}

/// Everything the tus handlers need; cheap to clone.
#[derive(Clone)]
pub struct TusState {
    db: PgPool,
    store: Arc<dyn Store>,
    auth: Arc<dyn PartnerAuthenticator>,
    config: Arc<TusConfig>,
}

impl TusState {
    pub fn new(
        db: PgPool,
        store: Arc<dyn Store>,
        auth: Arc<dyn PartnerAuthenticator>,
        config: TusConfig,
    ) -> Self {
        TusState {
            db,
            store,
            auth,
            config: Arc::new(config),
        }
    }
}

/// The tus endpoints, to be mounted at `/api/v1/uploads`: `POST /` creates,
/// `HEAD`/`PATCH`/`DELETE /{id}` act on one upload, `OPTIONS` on either
/// describes the server. `Location` is built from the request path, so the
/// mount point is not configured twice.
pub fn router(state: TusState) -> Router {
    Router::new()
        .route("/", post(create).options(describe))
        .route(
            "/{id}",
            axum::routing::head(status)
                .patch(append)
                .delete(terminate)
                .options(describe),
        )
        .layer(axum::middleware::from_fn(protocol_version))
        .with_state(state)
}

/// Refuses requests for another protocol version (all but OPTIONS must name
/// one) and stamps every response with ours.
async fn protocol_version(request: Request, next: Next) -> Response {
    let speaks_ours = request
        .headers()
        .get("tus-resumable")
        .is_some_and(|v| v.as_bytes() == TUS_VERSION.as_bytes());
    let mut response = if speaks_ours || request.method() == Method::OPTIONS {
        next.run(request).await
    } else {
        TusError::UnsupportedVersion.into_response()
    };
    response
        .headers_mut()
        .insert("tus-resumable", HeaderValue::from_static(TUS_VERSION));
    response
}

async fn describe(State(state): State<TusState>) -> Response {
    let mut headers = HeaderMap::new();
    headers.insert("tus-version", HeaderValue::from_static(TUS_VERSION));
    headers.insert("tus-extension", HeaderValue::from_static(EXTENSIONS));
    headers.insert("tus-max-size", state.config.max_upload_size.into());
    headers.insert(
        "tus-checksum-algorithm",
        HeaderValue::from_static(CHECKSUM_ALGORITHMS),
    );
    (StatusCode::NO_CONTENT, headers).into_response()
}

/// An upload's row, as read under its lock.
#[derive(sqlx::FromRow)]
struct UploadRow {
    id: Uuid,
    organisation_id: Uuid,
    length: i64,
    received: i64,
    metadata: Json<UploadMetadata>,
    metadata_header: Option<String>,
    storage: Json<ResumableUpload>,
    state: String,
    expires_at: DateTime<Utc>,
    /// A PATCH holds the upload's lease (see [`lease`]).
    leased: bool,
}

const UPLOAD_COLUMNS: &str = "id, organisation_id, length, received, metadata, metadata_header, \
                              storage, state, expires_at, \
                              coalesce(leased_until > now(), false) AS leased";

impl UploadRow {
    /// Refuses uploads that can no longer change.
    fn ensure_open(&self) -> Result<(), TusError> {
        match self.state.as_str() {
            "terminated" => Err(TusError::Gone("the upload was terminated")),
            "expired" => Err(TusError::Gone("the upload expired; start a new one")),
            "receiving" if self.expires_at <= Utc::now() => {
                Err(TusError::Gone("the upload expired; start a new one"))
            }
            "rejected" => Err(TusError::NotMedia),
            _ => Ok(()),
        }
    }
}

async fn create(
    State(state): State<TusState>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, TusError> {
    let partner = state.auth.authenticate(&headers).await?;
    if headers.contains_key("upload-defer-length") {
        return Err(TusError::bad_request(
            ErrorCode::DeferredLengthUnsupported,
            "this server needs Upload-Length when the upload is created",
        ));
    }
    let length = header_u64(&headers, "upload-length")?.ok_or_else(|| {
        TusError::bad_request(ErrorCode::MissingUploadLength, "Upload-Length is required")
    })?;
    if length > state.config.max_upload_size {
        return Err(TusError::TooLarge {
            length,
            limit: state.config.max_upload_size,
        });
    }
    if length == 0 {
        return Err(TusError::bad_request(
            ErrorCode::EmptyUpload,
            "an empty file is not a video; Upload-Length must be at least 1",
        ));
    }
    let metadata_header = header_str(&headers, "upload-metadata")?;
    let metadata = metadata::parse(metadata_header)?;
    let with_body = header_str(&headers, "content-type")? == Some(OFFSET_STREAM);

    let id = Uuid::new_v4();
    let upload = state
        .store
        .begin_upload(&keys::source_key(id), PutOptions::default())
        .await?;
    let expires_at = state.expiry();
    let recorded = record_upload(
        &state,
        &partner,
        id,
        length,
        &metadata,
        metadata_header,
        &upload,
        expires_at,
    )
    .await;
    if let Err(e) = recorded {
        if let Err(abort) = state.store.abort_upload(&upload).await {
            tracing::warn!(upload = %id, error = %abort, "cannot abort storage of an upload that was never recorded");
        }
        return Err(e);
    }
    tracing::info!(upload = %id, organisation = %partner.organisation_id, length, "upload created");

    let mut response_headers = HeaderMap::new();
    let location = format!("{}/{id}", uri.path().trim_end_matches('/'));
    response_headers.insert(
        "location",
        HeaderValue::try_from(location).expect("a path and a uuid form a valid header"),
    );
    let progress = if with_body {
        write_detached(&state, &partner, id, 0, &headers, body).await?
    } else {
        Progress {
            offset: 0,
            expires_at: Some(expires_at),
        }
    };
    progress.add_headers(&mut response_headers);
    Ok((StatusCode::CREATED, response_headers).into_response())
}

/// Inserts the upload row after checking the organisation's quota, with the
/// organisation row locked so two creations cannot both squeeze under it.
#[allow(clippy::too_many_arguments)]
async fn record_upload(
    state: &TusState,
    partner: &Partner,
    id: Uuid,
    length: u64,
    metadata: &UploadMetadata,
    metadata_header: Option<&str>,
    upload: &ResumableUpload,
    expires_at: DateTime<Utc>,
) -> Result<(), TusError> {
    let mut tx = state.db.begin().await?;
    let organisation: Option<(Uuid,)> =
        sqlx::query_as("SELECT id FROM organisations WHERE id = $1 FOR UPDATE")
            .bind(partner.organisation_id)
            .fetch_optional(&mut *tx)
            .await?;
    if organisation.is_none() {
        return Err(TusError::Unauthenticated(crate::AuthError::Invalid));
    }
    let (uploads, bytes): (i64, i64) = sqlx::query_as(
        "SELECT count(*), coalesce(sum(length), 0)::bigint FROM uploads
         WHERE organisation_id = $1
           AND (state = 'completing' OR (state = 'receiving' AND expires_at > now()))",
    )
    .bind(partner.organisation_id)
    .fetch_one(&mut *tx)
    .await?;
    let quota = &state.config.quota;
    if uploads >= i64::from(quota.max_concurrent_uploads) {
        return Err(TusError::QuotaExceeded(format!(
            "your organisation already has {uploads} unfinished uploads, the most allowed at \
             once is {}; finish or terminate one first",
            quota.max_concurrent_uploads
        )));
    }
    let in_flight = u64::try_from(bytes).unwrap_or(0);
    if in_flight.saturating_add(length) > quota.max_bytes_in_flight {
        return Err(TusError::QuotaExceeded(format!(
            "your organisation's unfinished uploads total {in_flight} bytes; this {length}-byte \
             upload would pass the limit of {} bytes in flight",
            quota.max_bytes_in_flight
        )));
    }
    sqlx::query(
        "INSERT INTO uploads (id, organisation_id, length, metadata, metadata_header, storage, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(id)
    .bind(partner.organisation_id)
    .bind(to_db(length))
    .bind(Json(metadata))
    .bind(metadata_header)
    .bind(Json(upload))
    .bind(expires_at)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

async fn status(
    State(state): State<TusState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, TusError> {
    let partner = state.auth.authenticate(&headers).await?;
    let id = parse_id(&id)?;
    let row: UploadRow = sqlx::query_as(&format!(
        "SELECT {UPLOAD_COLUMNS} FROM uploads WHERE id = $1 AND organisation_id = $2"
    ))
    .bind(id)
    .bind(partner.organisation_id)
    .fetch_optional(&state.db)
    .await?
    .ok_or(TusError::NotFound)?;
    row.ensure_open()?;
    if row.state == "completing" {
        // A crash interrupted the completion; a resuming client finishes it.
        finish(&state, id).await?;
    }
    let mut response_headers = HeaderMap::new();
    response_headers.insert("upload-length", from_db(row.length).into());
    if let Some(header) = row
        .metadata_header
        .as_deref()
        .and_then(|h| HeaderValue::try_from(h).ok())
    {
        response_headers.insert("upload-metadata", header);
    }
    response_headers.insert("cache-control", HeaderValue::from_static("no-store"));
    Progress {
        offset: from_db(row.received),
        expires_at: (row.state == "receiving").then_some(row.expires_at),
    }
    .add_headers(&mut response_headers);
    Ok((StatusCode::OK, response_headers).into_response())
}

async fn append(
    State(state): State<TusState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, TusError> {
    let partner = state.auth.authenticate(&headers).await?;
    let id = parse_id(&id)?;
    if header_str(&headers, "content-type")? != Some(OFFSET_STREAM) {
        return Err(TusError::WrongContentType);
    }
    let claimed = header_u64(&headers, "upload-offset")?.ok_or_else(|| {
        TusError::bad_request(ErrorCode::MissingUploadOffset, "Upload-Offset is required")
    })?;
    let progress = write_detached(&state, &partner, id, claimed, &headers, body).await?;
    let mut response_headers = HeaderMap::new();
    progress.add_headers(&mut response_headers);
    Ok((StatusCode::NO_CONTENT, response_headers).into_response())
}

/// Where an upload stands after a request, for the response headers.
struct Progress {
    offset: u64,
    /// `None` once the upload has all its bytes and no longer expires.
    expires_at: Option<DateTime<Utc>>,
}

impl Progress {
    fn add_headers(&self, headers: &mut HeaderMap) {
        headers.insert("upload-offset", self.offset.into());
        if let Some(expires_at) = self.expires_at {
            let date = expires_at.format("%a, %d %b %Y %H:%M:%S GMT").to_string();
            headers.insert(
                "upload-expires",
                HeaderValue::try_from(date).expect("an HTTP date is a valid header"),
            );
        }
    }
}

/// [`write`] in a task of its own: when a client vanishes mid-chunk, hyper
/// drops the request's future, but the bytes that did arrive must still be
/// recorded so the client can resume after them rather than from the
/// previous chunk. The task stays in the request's span, so what it logs,
/// and the job an upload's last chunk queues, belong to the request.
async fn write_detached(
    state: &TusState,
    partner: &Partner,
    id: Uuid,
    claimed: u64,
    headers: &HeaderMap,
    body: Body,
) -> Result<Progress, TusError> {
    let (state, partner, headers) = (state.clone(), partner.clone(), headers.clone());
    let task = tokio::spawn(
        async move { write(&state, &partner, id, claimed, &headers, body).await }.in_current_span(),
    );
    match task.await {
        Ok(result) => result,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => Err(TusError::Storage(lectern_storage::StorageError::Io(
            std::io::Error::other(e),
        ))),
    }
}

/// Streams one chunk into an upload at `claimed`, under the upload's lease.
async fn write(
    state: &TusState,
    partner: &Partner,
    id: Uuid,
    claimed: u64,
    headers: &HeaderMap,
    body: Body,
) -> Result<Progress, TusError> {
    let checksum = header_str(headers, "upload-checksum")?
        .map(ExpectedChecksum::parse)
        .transpose()?;
    let declared = header_u64(headers, "content-length")?;
    let (row, lease) = match take_lease(state, partner, id, claimed, declared).await? {
        Leased::AlreadyIn { length } => {
            finish(state, id).await?;
            return Ok(Progress {
                offset: length,
                expires_at: None,
            });
        }
        Leased::Granted { row, lease } => (row, lease),
    };
    let written = match append_leased(state, &row, &lease, checksum, body).await {
        Ok(written) => written,
        Err(e) => {
            lease.release(&state.db).await;
            return Err(e);
        }
    };
    if written.all_in {
        finish(state, id).await?;
    }
    Ok(written.progress)
}

/// What a PATCH may do once its checks passed.
enum Leased {
    /// The upload is this PATCH's to append to.
    Granted { row: Box<UploadRow>, lease: Lease },
    /// A retried final PATCH: every byte was already in.
    AlreadyIn { length: u64 },
}

/// Checks the PATCH against the upload under its row lock and takes the
/// upload's lease, in one short transaction that ends before the body is
/// read; a refusal rolls back before it answers.
async fn take_lease(
    state: &TusState,
    partner: &Partner,
    id: Uuid,
    claimed: u64,
    declared: Option<u64>,
) -> Result<Leased, TusError> {
    let mut tx = state.db.begin().await?;
    let checked = match check_writable(&mut tx, partner, id, claimed, declared).await {
        Ok(Writable::Append(row)) => Lease::grant(&mut tx, id, state.config.lease)
            .await
            .map(|lease| Leased::Granted { row, lease })
            .map_err(TusError::from),
        Ok(Writable::AlreadyIn { length }) => {
            release(tx).await;
            return Ok(Leased::AlreadyIn { length });
        }
        Err(e) => Err(e),
    };
    match checked {
        Ok(leased) => {
            tx.commit().await?;
            Ok(leased)
        }
        Err(e) => {
            release(tx).await;
            Err(e)
        }
    }
}

/// What the checks found.
enum Writable {
    Append(Box<UploadRow>),
    AlreadyIn { length: u64 },
}

/// Whether a PATCH at `claimed` may append to the upload.
async fn check_writable(
    tx: &mut PgConnection,
    partner: &Partner,
    id: Uuid,
    claimed: u64,
    declared: Option<u64>,
) -> Result<Writable, TusError> {
    let row = lock_upload(&mut *tx, id, partner.organisation_id).await?;
    if row.leased {
        return Err(TusError::Busy);
    }
    row.ensure_open()?;
    let (length, received) = (from_db(row.length), from_db(row.received));
    if claimed != received {
        return Err(TusError::OffsetMismatch {
            stored: received,
            claimed,
        });
    }
    if row.state != "receiving" {
        if declared.unwrap_or(0) > 0 {
            return Err(TusError::Finished);
        }
        return Ok(Writable::AlreadyIn { length });
    }
    if declared.is_some_and(|declared| declared > length - received) {
        return Err(TusError::BeyondLength { length });
    }
    Ok(Writable::Append(Box::new(row)))
}

/// What a PATCH wrote and recorded.
struct Written {
    progress: Progress,
    /// Every byte is in: the upload is `completing`.
    all_in: bool,
}

/// Streams the body into storage under `lease`, holding no database
/// connection, and records how far the upload got, releasing the lease in
/// the same statement. A refused chunk is an error, its bytes discarded
/// (the row keeps the handle from before it); the caller releases the lease.
async fn append_leased(
    state: &TusState,
    row: &UploadRow,
    lease: &Lease,
    checksum: Option<ExpectedChecksum>,
    body: Body,
) -> Result<Written, TusError> {
    let (id, length, received) = (row.id, from_db(row.length), from_db(row.received));
    let had_checksum = checksum.is_some();
    let incoming: ByteStream =
        Box::pin(body::paced(body, state.config.min_transfer, lease.clock()));
    let guarded: ByteStream = Box::pin(GuardedBody::new(incoming, length - received, checksum));
    let appended = lease
        .keep(&state.db, state.store.append_upload(&row.storage, guarded))
        .await?;
    if let Some(interruption) = &appended.interrupted {
        match ChunkRefusal::of(interruption) {
            Some(ChunkRefusal::ChecksumMismatch) => return Err(TusError::ChecksumMismatch),
            Some(ChunkRefusal::BeyondLength) => return Err(TusError::BeyondLength { length }),
            None if had_checksum => {
                return Err(TusError::bad_request(
                    ErrorCode::IncompleteChunk,
                    "the chunk ended early, so its checksum cannot be verified; it was discarded",
                ))
            }
            None => tracing::info!(
                upload = %id,
                error = %interruption,
                "the chunk ended early (client gone, too slow, or the lease lapsed); keeping the bytes that arrived"
            ),
        }
    }
    let now_received = appended.upload.size();
    let all_in = now_received == length;
    let expires_at = state.expiry();
    let recorded = sqlx::query(
        "UPDATE uploads SET received = $2, storage = $3, state = $4, expires_at = $5,
                updated_at = now(), lease_id = NULL, leased_until = NULL
         WHERE id = $1 AND lease_id = $6",
    )
    .bind(id)
    .bind(to_db(now_received))
    .bind(Json(&appended.upload))
    .bind(if all_in { "completing" } else { "receiving" })
    .bind(expires_at)
    .bind(lease.token())
    .execute(&state.db)
    .await?
    .rows_affected();
    if recorded == 0 {
        // The lease lapsed and another PATCH took the upload: its handle
        // stands, and these bytes are overwritten by its appends.
        tracing::warn!(upload = %id, "a PATCH finished after its lease lapsed; its bytes are not recorded");
        return Err(TusError::Busy);
    }
    Ok(Written {
        progress: Progress {
            offset: now_received,
            expires_at: (!all_in).then_some(expires_at),
        },
        all_in,
    })
}

/// Rolls back a transaction that holds an upload's row lock before the
/// answer leaves. A dropped sqlx transaction rolls back only once its
/// connection is back in the pool, from a background task; until then the
/// row stays locked, and a client that retries at once (after a 409
/// `offset_mismatch`, say) would be told `upload_busy`. A failed rollback
/// closes the connection, which frees the lock as well.
async fn release(tx: sqlx::Transaction<'_, sqlx::Postgres>) {
    if let Err(error) = tx.rollback().await {
        tracing::warn!(%error, "rolling back an upload's transaction failed");
    }
}

async fn terminate(
    State(state): State<TusState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, TusError> {
    let partner = state.auth.authenticate(&headers).await?;
    let id = parse_id(&id)?;
    let mut tx = state.db.begin().await?;
    if let Err(e) = abort(&state, &mut tx, &partner, id).await {
        release(tx).await;
        return Err(e);
    }
    tx.commit().await?;
    tracing::info!(upload = %id, "upload terminated");
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Terminates an upload under its row lock; the caller commits.
async fn abort(
    state: &TusState,
    tx: &mut PgConnection,
    partner: &Partner,
    id: Uuid,
) -> Result<(), TusError> {
    let row = lock_upload(&mut *tx, id, partner.organisation_id).await?;
    if row.leased {
        return Err(TusError::Busy);
    }
    match row.state.as_str() {
        "terminated" | "expired" => row.ensure_open()?,
        "receiving" => {}
        _ => return Err(TusError::Finished),
    }
    state.store.abort_upload(&row.storage).await?;
    sqlx::query("UPDATE uploads SET state = 'terminated', updated_at = now() WHERE id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// Locks an upload row of this organisation for a write, or refuses at once
/// if another request holds it. Another organisation's upload is simply not
/// found, so ids leak nothing.
async fn lock_upload(
    tx: &mut PgConnection,
    id: Uuid,
    organisation_id: Uuid,
) -> Result<UploadRow, TusError> {
    let row = sqlx::query_as(&format!(
        "SELECT {UPLOAD_COLUMNS} FROM uploads WHERE id = $1 AND organisation_id = $2
         FOR UPDATE NOWAIT"
    ))
    .bind(id)
    .bind(organisation_id)
    .fetch_optional(tx)
    .await;
    match row {
        Ok(Some(row)) => Ok(row),
        Ok(None) => Err(TusError::NotFound),
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some(LOCK_NOT_AVAILABLE) => {
            Err(TusError::Busy)
        }
        Err(e) => Err(e.into()),
    }
}

/// Turns a `completing` upload into an asset: publishes the object, sniffs
/// its first bytes, and records the asset (or the rejection) together with
/// the upload's new state. Safe to run again at any point: storage
/// completion is idempotent and the asset is only inserted if missing.
pub async fn finish(state: &TusState, id: Uuid) -> Result<(), TusError> {
    let mut tx = state.db.begin().await?;
    let row: UploadRow = sqlx::query_as(&format!(
        "SELECT {UPLOAD_COLUMNS} FROM uploads WHERE id = $1 FOR UPDATE"
    ))
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(TusError::NotFound)?;
    match row.state.as_str() {
        "completing" => {}
        "rejected" => return Err(TusError::NotMedia),
        _ => return Ok(()),
    }
    let key = row.storage.key().to_owned();
    let meta = state.store.complete_upload(&row.storage).await?;
    let head = if meta.size == 0 {
        bytes::Bytes::new()
    } else {
        let range = ByteRange::FromTo(0, SNIFF_LEN as u64 - 1);
        state.store.get(&key, Some(range)).await?.bytes().await?
    };
    let Some(signature) = sniff(&head) else {
        state.store.delete(&key).await?;
        sqlx::query("UPDATE uploads SET state = 'rejected', updated_at = now() WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        tracing::info!(upload = %id, "upload rejected: not media");
        return Err(TusError::NotMedia);
    };
    let (recorded,): (bool,) = sqlx::query_as("SELECT EXISTS (SELECT 1 FROM assets WHERE id = $1)")
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
    if !recorded {
        assets::create(
            &mut *tx,
            &NewAsset {
                id,
                organisation_id: row.organisation_id,
                source_key: key,
                title: row.metadata.asset_title(),
                profile: state.config.profile.clone(),
                priority: 0,
            },
        )
        .await?;
    }
    sqlx::query("UPDATE uploads SET state = 'completed', updated_at = now() WHERE id = $1")
        .bind(row.id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    tracing::info!(upload = %id, ?signature, size = meta.size, "upload complete; asset recorded");
    Ok(())
}

/// What one [`sweep`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SweepReport {
    pub expired: u64,
    pub finished: u64,
}

/// Housekeeping to run periodically (every few minutes) on any node: aborts
/// uploads past their expiry, freeing their storage and quota, and finishes
/// completions a crash interrupted that no client came back for.
pub async fn sweep(state: &TusState) -> Result<SweepReport, TusError> {
    let mut report = SweepReport::default();
    let expired: Vec<(Uuid,)> = sqlx::query_as(
        "SELECT id FROM uploads WHERE state = 'receiving' AND expires_at <= now()
           AND (leased_until IS NULL OR leased_until <= now()) LIMIT 1000",
    )
    .fetch_all(&state.db)
    .await?;
    for (id,) in expired {
        let mut tx = state.db.begin().await?;
        // An upload being written to right now (locked or leased) is not idle.
        let row: Option<UploadRow> = sqlx::query_as(&format!(
            "SELECT {UPLOAD_COLUMNS} FROM uploads
             WHERE id = $1 AND state = 'receiving' AND expires_at <= now()
               AND (leased_until IS NULL OR leased_until <= now())
             FOR UPDATE SKIP LOCKED"
        ))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else { continue };
        state.store.abort_upload(&row.storage).await?;
        sqlx::query("UPDATE uploads SET state = 'expired', updated_at = now() WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        report.expired += 1;
    }
    let stalled: Vec<(Uuid,)> = sqlx::query_as(
        "SELECT id FROM uploads WHERE state = 'completing' AND updated_at < now() - interval '1 minute'",
    )
    .fetch_all(&state.db)
    .await?;
    for (id,) in stalled {
        match finish(state, id).await {
            Ok(()) | Err(TusError::NotMedia) => report.finished += 1,
            Err(e) => return Err(e),
        }
    }
    Ok(report)
}

impl TusState {
    fn expiry(&self) -> DateTime<Utc> {
        Utc::now()
            + chrono::Duration::from_std(self.config.upload_ttl).unwrap_or(chrono::Duration::MAX)
    }
}

/// Upload ids in URLs; anything that is not one names no upload.
fn parse_id(id: &str) -> Result<Uuid, TusError> {
    Uuid::parse_str(id).map_err(|_| TusError::NotFound)
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, TusError> {
    headers
        .get(name)
        .map(|v| {
            v.to_str().map_err(|_| {
                TusError::bad_request(
                    ErrorCode::InvalidHeader,
                    format!("{name} must be ASCII text"),
                )
            })
        })
        .transpose()
}

fn header_u64(headers: &HeaderMap, name: &str) -> Result<Option<u64>, TusError> {
    header_str(headers, name)?
        .map(|v| {
            let v = v.trim();
            // u64::from_str accepts a leading `+`, which tus does not.
            v.bytes()
                .all(|b| b.is_ascii_digit())
                .then(|| v.parse::<u64>().ok())
                .flatten()
                .filter(|n| i64::try_from(*n).is_ok())
                .ok_or_else(|| {
                    TusError::bad_request(
                        ErrorCode::InvalidHeader,
                        format!("{name} must be a non-negative integer"),
                    )
                })
        })
        .transpose()
}

fn to_db(n: u64) -> i64 {
    i64::try_from(n).expect("sizes are checked to fit in i64 when they arrive")
}

fn from_db(n: i64) -> u64 {
    u64::try_from(n).expect("the schema keeps sizes non-negative")
}
