//! One typed configuration, loaded from an optional TOML file and the
//! environment (`LECTERN_*`, `DATABASE_URL`, `REDIS_URL`, and the standard
//! `OTEL_*` variables of trace export), validated once at
//! start-up.
//!
//! Every setting is declared once, in `config/settings.rs`: its field names
//! it (`http_addr` is `LECTERN_HTTP_ADDR`, and `http_addr` in the file), its
//! type reads it (`config/value.rs`), its doc comment is the README's
//! description. The environment wins over the file. Each value is read on
//! its own first, then [`Config::validate`] checks their combinations and
//! builds what the rest of the binary uses. A bad value is reported with
//! the exact variable or file key that holds it, and never echoes a secret.

#[macro_use]
mod load;
mod settings;
pub mod value;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use lectern_identity::TrustedProxies;
use lectern_secrets::Keyring;
use lectern_storage::S3Config;

use load::Values;
pub use settings::{Key, Settings, SETTINGS};
pub use value::LogFormat;
use value::{ProgressBackendKind, StorageBackend};

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

fn spec(key: Key) -> &'static load::Spec<Key> {
    SETTINGS
        .iter()
        .find(|s| s.key == key)
        .expect("every key is in SETTINGS")
}

/// The environment variable of a setting.
pub fn var(key: Key) -> String {
    spec(key).env()
}

