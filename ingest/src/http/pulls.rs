//! URL pull over HTTP: `POST /api/v1/assets {"source_url"}` and the pull a
//! partner polls, `GET /api/v1/pulls/{id}`.
//!
//! **Accepted, then downloaded in the background (202), not synchronous.**
//! A lecture recording is gigabytes; downloading it inside the request
//! would hold the partner's connection (and every proxy and load balancer
//! between) for minutes, and a dropped connection would cancel a download
//! that was going well. Everything that can be decided without the download
//! is decided before answering — the scheme, the title and profile, the
//! host's resolution and the private-address check — so the common
//! mistakes still come back at once as 4xx with their code. The answer
//! names the pull (`Location: /api/v1/pulls/{id}`); its id is also the id
//! the asset will have, so once the pull is `completed` the partner polls
//! `GET /api/v1/assets/{id}` (or receives the webhook) like after a tus
//! upload, and a failed pull carries its stable code (`source_too_large`,
//! `source_timeout`, `not_media`, …).
//!
//! A pull survives the node that runs it: its URL is sealed with the field
//! keys, and every node's resumer ([`resume_periodically`]) claims pulls
//! whose heartbeat stopped and downloads them again.

use crate::pull::{self, PullError, PullRecord, PullRequest, UrlVault};
use axum::extract::State;
use axum::http::Method;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use lectern_secrets::Keyring;
use lectern_web::{Accepted, ApiError, ApiRouter};
use lectern_web::{Access, Permission, Principal};
use lectern_web::{ApiJson, ApiPath};

use super::IngestState;

pub fn routes(api: ApiRouter<IngestState>) -> ApiRouter<IngestState> {
    api.route(
        Method::POST,
        "/api/v1/assets",
        Access::Permission(Permission::UploadMedia),
        create,
    )
    .route(
        Method::GET,
        "/api/v1/pulls/{pull_id}",
        Access::Permission(Permission::ReadAssets),
        show,
    )
}

/// A URL for Lectern to download a source from.
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct NewPull {
    /// An `http` or `https` URL that downloads the file itself (a
    /// presigned URL is fine: its query is kept sealed, never shown). The
    /// host must resolve to public addresses.
    source_url: String,
    /// The asset's title, at most 300 characters.
    title: Option<String>,
    /// The encoding profile; the server's default when absent.
    profile: Option<String>,
    /// Only a global super admin names the organisation.
    org_id: Option<Uuid>,
}

/// A URL pull as a partner polls it.
#[derive(Serialize, schemars::JsonSchema)]
struct UrlPull {
    /// The pull's id, which is also the id of the asset it creates.
    id: Uuid,
    organisation_id: Uuid,
    /// The URL without credentials or query string.
    source_url: String,
    title: Option<String>,
    /// The encoding profile the asset will be transcoded with.
    profile: String,
    /// `pulling`, `completed` (the asset exists) or `failed` (see `error`).
    state: String,
    /// Bytes downloaded so far, refreshed every few seconds.
    received_bytes: i64,
    /// 1 for the first download; more once another server resumed it.
    attempt: i32,
    /// Why the pull failed; `null` unless `state` is `failed`.
    error: Option<UrlPullFailure>,
    /// The asset's id once `completed`, else `null`.
    asset_id: Option<Uuid>,
    /// Where to poll the asset once `completed`, else `null`.
    asset_url: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

/// Why a pull failed.
#[derive(Serialize, schemars::JsonSchema)]
struct UrlPullFailure {
    /// A stable error code (`source_too_large`, `source_timeout`,
    /// `not_media`, `pull_quota_exceeded`, …; see the error reference).
    code: String,
    /// What went wrong, for a person.
    message: String,
}

fn pull_error(e: PullError) -> ApiError {
    if e.is_internal() {
        return ApiError::internal(e);
    }
    ApiError::new(e.code(), e.to_string())
}

impl From<PullRecord> for UrlPull {
    fn from(record: PullRecord) -> Self {
        let completed = record.state == "completed";
        let error = record.error_code.map(|code| UrlPullFailure {
            code,
            message: record.error_message.unwrap_or_default(),
        });
        UrlPull {
            asset_id: completed.then_some(record.id),
            asset_url: completed.then(|| format!("/api/v1/assets/{}", record.id)),
            id: record.id,
            organisation_id: record.organisation_id,
            source_url: record.source_url,
            title: record.title,
            profile: record.profile,
            state: record.state,
            received_bytes: record.received_bytes,
            attempt: record.attempt,
            error,
            created_at: record.created_at,
            updated_at: record.updated_at,
        }
    }
}

/// `POST /api/v1/assets {"source_url", "title"?, "profile"?}` → 202 with
/// the pull; poll `Location`.
async fn create(
    State(state): State<IngestState>,
    principal: Principal,
    ApiJson(body): ApiJson<NewPull>,
) -> Result<Accepted<UrlPull>, ApiError> {
    let org = principal.target_org(body.org_id)?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM organisations WHERE id = $1)")
            .bind(org)
            .fetch_one(&state.db)
            .await?;
    if !exists {
        return Err(ApiError::not_found(format!("no organisation {org}")));
    }
    let vault = state.keyring().ok().map(SealedUrls);
    let accepted = pull::begin(
        &state.db,
        &state.pulls,
        vault.as_ref().map(|vault| vault as &dyn UrlVault),
        PullRequest {
            organisation_id: org,
            source_url: body.source_url,
            title: body.title,
            profile: body.profile,
        },
    )
    .await
    .map_err(pull_error)?;
    let record = accepted.record.clone();
    download(&state, accepted);
    let location = format!("/api/v1/pulls/{}", record.id);
    Ok(Accepted(record.into(), Some(location)))
}

