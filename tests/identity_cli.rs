//! `lectern admin` against a real PostgreSQL database per test: creating
//! organisations, users and partner keys, rotating the field keys, and
//! `verify-audit` naming a row edited by hand.

mod common;

use std::io::Write;
use std::process::{Command, Output, Stdio};

use sqlx::PgPool;

struct Cli {
    url: String,
    keys: (String, String, String),
}

impl Cli {
    async fn new(db: &PgPool) -> Self {
        Self {
            url: common::database_url(db).await,
            keys: fresh_keys("k1"),
        }
    }

    fn run(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_lectern"));
        for (key, _) in std::env::vars() {
            if key.starts_with("LECTERN_") || key == "DATABASE_URL" {
                cmd.env_remove(key);
            }
        }
        let mut child = cmd
            .arg("admin")
            .args(args)
            .env("DATABASE_URL", &self.url)
            .env("LECTERN_FIELD_KEYS", &self.keys.0)
            .env("LECTERN_BLIND_INDEX_KEY", &self.keys.1)
            .env("LECTERN_TOKEN_KEY", &self.keys.2)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut input = child.stdin.take().unwrap();
        if let Some(text) = stdin {
            input.write_all(text.as_bytes()).unwrap();
        }
        drop(input);
        child.wait_with_output().unwrap()
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

    let missing = {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_lectern"));
        for (key, _) in std::env::vars() {
            if key.starts_with("LECTERN_") || key == "DATABASE_URL" {
                cmd.env_remove(key);
            }
        }
        cmd.args(["admin", "rotate-keys"])
            .env("DATABASE_URL", &cli.url)
            .output()
            .unwrap()
    };
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
