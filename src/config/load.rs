//! Reading settings: the `settings!` macro that turns the list in
//! `settings.rs` into the `Settings` struct, its table of names, defaults
//! and descriptions, and its loader; the two sources (a TOML file and the
//! environment) with where each value came from; and the README table.
//!
//! A setting's names all derive from its field: `http_addr` is
//! `LECTERN_HTTP_ADDR` in the environment and `http_addr` in the file,
//! unless the list gives another variable (`database_url as "DATABASE_URL"`).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use super::value::Value;
use super::ConfigError;

/// The variable naming the file; it is no setting of the file itself.
pub const FILE_VAR: &str = "LECTERN_CONFIG";

/// What a setting is when not set.
#[derive(Debug, Clone, Copy)]
// Read by the README test; the loader takes defaults from the macro.
#[cfg_attr(not(test), allow(dead_code))]
pub enum DefaultText {
    /// Read like a value a user writes, and shown as such.
    Value(&'static str),
    /// Unset: what that means, shown as written.
    Unset(&'static str),
}

/// One setting as the list declares it.
#[derive(Debug)]
#[cfg_attr(not(test), allow(dead_code))]
pub struct Spec<K: 'static> {
    pub key: K,
    /// The field, which is also the file key.
    pub name: &'static str,
    env: Option<&'static str>,
    /// The doc comment's lines.
    pub doc: &'static [&'static str],
    pub default: DefaultText,
}

