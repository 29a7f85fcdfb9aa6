//! `lectern demo`: a complete Lectern to click through. It seeds — once;
//! running it again reuses everything — a demo organisation with a learner
//! and a content admin, a sample lecture (a real clip given with
//! `--sample`, else a generated slide lecture with a narration tone) as an
//! asset, and a published course whose lesson plays it; then it serves, and
//! prints the demo page's URL, the learner app's and the admin console's,
//! and the credentials once the in-process worker has made the lesson
//! playable.
//!
//! The credentials are generated on the first run and kept in
//! `<data_dir>/demo-credentials.toml` (mode 0600); each run sets the demo
//! accounts' passwords to them, so a lost or edited account is repaired.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use lectern_identity::audit::{self, AuditEvent};
use lectern_identity::{password, users};
use lectern_secrets::{normalise_email, Keyring};
use lectern_storage::{PutOptions, Store};
use lectern_web::Role;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use uuid::Uuid;

use crate::config::Config;
use crate::database::Database;

pub const DEMO_ORG: &str = "Lectern Demo";
pub const DEMO_COURSE: &str = "Getting started with Lectern";
const DEMO_LESSON: &str = "Welcome lecture";
const LEARNER_EMAIL: &str = "learner@demo.lectern.test";
const ADMIN_EMAIL: &str = "admin@demo.lectern.test";

#[derive(clap::Args, Debug, Clone)]
pub struct DemoArgs {
    /// A video to publish as the demo lesson (e.g. `infra/dev/sample-clip
    /// --seconds 60`); without it a slide lecture is generated.
    #[arg(long)]
    sample: Option<PathBuf>,
    /// Length of the generated slide lecture.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u32).range(5..=3600))]
    sample_seconds: u32,
}

#[derive(Serialize, Deserialize)]
struct Credentials {
    learner_email: String,
    learner_password: String,
    admin_email: String,
    admin_password: String,
}

// No Debug for Credentials: it would print passwords into logs.

pub async fn run(mut config: Config, args: DemoArgs) -> Result<()> {
    // A demo is development by definition (it prints its accounts'
    // passwords): its one-time codes go to the outbox whatever the database.
    config.settings.dev_outbox = true;
    if config.effective_serve_workers() == 0 {
        eprintln!(
            "lectern demo: no in-process worker (LECTERN_SERVE_WORKERS=0, or an external database without it): \
             the sample is transcoded only once a `lectern worker` runs"
        );
    }
    let keys = config
        .keyring()?
        .context("the demo needs identity keys: run it without DATABASE_URL (embedded mode generates them) or configure LECTERN_FIELD_KEYS, LECTERN_BLIND_INDEX_KEY and LECTERN_TOKEN_KEY")?;
    // Opened before `serve` so an embedded cluster started here is also
    // stopped here, after the server is done with it.
    let db = Database::open(&config).await?;
    db.migrate().await?;
    let store = crate::process::open_store(&config.storage).await?;
    let seeded = seed(&config, &db.pool, &keys, store.as_ref(), &args).await;
    let seeded = match seeded {
        Ok(s) => s,
        Err(e) => {
            db.close().await;
            return Err(e);
        }
    };
    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let mut addr = config.settings.http_addr;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let url = format!("{scheme}://{addr}/");
    let server = crate::serve::serve(config);
    tokio::pin!(server);
    // The worker runs inside the server, so wait while serving; the
    // server ending first (a bad address, say) is the answer.
    let playable = tokio::select! {
        playable = wait_until_playable(&db.pool, seeded.asset_id) => playable,
        ended = &mut server => {
            db.close().await;
            return ended;
        }
    };
    match playable {
        // The server keeps running so the operator can look around.
        Err(e) => eprintln!("lectern demo: {e:#}"),
        Ok(()) => {
            let c = &seeded.credentials;
            println!("lectern demo: ready — open {url}");
            // The web apps (`make apps`; `api/src/apps.rs` says what is
            // served when they are not built).
            println!("lectern demo: learner app    {url}app/");
            println!("lectern demo: admin console  {url}admin/");
            println!(
                "lectern demo: learner        {} / {}",
                c.learner_email, c.learner_password
            );
            println!(
                "lectern demo: content admin  {} / {}",
                c.admin_email, c.admin_password
            );
            println!(
                "lectern demo: lesson         {} ({DEMO_LESSON})",
                seeded.lesson_id
            );
        }
    }
    let result = server.await;
    db.close().await;
    result
}

