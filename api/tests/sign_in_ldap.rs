//! LDAP bind sign-in against a REAL OpenLDAP server: `slapd` from the
//! distribution (installed by `infra/dev/setup test`), started per test by
//! `infra/dev/ldap/slapd-test` in a temporary directory on a free loopback
//! port, loaded with `infra/dev/ldap/fixture.ldif` (zhang.wei in
//! `doctors`, li.na in `editors`, wang.fang in no group). People are moved
//! between groups by the test as the directory's administrator.

use std::process::Stdio;
use std::time::Duration;

use axum::http::StatusCode;
use ldap3::{LdapConnAsync, Mod};
use lectern_identity::{IdentitySettings, SsoSettings};
use lectern_testkit::World;
use lectern_web::Role;
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

struct Slapd {
    _child: tokio::process::Child,
    _dir: tempfile::TempDir,
    port: u16,
}

impl Slapd {
    async fn start() -> Slapd {
        Self::start_with(false).await
    }

    /// With `tls`, slapd offers StartTLS with a certificate for 127.0.0.1
    /// from a throwaway CA (`ca_pem`).
    async fn start_with(tls: bool) -> Slapd {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../infra/dev/ldap/slapd-test");
        let dir = tempfile::tempdir().unwrap();
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let child = tokio::process::Command::new(script)
            .arg(dir.path())
            .arg(port.to_string())
            .env("SLAPD_TLS", if tls { "1" } else { "0" })
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("infra/dev/ldap/slapd-test runs");
        let up = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                if tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .is_ok()
                {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await;
        assert!(
            up.is_ok(),
            "slapd did not start (is slapd installed? infra/dev/setup test)"
        );
        Slapd {
            _child: child,
            _dir: dir,
            port,
        }
    }

    fn ca_pem(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("ca.pem")).unwrap()
    }

    fn url(&self) -> String {
        format!("ldap://127.0.0.1:{}", self.port)
    }

    /// Moves `uid` from one group to another, as the directory's administrator.
    async fn move_person(&self, uid: &str, from: &str, to: &str) {
        let (conn, mut ldap) = LdapConnAsync::new(&self.url()).await.unwrap();
        ldap3::drive!(conn);
        ldap.simple_bind("cn=admin,dc=hospital,dc=example", "admin-pass")
            .await
            .unwrap()
            .success()
            .unwrap();
        let member = format!("uid={uid},ou=people,dc=hospital,dc=example");
        let group = |cn: &str| format!("cn={cn},ou=groups,dc=hospital,dc=example");
        ldap.modify(
            &group(to),
            vec![Mod::Add("member", [member.as_str()].into())],
        )
        .await
        .unwrap()
        .success()
        .unwrap();
        ldap.modify(
            &group(from),
            vec![Mod::Delete("member", [member.as_str()].into())],
        )
        .await
        .unwrap()
        .success()
        .unwrap();
        ldap.unbind().await.unwrap();
    }
}

fn settings(allow_plain: bool) -> IdentitySettings {
    IdentitySettings {
        sso: SsoSettings {
            allow: "127.0.0.1".parse().unwrap(),
            allow_plain,
            ..SsoSettings::default()
        },
        ..IdentitySettings::default()
    }
}

async fn setup(db: PgPool, allow_plain: bool, new_accounts: &str) -> (World, Uuid, Slapd) {
    setup_with_keys(
        db,
        allow_plain,
        new_accounts,
        lectern_secrets::Keyring::generate_settings(),
    )
    .await
}

