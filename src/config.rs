//! One typed configuration, loaded from an optional TOML file and the
//! environment (`LECTERN_*`, `DATABASE_URL`), validated once at start-up.
//!
//! Every setting has one name: `LECTERN_HTTP_ADDR` in the environment is
//! `http_addr` in the file. The environment wins over the file. A bad value
//! is reported with the exact variable or file key that holds it, so the
//! operator knows what to fix.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use lectern_identity::TrustedProxies;
use lectern_secrets::{self as crypto, Keyring};
use lectern_storage::S3Config;

/// Where a setting's value came from, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Origin {
    Env(&'static str),
    File { path: PathBuf, key: &'static str },
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Env(var) => write!(f, "{var}"),
            Origin::File { path, key } => write!(f, "`{key}` in {}", path.display()),
        }
    }
}

/// A configuration error naming the setting at fault.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {field}: {message}")]
pub struct ConfigError {
    /// The environment variable (or file key) holding the bad value.
    pub field: String,
    pub message: String,
}

impl ConfigError {
    fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

#[derive(Clone)]
pub enum DatabaseConfig {
    /// `DATABASE_URL` is set: use that server (managed PostgreSQL in production).
    Url(String),
    /// No URL: start or reuse a private cluster under `<data_dir>/pg`.
    Embedded,
}

impl fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // A URL may hold a password: never print it.
            DatabaseConfig::Url(url) => write!(f, "Url({})", redact_url(url)),
            DatabaseConfig::Embedded => write!(f, "Embedded"),
        }
    }
}

#[derive(Debug, Clone)]
pub enum StorageConfig {
    Fs { root: PathBuf },
    S3(S3Config),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// The identity keys as configured (validated at load). No `Debug` of the
/// values: they encrypt every person's data.
#[derive(Clone)]
pub struct IdentityKeys {
    field_keys: String,
    blind_index_key: String,
    token_key: String,
}

impl fmt::Debug for IdentityKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IdentityKeys(<redacted>)")
    }
}

impl IdentityKeys {
    fn keyring(&self) -> Result<Keyring, ConfigError> {
        Keyring::parse(&self.field_keys, &self.blind_index_key, &self.token_key)
            .map_err(|e| ConfigError::new(e.variable, e.message))
    }
}

/// `LECTERN_TLS_CERT` and `LECTERN_TLS_KEY`: PEM files.
#[derive(Debug, Clone)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Audit rows are kept at least this long (MLPS level 3 asks six months).
pub const MIN_AUDIT_RETENTION_DAYS: u32 = 180;

#[derive(Debug, Clone)]
pub struct Config {
    pub http_addr: SocketAddr,
    /// Root of everything Lectern keeps on local disk (`./.lectern` by default).
    pub data_dir: PathBuf,
    pub database: DatabaseConfig,
    pub storage: StorageConfig,
    /// In-process workers run by `serve`; `None` means "decide from the mode"
    /// (one in embedded mode, none with an external database).
    pub serve_workers: Option<usize>,
    pub log_format: LogFormat,
    pub worker: WorkerSettings,
    /// `None`: generated into `<data_dir>/keys.toml` in embedded mode,
    /// missing (and identity unavailable) with an external database.
    pub identity_keys: Option<IdentityKeys>,
    pub tls: Option<TlsConfig>,
    pub trusted_proxies: TrustedProxies,
    pub audit_retention_days: u32,
    /// Limits of partner uploads (tus at `/api/v1/uploads`).
    pub uploads: lectern_ingest::tus::TusConfig,
    /// URL pulls (`POST /api/v1/assets`): limits and SSRF allow-list.
    pub pulls: lectern_ingest::pull::PullConfig,
    /// The recording-drop watcher, when `LECTERN_DROP_PREFIX` is set.
    pub drops: Option<lectern_ingest::drops::DropConfig>,
    /// Private networks webhooks may nevertheless post to.
    pub webhook_allow: lectern_egress::AllowList,
    /// The player SDK bundle the demo page serves (`player-sdk/dist`).
    pub player_dir: PathBuf,
    /// Signed playback tokens of the media origin.
    pub playback: PlaybackSettings,
    /// Where progress heartbeats are absorbed and how often they are flushed.
    pub progress: lectern_learning::ProgressSettings,
}

/// How a pipeline worker (in `lectern worker` or inside `serve`) behaves.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// Jobs one worker process runs at once; `None` sizes it to the cores.
    pub concurrency: Option<usize>,
    /// A job's lease; a dead worker's job is taken over after this long.
    pub lease_secs: u64,
    /// How long running jobs may finish after SIGTERM before being handed back.
    pub drain_secs: u64,
    /// Sources this long or longer are split into chunks that any worker
    /// encodes in parallel; `None` (threshold 0) never splits.
    pub chunking: Option<lectern_pipelines::stage::ChunkingConfig>,
}

