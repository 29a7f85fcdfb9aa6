//! Embedded mode: with no `DATABASE_URL`, Lectern starts (or reuses) a
//! private PostgreSQL cluster from the system's PostgreSQL binaries under
//! `<data_dir>/pg`, reachable only on a Unix socket, so one process is a
//! complete single-node Lectern with nothing to configure.
//!
//! Private means private to the service: the socket directory is mode 0700
//! (only the cluster's owner, and root, can reach the socket), and every
//! connection needs the superuser's password (scram-sha-256, never `trust`),
//! generated once into `<data_dir>/pg_password` (mode 0600, beside the
//! identity keys). A cluster made by an older Lectern with `trust` is given
//! the password and switched to scram-sha-256 at start.
//!
//! The layout is shared with `infra/dev/services up`, which may have started
//! the same cluster (also listening on 127.0.0.1) — then it is reused as is.
//!
//! PostgreSQL refuses to run as root; when we are root (containers, CI) the
//! cluster runs as the `postgres` system user the Debian package creates.
//! If that user cannot reach the data directory (a checkout under a private
//! home), the cluster lives in the `postgres` user's own home, under
//! `lectern-<first 12 hex of the SHA-256 of the canonical data directory>`
//! so each checkout keeps its own cluster — never in a shared directory
//! such as /tmp or /var/tmp, where another local user could create the
//! predictable name first. A cluster already running there is reused; one
//! this process started is stopped on graceful shutdown.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr;

use anyhow::{bail, Context, Result};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection};

const PORT: u16 = 5432;
const DATABASE: &str = "lectern";
/// The superuser's password, in the data directory beside the keys.
pub const PASSWORD_FILE: &str = "pg_password";

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
    password: String,
}