async fn setup_with_keys(
    db: PgPool,
    allow_plain: bool,
    new_accounts: &str,
    keys: (String, String, String),
) -> (World, Uuid, Slapd) {
    let w = World::with_keys_and_settings(db, keys, settings(allow_plain)).await;
    let org = w.org("Hospital").await;
    let slapd = Slapd::start().await;
    sqlx::query(
        "INSERT INTO sign_in_policies (org_id, methods, new_accounts) VALUES ($1, '{ldap}', $2)",
    )
    .bind(org)
    .bind(new_accounts)
    .execute(w.db())
    .await
    .unwrap();
    w.user(Some(org), "admin@hospital.example", Role::SuperAdmin)
        .await;
    let admin = w.login("admin@hospital.example").await;
    w.step_up(&admin, "admin@hospital.example").await;
    let (status, body) = w
        .call(
            "PUT",
            &format!("/api/v1/organisations/{org}/ldap"),
            Some(&admin),
            Some(json!({
                "url": slapd.url(),
                "bind_dn": "uid=lectern,ou=people,dc=hospital,dc=example",
                "bind_password": "service-pass",
                "user_base": "ou=people,dc=hospital,dc=example",
                "group_base": "ou=groups,dc=hospital,dc=example",
                "group_roles": { "doctors": "learner", "editors": "content_admin" },
            })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(!body.to_string().contains("service-pass"), "{body}");
    (w, org, slapd)
}

async fn sign_in(
    w: &World,
    org: Uuid,
    login: &str,
    password: &str,
) -> (StatusCode, serde_json::Value) {
    w.call(
        "POST",
        "/api/v1/auth/ldap/sign-in",
        None,
        Some(json!({ "org_id": org, "login": login, "password": password })),
    )
    .await
}

#[sqlx::test(migrations = "../migrations")]
async fn a_doctor_signs_in_as_a_learner_and_becomes_a_content_admin_when_moved_to_editors(
    db: PgPool,
) {
    let (w, org, slapd) = setup(db, true, "just_in_time").await;
    let (status, body) = sign_in(&w, org, "zhang.wei", "doctor-pass-1").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["user"]["role"], "learner");
    let id = body["user"]["id"].clone();
    let (status, body) = sign_in(&w, org, "li.na", "editor-pass-2").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["user"]["role"], "content_admin");

    slapd.move_person("zhang.wei", "doctors", "editors").await;
    let (status, body) = sign_in(&w, org, "zhang.wei", "doctor-pass-1").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["user"]["id"], id);
    assert_eq!(body["user"]["role"], "content_admin");
    let token = body["token"].as_str().unwrap();
    let (status, _) = w.call("GET", "/api/v1/users", Some(token), None).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "a content admin lists the organisation's people"
    );

    // And back: the directory decides at each sign-in.
    slapd.move_person("zhang.wei", "editors", "doctors").await;
    let (_, body) = sign_in(&w, org, "zhang.wei", "doctor-pass-1").await;
    assert_eq!(body["user"]["role"], "learner");

    w.audit_flushed().await;
    let rows: Vec<String> = sqlx::query_scalar("SELECT a::text FROM audit_log a")
        .fetch_all(w.db())
        .await
        .unwrap();
    let logins: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_log WHERE action = 'auth.login' AND outcome = 'ok' \
         AND detail LIKE '%\"method\":\"ldap\"%'",
    )
    .fetch_one(w.db())
    .await
    .unwrap();
    assert_eq!(logins, 4);
    let changes: i64 =
        sqlx::query_scalar("SELECT count(*) FROM audit_log WHERE action = 'users.role'")
            .fetch_one(w.db())
            .await
            .unwrap();
    assert_eq!(changes, 2, "learner → content admin → learner");
    for r in &rows {
        assert!(
            !r.contains("doctor-pass-1") && !r.contains("service-pass"),
            "{r}"
        );
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn wrong_passwords_lock_the_login_and_nobody_gets_in_without_a_mapped_group(db: PgPool) {
    let (w, org, _slapd) = setup(db, true, "just_in_time").await;
    for (login, password) in [("zhang.wei", ""), ("nobody", "x"), ("zhang.wei", "guess")] {
        let (status, body) = sign_in(&w, org, login, password).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        assert_eq!(body["error"]["code"], "invalid_credentials");
    }
    let (status, body) = sign_in(&w, org, "wang.fang", "visitor-pass-3").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["error"]["code"], "sign_in_rejected");
    // Five wrong passwords for one login lock it, even for the right one.
    for _ in 0..3 {
        sign_in(&w, org, "Zhang.Wei ", "guess").await;
    }
    let (status, body) = sign_in(&w, org, "zhang.wei", "doctor-pass-1").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(body["error"]["code"], "account_locked");
    let alerts: i64 =
        sqlx::query_scalar("SELECT count(*) FROM security_alerts WHERE kind = 'brute_force'")
            .fetch_one(w.db())
            .await
            .unwrap();
    assert_eq!(alerts, 1);
}