struct Seeded {
    credentials: Credentials,
    asset_id: Uuid,
    lesson_id: Uuid,
}

async fn seed(
    config: &Config,
    db: &PgPool,
    keys: &Keyring,
    store: &dyn Store,
    args: &DemoArgs,
) -> Result<Seeded> {
    let org_id = match users::organisation_id(db, DEMO_ORG).await {
        Ok(id) => id,
        Err(users::AccountError::NoSuchOrganisation(_)) => {
            users::create_organisation(db, DEMO_ORG).await?
        }
        Err(e) => return Err(e.into()),
    };
    let credentials = credentials(&config.settings.data_dir)?;
    ensure_user(
        db,
        keys,
        org_id,
        &credentials.learner_email,
        &credentials.learner_password,
        Role::Learner,
    )
    .await?;
    ensure_user(
        db,
        keys,
        org_id,
        &credentials.admin_email,
        &credentials.admin_password,
        Role::ContentAdmin,
    )
    .await?;

    let existing: Option<(Uuid, Option<Uuid>, Option<String>)> = sqlx::query_as(
        "SELECT l.id, l.asset_id, a.status FROM lessons l
         JOIN courses c ON c.id = l.course_id
         LEFT JOIN assets a ON a.id = l.asset_id
         WHERE c.organisation_id = $1 AND c.title = $2 AND l.title = $3
         ORDER BY l.created_at LIMIT 1",
    )
    .bind(org_id)
    .bind(DEMO_COURSE)
    .bind(DEMO_LESSON)
    .fetch_optional(db)
    .await?;
    let (lesson_id, asset_id) = match existing {
        // Ready, or on its way there: keep it.
        Some((lesson, Some(asset), Some(status)))
            if !matches!(status.as_str(), "failed" | "cancelled") =>
        {
            (lesson, asset)
        }
        Some((lesson, _, _)) => {
            let asset = ingest_sample(db, store, org_id, args).await?;
            let mut tx = db.begin().await?;
            let course: Uuid = sqlx::query_scalar(
                "UPDATE lessons SET asset_id = $2, updated_at = now() WHERE id = $1 RETURNING course_id",
            )
            .bind(lesson)
            .bind(asset)
            .fetch_one(&mut *tx)
            .await?;
            lectern_catalogue::search::index::reindex_course(&mut tx, course).await?;
            tx.commit().await?;
            (lesson, asset)
        }
        None => {
            let asset = ingest_sample(db, store, org_id, args).await?;
            let lesson = publish_course(db, org_id, asset).await?;
            (lesson, asset)
        }
    };
    audit::record(
        db,
        Some(&audit::ChainKey::from_keyring(keys)),
        &AuditEvent {
            actor: Some("cli:demo".into()),
            org_id: Some(org_id),
            action: "demo.seed".into(),
            target: Some(format!("lesson:{lesson_id}")),
            outcome: "ok",
            ..AuditEvent::default()
        },
    )
    .await
    .context("writing the audit record")?;
    Ok(Seeded {
        credentials,
        asset_id,
        lesson_id,
    })
}