impl EmbeddedPostgres {
    /// Starts the cluster under `data_dir/pg` unless it is already running,
    /// and makes sure the `lectern` database exists.
    pub async fn ensure(data_dir: &Path, pg_bin: Option<&Path>) -> Result<Self> {
        let bin = find_pg_bin(pg_bin)?;
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("cannot create data directory {}", data_dir.display()))?;
        let password = password(data_dir)?;
        let as_postgres_user = is_root();
        let base = cluster_base(data_dir, as_postgres_user)?;
        let data = base.join("data");
        let socket_dir = base.join("run");
        let fresh = !data.join("PG_VERSION").exists();
        for dir in [&base, &socket_dir] {
            private_dir(dir)?;
        }
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
            password,
        };
        if fresh {
            tracing::info!(dir = %pg.data.display(), "initialising a private PostgreSQL cluster");
            pg.initdb(&base)?;
        }
        let started_here = if pg.is_running() {
            tracing::info!(dir = %pg.data.display(), "reusing the running private PostgreSQL");
            false
        } else {
            tracing::info!(dir = %pg.data.display(), "starting the private PostgreSQL");
            let opts = format!(
                "-c listen_addresses='' -c unix_socket_permissions=0700 -p {PORT} -k {}",
                pg.socket_dir.display()
            );
            let log = base.join("log");
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
        pg.stop_trusting().await?;
        pg.create_database().await.with_context(|| {
            format!(
                "cannot connect to the private PostgreSQL (its password is in {})",
                data_dir.join(PASSWORD_FILE).display()
            )
        })?;
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
            .password(&self.password)
            .database(database)
    }

    /// `initdb` with scram-sha-256 for every connection and the generated
    /// password, handed over in a file only the cluster's owner can read.
    fn initdb(&self, base: &Path) -> Result<()> {
        let pwfile = base.join("initdb-password");
        let _ = std::fs::remove_file(&pwfile);
        write_private(&pwfile, &self.password)
            .with_context(|| format!("cannot write {}", pwfile.display()))?;
        if self.as_postgres_user {
            run(Command::new("chown").arg("postgres:postgres").arg(&pwfile))?;
        }
        let pwfile_arg = format!("--pwfile={}", pwfile.display());
        let result = self.run_pg(
            "initdb",
            &[
                "-D".as_ref(),
                self.data.as_os_str(),
                "-U".as_ref(),
                "postgres".as_ref(),
                "--auth=scram-sha-256".as_ref(),
                pwfile_arg.as_ref(),
                "-E".as_ref(),
                "UTF8".as_ref(),
                "--locale=C".as_ref(),
            ],
        );
        let _ = std::fs::remove_file(&pwfile);
        result
    }

    /// A cluster initialised by an older Lectern (or `infra/dev/services`)
    /// trusted every local connection: give the superuser the password,
    /// then ask for it (scram-sha-256) everywhere `pg_hba.conf` trusted.
    async fn stop_trusting(&self) -> Result<()> {
        let hba_path = self.data.join("pg_hba.conf");
        let hba = std::fs::read_to_string(&hba_path)
            .with_context(|| format!("cannot read {}", hba_path.display()))?;
        let Some(secured) = without_trust(&hba) else {
            return Ok(());
        };
        tracing::warn!(
            file = %hba_path.display(),
            "the private PostgreSQL trusted local connections; setting a password"
        );
        let mut conn = self
            .options_for("postgres")
            .password("")
            .connect()
            .await
            .context("cannot connect to the private PostgreSQL to set its password")?;
        // Hex: nothing to quote.
        debug_assert!(self.password.bytes().all(|b| b.is_ascii_hexdigit()));
        sqlx::query(&format!("ALTER ROLE postgres PASSWORD '{}'", self.password))
            .execute(&mut conn)
            .await?;
        // Rewritten in place: the file keeps its owner and mode.
        std::fs::write(&hba_path, secured)
            .with_context(|| format!("cannot rewrite {}", hba_path.display()))?;
        sqlx::query("SELECT pg_reload_conf()")
            .execute(&mut conn)
            .await?;
        conn.close().await?;
        Ok(())
    }

    async fn create_database(&self) -> Result<()> {
        let mut conn = self.options_for("postgres").connect().await?;
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

/// `pg_hba.conf` with every `trust` method replaced by `scram-sha-256`, or
/// `None` if nothing trusted.
fn without_trust(hba: &str) -> Option<String> {
    let mut changed = false;
    let lines: Vec<String> = hba
        .lines()
        .map(|line| {
            let (rule, comment) = line.split_once('#').unwrap_or((line, ""));
            if !rule.split_whitespace().any(|field| field == "trust") {
                return line.to_owned();
            }
            changed = true;
            let rule: Vec<&str> = rule
                .split_whitespace()
                .map(|field| {
                    if field == "trust" {
                        "scram-sha-256"
                    } else {
                        field
                    }
                })
                .collect();
            match comment {
                "" => rule.join(" "),
                c => format!("{} #{c}", rule.join(" ")),
            }
        })
        .collect();
    changed.then(|| lines.join("\n") + "\n")
}

/// The superuser's password: read from `<data_dir>/pg_password`, or
/// generated into it (mode 0600) the first time. Two processes starting at
/// once agree: the file is created only if absent, and both read it back.
fn password(data_dir: &Path) -> Result<String> {
    let path = data_dir.join(PASSWORD_FILE);
    if !path.exists() {
        use rand::RngCore;
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        match write_private(&path, &hex::encode(bytes)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e).with_context(|| format!("cannot write {}", path.display())),
        }
    }
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let password = text.trim().to_owned();
    if password.len() < 32 || !password.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!(
            "{} does not hold a generated password (64 hex digits)",
            path.display()
        );
    }
    Ok(password)
}

/// Creates `path` holding `text`, mode 0600; fails if it exists.
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()
}

/// A directory only its owner may enter (PostgreSQL wants its data
/// directory so; the socket directory is what keeps others off the socket).
fn private_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("cannot make {} private", dir.display()))
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
    unsafe { libc::geteuid() == 0 }
}