/// The settings, by file key and environment variable.
const SETTINGS: &[(&str, &str)] = &[
    ("http_addr", "LECTERN_HTTP_ADDR"),
    ("data_dir", "LECTERN_DATA_DIR"),
    ("database_url", "DATABASE_URL"),
    ("storage", "LECTERN_STORAGE"),
    ("fs_root", "LECTERN_FS_ROOT"),
    ("s3_endpoint", "LECTERN_S3_ENDPOINT"),
    ("s3_region", "LECTERN_S3_REGION"),
    ("s3_bucket", "LECTERN_S3_BUCKET"),
    ("s3_access_key_id", "LECTERN_S3_ACCESS_KEY_ID"),
    ("s3_secret_access_key", "LECTERN_S3_SECRET_ACCESS_KEY"),
    ("s3_path_style", "LECTERN_S3_PATH_STYLE"),
    ("serve_workers", "LECTERN_SERVE_WORKERS"),
    ("log_format", "LECTERN_LOG_FORMAT"),
    ("worker_concurrency", "LECTERN_WORKER_CONCURRENCY"),
    ("job_lease_secs", "LECTERN_JOB_LEASE_SECS"),
    ("worker_drain_secs", "LECTERN_WORKER_DRAIN_SECS"),
    ("chunk_threshold_secs", "LECTERN_CHUNK_THRESHOLD_SECS"),
    ("chunk_secs", "LECTERN_CHUNK_SECS"),
    ("field_keys", crypto::FIELD_KEYS_VAR),
    ("blind_index_key", crypto::BLIND_INDEX_KEY_VAR),
    ("token_key", crypto::TOKEN_KEY_VAR),
    ("tls_cert", "LECTERN_TLS_CERT"),
    ("tls_key", "LECTERN_TLS_KEY"),
    ("trusted_proxies", "LECTERN_TRUSTED_PROXIES"),
    ("audit_retention_days", "LECTERN_AUDIT_RETENTION_DAYS"),
    ("upload_max_bytes", "LECTERN_UPLOAD_MAX_BYTES"),
    ("upload_ttl_secs", "LECTERN_UPLOAD_TTL_SECS"),
    ("upload_org_max_bytes", "LECTERN_UPLOAD_ORG_MAX_BYTES"),
    (
        "upload_org_max_concurrent",
        "LECTERN_UPLOAD_ORG_MAX_CONCURRENT",
    ),
    ("upload_profile", "LECTERN_UPLOAD_PROFILE"),
    ("pull_allow", "LECTERN_PULL_ALLOW"),
    ("pull_max_bytes", "LECTERN_PULL_MAX_BYTES"),
    ("pull_timeout_secs", "LECTERN_PULL_TIMEOUT_SECS"),
    ("pull_idle_secs", "LECTERN_PULL_IDLE_SECS"),
    ("drop_prefix", "LECTERN_DROP_PREFIX"),
    ("drop_org", "LECTERN_DROP_ORG"),
    ("drop_profile", "LECTERN_DROP_PROFILE"),
    ("drop_interval_secs", "LECTERN_DROP_INTERVAL_SECS"),
    ("drop_settle_secs", "LECTERN_DROP_SETTLE_SECS"),
    ("webhook_allow", "LECTERN_WEBHOOK_ALLOW"),
    ("player_dir", "LECTERN_PLAYER_DIR"),
    ("playback_keys", "LECTERN_PLAYBACK_KEYS"),
    ("playback_token_ttl", "LECTERN_PLAYBACK_TOKEN_TTL"),
    ("media_base_url", "LECTERN_MEDIA_BASE_URL"),
    ("origin_cache_mib", "LECTERN_ORIGIN_CACHE_MIB"),
    ("progress_backend", "LECTERN_PROGRESS_BACKEND"),
    ("redis_url", "REDIS_URL"),
    ("progress_redis_prefix", "LECTERN_PROGRESS_REDIS_PREFIX"),
    ("progress_flush_interval", "LECTERN_PROGRESS_FLUSH_INTERVAL"),
    ("bench_noop", "LECTERN_BENCH_NOOP"),
];

