//! Shared by the identity suites: an app on a per-test database, and
//! helpers that create organisations and people and sign them in.
#![allow(dead_code)] // each suite uses its own subset

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use lectern_api::authz::Role;
use lectern_api::identity::crypto::Keyring;
use lectern_api::identity::notifier::Outbox;
use lectern_api::identity::users::{self, NewUser};
use lectern_api::identity::IdentitySettings;
use lectern_api::{router, AppState, Identity};
use lectern_storage::FsStore;
use sqlx::PgPool;
use tower::ServiceExt;
use uuid::Uuid;

pub const PASSWORD: &str = "correct horse 42";

pub struct World {
    pub state: AppState,
    pub app: axum::Router,
    pub keys: Keyring,
    _dir: tempfile::TempDir,
}

pub fn keyring(settings: &(String, String, String)) -> Keyring {
    Keyring::parse(&settings.0, &settings.1, &settings.2).unwrap()
}

impl World {
    pub async fn new(db: PgPool) -> Self {
        Self::with_keys(db, Keyring::generate_settings()).await
    }

    pub async fn with_keys(db: PgPool, settings: (String, String, String)) -> Self {
        Self::build(db, settings, IdentitySettings::default()).await
    }

    pub async fn with_settings(db: PgPool, identity: IdentitySettings) -> Self {
        Self::build(db, Keyring::generate_settings(), identity).await
    }

    async fn build(
        db: PgPool,
        settings: (String, String, String),
        identity: IdentitySettings,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let state = AppState::new(
            db.clone(),
            Arc::new(FsStore::open(dir.path()).await.unwrap()),
            Identity::new(Some(keyring(&settings)), Arc::new(Outbox { db }), identity),
        );
        Self {
            app: router(state.clone()),
            state,
            keys: keyring(&settings),
            _dir: dir,
        }
    }

    pub fn db(&self) -> &PgPool {
        &self.state.db
    }

    pub async fn org(&self, name: &str) -> Uuid {
        users::create_organisation(self.db(), name).await.unwrap()
    }

    pub async fn user(&self, org: Option<Uuid>, email: &str, role: Role) -> Uuid {
        users::create_user(
            self.db(),
            &self.keys,
            NewUser {
                org_id: org,
                email,
                role,
                password: PASSWORD,
            },
        )
        .await
        .unwrap()
    }

    pub async fn login(&self, email: &str) -> String {
        let (status, body) = self
            .call(
                "POST",
                "/api/v1/auth/login",
                None,
                Some(serde_json::json!({ "email": email, "password": PASSWORD })),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["token"].as_str().unwrap().to_string()
    }

    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<serde_json::Value>,
    ) -> (StatusCode, serde_json::Value) {
        let (status, text) = self.call_raw(method, path, token, body).await;
        let json = if text.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text))
        };
        (status, json)
    }

    pub async fn call_raw(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<serde_json::Value>,
    ) -> (StatusCode, String) {
        self.call_from(None, &[], method, path, token, body).await
    }

    /// A call as if from TCP peer `peer`, with extra request headers.
    pub async fn call_from(
        &self,
        peer: Option<&str>,
        headers: &[(&str, &str)],
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<serde_json::Value>,
    ) -> (StatusCode, String) {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let req = match body {
            Some(b) => req
                .header("content-type", "application/json")
                .body(Body::from(b.to_string()))
                .unwrap(),
            None => req.body(Body::empty()).unwrap(),
        };
        let mut req = req;
        for (name, value) in headers {
            req.headers_mut().insert(
                axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        if let Some(peer) = peer {
            let addr: std::net::SocketAddr = format!("{peer}:40000").parse().unwrap();
            req.extensions_mut()
                .insert(axum::extract::ConnectInfo(addr));
        }
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }

    /// The last message the dev outbox holds for `recipient`.
    pub async fn last_message(&self, recipient: &str) -> String {
        sqlx::query_scalar("SELECT body FROM outbox WHERE recipient = $1 ORDER BY id DESC LIMIT 1")
            .bind(recipient)
            .fetch_one(self.db())
            .await
            .unwrap()
    }
}