/// `<data_dir>/pg`, unless the `postgres` user cannot reach it (a checkout
/// under a private home directory); then a directory in the `postgres`
/// user's home named after the data directory, so each checkout still gets
/// its own cluster. Never a shared directory like /tmp or /var/tmp, where
/// another user could create the predictable name first.
fn cluster_base(data_dir: &Path, as_postgres_user: bool) -> Result<PathBuf> {
    let data_dir = std::fs::canonicalize(data_dir)?;
    let preferred = data_dir.join("pg");
    if !as_postgres_user {
        return Ok(preferred);
    }
    let reachable = Command::new("runuser")
        .args(["-u", "postgres", "--", "test", "-x"])
        .arg(&data_dir)
        .current_dir("/")
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if reachable {
        return Ok(preferred);
    }
    let home = postgres_home()?;
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::symlink_metadata(&home)
        .with_context(|| format!("the postgres user's home {}", home.display()))?;
    if !meta.is_dir() || meta.mode() & 0o022 != 0 {
        bail!(
            "the postgres user cannot reach {}, and its home {} is not a private directory \
             to keep the cluster in: make {} reachable (chmod o+x), or set DATABASE_URL",
            data_dir.display(),
            home.display(),
            data_dir.display()
        );
    }
    use sha2::Digest;
    let digest = sha2::Sha256::digest(data_dir.as_os_str().as_encoded_bytes());
    let fallback = home.join(format!("lectern-{}", &hex::encode(digest)[..12]));
    tracing::warn!(
        wanted = %preferred.display(),
        using = %fallback.display(),
        "the postgres user cannot reach the data directory; keeping the cluster in its home"
    );
    Ok(fallback)
}

/// The `postgres` user's home directory, from the user database.
fn postgres_home() -> Result<PathBuf> {
    let out = Command::new("getent")
        .args(["passwd", "postgres"])
        .output()
        .context("cannot run getent")?;
    let line = String::from_utf8_lossy(&out.stdout);
    match line.trim().split(':').nth(5) {
        Some(home) if out.status.success() && home.starts_with('/') => Ok(PathBuf::from(home)),
        _ => bail!("no `postgres` system user with a home directory; run infra/dev/setup"),
    }
}

/// PostgreSQL's server binaries: `LECTERN_PG_BIN`, else the newest
/// `/usr/lib/postgresql/<version>/bin` (Debian/Ubuntu layout).
fn find_pg_bin(configured: Option<&Path>) -> Result<PathBuf> {
    if let Some(dir) = configured {
        return Ok(dir.to_path_buf());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trust_becomes_scram_and_comments_stay() {
        let hba = "# TYPE DATABASE USER ADDRESS METHOD\n\
                   local all all trust\n\
                   host all all 127.0.0.1/32 trust # loopback\n\
                   host all all ::1/128 scram-sha-256\n";
        let secured = without_trust(hba).unwrap();
        assert!(!secured
            .lines()
            .any(|l| l.split('#').next().unwrap().contains("trust")));
        assert!(secured.contains("local all all scram-sha-256\n"));
        assert!(secured.contains("127.0.0.1/32 scram-sha-256 # loopback"));
        assert!(secured.starts_with("# TYPE"));
        assert_eq!(without_trust(&secured), None);
    }

    #[test]
    fn the_password_is_generated_once_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let first = password(dir.path()).unwrap();
        assert_eq!(first.len(), 64);
        assert_eq!(password(dir.path()).unwrap(), first);
        let mode = std::fs::metadata(dir.path().join(PASSWORD_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    /// When the postgres user cannot reach the data directory, the cluster
    /// must not go where another local user could have made the directory
    /// first (it used to be /var/tmp/lectern-pg-<predictable hash>).
    #[test]
    fn the_fallback_cluster_directory_is_not_in_a_shared_directory() {
        if !is_root() || postgres_home().is_err() {
            eprintln!("skipped: needs root and a postgres user");
            return;
        }
        // A directory the postgres user cannot reach, like a clone in /root.
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let base = cluster_base(dir.path(), true).unwrap();
        let parent = base.parent().unwrap();
        use std::os::unix::fs::MetadataExt;
        let mode = std::fs::metadata(parent).unwrap().mode();
        assert_eq!(
            mode & 0o022,
            0,
            "{} is writable by others",
            parent.display()
        );
        assert!(!base.starts_with(dir.path()));
    }
}