/// Raw values with their origins, before validation.
struct Raw(BTreeMap<&'static str, (String, Origin)>);

impl Raw {
    fn get(&self, key: &str) -> Option<(&str, &Origin)> {
        self.0.get(key).map(|(v, o)| (v.as_str(), o))
    }

    fn str_or(&self, key: &str, default: &str) -> String {
        self.get(key)
            .map_or(default.to_string(), |(v, _)| v.to_string())
    }

    fn required(&self, key: &'static str, why: &str) -> Result<String, ConfigError> {
        match self.get(key) {
            Some((v, _)) if !v.is_empty() => Ok(v.to_string()),
            _ => Err(ConfigError::new(env_name(key), format!("required {why}"))),
        }
    }

    fn parse<T>(&self, key: &'static str, expected: &str) -> Result<Option<T>, ConfigError>
    where
        T: std::str::FromStr,
    {
        match self.get(key) {
            None => Ok(None),
            Some((v, origin)) => v.parse().map(Some).map_err(|_| {
                ConfigError::new(origin.to_string(), format!("{v:?} is not {expected}"))
            }),
        }
    }
}

/// Upload limits; every one defaults to `TusConfig::default()`.
fn upload_settings(raw: &Raw) -> Result<lectern_ingest::tus::TusConfig, ConfigError> {
    let mut uploads = lectern_ingest::tus::TusConfig::default();
    let positive = |key: &'static str, what: &str| -> Result<Option<u64>, ConfigError> {
        match raw.parse::<u64>(key, what)? {
            Some(0) => Err(ConfigError::new(env_name(key), "must be at least 1")),
            v => Ok(v),
        }
    };
    if let Some(v) = positive("upload_max_bytes", "a number of bytes")? {
        uploads.max_upload_size = v;
    }
    if let Some(v) = positive("upload_ttl_secs", "a number of seconds")? {
        uploads.upload_ttl = std::time::Duration::from_secs(v);
    }
    if let Some(v) = positive("upload_org_max_bytes", "a number of bytes")? {
        uploads.quota.max_bytes_in_flight = v;
    }
    if let Some(v) = positive("upload_org_max_concurrent", "a whole number")? {
        uploads.quota.max_concurrent_uploads = u32::try_from(v).map_err(|_| {
            ConfigError::new(env_name("upload_org_max_concurrent"), "is far too large")
        })?;
    }
    if let Some((profile, origin)) = raw.get("upload_profile") {
        if lectern_pipelines::profiles::builtin(profile).is_err() {
            return Err(ConfigError::new(
                origin.to_string(),
                format!(
                    "{profile:?} is not an encoding profile; expected one of {}",
                    lectern_pipelines::profiles::names().join(", ")
                ),
            ));
        }
        uploads.profile = profile.to_string();
    }
    Ok(uploads)
}

/// URL pulls and the recording-drop watcher. Pulls and drops default to
/// the upload profile.
fn intake_settings(
    raw: &Raw,
    upload_profile: &str,
) -> Result<
    (
        lectern_ingest::pull::PullConfig,
        Option<lectern_ingest::drops::DropConfig>,
    ),
    ConfigError,
> {
    use std::time::Duration;
    let positive = |key: &'static str, what: &str| -> Result<Option<u64>, ConfigError> {
        match raw.parse::<u64>(key, what)? {
            Some(0) => Err(ConfigError::new(env_name(key), "must be at least 1")),
            v => Ok(v),
        }
    };
    let profiles: Vec<String> = lectern_pipelines::profiles::names()
        .into_iter()
        .map(str::to_owned)
        .collect();
    let mut pulls = lectern_ingest::pull::PullConfig {
        default_profile: upload_profile.to_owned(),
        profiles: profiles.clone(),
        ..Default::default()
    };
    if let Some((v, origin)) = raw.get("pull_allow") {
        pulls.allow = v
            .parse()
            .map_err(|m: String| ConfigError::new(origin.to_string(), m))?;
    }
    if let Some(v) = positive("pull_max_bytes", "a number of bytes")? {
        pulls.max_bytes = v;
    }
    if let Some(v) = positive("pull_timeout_secs", "a number of seconds")? {
        pulls.total_timeout = Duration::from_secs(v);
    }
    if let Some(v) = positive("pull_idle_secs", "a number of seconds")? {
        pulls.idle_timeout = Duration::from_secs(v);
    }
    let drops = match (raw.get("drop_prefix"), raw.get("drop_org")) {
        (None, None) => None,
        (Some(_), None) => {
            return Err(ConfigError::new(
                env_name("drop_org"),
                "required with LECTERN_DROP_PREFIX: the organisation (name or id) dropped recordings belong to",
            ))
        }
        (None, Some(_)) => {
            return Err(ConfigError::new(
                env_name("drop_prefix"),
                "required with LECTERN_DROP_ORG: the storage prefix to watch, e.g. `drops/live/`",
            ))
        }
        (Some((prefix, origin)), Some((org, _))) => {
            let trimmed = prefix.trim_end_matches('/');
            if trimmed.is_empty() || lectern_storage::validate_key(trimmed).is_err() {
                return Err(ConfigError::new(
                    origin.to_string(),
                    format!("{prefix:?} is not a storage prefix like `drops/live/`"),
                ));
            }
            let mut drops = lectern_ingest::drops::DropConfig::new(prefix, org);
            drops.profile = upload_profile.to_owned();
            if let Some((profile, origin)) = raw.get("drop_profile") {
                if !profiles.iter().any(|p| p == profile) {
                    return Err(ConfigError::new(
                        origin.to_string(),
                        format!(
                            "{profile:?} is not an encoding profile; expected one of {}",
                            profiles.join(", ")
                        ),
                    ));
                }
                drops.profile = profile.to_owned();
            }
            if let Some(v) = positive("drop_interval_secs", "a number of seconds")? {
                drops.interval = Duration::from_secs(v);
            }
            if let Some(v) = positive("drop_settle_secs", "a number of seconds")? {
                drops.settle = Duration::from_secs(v);
            }
            Some(drops)
        }
    };
    Ok((pulls, drops))
}

fn env_name(key: &str) -> &'static str {
    SETTINGS
        .iter()
        .find(|(k, _)| *k == key)
        .map(|(_, e)| *e)
        .expect("every key is in SETTINGS")
}