/// A setting in a file, for errors about files Lectern writes itself.
fn file_key(key: Key, path: &Path) -> String {
    format!("`{}` in {}", spec(key).name, path.display())
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

/// `LECTERN_TLS_CERT` and `LECTERN_TLS_KEY`: PEM files.
#[derive(Debug, Clone)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Audit rows are kept at least this long (MLPS level 3 asks six months).
pub const MIN_AUDIT_RETENTION_DAYS: u32 = 180;

/// The validated configuration: every setting, and what their combinations
/// make.
#[derive(Debug, Clone)]
pub struct Config {
    /// Every setting as given or defaulted, each valid on its own.
    pub settings: Settings,
    pub database: DatabaseConfig,
    pub storage: StorageConfig,
    pub worker: WorkerSettings,
    pub tls: Option<TlsConfig>,
    pub trusted_proxies: TrustedProxies,
    /// Limits of partner uploads (tus at `/api/v1/uploads`).
    pub uploads: lectern_ingest::tus::TusConfig,
    /// URL pulls (`POST /api/v1/assets`): limits and SSRF allow-list.
    pub pulls: lectern_ingest::pull::PullConfig,
    /// The recording-drop watcher, when `LECTERN_DROP_PREFIX` is set.
    pub drops: Option<lectern_ingest::drops::DropConfig>,
    /// Private networks webhooks may nevertheless post to.
    pub webhook_allow: lectern_egress::AllowList,
    pub webhook_endpoint_concurrency: u32,
    pub webhook_max_in_flight: usize,
    /// Argon2 evaluations one node runs at once.
    pub password_hash_concurrency: usize,
    /// Where security alerts are also sent (RFC 5424 over UDP).
    pub security_syslog: Option<std::net::SocketAddr>,
    /// Where progress heartbeats are absorbed and how often they are flushed.
    pub progress: lectern_learning::ProgressSettings,
    /// How notices leave Lectern and how the dispatcher paces itself.
    pub notify: NotifyConfig,
    /// Where the links in notices point (`LECTERN_APP_URL`).
    pub app_url: String,
}

/// Notification transports and pacing (`LECTERN_SMTP_*`, `LECTERN_SMS_*`,
/// `LECTERN_NOTIFY_*`).
#[derive(Debug, Clone)]
pub struct NotifyConfig {
    /// `None`: the development outbox.
    pub smtp: Option<lectern_notify::transport::smtp::SmtpSettings>,
    pub sms: Option<(
        crate::config::value::SmsProviderKind,
        lectern_notify::transport::SmsProviderSettings,
    )>,
    pub dispatch: lectern_notify::DispatchSettings,
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

impl Config {
    /// Loads from the process environment and, if given (or named by
    /// `LECTERN_CONFIG`), a TOML file.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        // Lossy: a variable that is not Unicode is still refused by name.
        let env: BTreeMap<String, String> = std::env::vars_os()
            .map(|(k, v)| {
                (
                    k.to_string_lossy().into_owned(),
                    v.to_string_lossy().into_owned(),
                )
            })
            .collect();
        Self::from_sources(file, &env)
    }

    /// Loading with an explicit environment, so tests need not mutate the
    /// process environment.
    pub fn from_sources(
        file: Option<&Path>,
        env: &BTreeMap<String, String>,
    ) -> Result<Self, ConfigError> {
        let values = Values::gather(SETTINGS, file, env)?;
        let settings = Settings::read(&values)?;
        Self::validate(settings, &values)
    }

    /// Checks what no single setting can: required companions, lower
    /// bounds, keys that must parse together. Errors name where the value
    /// came from, or the variable to set.
    fn validate(s: Settings, values: &Values<Key>) -> Result<Self, ConfigError> {
        use std::time::Duration as D;
        let fail = |key: Key, message: &str| ConfigError::new(values.at(key), message);
        let ensure =
            |ok: bool, key: Key, message: &str| if ok { Ok(()) } else { Err(fail(key, message)) };
        let required = |key: Key, value: &Option<String>, why: &str| match value {
            Some(v) if !v.is_empty() => Ok(v.clone()),
            _ => Err(fail(key, &format!("required {why}"))),
        };

        let database = match &s.database_url {
            None => DatabaseConfig::Embedded,
            Some(url) => DatabaseConfig::Url(url.expose().to_owned()),
        };
        let storage = match s.storage {
            StorageBackend::Fs => StorageConfig::Fs {
                root: s
                    .fs_root
                    .clone()
                    .unwrap_or_else(|| s.data_dir.join("storage")),
            },
            StorageBackend::S3 => {
                let why = "when LECTERN_STORAGE=s3";
                let secret = s
                    .s3_secret_access_key
                    .as_ref()
                    .map(|k| k.expose().to_owned());
                StorageConfig::S3(S3Config {
                    endpoint: s.s3_endpoint.clone(),
                    region: s.s3_region.clone(),
                    bucket: required(Key::s3_bucket, &s.s3_bucket, why)?,
                    access_key_id: required(Key::s3_access_key_id, &s.s3_access_key_id, why)?,
                    secret_access_key: required(Key::s3_secret_access_key, &secret, why)?,
                    path_style: s.s3_path_style,
                })
            }
        };
        ensure(
            s.http_header_timeout >= D::from_secs(1),
            Key::http_header_timeout,
            "must be at least a second",
        )?;
        ensure(
            s.worker_concurrency != Some(0),
            Key::worker_concurrency,
            "must be at least 1",
        )?;
        ensure(
            s.job_lease_secs >= 3,
            Key::job_lease_secs,
            "must be at least 3 seconds (the lease is renewed every third of it)",
        )?;
        ensure(
            s.chunk_secs >= 10,
            Key::chunk_secs,
            "must be at least 10 seconds (each chunk is a job with its own start-up cost)",
        )?;
        let worker = WorkerSettings {
            concurrency: s.worker_concurrency,
            lease_secs: s.job_lease_secs,
            drain_secs: s.worker_drain_secs,
            chunking: (s.chunk_threshold_secs > 0).then_some(
                lectern_pipelines::stage::ChunkingConfig {
                    threshold_s: s.chunk_threshold_secs as f64,
                    chunk_s: s.chunk_secs as f64,
                },
            ),
        };

        let identity = [
            (Key::field_keys, &s.field_keys),
            (Key::blind_index_key, &s.blind_index_key),
            (Key::token_key, &s.token_key),
        ];
        if identity.iter().any(|(_, v)| v.is_some()) {
            if let Some((missing, _)) = identity.iter().find(|(_, v)| v.is_none()) {
                return Err(fail(
                    *missing,
                    "required when any identity key is set (all three, or none in embedded mode)",
                ));
            }
            identity_keyring(&s)?;
        }

        let tls = match (&s.tls_cert, &s.tls_key) {
            (None, None) => None,
            (Some(cert), Some(key)) => Some(TlsConfig {
                cert: cert.clone(),
                key: key.clone(),
            }),
            (None, Some(_)) => return Err(fail(Key::tls_cert, "required with LECTERN_TLS_KEY")),
            (Some(_), None) => return Err(fail(Key::tls_key, "required with LECTERN_TLS_CERT")),
        };
        ensure(
            s.password_hash_concurrency != Some(0),
            Key::password_hash_concurrency,
            "must be at least 1",
        )?;
        ensure(
            s.audit_retention_days >= MIN_AUDIT_RETENTION_DAYS,
            Key::audit_retention_days,
            &format!("must be at least {MIN_AUDIT_RETENTION_DAYS} days"),
        )?;

        for (key, v) in [
            (Key::upload_max_bytes, s.upload_max_bytes.0),
            (Key::upload_ttl_secs, s.upload_ttl_secs),
            (Key::upload_org_max_bytes, s.upload_org_max_bytes.0),
            (
                Key::upload_org_max_concurrent,
                u64::from(s.upload_org_max_concurrent),
            ),
            (Key::pull_max_bytes, s.pull_max_bytes.0),
            (Key::pull_timeout_secs, s.pull_timeout_secs),
            (Key::pull_idle_secs, s.pull_idle_secs),
            (Key::drop_interval_secs, s.drop_interval_secs),
            (Key::drop_settle_secs, s.drop_settle_secs),
            (
                Key::pull_org_max_concurrent,
                u64::from(s.pull_org_max_concurrent),
            ),
            (Key::pull_org_max_bytes, s.pull_org_max_bytes.0),
            (Key::upload_min_transfer, s.upload_min_transfer.0),
            (
                Key::upload_min_transfer_window,
                s.upload_min_transfer_window.as_secs(),
            ),
            (Key::upload_lease, s.upload_lease.as_secs()),
            (
                Key::webhook_endpoint_concurrency,
                u64::from(s.webhook_endpoint_concurrency),
            ),
            (
                Key::webhook_max_in_flight,
                u64::from(s.webhook_max_in_flight),
            ),
        ] {
            ensure(v >= 1, key, "must be at least 1")?;
        }
        let upload_profile = s.upload_profile.0.clone();
        let uploads = lectern_ingest::tus::TusConfig {
            max_upload_size: s.upload_max_bytes.0,
            upload_ttl: D::from_secs(s.upload_ttl_secs),
            quota: lectern_ingest::tus::OrganisationQuota {
                max_bytes_in_flight: s.upload_org_max_bytes.0,
                max_concurrent_uploads: s.upload_org_max_concurrent,
            },
            profile: upload_profile.clone(),
            min_transfer: lectern_ingest::tus::TransferFloor {
                bytes: s.upload_min_transfer.0,
                window: s.upload_min_transfer_window,
            },
            lease: s.upload_lease,
        };
        let pulls = lectern_ingest::pull::PullConfig {
            max_bytes: s.pull_max_bytes.0,
            total_timeout: D::from_secs(s.pull_timeout_secs),
            idle_timeout: D::from_secs(s.pull_idle_secs),
            allow: s.pull_allow.clone().unwrap_or_default(),
            default_profile: upload_profile.clone(),
            profiles: lectern_pipelines::profiles::names()
                .into_iter()
                .map(str::to_owned)
                .collect(),
            quota: lectern_ingest::pull::PullQuota {
                max_concurrent_pulls: s.pull_org_max_concurrent,
                max_bytes_in_flight: s.pull_org_max_bytes.0,
            },
            ..Default::default()
        };
        let drops = match (&s.drop_prefix, &s.drop_org) {
            (None, None) => None,
            (Some(_), None) => {
                return Err(fail(
                    Key::drop_org,
                    "required with LECTERN_DROP_PREFIX: the organisation (name or id) dropped recordings belong to",
                ))
            }
            (None, Some(_)) => {
                return Err(fail(
                    Key::drop_prefix,
                    "required with LECTERN_DROP_ORG: the storage prefix to watch, e.g. `drops/live/`",
                ))
            }
            (Some(prefix), Some(org)) => {
                let mut drops = lectern_ingest::drops::DropConfig::new(&prefix.0, org);
                drops.profile = s
                    .drop_profile
                    .as_ref()
                    .map_or(upload_profile.clone(), |p| p.0.clone());
                drops.interval = D::from_secs(s.drop_interval_secs);
                drops.settle = D::from_secs(s.drop_settle_secs);
                Some(drops)
            }
        };

        if let Some(keys) = &s.playback_keys {
            lectern_secrets::playback::parse_keys(keys.expose())
                .map_err(|m| fail(Key::playback_keys, &m))?;
        }
        ensure(
            s.playback_token_ttl >= D::from_secs(60),
            Key::playback_token_ttl,
            "must be at least a minute, like 21600, 90m or 6h",
        )?;
        ensure(
            s.origin_cache_mib <= 1024 * 1024,
            Key::origin_cache_mib,
            "must be at most 1048576 (1 TiB); 0 turns the cache off",
        )?;

        let backend = match s.progress_backend {
            ProgressBackendKind::Memory => lectern_learning::ProgressBackend::Memory,
            ProgressBackendKind::Redis => {
                let url = s.redis_url.as_ref().map(|u| u.expose().to_owned());
                let url = required(Key::redis_url, &url, "when LECTERN_PROGRESS_BACKEND=redis")?;
                ensure(
                    url.starts_with("redis://") || url.starts_with("rediss://"),
                    Key::redis_url,
                    "must be a redis:// or rediss:// URL",
                )?;
                lectern_learning::ProgressBackend::Redis {
                    url,
                    prefix: s.progress_redis_prefix.clone(),
                }
            }
        };
        ensure(
            (D::from_secs(1)..=D::from_secs(3600)).contains(&s.audit_checkpoint_interval),
            Key::audit_checkpoint_interval,
            "must be between 1s and 1h, like 60s or 5m",
        )?;
        ensure(
            (D::from_millis(100)..=D::from_secs(60)).contains(&s.progress_flush_interval),
            Key::progress_flush_interval,
            "must be between 100ms and 60s, like 2, 2s or 500ms",
        )?;
        let progress = lectern_learning::ProgressSettings {
            backend,
            flush_interval: s.progress_flush_interval,
            bench_noop: s.bench_noop,
        };

        let notify = notify_config(&s, &fail, &required)?;
        let app_url = app_url(&s);

        Ok(Config {
            notify,
            app_url,
            database,
            storage,
            worker,
            tls,
            trusted_proxies: s.trusted_proxies.clone().unwrap_or_default(),
            uploads,
            pulls,
            drops,
            webhook_allow: s.webhook_allow.clone().unwrap_or_default(),
            webhook_endpoint_concurrency: s.webhook_endpoint_concurrency,
            webhook_max_in_flight: s.webhook_max_in_flight as usize,
            password_hash_concurrency: s
                .password_hash_concurrency
                .unwrap_or_else(lectern_identity::password::default_limit),
            security_syslog: s.security_syslog,
            progress,
            settings: s,
        })
    }

    /// The identity keys: as configured; in embedded mode generated once
    /// into `<data_dir>/keys.toml` (mode 0600) so a demo needs no setup;
    /// `None` with an external database and no keys configured.
    pub fn keyring(&self) -> Result<Option<Keyring>, ConfigError> {
        if self.settings.field_keys.is_some() {
            return identity_keyring(&self.settings).map(Some);
        }
        if !self.is_embedded() {
            return Ok(None);
        }
        let path = self.settings.data_dir.join("keys.toml");
        if !path.exists() {
            write_generated_keys(&path).map_err(|e| {
                ConfigError::new(
                    path.display().to_string(),
                    format!("cannot write generated keys: {e}"),
                )
            })?;
        }
        let file = Values::from_file(SETTINGS, &path)?;
        let get = |key: Key| {
            file.text(key)
                .ok_or_else(|| ConfigError::new(file_key(key, &path), "missing"))
        };
        Keyring::parse(
            get(Key::field_keys)?,
            get(Key::blind_index_key)?,
            get(Key::token_key)?,
        )
        .map_err(|e| ConfigError::new(e.variable, e.message))
        .map(Some)
    }

    /// Plain HTTP is served only on loopback or behind a configured trusted
    /// proxy (which terminates TLS); anything else needs a certificate.
    pub fn check_transport(&self) -> Result<(), ConfigError> {
        let addr = self.settings.http_addr;
        if self.tls.is_none() && !addr.ip().is_loopback() && self.trusted_proxies.is_empty() {
            return Err(ConfigError::new(
                var(Key::http_addr),
                format!(
                    "{addr} is not loopback: configure LECTERN_TLS_CERT and LECTERN_TLS_KEY, \
                     or LECTERN_TRUSTED_PROXIES for a TLS-terminating proxy"
                ),
            ));
        }
        Ok(())
    }

    /// Without SMTP, notices (one-time codes, invitations) stay in the
    /// development outbox table: fine for a private embedded database, not
    /// for a shared one unless an operator says this deployment is
    /// development.
    pub fn check_dev_outbox(&self) -> Result<(), ConfigError> {
        if self.is_embedded() || self.settings.dev_outbox || self.notify.smtp.is_some() {
            return Ok(());
        }
        Err(ConfigError::new(
            var(Key::dev_outbox),
            "with DATABASE_URL, one-time codes and invitations would be kept in the \
             database's `outbox` table, which is for development only: configure \
             LECTERN_SMTP_HOST, or set LECTERN_DEV_OUTBOX=true if this deployment is one",
        ))
    }

    /// Plain `http` to identity providers and LDAP without TLS carry
    /// passwords and tokens in the clear: only for a deployment that is
    /// development by its own account (embedded database, or
    /// `LECTERN_DEV_OUTBOX=true`), never beside a shared database.
    pub fn check_sign_in_plain(&self) -> Result<(), ConfigError> {
        if !self.settings.sign_in_allow_plain || self.is_embedded() || self.settings.dev_outbox {
            return Ok(());
        }
        Err(ConfigError::new(
            var(Key::sign_in_allow_plain),
            "plain http to identity providers and LDAP without TLS are for development only, \
             and this deployment uses DATABASE_URL: use https and LDAPS/StartTLS (with \
             LECTERN_LDAP_CA_FILE for your own CA), or set LECTERN_DEV_OUTBOX=true if this \
             deployment is development",
        ))
    }

    pub fn is_embedded(&self) -> bool {
        matches!(self.database, DatabaseConfig::Embedded)
    }

    /// Pipeline workers `serve` runs in-process: one in embedded mode, so a
    /// single process is a complete Lectern; none beside an external
    /// database, where `lectern worker` processes scale separately.
    pub fn effective_serve_workers(&self) -> usize {
        self.settings
            .serve_workers
            .unwrap_or(if self.is_embedded() { 1 } else { 0 })
    }

    /// The origin's playback signer: configured keys; in embedded mode a key
    /// generated once into `<data_dir>/playback_keys.toml` (mode 0600) so
    /// tokens survive restarts; with an external database and no keys, none
    /// (media answers 503 `not_configured`, as identity does without keys).
    pub fn playback(&self) -> Result<lectern_delivery::Playback, ConfigError> {
        use lectern_delivery::Playback;
        use lectern_secrets::playback as token;
        let s = &self.settings;
        let text = match &s.playback_keys {
            Some(k) => Some(k.expose().to_owned()),
            None if self.is_embedded() => {
                let path = s.data_dir.join("playback_keys.toml");
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
                        ConfigError::new(
                            path.display().to_string(),
                            format!("cannot write the generated key: {e}"),
                        )
                    })?;
                }
                let file = Values::from_file(SETTINGS, &path)?;
                Some(
                    file.text(Key::playback_keys)
                        .ok_or_else(|| {
                            ConfigError::new(file_key(Key::playback_keys, &path), "missing")
                        })?
                        .to_owned(),
                )
            }
            None => None,
        };
        let keys = match text {
            Some(t) => {
                token::parse_keys(&t).map_err(|m| ConfigError::new(var(Key::playback_keys), m))?
            }
            None => Vec::new(),
        };
        let cache = lectern_delivery::cache::MediaCache::new(
            s.origin_cache_mib << 20,
            lectern_delivery::cache::DEFAULT_REVALIDATE_AFTER,
        );
        Ok(Playback::new(
            keys,
            s.playback_token_ttl,
            s.media_base_url.as_ref().map(|u| u.0.clone()),
        )
        .with_media_cache(cache))
    }
}