/// `GET /api/v1/pulls/{id}`: `pulling`, `completed` (with `asset_url`) or
/// `failed` (with `error`).
async fn show(
    State(state): State<IngestState>,
    principal: Principal,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<UrlPull>, ApiError> {
    let record = pull::status(&state.db, id, principal.org_scope())
        .await
        .map_err(pull_error)?
        .ok_or_else(|| ApiError::not_found(format!("no pull {id}")))?;
    Ok(Json(record.into()))
}

/// Pull URLs sealed with the field keys, bound to their pull's row.
struct SealedUrls<'a>(&'a Keyring);

const SEALED_URL_FIELD: &str = "pulls.source_url_sealed";

impl UrlVault for SealedUrls<'_> {
    fn seal(&self, pull: Uuid, url: &str) -> Vec<u8> {
        self.0.seal(SEALED_URL_FIELD, pull, url)
    }

    fn open(&self, pull: Uuid, sealed: &[u8]) -> Option<String> {
        self.0
            .open(SEALED_URL_FIELD, pull, sealed)
            .inspect_err(|e| tracing::warn!(%pull, error = %e, "cannot open a pull's sealed URL"))
            .ok()
    }
}

/// Every `every`, claims the pulls whose process stopped reporting (see
/// [`pull::claim_interrupted`]) and downloads each again in a task of its
/// own. Without field keys no URL was sealed, so there is nothing to resume.
pub async fn resume_periodically(state: IngestState, every: Duration, cancel: CancellationToken) {
    if state.keys.is_none() {
        return;
    }
    loop {
        // At start-up, as soon as the schema is there: a pull this node
        // was running when it was killed should not wait a round.
        while !state.schema_ready.load(Ordering::Acquire) {
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
        resume_interrupted(&state).await;
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
    }
}

/// Claims every interrupted pull there is now and starts its next attempt.
pub async fn resume_interrupted(state: &IngestState) {
    let Ok(keys) = state.keyring() else {
        return;
    };
    loop {
        match pull::claim_interrupted(&state.db, &SealedUrls(keys)).await {
            Ok(Some(accepted)) => download(state, accepted),
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %e, "cannot claim interrupted pulls; retrying next round");
                return;
            }
        }
    }
}

/// The URL pulls this node is downloading, by pull: the attempt and its
/// task. A graceful shutdown hands them back (see [`hand_back_pulls`]).
#[derive(Default)]
pub struct PullsInFlight(std::sync::Mutex<HashMap<Uuid, (i32, JoinHandle<()>)>>);

/// Runs an accepted or claimed pull in a task of its own; the outcome is
/// recorded on the pull row and the log has the rest.
fn download(state: &IngestState, accepted: pull::Accepted) {
    let (id, attempt) = (accepted.record.id, accepted.record.attempt);
    let (db, store, config) = (state.db.clone(), state.store.clone(), state.pulls.clone());
    let in_flight = state.pulls_in_flight.clone();
    // Held while spawning, so the task cannot finish (and remove itself)
    // before it has been entered.
    let mut running = state.pulls_in_flight.0.lock().expect("pulls in flight");
    let task = tokio::spawn(async move {
        let _ = pull::run(&db, store.as_ref(), &config, accepted).await;
        let mut running = in_flight.0.lock().expect("pulls in flight");
        if running.get(&id).is_some_and(|(a, _)| *a == attempt) {
            running.remove(&id);
        }
    });
    running.insert(id, (attempt, task));
}

/// On a graceful shutdown: stops this node's downloads and makes their
/// pulls claimable at once, so another node (or this one restarted)
/// resumes them without waiting for a minute of silence.
pub async fn hand_back_pulls(state: &IngestState) {
    let running: Vec<(Uuid, i32, JoinHandle<()>)> = state
        .pulls_in_flight
        .0
        .lock()
        .expect("pulls in flight")
        .drain()
        .map(|(id, (attempt, task))| (id, attempt, task))
        .collect();
    if running.is_empty() {
        return;
    }
    for (_, _, task) in &running {
        task.abort();
    }
    let mut handed = Vec::with_capacity(running.len());
    for (id, attempt, task) in running {
        // Once the task is gone, no heartbeat of it can undo the hand-back.
        let _ = task.await;
        handed.push((id, attempt));
    }
    match pull::hand_back(&state.db, &handed).await {
        Ok(n) => tracing::info!(
            pulls = n,
            "handed URL pulls back for another node to resume"
        ),
        Err(e) => {
            tracing::warn!(error = %e, "cannot hand URL pulls back; they resume after a minute of silence")
        }
    }
}