impl Config {
    /// Loads from the process environment and, if given (or named by
    /// `LECTERN_CONFIG`), a TOML file.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let env: BTreeMap<String, String> = std::env::vars().collect();
        Self::from_sources(file, &env)
    }

    /// Loading with an explicit environment, so tests need not mutate the
    /// process environment.
    pub fn from_sources(
        file: Option<&Path>,
        env: &BTreeMap<String, String>,
    ) -> Result<Self, ConfigError> {
        let mut raw = BTreeMap::new();
        let file = file
            .map(Path::to_path_buf)
            .or_else(|| env.get("LECTERN_CONFIG").map(PathBuf::from));
        if let Some(path) = file {
            read_file(&path, &mut raw)?;
        }
        for (key, var) in SETTINGS {
            if let Some(v) = env.get(*var) {
                raw.insert(*key, (v.clone(), Origin::Env(var)));
            }
        }
        let unknown: Vec<&String> = env
            .keys()
            .filter(|k| k.starts_with("LECTERN_") && !is_known_env(k))
            .collect();
        if let Some(var) = unknown.first() {
            return Err(ConfigError::new(
                var.as_str(),
                "unknown setting (see README.md, Configuration)",
            ));
        }
        Self::validate(Raw(raw))
    }

    fn validate(raw: Raw) -> Result<Self, ConfigError> {
        let http_addr = raw
            .parse::<SocketAddr>("http_addr", "an address like 127.0.0.1:8080")?
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080)));
        let data_dir = PathBuf::from(raw.str_or("data_dir", ".lectern"));
        let database = match raw.get("database_url") {
            None => DatabaseConfig::Embedded,
            Some((url, origin)) => {
                if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                    return Err(ConfigError::new(
                        origin.to_string(),
                        "must be a postgres:// or postgresql:// URL",
                    ));
                }
                DatabaseConfig::Url(url.to_string())
            }
        };
        let storage = match raw.get("storage") {
            None | Some(("fs", _)) => StorageConfig::Fs {
                root: raw
                    .get("fs_root")
                    .map_or_else(|| data_dir.join("storage"), |(v, _)| PathBuf::from(v)),
            },
            Some(("s3", _)) => {
                let why = "when LECTERN_STORAGE=s3";
                StorageConfig::S3(S3Config {
                    endpoint: raw.get("s3_endpoint").map(|(v, _)| v.to_string()),
                    region: raw.str_or("s3_region", "us-east-1"),
                    bucket: raw.required("s3_bucket", why)?,
                    access_key_id: raw.required("s3_access_key_id", why)?,
                    secret_access_key: raw.required("s3_secret_access_key", why)?,
                    path_style: raw
                        .parse::<bool>("s3_path_style", "true or false")?
                        .unwrap_or(false),
                })
            }
            Some((other, origin)) => {
                return Err(ConfigError::new(
                    origin.to_string(),
                    format!("{other:?} is not a storage backend; expected `fs` or `s3`"),
                ))
            }
        };
        let serve_workers = raw.parse::<usize>("serve_workers", "a whole number")?;
        let log_format = match raw.get("log_format") {
            None | Some(("text", _)) => LogFormat::Text,
            Some(("json", _)) => LogFormat::Json,
            Some((other, origin)) => {
                return Err(ConfigError::new(
                    origin.to_string(),
                    format!("{other:?} is not a log format; expected `text` or `json`"),
                ))
            }
        };
        let worker = WorkerSettings {
            concurrency: raw.parse::<usize>("worker_concurrency", "a whole number")?,
            lease_secs: raw
                .parse::<u64>("job_lease_secs", "a whole number of seconds")?
                .unwrap_or(60),
            drain_secs: raw
                .parse::<u64>("worker_drain_secs", "a whole number of seconds")?
                .unwrap_or(30),
            chunking: {
                // 30 minutes: shorter sources finish soon enough whole, and a
                // whole encode publishes its first segments progressively.
                let threshold = raw
                    .parse::<u64>("chunk_threshold_secs", "a whole number of seconds")?
                    .unwrap_or(1800);
                let chunk = raw
                    .parse::<u64>("chunk_secs", "a whole number of seconds")?
                    .unwrap_or(120);
                if chunk < 10 {
                    return Err(ConfigError::new(
                        "LECTERN_CHUNK_SECS",
                        "must be at least 10 seconds (each chunk is a job with its own start-up cost)",
                    ));
                }
                (threshold > 0).then_some(lectern_pipelines::stage::ChunkingConfig {
                    threshold_s: threshold as f64,
                    chunk_s: chunk as f64,
                })
            },
        };
        if worker.concurrency == Some(0) {
            return Err(ConfigError::new(
                "LECTERN_WORKER_CONCURRENCY",
                "must be at least 1",
            ));
        }
        if worker.lease_secs < 3 {
            return Err(ConfigError::new(
                "LECTERN_JOB_LEASE_SECS",
                "must be at least 3 seconds (the lease is renewed every third of it)",
            ));
        }
        let identity_keys = match (
            raw.get("field_keys"),
            raw.get("blind_index_key"),
            raw.get("token_key"),
        ) {
            (None, None, None) => None,
            (Some((f, _)), Some((b, _)), Some((t, _))) => {
                let keys = IdentityKeys {
                    field_keys: f.to_string(),
                    blind_index_key: b.to_string(),
                    token_key: t.to_string(),
                };
                keys.keyring()?;
                Some(keys)
            }
            _ => {
                let missing = ["field_keys", "blind_index_key", "token_key"]
                    .into_iter()
                    .find(|k| raw.get(k).is_none())
                    .expect("one of them is missing");
                return Err(ConfigError::new(
                    env_name(missing),
                    "required when any identity key is set (all three, or none in embedded mode)",
                ));
            }
        };
        let tls = match (raw.get("tls_cert"), raw.get("tls_key")) {
            (None, None) => None,
            (Some((cert, _)), Some((key, _))) => Some(TlsConfig {
                cert: PathBuf::from(cert),
                key: PathBuf::from(key),
            }),
            (None, Some(_)) => {
                return Err(ConfigError::new(
                    "LECTERN_TLS_CERT",
                    "required with LECTERN_TLS_KEY",
                ))
            }
            (Some(_), None) => {
                return Err(ConfigError::new(
                    "LECTERN_TLS_KEY",
                    "required with LECTERN_TLS_CERT",
                ))
            }
        };
        let trusted_proxies = match raw.get("trusted_proxies") {
            None => TrustedProxies::default(),
            Some((v, origin)) => {
                TrustedProxies::parse(v).map_err(|m| ConfigError::new(origin.to_string(), m))?
            }
        };
        let audit_retention_days = raw
            .parse::<u32>("audit_retention_days", "a number of days")?
            .unwrap_or(MIN_AUDIT_RETENTION_DAYS);
        if audit_retention_days < MIN_AUDIT_RETENTION_DAYS {
            return Err(ConfigError::new(
                env_name("audit_retention_days"),
                format!("must be at least {MIN_AUDIT_RETENTION_DAYS} days"),
            ));
        }
        let uploads = upload_settings(&raw)?;
        let (pulls, drops) = intake_settings(&raw, &uploads.profile)?;
        let webhook_allow = match raw.get("webhook_allow") {
            None => Default::default(),
            Some((v, origin)) => v
                .parse()
                .map_err(|m| ConfigError::new(origin.to_string(), m))?,
        };
        let player_dir =
            PathBuf::from(raw.str_or("player_dir", lectern_api::demo::DEFAULT_PLAYER_DIR));
        let playback = playback_settings(&raw)?;
        let progress = progress_settings(&raw)?;
        Ok(Config {
            http_addr,
            data_dir,
            database,
            storage,
            serve_workers,
            log_format,
            worker,
            identity_keys,
            tls,
            trusted_proxies,
            audit_retention_days,
            uploads,
            pulls,
            drops,
            webhook_allow,
            player_dir,
            playback,
            progress,
        })
    }

    /// The identity keys: as configured; in embedded mode generated once
    /// into `<data_dir>/keys.toml` (mode 0600) so a demo needs no setup;
    /// `None` with an external database and no keys configured.
    pub fn keyring(&self) -> Result<Option<Keyring>, ConfigError> {
        if let Some(keys) = &self.identity_keys {
            return keys.keyring().map(Some);
        }
        if !self.is_embedded() {
            return Ok(None);
        }
        let path = self.data_dir.join("keys.toml");
        let field = path.display().to_string();
        if !path.exists() {
            write_generated_keys(&path).map_err(|e| {
                ConfigError::new(&field, format!("cannot write generated keys: {e}"))
            })?;
        }
        let mut raw = BTreeMap::new();
        read_file(&path, &mut raw)?;
        let get = |key: &'static str| {
            raw.get(key)
                .map(|(v, _)| v.clone())
                .ok_or_else(|| ConfigError::new(format!("`{key}` in {field}"), "missing"))
        };
        IdentityKeys {
            field_keys: get("field_keys")?,
            blind_index_key: get("blind_index_key")?,
            token_key: get("token_key")?,
        }
        .keyring()
        .map(Some)
    }

    /// Plain HTTP is served only on loopback or behind a configured trusted
    /// proxy (which terminates TLS); anything else needs a certificate.
    pub fn check_transport(&self) -> Result<(), ConfigError> {
        if self.tls.is_none()
            && !self.http_addr.ip().is_loopback()
            && self.trusted_proxies.is_empty()
        {
            return Err(ConfigError::new(
                "LECTERN_HTTP_ADDR",
                format!(
                    "{} is not loopback: configure LECTERN_TLS_CERT and LECTERN_TLS_KEY, \
                     or LECTERN_TRUSTED_PROXIES for a TLS-terminating proxy",
                    self.http_addr
                ),
            ));
        }
        Ok(())
    }

    pub fn is_embedded(&self) -> bool {
        matches!(self.database, DatabaseConfig::Embedded)
    }

    /// Pipeline workers `serve` runs in-process: one in embedded mode, so a
    /// single process is a complete Lectern; none beside an external
    /// database, where `lectern worker` processes scale separately.
    pub fn effective_serve_workers(&self) -> usize {
        self.serve_workers
            .unwrap_or(if self.is_embedded() { 1 } else { 0 })
    }
}