fn identity_keyring(s: &Settings) -> Result<Keyring, ConfigError> {
    let text = |k: &Option<value::Secret>| k.as_ref().map_or("", |k| k.expose()).to_owned();
    Keyring::parse(
        &text(&s.field_keys),
        &text(&s.blind_index_key),
        &text(&s.token_key),
    )
    .map_err(|e| ConfigError::new(e.variable, e.message))
}

/// Creates `path` with `text`, mode 0600, unless it exists (then the
/// other writer's file wins: two processes starting at once never
/// overwrite each other's keys).
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

fn write_generated_keys(path: &Path) -> std::io::Result<()> {
    let (field_keys, blind_index_key, token_key) = Keyring::generate_settings();
    write_private_file(
        path,
        &format!(
            "# Identity keys generated by Lectern for embedded mode. Losing this file\n\
             # loses every encrypted personal field. Rotate by putting a new key first:\n\
             # field_keys = \"k2:<base64 32 bytes>,k1:…\" then `lectern admin rotate-keys`.\n\
             field_keys = \"{field_keys}\"\nblind_index_key = \"{blind_index_key}\"\ntoken_key = \"{token_key}\"\n"
        ),
    )
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

/// The notification settings, checked together: SMTP's port and
/// sender, an SMS provider's companions and templates, the dispatcher's
/// bounds.
/// `validate`'s check that a companion setting is present.
type Required<'a> = &'a dyn Fn(Key, &Option<String>, &str) -> Result<String, ConfigError>;

/// `LECTERN_APP_URL`, else the server's own address.
fn app_url(s: &Settings) -> String {
    s.app_url
        .as_ref()
        .map_or_else(|| format!("http://{}", s.http_addr), |u| u.0.clone())
}

fn notify_config(
    s: &Settings,
    fail: &dyn Fn(Key, &str) -> ConfigError,
    required: Required<'_>,
) -> Result<NotifyConfig, ConfigError> {
    use crate::config::value::{SmsProviderKind, SmtpTlsMode};
    use lectern_notify::transport::smtp::{SmtpSettings, SmtpTls};
    use std::time::Duration as D;
    let smtp = match &s.smtp_host {
        None => None,
        Some(host) => {
            let tls = match s.smtp_tls {
                SmtpTlsMode::StartTls => SmtpTls::StartTls,
                SmtpTlsMode::Tls => SmtpTls::Implicit,
                SmtpTlsMode::None => SmtpTls::None,
            };
            let settings = SmtpSettings {
                host: host.clone(),
                port: s.smtp_port,
                tls,
                user: s.smtp_user.clone(),
                password: s.smtp_password.as_ref().map(|p| p.expose().to_owned()),
                from: s.smtp_from.clone(),
                timeout: D::from_secs(30),
            };
            if s.smtp_from
                .parse::<lectern_notify::transport::smtp::Mailbox>()
                .is_err()
            {
                return Err(fail(
                    Key::smtp_from,
                    "is not a sender like `Lectern <no-reply@example.org>`",
                ));
            }
            Some(settings)
        }
    };
    let sms = match s.sms_provider {
        None => None,
        Some(kind) => {
            let why = "with LECTERN_SMS_PROVIDER";
            let secret = s
                .sms_access_key_secret
                .as_ref()
                .map(|k| k.expose().to_owned());
            let templates = lectern_notify::transport::SmsProviderSettings::parse_templates(
                s.sms_templates.as_deref().unwrap_or(""),
            )
            .map_err(|m| fail(Key::sms_templates, &m))?;
            let app_id = match kind {
                SmsProviderKind::Tencent => Some(required(
                    Key::sms_app_id,
                    &s.sms_app_id,
                    "with LECTERN_SMS_PROVIDER=tencent",
                )?),
                SmsProviderKind::Aliyun => s.sms_app_id.clone(),
            };
            Some((
                kind,
                lectern_notify::transport::SmsProviderSettings {
                    access_key_id: required(Key::sms_access_key_id, &s.sms_access_key_id, why)?,
                    access_key_secret: required(Key::sms_access_key_secret, &secret, why)?,
                    sign_name: required(Key::sms_sign_name, &s.sms_sign_name, why)?,
                    app_id,
                    region: s.sms_region.clone(),
                    endpoint: s.sms_endpoint.as_ref().map(|u| u.0.clone()),
                    templates,
                    timeout: D::from_secs(15),
                },
            ))
        }
    };
    for (key, v) in [
        (Key::notify_max_attempts, s.notify_max_attempts),
        (Key::notify_rate_per_hour, s.notify_rate_per_hour),
        (
            Key::notify_secret_rate_per_hour,
            s.notify_secret_rate_per_hour,
        ),
        (Key::phone_code_failures, s.phone_code_failures),
        (Key::phone_code_sends, s.phone_code_sends),
    ] {
        if v < 1 {
            return Err(fail(key, "must be at least 1"));
        }
    }
    if s.notify_backoff < D::from_millis(10) || s.notify_max_backoff < s.notify_backoff {
        return Err(fail(
            Key::notify_backoff,
            "must be at least 10ms and at most LECTERN_NOTIFY_MAX_BACKOFF",
        ));
    }
    if s.phone_code_ttl < D::from_secs(30) || s.phone_code_ttl > D::from_secs(3600) {
        return Err(fail(
            Key::phone_code_ttl,
            "must be between 30s and 1h, like 5m",
        ));
    }
    if s.sign_in_lockout < D::from_secs(1) {
        return Err(fail(Key::sign_in_lockout, "must be at least 1s, like 15m"));
    }
    if s.invitation_ttl < D::from_secs(3600) {
        return Err(fail(
            Key::invitation_ttl,
            "must be at least an hour, like 72h",
        ));
    }
    Ok(NotifyConfig {
        smtp,
        sms,
        dispatch: lectern_notify::DispatchSettings {
            max_attempts: i32::try_from(s.notify_max_attempts).unwrap_or(i32::MAX),
            backoff: s.notify_backoff,
            max_backoff: s.notify_max_backoff,
            rate: lectern_notify::RateLimits {
                per_hour: i64::from(s.notify_rate_per_hour),
                secret_per_hour: i64::from(s.notify_secret_rate_per_hour),
            },
            app_url: app_url(s),
            ..lectern_notify::DispatchSettings::default()
        },
    })
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
        assert_eq!(c.settings.origin_cache_mib, 0);
        let c = Config::from_sources(None, &env(&[("LECTERN_ORIGIN_CACHE_MIB", "64")])).unwrap();
        assert_eq!(c.settings.origin_cache_mib, 64);

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
        assert_eq!(c.settings.playback_token_ttl.as_secs(), 5400);
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
        assert_eq!(c.settings.http_addr.to_string(), "127.0.0.1:8080");
        assert!(c.is_embedded());
        match c.storage {
            StorageConfig::Fs { root } => assert_eq!(root, PathBuf::from(".lectern/storage")),
            other => panic!("expected fs, got {other:?}"),
        }
    }

    #[test]
    fn password_hashing_runs_one_per_core_unless_configured() {
        let c = Config::from_sources(None, &env(&[])).unwrap();
        assert_eq!(
            c.password_hash_concurrency,
            lectern_identity::password::default_limit()
        );
        let c = Config::from_sources(None, &env(&[("LECTERN_PASSWORD_HASH_CONCURRENCY", "3")]))
            .unwrap();
        assert_eq!(c.password_hash_concurrency, 3);
        let e = Config::from_sources(None, &env(&[("LECTERN_PASSWORD_HASH_CONCURRENCY", "0")]))
            .unwrap_err();
        assert_eq!(e.field, "LECTERN_PASSWORD_HASH_CONCURRENCY");
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
        assert_eq!(c.settings.http_addr.to_string(), "0.0.0.0:9000");
        assert_eq!(c.settings.serve_workers, Some(3));
        let c = Config::from_sources(Some(&path), &env(&[("LECTERN_HTTP_ADDR", "127.0.0.1:1")]))
            .unwrap();
        assert_eq!(c.settings.http_addr.to_string(), "127.0.0.1:1");

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

    #[test]
    fn every_default_is_valid_and_agrees_with_the_libraries() {
        let c = Config::from_sources(None, &env(&[])).unwrap();
        let tus = lectern_ingest::tus::TusConfig::default();
        assert_eq!(c.uploads.max_upload_size, tus.max_upload_size);
        assert_eq!(c.uploads.upload_ttl, tus.upload_ttl);
        assert_eq!(
            c.uploads.quota.max_bytes_in_flight,
            tus.quota.max_bytes_in_flight
        );
        assert_eq!(
            c.uploads.quota.max_concurrent_uploads,
            tus.quota.max_concurrent_uploads
        );
        assert_eq!(c.uploads.profile, tus.profile);
        let pulls = lectern_ingest::pull::PullConfig::default();
        assert_eq!(c.pulls.max_bytes, pulls.max_bytes);
        assert_eq!(c.pulls.total_timeout, pulls.total_timeout);
        assert_eq!(c.pulls.idle_timeout, pulls.idle_timeout);
        let drops = lectern_ingest::drops::DropConfig::new("p/", "o");
        assert_eq!(c.settings.drop_interval_secs, drops.interval.as_secs());
        assert_eq!(c.settings.drop_settle_secs, drops.settle.as_secs());
        assert_eq!(
            c.settings.playback_token_ttl,
            lectern_delivery::DEFAULT_TOKEN_TTL
        );
        assert_eq!(
            c.settings.origin_cache_mib << 20,
            lectern_delivery::cache::DEFAULT_CAPACITY_BYTES
        );
        assert_eq!(
            c.progress.flush_interval,
            lectern_learning::ProgressSettings::default().flush_interval
        );
        assert_eq!(
            c.settings.player_dir,
            PathBuf::from(lectern_api::demo::DEFAULT_PLAYER_DIR)
        );
    }

    #[test]
    fn trace_export_reads_the_standard_variables() {
        let c = Config::from_sources(None, &env(&[])).unwrap();
        assert!(
            c.settings.otel_exporter_otlp_endpoint.is_none(),
            "off by default"
        );
        let c = Config::from_sources(
            None,
            &env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/"),
                ("OTEL_SERVICE_NAME", "lectern-eu"),
                ("OTEL_TRACES_SAMPLER_ARG", "0.1"),
            ]),
        )
        .unwrap();
        let base = c.settings.otel_exporter_otlp_endpoint.as_ref().unwrap();
        assert_eq!(base.0, "http://collector:4318");
        assert_eq!(c.settings.otel_service_name, "lectern-eu");
        assert_eq!(c.settings.otel_traces_sampler_arg.0, 0.1);
        let e = Config::from_sources(None, &env(&[("OTEL_TRACES_SAMPLER_ARG", "10")])).unwrap_err();
        assert_eq!(e.field, "OTEL_TRACES_SAMPLER_ARG");
    }

    #[test]
    fn names_derive_from_fields() {
        let mut seen = std::collections::BTreeSet::new();
        for spec in SETTINGS {
            let var = spec.env();
            assert!(seen.insert(var.clone()), "{var} twice");
            let derived = format!("LECTERN_{}", spec.name.to_ascii_uppercase());
            // The variables other tools share keep their usual names: the
            // two connection URLs, and OpenTelemetry's standard ones (whose
            // field is the variable in lower case).
            assert!(
                var == derived
                    || ["DATABASE_URL", "REDIS_URL"].contains(&var.as_str())
                    || (var.starts_with("OTEL_") && var.to_ascii_lowercase() == spec.name),
                "{var}"
            );
            assert!(!spec.description().is_empty(), "{var} has no description");
        }
    }

    /// The README's configuration table is generated from `SETTINGS`;
    /// `UPDATE_README=1` rewrites it.
    #[test]
    fn readme_lists_every_setting() {
        const BEGIN: &str = "<!-- settings: generated from src/config/settings.rs \
                             (UPDATE_README=1 cargo nextest run -p lectern readme) -->\n";
        const END: &str = "<!-- end of settings -->";
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md");
        let readme = std::fs::read_to_string(&path).unwrap();
        let start = readme
            .find(BEGIN)
            .expect("README.md has the settings markers")
            + BEGIN.len();
        let end = start
            + readme[start..]
                .find(END)
                .expect("README.md has the end marker");
        let table = load::readme_table(SETTINGS);
        if readme[start..end] == table {
            return;
        }
        if std::env::var_os("UPDATE_README").is_some() {
            let updated = format!("{}{table}{}", &readme[..start], &readme[end..]);
            std::fs::write(&path, updated).unwrap();
            return;
        }
        panic!(
            "README.md's settings table differs from src/config/settings.rs; \
             run `UPDATE_README=1 cargo nextest run -p lectern readme`. Expected:\n{table}"
        );
    }

    #[test]
    fn dev_outbox_is_refused_with_an_external_database_unless_configured() {
        let external = ("DATABASE_URL", "postgres://db/lectern");
        let c = Config::from_sources(None, &env(&[external])).unwrap();
        assert_eq!(
            c.check_dev_outbox().unwrap_err().field,
            "LECTERN_DEV_OUTBOX"
        );
        let c =
            Config::from_sources(None, &env(&[external, ("LECTERN_DEV_OUTBOX", "true")])).unwrap();
        assert!(c.check_dev_outbox().is_ok());
        let embedded = Config::from_sources(None, &env(&[])).unwrap();
        assert!(!embedded.settings.dev_outbox);
        assert!(embedded.check_dev_outbox().is_ok());
        let e =
            Config::from_sources(None, &env(&[("LECTERN_DEV_OUTBOX", "yes please")])).unwrap_err();
        assert_eq!(e.field, "LECTERN_DEV_OUTBOX");
    }

    #[test]
    fn plain_sign_in_transport_is_refused_beside_a_shared_database() {
        let external = ("DATABASE_URL", "postgres://db/lectern");
        let plain = ("LECTERN_SIGN_IN_ALLOW_PLAIN", "true");
        let c = Config::from_sources(None, &env(&[external, plain])).unwrap();
        let e = c.check_sign_in_plain().unwrap_err();
        assert_eq!(e.field, "LECTERN_SIGN_IN_ALLOW_PLAIN");
        assert!(e.message.contains("development only"), "{}", e.message);
        let dev = ("LECTERN_DEV_OUTBOX", "true");
        let c = Config::from_sources(None, &env(&[external, plain, dev])).unwrap();
        assert!(c.check_sign_in_plain().is_ok());
        let embedded = Config::from_sources(None, &env(&[plain])).unwrap();
        assert!(embedded.check_sign_in_plain().is_ok());
        let tls_only = Config::from_sources(None, &env(&[external])).unwrap();
        assert!(tls_only.check_sign_in_plain().is_ok());
    }

    #[test]
    fn smtp_settings_replace_the_dev_outbox_and_never_show_the_password() {
        let external = ("DATABASE_URL", "postgres://db/lectern");
        let c = Config::from_sources(
            None,
            &env(&[
                external,
                ("LECTERN_SMTP_HOST", "smtp.example.org"),
                ("LECTERN_SMTP_USER", "lectern"),
                ("LECTERN_SMTP_PASSWORD", "hunter2-smtp"),
                ("LECTERN_SMTP_FROM", "Lectern <no-reply@example.org>"),
            ]),
        )
        .unwrap();
        assert!(c.check_dev_outbox().is_ok(), "SMTP is not the dev outbox");
        let smtp = c.notify.smtp.as_ref().unwrap();
        assert_eq!(smtp.tls, lectern_notify::transport::smtp::SmtpTls::StartTls);
        assert_eq!(smtp.port, None);
        let shown = format!("{c:?} {:?}", c.settings);
        assert!(!shown.contains("hunter2-smtp"), "{shown}");
        let e = Config::from_sources(
            None,
            &env(&[
                ("LECTERN_SMTP_HOST", "smtp.example.org"),
                ("LECTERN_SMTP_FROM", "not an address"),
            ]),
        )
        .unwrap_err();
        assert_eq!(e.field, "LECTERN_SMTP_FROM");
        let e = Config::from_sources(None, &env(&[("LECTERN_SMTP_TLS", "ssl")])).unwrap_err();
        assert_eq!(e.field, "LECTERN_SMTP_TLS");
    }

    #[test]
    fn an_sms_provider_needs_its_credentials_and_known_topics() {
        let aliyun = [
            ("LECTERN_SMS_PROVIDER", "aliyun"),
            ("LECTERN_SMS_ACCESS_KEY_ID", "LTAI-test"),
            ("LECTERN_SMS_ACCESS_KEY_SECRET", "sms-secret-value"),
            ("LECTERN_SMS_SIGN_NAME", "讲堂"),
            (
                "LECTERN_SMS_TEMPLATES",
                "step_up_code=SMS_1, question_answered=SMS_2",
            ),
        ];
        let c = Config::from_sources(None, &env(&aliyun)).unwrap();
        let (_, sms) = c.notify.sms.as_ref().unwrap();
        assert_eq!(sms.templates.len(), 2);
        assert!(!format!("{c:?}").contains("sms-secret-value"));
        let e = Config::from_sources(None, &env(&aliyun[..3])).unwrap_err();
        assert_eq!(e.field, "LECTERN_SMS_SIGN_NAME");
        let mut tencent = aliyun.to_vec();
        tencent[0] = ("LECTERN_SMS_PROVIDER", "tencent");
        let e = Config::from_sources(None, &env(&tencent)).unwrap_err();
        assert_eq!(e.field, "LECTERN_SMS_APP_ID");
        let mut bad = aliyun.to_vec();
        bad[4] = ("LECTERN_SMS_TEMPLATES", "no_such_topic=SMS_1");
        let e = Config::from_sources(None, &env(&bad)).unwrap_err();
        assert_eq!(e.field, "LECTERN_SMS_TEMPLATES");
    }

    #[test]
    fn a_missing_file_named_by_the_variable_names_the_variable() {
        let e = Config::from_sources(None, &env(&[("LECTERN_CONFIG", "/nonexistent/l.toml")]))
            .unwrap_err();
        assert_eq!(e.field, "LECTERN_CONFIG");
        assert!(e.message.contains("/nonexistent/l.toml"), "{e}");
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;
        use proptest::sample::select;

        /// Marks every secret a case generates: it must never come back.
        const MARK: &str = "S3CRET";

        fn secret_vars() -> Vec<&'static str> {
            vec![
                "LECTERN_FIELD_KEYS",
                "LECTERN_BLIND_INDEX_KEY",
                "LECTERN_TOKEN_KEY",
                "LECTERN_S3_SECRET_ACCESS_KEY",
                "LECTERN_PLAYBACK_KEYS",
                "REDIS_URL",
                "DATABASE_URL",
            ]
        }

        fn plain_value() -> impl Strategy<Value = String> {
            prop_oneof![
                any::<String>(),
                "\\PC{0,16}",
                "[0-9]{1,24}",
                "[0-9]{1,5}(\\.[0-9])?( ?(ms|s|m|h|KiB|MiB|GiB|TiB))?",
                select(vec![
                    "",
                    " ",
                    "true",
                    "false",
                    "1",
                    "0",
                    "fs",
                    "s3",
                    "json",
                    "text",
                    "memory",
                    "redis",
                    "default",
                    "lecture",
                    "127.0.0.1:0",
                    "0.0.0.0:8080",
                    "[::1]:80",
                    "10.0.0.0/8",
                    "example.org",
                    "https://cdn.example.org",
                    "drops/live/",
                    "../x",
                    "info,sqlx=warn",
                    "postgres://db/lectern",
                    "redis://h:6379",
                ])
                .prop_map(str::to_owned),
            ]
        }

        /// A secret: sometimes well-formed key material, always marked.
        fn secret_value() -> impl Strategy<Value = String> {
            let key = "k1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
            prop_oneof![
                any::<String>().prop_map(|s| format!("{MARK}{s}")),
                Just(format!("k1:{MARK}AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=")),
                Just(format!("{key},k2:{MARK}")),
                any::<String>().prop_map(|s| format!("postgres://u:{MARK}{s}@db/x")),
                any::<String>().prop_map(|s| format!("redis://:{MARK}{s}@h:6379")),
            ]
        }

        fn environment() -> impl Strategy<Value = BTreeMap<String, String>> {
            let known: Vec<String> = SETTINGS.iter().map(|s| s.env()).collect();
            let var = prop_oneof![
                8 => select(known),
                1 => "LECTERN_[A-Z_]{0,12}",
                1 => "[A-Z_]{1,8}",
                1 => Just("LECTERN_CONFIG".to_owned()),
            ];
            let entry = var.prop_flat_map(|var| {
                let value = if secret_vars().contains(&var.as_str()) {
                    secret_value().boxed()
                } else {
                    plain_value().boxed()
                };
                (Just(var), value)
            });
            proptest::collection::vec(entry, 0..10)
                .prop_map(|entries| entries.into_iter().collect())
        }

        proptest! {
            /// Any environment either loads or is refused by an error that
            /// names a variable — one it holds, or one to set — and no
            /// secret appears in the error or in the loaded configuration.
            #[test]
            fn random_environments_never_panic_and_errors_name_a_variable(env in environment()) {
                let known: Vec<String> = SETTINGS.iter().map(|s| s.env()).collect();
                match Config::from_sources(None, &env) {
                    Ok(config) => {
                        let shown = format!("{config:?}");
                        prop_assert!(!shown.contains(MARK), "{}", shown);
                    }
                    Err(e) => {
                        prop_assert!(
                            env.contains_key(&e.field) || known.contains(&e.field),
                            "{} names no variable", e
                        );
                        prop_assert!(!e.to_string().contains(MARK), "{}", e);
                    }
                }
            }

            /// Files too: an error names the file, or a key in it.
            #[test]
            fn random_files_never_panic_and_errors_name_a_key(
                entries in proptest::collection::vec(
                    (
                        prop_oneof![
                            4 => select(SETTINGS.iter().map(|s| s.name.to_owned()).collect::<Vec<_>>()),
                            1 => "[a-z_]{1,10}",
                        ],
                        prop_oneof![
                            plain_value().prop_map(toml::Value::String),
                            any::<i64>().prop_map(toml::Value::Integer),
                            any::<bool>().prop_map(toml::Value::Boolean),
                            any::<f64>().prop_map(toml::Value::Float),
                            Just(toml::Value::Array(vec![])),
                        ],
                    ),
                    0..8,
                ),
                raw in prop::option::of("\\PC{0,40}"),
            ) {
                let dir = tempfile::tempdir().unwrap();
                let path = dir.path().join("lectern.toml");
                let text = match raw {
                    Some(text) => text,
                    None => toml::to_string(&entries.into_iter().collect::<toml::Table>()).unwrap(),
                };
                std::fs::write(&path, &text).unwrap();
                let shown = path.display().to_string();
                let known: Vec<String> = SETTINGS.iter().map(|s| s.env()).collect();
                if let Err(e) = Config::from_sources(Some(&path), &BTreeMap::new()) {
                    prop_assert!(
                        e.field == shown
                            || (e.field.ends_with(&format!("` in {shown}")) && e.field.starts_with('`'))
                            || known.contains(&e.field),
                        "{} names neither the file nor a key", e
                    );
                }
            }
        }
    }
}