/// The demo credentials: read back, or generated and saved on first use.
fn credentials(data_dir: &Path) -> Result<Credentials> {
    let path = data_dir.join("demo-credentials.toml");
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            return toml::from_str(&text).with_context(|| {
                format!(
                    "{} is damaged; delete it to generate new demo credentials",
                    path.display()
                )
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    }
    let credentials = Credentials {
        learner_email: LEARNER_EMAIL.into(),
        learner_password: password::generate(),
        admin_email: ADMIN_EMAIL.into(),
        admin_password: password::generate(),
    };
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    write_private(&path, &toml::to_string(&credentials)?)?;
    Ok(credentials)
}

fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

/// Creates the account, or resets an existing one to the demo password
/// and role so the printed credentials always work.
async fn ensure_user(
    db: &PgPool,
    keys: &Keyring,
    org_id: Uuid,
    email: &str,
    secret: &str,
    role: Role,
) -> Result<()> {
    let created = users::create_user(
        db,
        keys,
        users::NewUser {
            org_id: Some(org_id),
            email,
            role,
            password: secret,
        },
    )
    .await;
    match created {
        Ok(_) => Ok(()),
        Err(users::AccountError::EmailInUse) => {
            let updated = sqlx::query(
                "UPDATE users SET password_hash = $2, role = $3, org_id = $4 WHERE email_bidx = $1",
            )
            .bind(keys.email_index(&normalise_email(email)))
            .bind(password::for_tools().hash(secret).await)
            .bind(role.as_str())
            .bind(org_id)
            .execute(db)
            .await?
            .rows_affected();
            if updated == 0 {
                bail!("the demo account {email} exists but could not be updated");
            }
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// Stores the sample as a new asset's source; the database enqueues its
/// transcode, which the in-process worker of `serve` picks up.
async fn ingest_sample(
    db: &PgPool,
    store: &dyn Store,
    org_id: Uuid,
    args: &DemoArgs,
) -> Result<Uuid> {
    let scratch = tempfile_dir()?;
    let source = match &args.sample {
        Some(path) => {
            if !path.is_file() {
                bail!("--sample {}: no such file", path.display());
            }
            path.clone()
        }
        None => {
            let path = scratch.join("slide-lecture.mp4");
            eprintln!(
                "lectern demo: generating a {} s slide lecture with GStreamer…",
                args.sample_seconds
            );
            generate_lecture(&path, args.sample_seconds).await?;
            path
        }
    };
    let id = Uuid::now_v7();
    let key = lectern_assets::keys::source_key(id);
    store
        .put_file(&key, &source, PutOptions::default())
        .await
        .with_context(|| format!("storing {} as {key}", source.display()))?;
    let _ = std::fs::remove_dir_all(&scratch);
    lectern_assets::create(
        db,
        &lectern_assets::NewAsset {
            id,
            organisation_id: org_id,
            source_key: key,
            title: Some(DEMO_LESSON.into()),
            profile: "default".into(),
            priority: 10,
        },
    )
    .await
    .context("recording the demo asset")?;
    Ok(id)
}

fn tempfile_dir() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("lectern-demo-{}", Uuid::now_v7()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// A 720p "slide" (colour bars with a title and a running clock, so a
/// frame is never black and resuming is visible) over a quiet 440 Hz tone,
/// H.264/AAC in MP4, by `gst-launch-1.0` (GStreamer's tools, installed by
/// `infra/dev/setup`).
async fn generate_lecture(out: &Path, seconds: u32) -> Result<()> {
    const FPS: u32 = 25;
    // audiotestsrc's default buffers are 1024 samples at 44.1 kHz.
    let audio_buffers = (u64::from(seconds) * 44_100).div_ceil(1024);
    let pipeline = format!(
        "videotestsrc num-buffers={video} pattern=smpte ! video/x-raw,width=1280,height=720,framerate={FPS}/1 \
         ! textoverlay text=\"Lectern demo lecture\" valignment=top halignment=center font-desc=\"Sans 40\" \
         ! timeoverlay valignment=bottom halignment=center font-desc=\"Sans 48\" \
         ! videoconvert ! x264enc speed-preset=ultrafast key-int-max={FPS} ! h264parse ! queue ! mux. \
         audiotestsrc num-buffers={audio_buffers} wave=sine freq=440 volume=0.1 \
         ! audioconvert ! audioresample ! avenc_aac ! aacparse ! queue ! mux. \
         mp4mux name=mux faststart=true ! filesink location={location}",
        video = seconds * FPS,
        location = shell_quote(out),
    );
    let args: Vec<String> = split_pipeline(&pipeline);
    let output = tokio::process::Command::new("gst-launch-1.0")
        .arg("-q")
        .arg("-e")
        .args(&args)
        .output()
        .await
        .context("running gst-launch-1.0 (install GStreamer's tools: infra/dev/setup)")?;
    if !output.status.success() || !out.is_file() {
        bail!(
            "gst-launch-1.0 could not generate the slide lecture: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// gst-launch takes the pipeline as separate words; quoted values stay whole.
fn split_pipeline(pipeline: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quoted = false;
    for c in pipeline.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                word.push(c);
            }
            c if c.is_whitespace() && !quoted => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            c => word.push(c),
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    words
}

fn shell_quote(path: &Path) -> String {
    format!("\"{}\"", path.display().to_string().replace('"', "\\\""))
}

/// A published course with one lesson playing `asset_id`, indexed for search.
async fn publish_course(db: &PgPool, org_id: Uuid, asset_id: Uuid) -> Result<Uuid> {
    let course_id = Uuid::now_v7();
    let lesson_id = Uuid::now_v7();
    let mut tx = db.begin().await?;
    sqlx::query(
        "INSERT INTO courses (id, organisation_id, title, description, resource_type, state, published_at)
         VALUES ($1, $2, $3, $4, 'video_course', 'published', now())",
    )
    .bind(course_id)
    .bind(org_id)
    .bind(DEMO_COURSE)
    .bind("A short generated lecture to try speed, resume and quality in the learner player.")
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO lessons (id, organisation_id, course_id, title, description, position, asset_id)
         VALUES ($1, $2, $3, $4, $5, 0, $6)",
    )
    .bind(lesson_id)
    .bind(org_id)
    .bind(course_id)
    .bind(DEMO_LESSON)
    .bind("Colour bars, a clock and a tone: every second is recognisable.")
    .bind(asset_id)
    .execute(&mut *tx)
    .await?;
    lectern_catalogue::search::index::reindex_course(&mut tx, course_id).await?;
    tx.commit().await?;
    Ok(lesson_id)
}

/// Waits for the worker to finish the asset, reporting progress on stderr.
async fn wait_until_playable(db: &PgPool, asset_id: Uuid) -> Result<()> {
    let mut last = String::new();
    loop {
        let row: Option<(String, f32, Option<String>, Option<String>)> = sqlx::query_as(
            "SELECT status, progress, error_code, error_message FROM assets WHERE id = $1",
        )
        .bind(asset_id)
        .fetch_optional(db)
        .await?;
        let Some((status, progress, code, message)) = row else {
            bail!("the demo asset {asset_id} disappeared");
        };
        match status.as_str() {
            "ready" => return Ok(()),
            "failed" | "cancelled" => bail!(
                "transcoding the demo sample {status}: {} ({})",
                message.unwrap_or_default(),
                code.unwrap_or_default()
            ),
            _ => {
                let now = format!("{status} {:.0}%", progress);
                if now != last {
                    eprintln!("lectern demo: sample {now}");
                    last = now;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipeline_words_keep_quoted_values_whole() {
        assert_eq!(
            split_pipeline("a text=\"Two words\" ! b  c"),
            vec!["a", "text=\"Two words\"", "!", "b", "c"]
        );
    }

    #[test]
    fn credentials_are_generated_once_and_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let first = credentials(dir.path()).unwrap();
        let second = credentials(dir.path()).unwrap();
        assert_eq!(first.learner_password, second.learner_password);
        assert_ne!(first.learner_password, first.admin_password);
        let mode = std::fs::metadata(dir.path().join("demo-credentials.toml"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