#[sqlx::test(migrations = "../migrations")]
async fn plain_ldap_is_refused_outside_development_and_the_policy_is_obeyed(db: PgPool) {
    // Without the development setting, ldap:// must be upgraded by
    // StartTLS, which this directory does not offer: nothing is sent in
    // the clear.
    let (w, org, _slapd) = setup(db, false, "just_in_time").await;
    let (status, body) = sign_in(&w, org, "zhang.wei", "doctor-pass-1").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert_eq!(body["error"]["code"], "provider_unavailable");
    // The organisation turns LDAP off.
    sqlx::query("UPDATE sign_in_policies SET methods = '{sms}'")
        .execute(w.db())
        .await
        .unwrap();
    let (status, body) = sign_in(&w, org, "zhang.wei", "doctor-pass-1").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"]["code"], "sign_in_method_disabled");
}

#[sqlx::test(migrations = "../migrations")]
async fn an_organisation_that_invites_lets_in_only_linked_people(db: PgPool) {
    let (w, org, _slapd) = setup(db, true, "invitation").await;
    let (status, body) = sign_in(&w, org, "zhang.wei", "doctor-pass-1").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"]["code"], "invitation_required");
}

#[sqlx::test(migrations = "../migrations")]
async fn rotating_the_field_keys_reseals_the_directory_password_and_linked_identities(db: PgPool) {
    let old = lectern_secrets::Keyring::generate_settings();
    let (w, org, _slapd) = setup_with_keys(db.clone(), true, "just_in_time", old.clone()).await;
    let (status, first) = sign_in(&w, org, "zhang.wei", "doctor-pass-1").await;
    assert_eq!(status, StatusCode::OK, "{first}");
    // k2 becomes active, k1 still opens; rotation re-seals; then k1 goes.
    let new = lectern_secrets::Keyring::generate_settings();
    let both = (
        format!("{},{}", new.0.replacen("k1:", "k2:", 1), old.0),
        old.1.clone(),
        old.2.clone(),
    );
    let w2 = World::with_keys_and_settings(db.clone(), both, settings(true)).await;
    lectern_identity::users::rotate_keys(&db, &w2.keys, 10)
        .await
        .unwrap();
    for table in ["ldap_directories", "external_identities"] {
        let ids: Vec<String> = sqlx::query_scalar(&format!("SELECT DISTINCT key_id FROM {table}"))
            .fetch_all(&db)
            .await
            .unwrap();
        assert_eq!(ids, vec!["k2".to_string()], "{table}");
    }
    let only_new = (new.0.replacen("k1:", "k2:", 1), old.1, old.2);
    let w3 = World::with_keys_and_settings(db, only_new, settings(true)).await;
    let (status, again) = sign_in(&w3, org, "zhang.wei", "doctor-pass-1").await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["user"]["id"], first["user"]["id"]);
}

#[sqlx::test(migrations = "../migrations")]
async fn starttls_carries_the_bind_when_plain_ldap_is_not_allowed(db: PgPool) {
    let slapd = Slapd::start_with(true).await;
    let mut trusting = settings(false);
    trusting.sso.ldap_ca = Some(slapd.ca_pem());
    let w =
        World::with_keys_and_settings(db, lectern_secrets::Keyring::generate_settings(), trusting)
            .await;
    let org = w.org("Hospital").await;
    sqlx::query("INSERT INTO sign_in_policies (org_id, methods, new_accounts) VALUES ($1, '{ldap}', 'just_in_time')")
        .bind(org)
        .execute(w.db())
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO ldap_directories (org_id, url, key_id, user_base, group_base, group_roles) \
         VALUES ($1, $2, 'k1', 'ou=people,dc=hospital,dc=example', 'ou=groups,dc=hospital,dc=example', \
                 '{\"doctors\": \"learner\"}')",
    )
    .bind(org)
    .bind(slapd.url())
    .execute(w.db())
    .await
    .unwrap();
    let (status, body) = sign_in(&w, org, "zhang.wei", "doctor-pass-1").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["user"]["role"], "learner");
    // Without trusting the directory's CA, the upgrade fails: nothing is sent.
    let w2 = World::with_settings(w.db().clone(), settings(false)).await;
    let (status, body) = sign_in(&w2, org, "zhang.wei", "doctor-pass-1").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
}
