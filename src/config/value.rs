//! The types settings are read into. Each says how its text (an
//! environment variable, or a value in the file) is read and what is wrong
//! with a bad one; the caller adds the variable's name. Secrets are types
//! whose `Debug` never shows them and whose errors never echo them.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// A setting's type.
pub trait Value: Sized {
    /// Reads the text of one setting. The error says what is wrong without
    /// naming the setting (the loader adds where it came from), and never
    /// repeats a secret.
    fn parse(text: &str) -> Result<Self, String>;
}

/// Present means set: the value is read; absent means the default.
impl<T: Value> Value for Option<T> {
    fn parse(text: &str) -> Result<Self, String> {
        T::parse(text).map(Some)
    }
}

impl Value for String {
    fn parse(text: &str) -> Result<Self, String> {
        Ok(text.to_owned())
    }
}

impl Value for PathBuf {
    fn parse(text: &str) -> Result<Self, String> {
        Ok(PathBuf::from(text))
    }
}

impl Value for bool {
    fn parse(text: &str) -> Result<Self, String> {
        match text.trim() {
            "true" | "1" => Ok(true),
            "false" | "0" => Ok(false),
            _ => Err(format!("{text:?} is not true or false")),
        }
    }
}

impl Value for SocketAddr {
    fn parse(text: &str) -> Result<Self, String> {
        text.trim()
            .parse()
            .map_err(|_| format!("{text:?} is not an address like 127.0.0.1:8080"))
    }
}

macro_rules! whole_numbers {
    ($($t:ty),*) => {$(
        impl Value for $t {
            fn parse(text: &str) -> Result<Self, String> {
                text.trim()
                    .parse()
                    .map_err(|_| format!("{text:?} is not a whole number"))
            }
        }
    )*};
}
whole_numbers!(u16, u32, u64, usize);

/// A share from 0 to 1, like `0.25`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ratio(pub f64);

impl Value for Ratio {
    fn parse(text: &str) -> Result<Self, String> {
        match text.trim().parse::<f64>() {
            Ok(r) if (0.0..=1.0).contains(&r) => Ok(Ratio(r)),
            _ => Err(format!("{text:?} is not a number from 0 to 1")),
        }
    }
}

/// Seconds, or a number with a unit: `500ms`, `30s`, `90m`, `6h`.
impl Value for Duration {
    fn parse(text: &str) -> Result<Self, String> {
        let bad = || format!("{text:?} is not a duration like 30s, 90m, 6h or 500ms");
        let t = text.trim();
        let (number, unit) = [("ms", 0.001), ("s", 1.0), ("m", 60.0), ("h", 3600.0)]
            .iter()
            .find_map(|(suffix, unit)| t.strip_suffix(suffix).map(|n| (n.trim(), *unit)))
            .unwrap_or((t, 1.0));
        // Digits and at most one point: no signs, exponents, `inf` or `NaN`.
        if number.is_empty()
            || !number.bytes().all(|b| b.is_ascii_digit() || b == b'.')
            || number.matches('.').count() > 1
        {
            return Err(bad());
        }
        let n: f64 = number.parse().map_err(|_| bad())?;
        Duration::try_from_secs_f64(n * unit).map_err(|_| bad())
    }
}

/// A number of bytes, or of KiB, MiB, GiB or TiB: `1048576`, `20 GiB`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bytes(pub u64);

impl Value for Bytes {
    fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim();
        let (number, shift) = [("KiB", 10), ("MiB", 20), ("GiB", 30), ("TiB", 40)]
            .iter()
            .find_map(|(suffix, shift)| t.strip_suffix(suffix).map(|n| (n.trim(), *shift)))
            .unwrap_or((t, 0));
        number
            .parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(1 << shift))
            .map(Bytes)
            .ok_or_else(|| format!("{text:?} is not a number of bytes, like 1048576 or 20 GiB"))
    }
}

/// A secret: any text, never shown by `Debug`, never echoed by an error.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Value for Secret {
    fn parse(text: &str) -> Result<Self, String> {
        Ok(Secret(text.to_owned()))
    }
}

/// `postgres://user:secret@host/db`; `Debug` hides the password.
#[derive(Clone)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", super::redact_url(&self.0))
    }
}

impl Value for DatabaseUrl {
    fn parse(text: &str) -> Result<Self, String> {
        // Not echoed: the URL may hold a password.
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            Ok(DatabaseUrl(text.to_owned()))
        } else {
            Err("must be a postgres:// or postgresql:// URL".into())
        }
    }
}

