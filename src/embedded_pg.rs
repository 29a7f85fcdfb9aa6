//! Embedded mode: with no `DATABASE_URL`, Lectern starts (or reuses) a
//! private PostgreSQL cluster from the system's PostgreSQL binaries under
//! `<data_dir>/pg`, reachable only on a Unix socket, so one process is a
//! complete single-node Lectern with nothing to configure.
//!
//! The layout is shared with `infra/dev/services up`, which may have started
//! the same cluster (also listening on 127.0.0.1) — then it is reused as is.
//!
//! PostgreSQL refuses to run as root; when we are root (containers, CI) the
//! cluster runs as the `postgres` system user the Debian package creates.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr;

use anyhow::{bail, Context, Result};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection};

const PORT: u16 = 5432;
const DATABASE: &str = "lectern";

/// A running private cluster, described by how to connect to it.
pub struct EmbeddedPostgres {
    pub socket_dir: PathBuf,
    /// The port that names the socket file (`.s.PGSQL.<port>`).
    port: u16,
    /// True when this process started it (and so should stop it on shutdown).
    pub started_here: bool,
    data: PathBuf,
    bin: PathBuf,
    as_postgres_user: bool,
}

impl EmbeddedPostgres {
    /// Starts the cluster under `data_dir/pg` unless it is already running,
    /// and makes sure the `lectern` database exists.
    pub async fn ensure(data_dir: &Path) -> Result<Self> {
        let bin = find_pg_bin()?;
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("cannot create data directory {}", data_dir.display()))?;
        let as_postgres_user = is_root();
        let base = cluster_base(data_dir, as_postgres_user)?;
        let data = base.join("data");
        let socket_dir = base.join("run");
        let fresh = !data.join("PG_VERSION").exists();
        std::fs::create_dir_all(&socket_dir)?;
        if as_postgres_user {
            // Recursively only before initdb: a recursive chown of a grown
            // cluster at every start is start-up work proportional to the data.
            let mut chown = Command::new("chown");
            if fresh {
                chown.arg("-R");
            }
            run(chown.arg("postgres:postgres").arg(&base).arg(&socket_dir))?;
        }
        let pg = Self {
            socket_dir,
            port: PORT,
            started_here: false,
            data,
            bin,
            as_postgres_user,
        };
        if fresh {
            tracing::info!(dir = %pg.data.display(), "initialising a private PostgreSQL cluster");
            pg.run_pg(
                "initdb",
                &[
                    "-D".as_ref(),
                    pg.data.as_os_str(),
                    "-U".as_ref(),
                    "postgres".as_ref(),
                    "--auth=trust".as_ref(),
                    "-E".as_ref(),
                    "UTF8".as_ref(),
                    "--locale=C".as_ref(),
                ],
            )?;
        }
        let started_here = if pg.is_running() {
            tracing::info!(dir = %pg.data.display(), "reusing the running private PostgreSQL");
            false
        } else {
            tracing::info!(dir = %pg.data.display(), "starting the private PostgreSQL");
            let opts = format!(
                "-c listen_addresses='' -p {PORT} -k {}",
                pg.socket_dir.display()
            );
            let log = pg.data.parent().unwrap_or(&pg.data).join("log");
            pg.run_pg(
                "pg_ctl",
                &[
                    "-D".as_ref(),
                    pg.data.as_os_str(),
                    "-l".as_ref(),
                    log.as_os_str(),
                    "-o".as_ref(),
                    opts.as_ref(),
                    "-w".as_ref(),
                    "-t".as_ref(),
                    "60".as_ref(),
                    "start".as_ref(),
                ],
            )
            .with_context(|| format!("see the PostgreSQL log at {}", log.display()))?;
            true
        };
        // A cluster started by `infra/dev/services` may use another port and
        // socket directory; postmaster.pid says which.
        let (port, socket_dir) = pg
            .running_endpoint()
            .unwrap_or((PORT, pg.socket_dir.clone()));
        let pg = Self {
            started_here,
            port,
            socket_dir,
            ..pg
        };
        pg.create_database().await?;
        Ok(pg)
    }

    /// How to connect to the `lectern` database.
    pub fn connect_options(&self) -> PgConnectOptions {
        self.options_for(DATABASE)
    }

    fn options_for(&self, database: &str) -> PgConnectOptions {
        PgConnectOptions::new()
            .socket(&self.socket_dir)
            .port(self.port)
            .username("postgres")
            .database(database)
    }

    async fn create_database(&self) -> Result<()> {
        let mut conn = self
            .options_for("postgres")
            .connect()
            .await
            .context("cannot connect to the private PostgreSQL")?;
        let exists: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
                .bind(DATABASE)
                .fetch_one(&mut conn)
                .await?;
        if !exists {
            sqlx::query(&format!("CREATE DATABASE {DATABASE}"))
                .execute(&mut conn)
                .await?;
        }
        conn.close().await?;
        Ok(())
    }

    /// Port and socket directory from `postmaster.pid` (lines 4 and 5).
    fn running_endpoint(&self) -> Option<(u16, PathBuf)> {
        let pid_file = std::fs::read_to_string(self.data.join("postmaster.pid")).ok()?;
        let mut lines = pid_file.lines().skip(3);
        let port = lines.next()?.trim().parse().ok()?;
        let socket_dir = lines.next()?.trim();
        (!socket_dir.is_empty()).then(|| (port, PathBuf::from(socket_dir)))
    }

    fn is_running(&self) -> bool {
        self.pg_command("pg_ctl")
            .arg("status")
            .arg("-D")
            .arg(&self.data)
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    }

    /// Stops the cluster if this process started it.
    pub fn stop(&self) {
        if !self.started_here {
            return;
        }
        let r = self
            .pg_command("pg_ctl")
            .args(["-m", "fast", "-w", "stop", "-D"])
            .arg(&self.data)
            .output();
        if let Err(e) = r {
            tracing::warn!(error = %e, "could not stop the private PostgreSQL");
        }
    }

    fn pg_command(&self, program: &str) -> Command {
        let exe = self.bin.join(program);
        if self.as_postgres_user {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(exe);
            c
        } else {
            Command::new(exe)
        }
    }

    fn run_pg(&self, program: &str, args: &[&std::ffi::OsStr]) -> Result<()> {
        run(self.pg_command(program).args(args))
    }
}

fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {:?}", cmd.get_program()))?;
    if !out.status.success() {
        bail!(
            "{:?} failed: {}",
            cmd.get_program(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc_geteuid() == 0 }
}

extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

/// `<data_dir>/pg`, unless the `postgres` user cannot reach it (a checkout
/// under a private home directory); then a directory under /var/tmp named
/// after the data directory, so each checkout still gets its own cluster.
fn cluster_base(data_dir: &Path, as_postgres_user: bool) -> Result<PathBuf> {
    let data_dir = std::fs::canonicalize(data_dir)?;
    let preferred = data_dir.join("pg");
    if !as_postgres_user {
        return Ok(preferred);
    }
    let reachable = Command::new("runuser")
        .args(["-u", "postgres", "--", "test", "-x"])
        .arg(&data_dir)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if reachable {
        return Ok(preferred);
    }
    use sha2::Digest;
    let digest = sha2::Sha256::digest(data_dir.as_os_str().as_encoded_bytes());
    let fallback = PathBuf::from(format!(
        "/var/tmp/lectern-pg-{}",
        &hex::encode(digest)[..12]
    ));
    tracing::warn!(
        wanted = %preferred.display(),
        using = %fallback.display(),
        "the postgres user cannot reach the data directory; keeping the cluster elsewhere"
    );
    Ok(fallback)
}

/// PostgreSQL's server binaries: `LECTERN_PG_BIN`, else the newest
/// `/usr/lib/postgresql/<version>/bin` (Debian/Ubuntu layout).
fn find_pg_bin() -> Result<PathBuf> {
    if let Ok(dir) = std::env::var("LECTERN_PG_BIN") {
        return Ok(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = u32::from_str(e.file_name().to_str()?).ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    match versions.pop() {
        Some((_, bin)) => Ok(bin),
        None => bail!(
            "PostgreSQL server binaries not found under /usr/lib/postgresql; \
             run infra/dev/setup, set LECTERN_PG_BIN, or set DATABASE_URL to use an existing server"
        ),
    }
}