/// The media origin's token settings (validated at load). No `Debug` of
/// the keys: anyone holding them can mint playback for every video.
#[derive(Clone)]
pub struct PlaybackSettings {
    /// `None`: generated into `<data_dir>/playback_keys.toml` in embedded
    /// mode; with an external database media then answers 503.
    keys: Option<String>,
    pub token_ttl: std::time::Duration,
    pub media_base_url: Option<String>,
    /// Memory for hot segments in the origin; 0 reads storage every time.
    pub origin_cache_bytes: u64,
}

impl fmt::Debug for PlaybackSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PlaybackSettings")
            .field("keys", &self.keys.as_ref().map(|_| "<redacted>"))
            .field("token_ttl", &self.token_ttl)
            .field("media_base_url", &self.media_base_url)
            .field("origin_cache_bytes", &self.origin_cache_bytes)
            .finish()
    }
}

fn playback_settings(raw: &Raw) -> Result<PlaybackSettings, ConfigError> {
    let keys = match raw.get("playback_keys") {
        None => None,
        Some((v, origin)) => {
            lectern_secrets::playback::parse_keys(v)
                .map_err(|m| ConfigError::new(origin.to_string(), m))?;
            Some(v.to_string())
        }
    };
    let token_ttl = match raw.get("playback_token_ttl") {
        None => lectern_delivery::DEFAULT_TOKEN_TTL,
        Some((v, origin)) => parse_duration(v)
            .filter(|d| d.as_secs() >= 60)
            .ok_or_else(|| {
                ConfigError::new(
                    origin.to_string(),
                    format!("{v:?} is not a duration of at least a minute, like 21600, 90m or 6h"),
                )
            })?,
    };
    let media_base_url = match raw.get("media_base_url") {
        None => None,
        Some((v, origin)) => {
            let ok = (v.starts_with("https://") || v.starts_with("http://"))
                && !v.contains(['?', '#', ' '])
                && v.len() > "https://".len();
            if !ok {
                return Err(ConfigError::new(
                    origin.to_string(),
                    format!("{v:?} is not a base URL like https://cdn.example.org"),
                ));
            }
            Some(v.trim_end_matches('/').to_string())
        }
    };
    let origin_cache_bytes = match raw.get("origin_cache_mib") {
        None => lectern_delivery::cache::DEFAULT_CAPACITY_BYTES,
        Some((v, origin)) => v
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|mib| *mib <= 1024 * 1024)
            .map(|mib| mib * 1024 * 1024)
            .ok_or_else(|| {
                ConfigError::new(
                    origin.to_string(),
                    format!("{v:?} is not a size in MiB, like 256 (0 turns the cache off)"),
                )
            })?,
    };
    Ok(PlaybackSettings {
        keys,
        token_ttl,
        media_base_url,
        origin_cache_bytes,
    })
}

