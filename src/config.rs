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
        Ok(Config {
            http_addr,
            data_dir,
            database,
            storage,
            serve_workers,
            log_format,
        })
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
    }
}