impl<K> Spec<K> {
    pub const fn new(
        key: K,
        name: &'static str,
        env: Option<&'static str>,
        doc: &'static [&'static str],
        default: DefaultText,
    ) -> Self {
        Spec {
            key,
            name,
            env,
            doc,
            default,
        }
    }

    /// `LECTERN_` and the field in upper case, unless the list names another.
    pub fn env(&self) -> String {
        match self.env {
            Some(var) => var.to_owned(),
            None => format!("LECTERN_{}", self.name.to_ascii_uppercase()),
        }
    }

    /// The doc comment as one line of Markdown.
    #[cfg(test)]
    pub fn description(&self) -> String {
        self.doc
            .iter()
            .map(|line| line.trim())
            .filter(|line| !line.is_empty())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Declares every setting: the `Settings` struct, `Key` (one variant per
/// field), `SETTINGS` (the table the loader, the unknown-variable check and
/// the README use) and `Settings::read`.
///
/// ```text
/// /// Description (the README's "meaning" column).
/// field: Type = default "text the type reads";
/// field as "OTHER_VAR": Option<Type> = none "what unset means";
/// ```
macro_rules! settings {
    ($(
        $(#[doc = $doc:literal])*
        $name:ident $(as $env:literal)? : $ty:ty = $kind:ident $default:literal;
    )*) => {
        /// Every setting, read and checked one by one (their combinations
        /// are checked by `Config::validate`).
        #[derive(Debug, Clone)]
        pub struct Settings {
            $($(#[doc = $doc])* pub $name: $ty,)*
        }

        /// Names a setting in code, so a typo is a compile error.
        #[allow(non_camel_case_types)]
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
        pub enum Key {
            $($name,)*
        }

        /// In declaration order: the README lists them so.
        pub static SETTINGS: &[$crate::config::load::Spec<Key>] = &[$(
            $crate::config::load::Spec::new(
                Key::$name,
                stringify!($name),
                settings!(@env $($env)?),
                &[$($doc),*],
                settings!(@default $kind $default),
            ),
        )*];

        impl Settings {
            pub(in $crate::config) fn read(
                values: &$crate::config::load::Values<Key>,
            ) -> Result<Self, $crate::config::ConfigError> {
                Ok(Settings {
                    $($name: settings!(@read values, $kind, $name, $default),)*
                })
            }
        }
    };
    (@env) => { None };
    (@env $env:literal) => { Some($env) };
    (@default default $text:literal) => { $crate::config::load::DefaultText::Value($text) };
    (@default none $text:literal) => { $crate::config::load::DefaultText::Unset($text) };
    (@read $values:ident, default, $name:ident, $text:literal) => {
        $values.value(Key::$name, $text)?
    };
    (@read $values:ident, none, $name:ident, $text:literal) => {
        $values.optional(Key::$name)?
    };
}

/// Where a value came from, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Env(String),
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

/// The raw text of every setting given, with its origin; the environment
/// wins over the file.
pub struct Values<K: 'static> {
    specs: &'static [Spec<K>],
    given: BTreeMap<K, (String, Origin)>,
}

impl<K: Copy + Ord + fmt::Debug> Values<K> {
    /// Reads the file (`file`, else the one `LECTERN_CONFIG` names) and the
    /// environment; refuses unknown file keys and unknown `LECTERN_*`
    /// variables.
    pub fn gather(
        specs: &'static [Spec<K>],
        file: Option<&Path>,
        env: &BTreeMap<String, String>,
    ) -> Result<Self, ConfigError> {
        let mut values = Values {
            specs,
            given: BTreeMap::new(),
        };
        match (file, env.get(FILE_VAR)) {
            (Some(path), _) => values.read_file(path, None)?,
            (None, Some(path)) => values.read_file(Path::new(path), Some(FILE_VAR))?,
            (None, None) => {}
        }
        let names: Vec<String> = specs.iter().map(Spec::env).collect();
        for (spec, var) in specs.iter().zip(&names) {
            if let Some(text) = env.get(var) {
                values
                    .given
                    .insert(spec.key, (text.clone(), Origin::Env(var.clone())));
            }
        }
        let unknown = env.keys().find(|var| {
            var.starts_with("LECTERN_")
                && var.as_str() != FILE_VAR
                && !names.contains(var)
                // Test-only knobs of the suites are not Lectern settings.
                && !var.starts_with("LECTERN_TEST_")
        });
        if let Some(var) = unknown {
            return Err(ConfigError::new(
                var.as_str(),
                "unknown setting (see README.md, Configuration)",
            ));
        }
        Ok(values)
    }

    /// The settings of one file alone: those embedded mode generates.
    pub fn from_file(specs: &'static [Spec<K>], path: &Path) -> Result<Self, ConfigError> {
        let mut values = Values {
            specs,
            given: BTreeMap::new(),
        };
        values.read_file(path, None)?;
        Ok(values)
    }

    /// Reads a TOML file of settings. `via` is the variable that named the
    /// file, if one did.
    fn read_file(&mut self, path: &Path, via: Option<&str>) -> Result<(), ConfigError> {
        let field = match via {
            Some(var) => var.to_owned(),
            None => path.display().to_string(),
        };
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::new(&field, format!("cannot read {}: {e}", path.display()))
        })?;
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            ConfigError::new(&field, format!("{}: {}", path.display(), e.message()))
        })?;
        for (key, value) in table {
            let at = |key: &str| format!("`{key}` in {}", path.display());
            let Some(spec) = self.specs.iter().find(|s| s.name == key) else {
                return Err(ConfigError::new(at(&key), "unknown setting"));
            };
            let text = match value {
                toml::Value::String(s) => s,
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Float(f) => f.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                other => {
                    return Err(ConfigError::new(
                        at(&key),
                        format!(
                            "expected a string, number or boolean, got {}",
                            other.type_str()
                        ),
                    ))
                }
            };
            let origin = Origin::File {
                path: path.to_path_buf(),
                key: spec.name,
            };
            self.given.insert(spec.key, (text, origin));
        }
        Ok(())
    }

    fn spec(&self, key: K) -> &'static Spec<K> {
        self.specs
            .iter()
            .find(|s| s.key == key)
            .expect("every key is in the list it came from")
    }

    /// What an error about `key` names: where its value came from, or its
    /// variable when it is not set.
    pub fn at(&self, key: K) -> String {
        match self.given.get(&key) {
            Some((_, origin)) => origin.to_string(),
            None => self.spec(key).env(),
        }
    }

    /// The raw text given for `key`, if any.
    pub fn text(&self, key: K) -> Option<&str> {
        self.given.get(&key).map(|(text, _)| text.as_str())
    }

    /// The value given, else the default text read the same way.
    pub fn value<T: Value>(&self, key: K, default: &'static str) -> Result<T, ConfigError> {
        let text = self.text(key).unwrap_or(default);
        T::parse(text).map_err(|m| ConfigError::new(self.at(key), m))
    }

    /// The value given, else `None`.
    pub fn optional<T: Value>(&self, key: K) -> Result<Option<T>, ConfigError> {
        self.text(key)
            .map(T::parse)
            .transpose()
            .map_err(|m| ConfigError::new(self.at(key), m))
    }
}

/// The README's table of settings, generated from the list.
#[cfg(test)]
pub fn readme_table<K>(specs: &[Spec<K>]) -> String {
    let mut out = String::from("| variable | default | meaning |\n| --- | --- | --- |\n");
    out.push_str(&format!(
        "| `{FILE_VAR}` | none | a TOML file of settings (also `--config FILE`), keyed by the names below in lower case without `LECTERN_` |\n"
    ));
    for spec in specs {
        let default = match spec.default {
            DefaultText::Value(text) => format!("`{text}`"),
            DefaultText::Unset(text) => text.to_owned(),
        };
        out.push_str(&format!(
            "| `{}` | {default} | {} |\n",
            spec.env(),
            spec.description()
        ));
    }
    out
}