/// `LECTERN_PROGRESS_*`: the heartbeat absorber (`memory`, or `redis` at
/// `REDIS_URL` so several API nodes share it) and the flush interval.
fn progress_settings(raw: &Raw) -> Result<lectern_learning::ProgressSettings, ConfigError> {
    use lectern_learning::{ProgressBackend, ProgressSettings};
    let backend = match raw.get("progress_backend") {
        None | Some(("memory", _)) => ProgressBackend::Memory,
        Some(("redis", _)) => {
            let url = raw.required("redis_url", "when LECTERN_PROGRESS_BACKEND=redis")?;
            if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
                return Err(ConfigError::new(
                    env_name("redis_url"),
                    "must be a redis:// or rediss:// URL",
                ));
            }
            ProgressBackend::Redis {
                url,
                prefix: raw.str_or("progress_redis_prefix", "lectern:progress:"),
            }
        }
        Some((other, origin)) => {
            return Err(ConfigError::new(
                origin.to_string(),
                format!("{other:?} is not a progress backend; expected `memory` or `redis`"),
            ))
        }
    };
    let mut progress = ProgressSettings {
        backend,
        ..ProgressSettings::default()
    };
    if let Some((v, origin)) = raw.get("progress_flush_interval") {
        let text = v.trim();
        let seconds = match text.strip_suffix("ms") {
            Some(ms) => ms.trim().parse::<f64>().ok().map(|ms| ms / 1000.0),
            None => text.trim_end_matches('s').trim().parse::<f64>().ok(),
        };
        progress.flush_interval = seconds
            .filter(|s| (0.1..=60.0).contains(s))
            .map(std::time::Duration::from_secs_f64)
            .ok_or_else(|| {
                ConfigError::new(
                    origin.to_string(),
                    format!("{v:?} is not an interval between 100ms and 60s, like 2, 2s or 500ms"),
                )
            })?;
    }
    progress.bench_noop = match raw.get("bench_noop") {
        None | Some(("0" | "false", _)) => false,
        Some(("1" | "true", _)) => true,
        Some((v, origin)) => {
            return Err(ConfigError::new(
                origin.to_string(),
                format!("{v:?} is not 1/true or 0/false"),
            ))
        }
    };
    Ok(progress)
}

/// Seconds, or a number with an `s`, `m` or `h` suffix.
fn parse_duration(text: &str) -> Option<std::time::Duration> {
    let text = text.trim();
    let (number, unit) = match text.char_indices().last()? {
        (i, 's') => (&text[..i], 1),
        (i, 'm') => (&text[..i], 60),
        (i, 'h') => (&text[..i], 3600),
        _ => (text, 1),
    };
    let n: u64 = number.trim().parse().ok()?;
    n.checked_mul(unit).map(std::time::Duration::from_secs)
}

impl Config {
    /// The origin's playback signer: configured keys; in embedded mode a key
    /// generated once into `<data_dir>/playback_keys.toml` (mode 0600) so
    /// tokens survive restarts; with an external database and no keys, none
    /// (media answers 503 `not_configured`, as identity does without keys).
    pub fn playback(&self) -> Result<lectern_delivery::Playback, ConfigError> {
        use lectern_delivery::Playback;
        use lectern_secrets::playback as token;
        let settings = &self.playback;
        let text = match &settings.keys {
            Some(k) => Some(k.clone()),
            None if self.is_embedded() => {
                let path = self.data_dir.join("playback_keys.toml");
                let field = path.display().to_string();
                if !path.exists() {
                    let key = token::PlaybackKey::generate("p1").to_setting();
                    write_private_file(
                        &path,
                        &format!(
                            "# Playback token key generated by Lectern for embedded mode.\n\
                             # Rotate by putting a new key first: \"p2:<base64>,p1:…\".\n\
                             playback_keys = \"{key}\"\n"
                        ),
                    )
                    .map_err(|e| {
                        ConfigError::new(&field, format!("cannot write the generated key: {e}"))
                    })?;
                }
                let mut raw = BTreeMap::new();
                read_file(&path, &mut raw)?;
                Some(
                    raw.get("playback_keys")
                        .map(|(v, _)| v.clone())
                        .ok_or_else(|| {
                            ConfigError::new(format!("`playback_keys` in {field}"), "missing")
                        })?,
                )
            }
            None => None,
        };
        let keys = match text {
            Some(t) => {
                token::parse_keys(&t).map_err(|m| ConfigError::new(token::PLAYBACK_KEYS_VAR, m))?
            }
            None => Vec::new(),
        };
        let cache = lectern_delivery::cache::MediaCache::new(
            settings.origin_cache_bytes,
            lectern_delivery::cache::DEFAULT_REVALIDATE_AFTER,
        );
        Ok(
            Playback::new(keys, settings.token_ttl, settings.media_base_url.clone())
                .with_media_cache(cache),
        )
    }
}

/// Creates `path` with `text`, mode 0600, unless it exists (then the
/// other writer's file wins, as with the identity keys).
fn write_private_file(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut file = match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => return Err(e),
    };
    file.write_all(text.as_bytes())?;
    file.sync_all()
}

fn is_known_env(var: &str) -> bool {
    // LECTERN_CONFIG names the file; LECTERN_LOG is the tracing filter;
    // LECTERN_PG_BIN points at PostgreSQL's binaries for embedded mode.
    matches!(var, "LECTERN_CONFIG" | "LECTERN_LOG" | "LECTERN_PG_BIN")
        || SETTINGS.iter().any(|(_, e)| *e == var)
        // Test-only knobs of the suites are not Lectern settings.
        || var.starts_with("LECTERN_TEST_")
}

