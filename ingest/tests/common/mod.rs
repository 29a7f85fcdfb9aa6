//! What the ingest tests share: partners authenticated against a real
//! PostgreSQL table, stores on real backends, and media-looking payloads.
#![allow(dead_code)] // each test binary uses its own subset

use std::sync::Arc;

use async_trait::async_trait;
use http::HeaderMap;
use lectern_ingest::{AuthError, Partner, PartnerAuthenticator};
use lectern_storage::{S3Config, S3Store, Store};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use subtle::ConstantTimeEq;
use uuid::Uuid;

/// Partner keys for tests: identity owns the real ones, so the tests keep
/// their own table in their own database, with keys hashed at rest just the
/// same, and an authenticator that really looks them up.
pub struct TableAuthenticator {
    db: PgPool,
}

impl TableAuthenticator {
    pub async fn install(db: &PgPool) -> Arc<Self> {
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS test_partner_keys (
                 id uuid PRIMARY KEY,
                 organisation_id uuid NOT NULL REFERENCES organisations (id),
                 key_hash bytea NOT NULL UNIQUE,
                 revoked boolean NOT NULL DEFAULT false)",
        )
        .execute(db)
        .await
        .expect("create test_partner_keys");
        Arc::new(TableAuthenticator { db: db.clone() })
    }
}

#[async_trait]
impl PartnerAuthenticator for TableAuthenticator {
    async fn authenticate(&self, headers: &HeaderMap) -> Result<Partner, AuthError> {
        let token = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or(AuthError::Missing)?;
        let hash = Sha256::digest(token.as_bytes()).to_vec();
        let row: Option<(Uuid, Uuid, Vec<u8>, bool)> = sqlx::query_as(
            "SELECT id, organisation_id, key_hash, revoked FROM test_partner_keys WHERE key_hash = $1",
        )
        .bind(&hash)
        .fetch_optional(&self.db)
        .await
        .map_err(|e| AuthError::Unavailable(e.to_string()))?;
        match row {
            Some((key_id, organisation_id, stored, false)) if bool::from(stored.ct_eq(&hash)) => {
                Ok(Partner {
                    organisation_id,
                    key_id,
                })
            }
            _ => Err(AuthError::Invalid),
        }
    }
}

/// A new organisation with one partner key; returns the id and the key.
pub async fn organisation(db: &PgPool, name: &str) -> (Uuid, String) {
    let id = Uuid::new_v4();
    sqlx::query("INSERT INTO organisations (id, name) VALUES ($1, $2)")
        .bind(id)
        .bind(name)
        .execute(db)
        .await
        .expect("insert organisation");
    let key = format!("lk_test_{}", Uuid::new_v4().simple());
    sqlx::query(
        "INSERT INTO test_partner_keys (id, organisation_id, key_hash) VALUES ($1, $2, $3)",
    )
    .bind(Uuid::new_v4())
    .bind(id)
    .bind(Sha256::digest(key.as_bytes()).to_vec())
    .execute(db)
    .await
    .expect("insert partner key");
    (id, key)
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set; run `infra/dev/services up` and `set -a; . .lectern/env; set +a`"
        )
    })
}

/// The shared Garage bucket the storage contract tests use too.
pub fn s3_store() -> Arc<dyn Store> {
    Arc::new(
        S3Store::new(S3Config {
            endpoint: Some(env("LECTERN_S3_ENDPOINT")),
            region: env("LECTERN_S3_REGION"),
            bucket: env("LECTERN_S3_BUCKET"),
            access_key_id: env("LECTERN_S3_ACCESS_KEY_ID"),
            secret_access_key: env("LECTERN_S3_SECRET_ACCESS_KEY"),
            path_style: env("LECTERN_S3_PATH_STYLE") == "true",
        })
        .expect("S3 config"),
    )
}

/// `len` bytes that start like an MP4 (so the sniffer accepts them) and
/// continue with a position-dependent pattern, so lost, repeated or
/// reordered bytes change the digest.
pub fn media_bytes(len: usize) -> Vec<u8> {
    media_slice(0, len)
}

/// Bytes `start..start + len` of the endless [`media_bytes`] sequence, so
/// large sources can be written piece by piece.
pub fn media_slice(start: usize, len: usize) -> Vec<u8> {
    let header = b"\0\0\0\x20ftypisom\0\0\x02\0isomiso2avc1mp41";
    (start..start + len)
        .map(|i| match header.get(i) {
            Some(&b) => b,
            None => ((i as u64).wrapping_mul(2_654_435_761) >> 11) as u8,
        })
        .collect()
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// SHA-256 of a stored object, streamed.
pub async fn stored_sha256(store: &dyn Store, key: &str) -> (u64, String) {
    use futures::StreamExt;
    let mut got = store.get(key, None).await.expect("get stored object");
    let mut hasher = Sha256::new();
    while let Some(chunk) = got.body.next().await {
        hasher.update(chunk.expect("read stored object"));
    }
    (got.meta.size, hex::encode(hasher.finalize()))
}
