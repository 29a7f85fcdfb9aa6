//! The one PostgreSQL pool: from `DATABASE_URL`, or the embedded cluster.
//! Migrations (`migrations/`) are applied at start; if the database is not
//! reachable yet, the process keeps running (readiness says why) and keeps
//! retrying, so a database restart or a slow managed instance never needs
//! a Lectern restart.

use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use anyhow::{Context, Result};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;

use crate::config::{Config, DatabaseConfig};
use crate::embedded_pg::EmbeddedPostgres;

/// Migrations applied by a newer release are not an error: migrations are
/// written expand/contract (`migrations/README.md`), so this release keeps
/// running on the schema of the next one while it is rolled out or back.
pub static MIGRATOR: LazyLock<sqlx::migrate::Migrator> = LazyLock::new(|| {
    let mut migrator = sqlx::migrate!("./migrations");
    migrator.set_ignore_missing(true);
    migrator
});

pub struct Database {
    pub pool: PgPool,
    /// The private cluster when running embedded; stopped on shutdown if we started it.
    pub embedded: Option<EmbeddedPostgres>,
}

impl Database {
    /// Connects lazily: the pool is usable even while the server is down.
    pub async fn open(config: &Config) -> Result<Self> {
        let (options, embedded) = match &config.database {
            DatabaseConfig::Url(url) => (
                PgConnectOptions::from_str(url).context("DATABASE_URL is not a valid URL")?,
                None,
            ),
            DatabaseConfig::Embedded => {
                let pg = EmbeddedPostgres::ensure(
                    &config.settings.data_dir,
                    config.settings.pg_bin.as_deref(),
                )
                .await?;
                (pg.connect_options(), Some(pg))
            }
        };
        let pool = PgPoolOptions::new()
            .max_connections(32)
            .acquire_timeout(Duration::from_secs(3))
            .connect_lazy_with(options);
        Ok(Self { pool, embedded })
    }

    pub async fn migrate(&self) -> Result<()> {
        MIGRATOR
            .run(&self.pool)
            .await
            .context("applying database migrations")
    }

    /// Applies migrations now if possible, else keeps retrying in the
    /// background; `ready` flips once the schema is current.
    pub fn migrate_in_background(&self, ready: Arc<AtomicBool>) {
        let pool = self.pool.clone();
        let embedded = self.embedded.is_some();
        tokio::spawn(async move {
            let mut delay = Duration::from_millis(500);
            loop {
                match MIGRATOR.run(&pool).await {
                    Ok(()) => {
                        ready.store(true, Ordering::Release);
                        tracing::info!("database schema is current");
                        warn_if_superuser(&pool, embedded).await;
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, retry_in = ?delay, "database not ready; will retry migrations");
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(10));
                    }
                }
            }
        });
    }

    pub async fn close(self) {
        self.pool.close().await;
        if let Some(pg) = self.embedded {
            pg.stop();
        }
    }
}

/// A superuser bypasses every privilege, the audit log's owner-only deletes
/// included (SECURITY.md); say so once, where an operator looks. The
/// embedded database is private to the process and connects as one.
async fn warn_if_superuser(pool: &sqlx::PgPool, embedded: bool) {
    if embedded {
        return;
    }
    let superuser: Result<bool, _> =
        sqlx::query_scalar("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
            .fetch_one(pool)
            .await;
    if let Ok(true) = superuser {
        tracing::warn!(
            "DATABASE_URL connects as a superuser: audit rows could be removed by this role; \
             connect with a role that is not a superuser in production (SECURITY.md)"
        );
    }
}