fn read_file(
    path: &Path,
    raw: &mut BTreeMap<&'static str, (String, Origin)>,
) -> Result<(), ConfigError> {
    let field = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::new(&field, format!("cannot read the file: {e}")))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| ConfigError::new(&field, e.message().to_string()))?;
    for (key, value) in table {
        let Some((k, _)) = SETTINGS.iter().find(|(k, _)| *k == key) else {
            return Err(ConfigError::new(
                format!("`{key}` in {field}"),
                "unknown setting",
            ));
        };
        let text = match value {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            other => {
                return Err(ConfigError::new(
                    format!("`{key}` in {field}"),
                    format!(
                        "expected a string, number or boolean, got {}",
                        other.type_str()
                    ),
                ))
            }
        };
        raw.insert(
            k,
            (
                text,
                Origin::File {
                    path: path.to_path_buf(),
                    key: k,
                },
            ),
        );
    }
    Ok(())
}

fn write_generated_keys(path: &Path) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let (field_keys, blind_index_key, token_key) = Keyring::generate_settings();
    // create_new: two processes starting at once never overwrite each
    // other's keys (the loser reads the winner's file).
    let mut file = match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => return Err(e),
    };
    write!(
        file,
        "# Identity keys generated by Lectern for embedded mode. Losing this file\n\
         # loses every encrypted personal field. Rotate by putting a new key first:\n\
         # field_keys = \"k2:<base64 32 bytes>,k1:…\" then `lectern admin rotate-keys`.\n\
         field_keys = \"{field_keys}\"\nblind_index_key = \"{blind_index_key}\"\ntoken_key = \"{token_key}\"\n"
    )?;
    file.sync_all()
}

