//! `lectern admin` against a real PostgreSQL database per test: creating
//! organisations, users and partner keys, rotating the field keys, and
//! `verify-audit` naming a row edited by hand or rows cut from the end;
//! the role Lectern connects with cannot remove audit rows.

mod common;

use std::process::Output;

use sqlx::PgPool;

struct Cli {
    url: String,
    keys: (String, String, String),
    /// Object storage (audit checkpoints) and anything else on disk.
    data: tempfile::TempDir,
}

impl Cli {
    async fn new(db: &PgPool) -> Self {
        Self::at(common::database_url(db).await)
    }

    fn at(url: String) -> Self {
        Self {
            url,
            keys: fresh_keys("k1"),
            data: tempfile::tempdir().unwrap(),
        }
    }

    fn run(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut cmd = common::lectern(self.data.path());
        cmd.arg("admin")
            .args(args)
            .env("DATABASE_URL", &self.url)
            .env("LECTERN_FIELD_KEYS", &self.keys.0)
            .env("LECTERN_BLIND_INDEX_KEY", &self.keys.1)
            .env("LECTERN_TOKEN_KEY", &self.keys.2)
            .env("LECTERN_DATA_DIR", self.data.path());
        common::run_with_input(&mut cmd, stdin)
    }

    fn ok(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.run(args, stdin);
        assert!(
            out.status.success(),
            "lectern admin {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

fn fresh_keys(id: &str) -> (String, String, String) {
    let (field, blind, token) = lectern_secrets::Keyring::generate_settings();
    (field.replacen("k1:", &format!("{id}:"), 1), blind, token)
}

#[sqlx::test]
async fn admin_creates_people_and_keys_and_rotates_field_keys(db: PgPool) {
    let mut cli = Cli::new(&db).await;
    let org = cli.ok(&["create-org", "Medical Association"], None);
    assert_eq!(org.trim().len(), 36, "{org}");
    let out = cli.ok(
        &[
            "create-user",
            "--org",
            "Medical Association",
            "--email",
            "Chief@Med.example.org",
            "--role",
            "super_admin",
        ],
        Some("correct horse 42\n"),
    );
    assert!(
        !out.contains("password"),
        "a piped password is not echoed: {out}"
    );
    let out = cli.ok(
        &[
            "create-user",
            "--org",
            "Medical Association",
            "--email",
            "learner@med.example.org",
            "--role",
            "learner",
        ],
        None,
    );
    assert!(out.contains("password (shown once): "), "{out}");
    let weak = cli.run(
        &[
            "create-user",
            "--org",
            "Medical Association",
            "--email",
            "x@med.example.org",
            "--role",
            "learner",
        ],
        Some("short\n"),
    );
    assert!(!weak.status.success());
    let bad_role = cli.run(
        &[
            "create-user",
            "--org",
            "Medical Association",
            "--email",
            "y@med.example.org",
            "--role",
            "wizard",
        ],
        None,
    );
    assert!(String::from_utf8_lossy(&bad_role.stderr).contains("wizard"));

    let key = cli.ok(
        &["create-partner-key", "--org", "Medical Association"],
        None,
    );
    assert!(key.trim().starts_with("lk_"), "{key}");
    let stored: i64 =
        sqlx::query_scalar("SELECT count(*) FROM partner_keys WHERE key_hash = sha256($1::bytea)")
            .bind(key.trim().as_bytes())
            .fetch_one(&db)
            .await
            .unwrap();
    assert_eq!(stored, 1, "only the key's SHA-256 is stored");

    let dump: Vec<String> = sqlx::query_scalar("SELECT u::text FROM users u")
        .fetch_all(&db)
        .await
        .unwrap();
    assert_eq!(dump.len(), 2);
    assert!(
        dump.iter()
            .all(|r| !r.contains("med.example") && !r.contains("chief")),
        "{dump:?}"
    );

    // A new active key first, the old one still listed: rotate, then drop it.
    let new = fresh_keys("k2");
    cli.keys.0 = format!("{},{}", new.0, cli.keys.0);
    let out = cli.ok(&["rotate-keys", "--batch", "1"], None);
    assert!(out.contains("re-encrypted 2 rows with key k2"), "{out}");
    let ids: Vec<String> = sqlx::query_scalar("SELECT DISTINCT key_id FROM users")
        .fetch_all(&db)
        .await
        .unwrap();
    assert_eq!(ids, vec!["k2".to_string()]);
    cli.keys.0 = new.0;
    let dup = cli.run(
        &[
            "create-user",
            "--org",
            "Medical Association",
            "--email",
            "CHIEF@med.example.org",
            "--role",
            "learner",
        ],
        Some("correct horse 43\n"),
    );
    assert!(
        String::from_utf8_lossy(&dup.stderr).contains("already exists"),
        "the blind index still finds the email after rotation: {}",
        String::from_utf8_lossy(&dup.stderr)
    );

    let missing = common::lectern(cli.data.path())
        .args(["admin", "rotate-keys"])
        .env("DATABASE_URL", &cli.url)
        .output()
        .unwrap();
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("LECTERN_FIELD_KEYS"));
}

#[sqlx::test]
async fn verify_audit_names_the_row_edited_by_hand(db: PgPool) {
    let cli = Cli::new(&db).await;
    for name in ["Org One", "Org Two", "Org Three", "Org Four"] {
        cli.ok(&["create-org", name], None);
    }
    let out = cli.ok(&["verify-audit"], None);
    assert!(out.contains("audit chain intact: 4 rows verified"), "{out}");

    sqlx::query("ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only")
        .execute(&db)
        .await
        .unwrap();
    sqlx::query("UPDATE audit_log SET actor = 'cli:someone-else' WHERE id = 3")
        .execute(&db)
        .await
        .unwrap();
    let out = cli.run(&["verify-audit"], None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stderr}");
    assert!(!out.status.success());
    assert!(stderr.contains("broken at row 3"), "{stderr}");
}

/// A login role that is not a superuser, owning a fresh database it has
/// migrated itself — the role a production deployment connects with —
/// and the URLs to reach that database as it and as the superuser.
struct AppRole {
    name: String,
    database: String,
    app_url: String,
    admin_url: String,
}

impl AppRole {
    async fn create() -> Self {
        let base = std::env::var("DATABASE_URL").expect("DATABASE_URL (run `make test`)");
        let suffix = format!("{}_{}", std::process::id(), rand_suffix());
        let name = format!("lectern_app_{suffix}");
        let database = format!("lectern_roles_{suffix}");
        let mut admin = <sqlx::PgConnection as sqlx::Connection>::connect(&base)
            .await
            .unwrap();
        // CREATEROLE for the first migration only (it hands the audit
        // tables to their owner role); taken away below.
        sqlx::query(&format!(
            "CREATE ROLE {name} LOGIN PASSWORD 'app-password-1' CREATEROLE"
        ))
        .execute(&mut admin)
        .await
        .unwrap();
        sqlx::query(&format!("CREATE DATABASE {database} OWNER {name}"))
            .execute(&mut admin)
            .await
            .unwrap();
        let (scheme, rest) = base.split_once("://").unwrap();
        let host_and_db = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
        let host = host_and_db.split_once('/').map_or(host_and_db, |(h, _)| h);
        let admin_db = &base[..base.rfind('/').unwrap()];
        Self {
            app_url: format!("{scheme}://{name}:app-password-1@{host}/{database}"),
            admin_url: format!("{admin_db}/{database}"),
            name,
            database,
        }
    }

    async fn drop(self) {
        let base = std::env::var("DATABASE_URL").unwrap();
        let mut admin = <sqlx::PgConnection as sqlx::Connection>::connect(&base)
            .await
            .unwrap();
        sqlx::query(&format!("DROP DATABASE {} WITH (FORCE)", self.database))
            .execute(&mut admin)
            .await
            .unwrap();
        sqlx::query(&format!("DROP ROLE {}", self.name))
            .execute(&mut admin)
            .await
            .unwrap();
    }
}

fn rand_suffix() -> String {
    use std::time::{SystemTime, UNIX_EPOCH};
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{nanos:x}")
}

#[tokio::test]
async fn the_application_role_cannot_remove_audit_rows_and_verify_audit_names_a_cut_tail() {
    let role = AppRole::create().await;
    let cli = Cli::at(role.app_url.clone());
    // The first command migrates the database as the application role.
    cli.ok(&["create-org", "Medical Association"], None);
    let admin = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(&role.admin_url)
        .await
        .unwrap();
    sqlx::query(&format!("ALTER ROLE {} NOCREATEROLE", role.name))
        .execute(&admin)
        .await
        .unwrap();
    let app = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(&role.app_url)
        .await
        .unwrap();
    // 99 more rows, appended as the application role with the deployment's key.
    let keys = lectern_secrets::Keyring::parse(&cli.keys.0, &cli.keys.1, &cli.keys.2).unwrap();
    let key = lectern_identity::audit::ChainKey::from_keyring(&keys);
    let events: Vec<_> = (0..99)
        .map(|i| lectern_identity::audit::AuditEvent {
            action: format!("test.event-{i}"),
            outcome: "ok",
            ..Default::default()
        })
        .collect();
    lectern_identity::audit::append(&app, Some(&key), &events)
        .await
        .unwrap();
    let out = cli.ok(&["checkpoint-audit"], None);
    assert!(out.contains("checkpoint written: row 100"), "{out}");

    // The application role can read and append, nothing else.
    for statement in [
        "DELETE FROM audit_log WHERE id > 50",
        "UPDATE audit_log SET outcome = 'ok' WHERE id = 60",
        "TRUNCATE audit_log",
        "UPDATE audit_anchor SET last_id = 100",
        "SET ROLE lectern_audit_owner",
        "ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only",
    ] {
        let refused = sqlx::query(statement).execute(&app).await;
        let message = refused.expect_err(statement).to_string();
        assert!(
            message.contains("permission denied") || message.contains("must be owner"),
            "{statement}: {message}"
        );
    }
    // Retention through the owner's function never reaches young rows.
    let refused = sqlx::query("SELECT audit_purge(1)").execute(&app).await;
    assert!(refused
        .unwrap_err()
        .to_string()
        .contains("at least 180 days"));
    let gone: i64 = sqlx::query_scalar("SELECT audit_purge(180)")
        .fetch_one(&app)
        .await
        .unwrap();
    assert_eq!(gone, 0);
    let out = cli.ok(&["verify-audit"], None);
    assert!(
        out.contains("100 rows verified") && out.contains("at row 100 matches"),
        "{out}"
    );

    // A superuser, who can bypass the trigger, cuts the last 50 rows: the
    // chain that remains verifies, the checkpoint does not.
    let mut conn = admin.acquire().await.unwrap();
    sqlx::query("SET session_replication_role = replica")
        .execute(&mut *conn)
        .await
        .unwrap();
    sqlx::query("DELETE FROM audit_log WHERE id > 50")
        .execute(&mut *conn)
        .await
        .unwrap();
    drop(conn);
    let out = cli.run(&["verify-audit"], None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("rows 51–100 are missing"),
        "verify-audit must name the truncation: {stderr}"
    );

    // New rows written over the cut tail reuse its ids: still caught.
    lectern_identity::audit::append(&app, Some(&key), &events)
        .await
        .unwrap();
    let out = cli.run(&["verify-audit"], None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("row 100 is not the row"), "{stderr}");

    app.close().await;
    admin.close().await;
    role.drop().await;
}
