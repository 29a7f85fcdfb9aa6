//! The composed app on a per-test database (`#[sqlx::test]` gives each
//! test its own), with helpers that create organisations and people, sign
//! them in and step them up.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use lectern_api::{router, AppState, Settings};
use lectern_identity::users::{self, NewUser};
use lectern_identity::IdentitySettings;
use lectern_secrets::Keyring;
use lectern_storage::{FsStore, Store};
use lectern_web::Role;
use sqlx::PgPool;
use tower::ServiceExt;
use uuid::Uuid;

pub const PASSWORD: &str = "correct horse 42";

pub struct World {
    pub state: AppState,
    pub app: axum::Router,
    pub keys: Keyring,
    key_settings: (String, String, String),
    store: Arc<dyn Store>,
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

    /// A world with chosen keys and identity settings (key rotation of
    /// what single sign-on seals).
    pub async fn with_keys_and_settings(
        db: PgPool,
        keys: (String, String, String),
        identity: IdentitySettings,
    ) -> Self {
        Self::build(db, keys, identity).await
    }

    async fn build(
        db: PgPool,
        key_settings: (String, String, String),
        identity: IdentitySettings,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(FsStore::open(dir.path()).await.unwrap());
        let state = AppState::new(
            db,
            store.clone(),
            Settings {
                keys: Some(Arc::new(keyring(&key_settings))),
                identity,
                ..Settings::default()
            },
        );
        Self {
            app: router(state.clone()),
            state,
            keys: keyring(&key_settings),
            key_settings,
            store,
            _dir: dir,
        }
    }

    /// The world's settings as it was built (its keys), for [`World::rebuild`].
    pub fn settings(&self) -> Settings {
        Settings {
            keys: Some(Arc::new(keyring(&self.key_settings))),
            ..Settings::default()
        }
    }

    /// The same database and keys, with the app rebuilt from `settings`
    /// on `store` (or the world's own local store).
    pub fn rebuild(&mut self, store: Option<Arc<dyn Store>>, settings: Settings) {
        let store = store.unwrap_or_else(|| self.store.clone());
        self.state = AppState::new(self.state.db.clone(), store, settings);
        self.app = router(self.state.clone());
    }

    /// A step-up of `token`'s session with a one-time code from the dev
    /// outbox (where `email`'s codes go).
    pub async fn step_up(&self, token: &str, email: &str) {
        let (status, body) = self
            .call("POST", "/api/v1/auth/step-up/code", Some(token), None)
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        let code = one_time_code(&self.last_message(email).await);
        let (status, body) = self
            .call(
                "POST",
                "/api/v1/auth/step-up",
                Some(token),
                Some(serde_json::json!({ "code": code })),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }

    /// The key this world's audit chain is made with.
    pub fn chain_key(&self) -> lectern_identity::audit::ChainKey {
        lectern_identity::audit::ChainKey::from_keyring(&self.keys)
    }

    /// Waits until every audit row queued so far (and the noise counted
    /// so far) is written.
    pub async fn audit_flushed(&self) {
        self.state.identity.audit.flush().await;
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

    /// A call whose answer's headers matter too.
    pub async fn call_with_headers(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<serde_json::Value>,
    ) -> (StatusCode, axum::http::HeaderMap, String) {
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
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let (status, headers) = (resp.status(), resp.headers().clone());
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        assert_error_vocabulary(status, &text);
        (status, headers, text)
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
        let page = resp
            .headers()
            .get("content-type")
            .is_some_and(|t| t.as_bytes().starts_with(b"text/html"));
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        // A page for people (the demo's "build the player first") is the
        // one error answered in HTML.
        if !page {
            assert_error_vocabulary(status, &text);
        }
        (status, text)
    }

    /// Sends every notice that is due now, as `serve`'s dispatcher would
    /// (the suites run no background task set).
    pub async fn dispatch(&self) {
        self.state.notify.drain().await.unwrap();
    }

    /// The body of the last message the dev outbox holds for `recipient`,
    /// once what was due has been dispatched.
    pub async fn last_message(&self, recipient: &str) -> String {
        self.dispatch().await;
        lectern_identity::notifier::last_message(self.db(), &self.keys, recipient)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("no message for {recipient} in the outbox"))
            .body
    }
}

/// The `token` of the first link in a message (invitations, sign-up
/// confirmations).
pub fn link_token(message: &str) -> String {
    let start = message
        .find("token=")
        .unwrap_or_else(|| panic!("no link with a token in {message:?}"))
        + "token=".len();
    message[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
        .collect()
}

/// The six-digit code in a one-time-code message.
pub fn one_time_code(message: &str) -> String {
    message
        .split(|c: char| !c.is_ascii_digit())
        .find(|w| w.len() == 6)
        .unwrap_or_else(|| panic!("no code in {message:?}"))
        .to_string()
}

/// Every error the suite sees is the one error body with a code of
/// `ErrorCode`: checked on every call a test makes through [`World`].
pub fn assert_error_vocabulary(status: StatusCode, body: &str) {
    if !(status.is_client_error() || status.is_server_error()) || body.is_empty() {
        return;
    }
    let parsed: serde_json::Value = serde_json::from_str(body)
        .unwrap_or_else(|_| panic!("a {status} answered a body that is not JSON: {body}"));
    let code = parsed["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("a {status} without error.code: {body}"));
    let known = lectern_web::ErrorCode::ALL
        .iter()
        .find(|c| c.as_str() == code)
        .unwrap_or_else(|| panic!("{code:?} ({status}) is not a code of ErrorCode"));
    assert_eq!(
        known.status(),
        status,
        "{code} must always answer {}; it answered {status}",
        known.status()
    );
    assert!(
        parsed["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{code} without a message: {body}"
    );
}