/// `postgres://user:secret@host/db` → `postgres://user:***@host/db`.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let creds = &url[scheme + 3..at];
            match creds.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..scheme + 3],
                    &creds[..colon],
                    &url[at..]
                ),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn playback_keys_are_validated_generated_once_and_kept_private() {
        let e = Config::from_sources(None, &env(&[("LECTERN_PLAYBACK_KEYS", "p1:c2hvcnQ=")]))
            .unwrap_err();
        assert_eq!(e.field, "LECTERN_PLAYBACK_KEYS");
        assert!(!e.to_string().contains("c2hvcnQ"), "{e}");
        let e =
            Config::from_sources(None, &env(&[("LECTERN_PLAYBACK_TOKEN_TTL", "5s")])).unwrap_err();
        assert_eq!(e.field, "LECTERN_PLAYBACK_TOKEN_TTL");
        let e = Config::from_sources(None, &env(&[("LECTERN_MEDIA_BASE_URL", "cdn.example.org")]))
            .unwrap_err();
        assert_eq!(e.field, "LECTERN_MEDIA_BASE_URL");

        let e =
            Config::from_sources(None, &env(&[("LECTERN_ORIGIN_CACHE_MIB", "1G")])).unwrap_err();
        assert_eq!(e.field, "LECTERN_ORIGIN_CACHE_MIB");
        let c = Config::from_sources(None, &env(&[("LECTERN_ORIGIN_CACHE_MIB", "0")])).unwrap();
        assert_eq!(c.playback.origin_cache_bytes, 0);
        let c = Config::from_sources(None, &env(&[("LECTERN_ORIGIN_CACHE_MIB", "64")])).unwrap();
        assert_eq!(c.playback.origin_cache_bytes, 64 << 20);

        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("state");
        let c = Config::from_sources(
            None,
            &env(&[
                ("LECTERN_DATA_DIR", data_dir.to_str().unwrap()),
                ("LECTERN_PLAYBACK_TOKEN_TTL", "90m"),
            ]),
        )
        .unwrap();
        assert_eq!(c.playback.token_ttl.as_secs(), 5400);
        let asset = uuid::Uuid::new_v4();
        let token = c.playback().unwrap().token(asset, None).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let path = data_dir.join("playback_keys.toml");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // A restart verifies what the last run signed.
        assert!(c.playback().unwrap().verify(&token, asset).is_ok());

        let key = lectern_secrets::PlaybackKey::generate("k9").to_setting();
        let c = Config::from_sources(
            None,
            &env(&[
                ("DATABASE_URL", "postgres://db/lectern"),
                ("LECTERN_PLAYBACK_KEYS", &key),
            ]),
        )
        .unwrap();
        assert!(!format!("{c:?}").contains(key.split_once(':').unwrap().1));
        assert!(c.playback().unwrap().has_keys());
        let external =
            Config::from_sources(None, &env(&[("DATABASE_URL", "postgres://db/lectern")])).unwrap();
        assert!(!external.playback().unwrap().has_keys());
    }

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_are_embedded_and_local_disk() {
        let c = Config::from_sources(None, &env(&[])).unwrap();
        assert_eq!(c.http_addr.to_string(), "127.0.0.1:8080");
        assert!(c.is_embedded());
        match c.storage {
            StorageConfig::Fs { root } => assert_eq!(root, PathBuf::from(".lectern/storage")),
            other => panic!("expected fs, got {other:?}"),
        }
    }

    #[test]
    fn bad_storage_names_the_variable() {
        let e = Config::from_sources(None, &env(&[("LECTERN_STORAGE", "s4")])).unwrap_err();
        assert_eq!(e.field, "LECTERN_STORAGE");
        assert!(e.to_string().contains("s4"), "{e}");
    }

    #[test]
    fn s3_requires_bucket_and_credentials() {
        let e = Config::from_sources(None, &env(&[("LECTERN_STORAGE", "s3")])).unwrap_err();
        assert_eq!(e.field, "LECTERN_S3_BUCKET");
    }

    #[test]
    fn unknown_lectern_variable_is_refused() {
        let e = Config::from_sources(None, &env(&[("LECTERN_HTTP_ADRR", "x")])).unwrap_err();
        assert_eq!(e.field, "LECTERN_HTTP_ADRR");
    }

    #[test]
    fn file_values_are_overridden_by_env_and_errors_name_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lectern.toml");
        std::fs::write(&path, "http_addr = \"0.0.0.0:9000\"\nserve_workers = 3\n").unwrap();
        let c = Config::from_sources(Some(&path), &env(&[])).unwrap();
        assert_eq!(c.http_addr.to_string(), "0.0.0.0:9000");
        assert_eq!(c.serve_workers, Some(3));
        let c = Config::from_sources(Some(&path), &env(&[("LECTERN_HTTP_ADDR", "127.0.0.1:1")]))
            .unwrap();
        assert_eq!(c.http_addr.to_string(), "127.0.0.1:1");

        std::fs::write(&path, "serve_workers = \"many\"\n").unwrap();
        let e = Config::from_sources(Some(&path), &env(&[])).unwrap_err();
        assert!(e.field.contains("serve_workers"), "{e}");
        std::fs::write(&path, "colour = \"blue\"\n").unwrap();
        let e = Config::from_sources(Some(&path), &env(&[])).unwrap_err();
        assert!(e.field.contains("colour"), "{e}");
    }

    #[test]
    fn secrets_are_not_in_debug_output() {
        let c = Config::from_sources(
            None,
            &env(&[
                ("DATABASE_URL", "postgres://app:hunter2@db/lectern"),
                ("LECTERN_STORAGE", "s3"),
                ("LECTERN_S3_BUCKET", "b"),
                ("LECTERN_S3_ACCESS_KEY_ID", "AK"),
                ("LECTERN_S3_SECRET_ACCESS_KEY", "topsecret"),
            ]),
        )
        .unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!shown.contains("topsecret"), "{shown}");

        let (field_keys, blind, token) = Keyring::generate_settings();
        let c = Config::from_sources(
            None,
            &env(&[
                ("LECTERN_FIELD_KEYS", &field_keys),
                ("LECTERN_BLIND_INDEX_KEY", &blind),
                ("LECTERN_TOKEN_KEY", &token),
            ]),
        )
        .unwrap();
        let shown = format!("{c:?}");
        let field_key = field_keys.split_once(':').unwrap().1;
        for secret in [field_key, &blind, &token] {
            assert!(!shown.contains(secret), "{shown}");
        }
    }

    #[test]
    fn identity_keys_are_all_or_none_and_validated() {
        let (field_keys, blind, _) = Keyring::generate_settings();
        let e = Config::from_sources(
            None,
            &env(&[
                ("LECTERN_FIELD_KEYS", &field_keys),
                ("LECTERN_BLIND_INDEX_KEY", &blind),
            ]),
        )
        .unwrap_err();
        assert_eq!(e.field, "LECTERN_TOKEN_KEY");
        let e = Config::from_sources(
            None,
            &env(&[
                ("LECTERN_FIELD_KEYS", "k1:bm90LWEta2V5"),
                ("LECTERN_BLIND_INDEX_KEY", &blind),
                ("LECTERN_TOKEN_KEY", &blind),
            ]),
        )
        .unwrap_err();
        assert_eq!(e.field, "LECTERN_FIELD_KEYS");
        assert!(!e.to_string().contains("bm90"), "{e}");
    }

    #[test]
    fn embedded_mode_generates_private_keys_once() {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("state");
        let c = Config::from_sources(
            None,
            &env(&[("LECTERN_DATA_DIR", data_dir.to_str().unwrap())]),
        )
        .unwrap();
        let first = c.keyring().unwrap().expect("embedded mode has keys");
        let path = data_dir.join("keys.toml");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let again = c.keyring().unwrap().unwrap();
        assert_eq!(first.email_index("a@b.c"), again.email_index("a@b.c"));
        let external =
            Config::from_sources(None, &env(&[("DATABASE_URL", "postgres://db/lectern")])).unwrap();
        assert!(external.keyring().unwrap().is_none());
    }

    #[test]
    fn plain_http_only_on_loopback_or_behind_a_trusted_proxy() {
        let c = Config::from_sources(None, &env(&[])).unwrap();
        assert!(c.check_transport().is_ok());
        let c = Config::from_sources(None, &env(&[("LECTERN_HTTP_ADDR", "0.0.0.0:8080")])).unwrap();
        assert_eq!(c.check_transport().unwrap_err().field, "LECTERN_HTTP_ADDR");
        let c = Config::from_sources(
            None,
            &env(&[
                ("LECTERN_HTTP_ADDR", "0.0.0.0:8080"),
                ("LECTERN_TRUSTED_PROXIES", "10.0.0.0/8"),
            ]),
        )
        .unwrap();
        assert!(c.check_transport().is_ok());
        let e = Config::from_sources(None, &env(&[("LECTERN_TLS_KEY", "k.pem")])).unwrap_err();
        assert_eq!(e.field, "LECTERN_TLS_CERT");
        let e = Config::from_sources(None, &env(&[("LECTERN_AUDIT_RETENTION_DAYS", "30")]))
            .unwrap_err();
        assert_eq!(e.field, "LECTERN_AUDIT_RETENTION_DAYS");
    }
}
