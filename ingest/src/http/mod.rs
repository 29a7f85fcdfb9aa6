//! The partner-facing HTTP routes of intake: URL pulls (`POST
//! /api/v1/assets {"source_url"}`, `GET /api/v1/pulls/{id}`) and webhooks
//! (endpoints, their deliveries, and the dispatcher that posts them). The
//! tus server (`crate::tus`) has its own router, mounted by the `api` crate.

pub mod pulls;
pub mod webhooks;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use lectern_secrets::{Keyring, FIELD_KEYS_VAR};
use lectern_storage::Store;
use lectern_web::{ApiError, ApiRouter};
use sqlx::PgPool;

use crate::pull::PullConfig;

/// Intake's state.
#[derive(Clone)]
pub struct IngestState {
    pub db: PgPool,
    pub store: Arc<dyn Store>,
    /// Seal pull URLs and webhook secrets; `None` only with an external
    /// database and no configured keys (those routes then answer 503).
    pub keys: Option<Arc<Keyring>>,
    pub pulls: Arc<PullConfig>,
    /// The URL pulls this node is downloading.
    pub pulls_in_flight: Arc<pulls::PullsInFlight>,
    pub webhooks: Arc<webhooks::WebhookSettings>,
    /// What became of webhook deliveries on this node (`/metrics`).
    pub webhook_counts: Arc<webhooks::DeliveryCounts>,
    /// Set once migrations have been applied; background work waits for it.
    pub schema_ready: Arc<AtomicBool>,
}

impl IngestState {
    pub fn keyring(&self) -> Result<&Keyring, ApiError> {
        self.keys
            .as_deref()
            .ok_or_else(|| ApiError::not_configured(FIELD_KEYS_VAR))
    }
}

pub fn routes(api: ApiRouter<IngestState>) -> ApiRouter<IngestState> {
    webhooks::routes(pulls::routes(api))
}