/// One of a few words, with the message naming what it is and the choices.
macro_rules! choice {
    ($(#[$meta:meta])* $name:ident, $what:literal { $($variant:ident = $word:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $name { $($variant),+ }

        impl Value for $name {
            fn parse(text: &str) -> Result<Self, String> {
                match text {
                    $($word => Ok($name::$variant),)+
                    other => {
                        let words = [$(concat!("`", $word, "`")),+];
                        let (last, first) = words.split_last().expect("a choice has words");
                        Err(format!(
                            "{other:?} is not {}; expected {} or {last}",
                            $what,
                            first.join(", ")
                        ))
                    }
                }
            }
        }
    };
}

choice!(
    /// `LECTERN_STORAGE`.
    StorageBackend, "a storage backend" { Fs = "fs", S3 = "s3" }
);
choice!(
    /// `LECTERN_LOG_FORMAT`.
    LogFormat, "a log format" { Text = "text", Json = "json" }
);
choice!(
    /// `LECTERN_SMTP_TLS`.
    SmtpTlsMode, "an SMTP TLS mode" { StartTls = "starttls", Tls = "tls", None = "none" }
);
choice!(
    /// `LECTERN_SMS_PROVIDER`.
    SmsProviderKind, "an SMS provider" { Aliyun = "aliyun", Tencent = "tencent" }
);
choice!(
    /// `LECTERN_PROGRESS_BACKEND`.
    ProgressBackendKind, "a progress backend" { Memory = "memory", Redis = "redis" }
);

/// The name of a built-in encoding profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile(pub String);

impl Value for Profile {
    fn parse(text: &str) -> Result<Self, String> {
        match lectern_pipelines::profiles::builtin(text) {
            Ok(_) => Ok(Profile(text.to_owned())),
            Err(_) => Err(format!(
                "{text:?} is not an encoding profile; expected one of {}",
                lectern_pipelines::profiles::names().join(", ")
            )),
        }
    }
}

/// `https://cdn.example.org`, kept without a trailing `/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseUrl(pub String);

impl Value for BaseUrl {
    fn parse(text: &str) -> Result<Self, String> {
        let ok = (text.starts_with("https://") || text.starts_with("http://"))
            && !text.contains(['?', '#', ' '])
            && text.len() > "https://".len();
        if !ok {
            return Err(format!(
                "{text:?} is not a base URL like https://cdn.example.org"
            ));
        }
        Ok(BaseUrl(text.trim_end_matches('/').to_owned()))
    }
}

/// A storage prefix like `drops/live/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoragePrefix(pub String);

impl Value for StoragePrefix {
    fn parse(text: &str) -> Result<Self, String> {
        let trimmed = text.trim_end_matches('/');
        if trimmed.is_empty() || lectern_storage::validate_key(trimmed).is_err() {
            return Err(format!(
                "{text:?} is not a storage prefix like `drops/live/`"
            ));
        }
        Ok(StoragePrefix(text.to_owned()))
    }
}

/// A `tracing` filter like `info,sqlx=warn`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogFilter(pub String);

impl Value for LogFilter {
    fn parse(text: &str) -> Result<Self, String> {
        tracing_subscriber::EnvFilter::try_new(text)
            .map(|_| LogFilter(text.to_owned()))
            .map_err(|e| format!("{text:?} is not a log filter like `info,sqlx=warn`: {e}"))
    }
}

impl Value for lectern_identity::TrustedProxies {
    fn parse(text: &str) -> Result<Self, String> {
        lectern_identity::TrustedProxies::parse(text)
    }
}

impl Value for lectern_egress::AllowList {
    fn parse(text: &str) -> Result<Self, String> {
        text.parse()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_are_shares_from_zero_to_one() {
        assert_eq!(Ratio::parse("0.25"), Ok(Ratio(0.25)));
        assert_eq!(Ratio::parse(" 1 "), Ok(Ratio(1.0)));
        for bad in ["1.5", "-0.1", "half", "NaN", ""] {
            assert!(Ratio::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn durations_take_the_units_operators_write() {
        let d = |t| Duration::parse(t).unwrap();
        assert_eq!(d("21600"), Duration::from_secs(21600));
        assert_eq!(d("90m"), Duration::from_secs(5400));
        assert_eq!(d("6h"), Duration::from_secs(21600));
        assert_eq!(d("2s"), Duration::from_secs(2));
        assert_eq!(d("500ms"), Duration::from_millis(500));
        assert_eq!(d("0.5"), Duration::from_millis(500));
        for bad in [
            "",
            "s",
            "-1",
            "1e3",
            "inf",
            "NaN",
            "5x",
            "1.2.3",
            "99999999999999999999h",
        ] {
            assert!(Duration::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn sizes_take_binary_units() {
        assert_eq!(Bytes::parse("20 GiB").unwrap().0, 20 << 30);
        assert_eq!(Bytes::parse("1048576").unwrap().0, 1 << 20);
        assert!(Bytes::parse("1 GB").is_err());
        assert!(Bytes::parse("99999999999 TiB").is_err());
    }

    #[test]
    fn choices_list_what_is_expected() {
        assert_eq!(
            StorageBackend::parse("s4").unwrap_err(),
            "\"s4\" is not a storage backend; expected `fs` or `s3`"
        );
    }

    #[test]
    fn secrets_are_neither_shown_nor_echoed() {
        let s = Secret::parse("hunter2").unwrap();
        assert!(!format!("{s:?}").contains("hunter2"));
        let e = DatabaseUrl::parse("mysql://u:hunter2@h/db").unwrap_err();
        assert!(!e.contains("hunter2"), "{e}");
        let u = DatabaseUrl::parse("postgres://u:hunter2@h/db").unwrap();
        assert!(!format!("{u:?}").contains("hunter2"));
    }
}
