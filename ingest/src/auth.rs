//! Who is uploading. Ingest only needs to know which organisation a request
//! acts for; how partners prove it (API keys, their hashing and revocation)
//! belongs to identity, which implements [`PartnerAuthenticator`].

use async_trait::async_trait;
use http::HeaderMap;
use uuid::Uuid;

/// An authenticated partner: uploads are created for, and only visible to,
/// its organisation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partner {
    pub organisation_id: Uuid,
    /// The credential used, for logs and audit; never the secret itself.
    pub key_id: Uuid,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("this request carries no credentials; send `Authorization: Bearer <partner API key>`")]
    Missing,
    #[error("the partner API key is unknown or revoked")]
    Invalid,
    /// The credential store could not be asked; not the client's fault.
    #[error("partner authentication is unavailable: {0}")]
    Unavailable(String),
}

/// Turns request headers into the partner they authenticate.
#[async_trait]
pub trait PartnerAuthenticator: Send + Sync {
    async fn authenticate(&self, headers: &HeaderMap) -> Result<Partner, AuthError>;
}
