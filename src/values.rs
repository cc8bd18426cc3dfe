//! Typed configuration values that every module's settings share, and the error that names a
//! key to fix.
//!
//! Settings arrive as TOML and as environment strings, where "not set" can only be written as
//! an empty string and lists as comma-separated text. These helpers turn that into `Option`,
//! `Vec` and `Duration` once, at load, so the code that uses a setting never parses it again.
//! Secrets are types of their own: their `Debug` and `Serialize` never show the value, which is
//! what makes `check-config`'s output safe to paste.

use std::fmt;
use std::str::FromStr;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A setting that breaks a rule its type cannot express (a range, a relation between keys).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration key `{key}`: {reason}")]
pub struct InvalidSetting {
    pub key: &'static str,
    pub reason: String,
}

/// `Err(InvalidSetting)` for `key` unless `ok`.
pub fn require(ok: bool, key: &'static str, reason: &str) -> Result<(), InvalidSetting> {
    if ok {
        Ok(())
    } else {
        Err(InvalidSetting {
            key,
            reason: reason.to_string(),
        })
    }
}

/// `Duration` written as whole milliseconds (keys ending in `_ms`).
pub mod millis {
    use super::*;
    use std::time::Duration;

    pub fn serialize<S: Serializer>(value: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(value.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

/// `Duration` written as whole seconds (keys ending in `_secs`).
pub mod secs {
    use super::*;
    use std::time::Duration;

    pub fn serialize<S: Serializer>(value: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(value.as_secs())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_secs)
    }
}

/// `Option<T>` written as a string, where empty (or only blanks) means `None`: an environment
/// variable cannot be unset by a layer above it, only emptied. The text is trimmed before it is
/// parsed (a trailing newline from a secrets file is never part of a value).
pub mod optional {
    use super::*;

    pub fn serialize<S: Serializer, T: Serialize>(
        value: &Option<T>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(v) => v.serialize(s),
            None => s.serialize_str(""),
        }
    }

    pub fn deserialize<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
    where
        D: Deserializer<'de>,
        T: FromStr,
        T::Err: fmt::Display,
    {
        let text = String::deserialize(d)?;
        match text.trim() {
            "" => Ok(None),
            value => value.parse().map(Some).map_err(D::Error::custom),
        }
    }
}

/// `Vec<T>` written as one comma-separated string; blank entries are skipped, each entry is
/// trimmed and parsed, and the first bad one is the error.
pub mod comma_list {
    use super::*;

    pub fn serialize<S: Serializer, T: fmt::Display>(value: &[T], s: S) -> Result<S::Ok, S::Error> {
        let joined: Vec<String> = value.iter().map(ToString::to_string).collect();
        s.serialize_str(&joined.join(","))
    }

    pub fn deserialize<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
    where
        D: Deserializer<'de>,
        T: FromStr,
        T::Err: fmt::Display,
    {
        parse(&String::deserialize(d)?).map_err(D::Error::custom)
    }

    pub fn parse<T>(text: &str) -> Result<Vec<T>, String>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        text.split(',')
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
            .map(|entry| entry.parse().map_err(|e| format!("`{entry}`: {e}")))
            .collect()
    }
}

/// A password or signing key. Shown as `<redacted>` by `Debug` and when serialized.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Ok(Secret(text.to_string()))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("<redacted>")
    }
}

/// A service URL that may carry a password (`scheme://user:password@host/...`). Shown with
/// the password replaced and the rest readable, so an operator can still see where it points.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretUrl(String);

impl SecretUrl {
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with its password, if any, replaced by `<redacted>`.
    pub fn redacted(&self) -> String {
        let url = &self.0;
        let Some(scheme_end) = url.find("://") else {
            // Not a URL we can take apart: nothing of it is safe to show.
            return "<redacted>".into();
        };
        let rest = &url[scheme_end + 3..];
        match rest.rfind('@') {
            Some(at) => {
                let user = rest[..at].split(':').next().unwrap_or("");
                format!(
                    "{}://{user}:<redacted>@{}",
                    &url[..scheme_end],
                    &rest[at + 1..]
                )
            }
            None => url.clone(),
        }
    }
}

impl FromStr for SecretUrl {
    type Err = std::convert::Infallible;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Ok(SecretUrl(text.to_string()))
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretUrl({})", self.redacted())
    }
}

impl Serialize for SecretUrl {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.redacted())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[derive(Debug, Serialize, Deserialize)]
    struct Sample {
        #[serde(with = "millis")]
        wait_ms: Duration,
        #[serde(with = "optional")]
        name: Option<String>,
        #[serde(with = "optional")]
        token: Option<Secret>,
        #[serde(with = "comma_list")]
        ports: Vec<u16>,
    }

    fn sample(text: &str) -> Result<Sample, toml::de::Error> {
        toml::from_str(text)
    }

    #[test]
    fn empty_strings_are_absent_and_lists_are_parsed_once() {
        let s =
            sample("wait_ms = 1500\nname = \"  \"\ntoken = \"\"\nports = \"80, ,443\"").unwrap();
        assert_eq!(s.wait_ms, Duration::from_millis(1500));
        assert_eq!(s.name, None);
        assert!(s.token.is_none());
        assert_eq!(s.ports, vec![80, 443]);
        let s = sample("wait_ms = 0\nname = \" a \"\ntoken = \"t\"\nports = \"\"").unwrap();
        assert_eq!(s.name.as_deref(), Some("a"));
        assert_eq!(s.token.as_ref().map(Secret::expose), Some("t"));
        assert!(s.ports.is_empty());
    }

    #[test]
    fn a_bad_list_entry_is_named() {
        let err =
            sample("wait_ms = 1\nname = \"\"\ntoken = \"\"\nports = \"80,http\"").unwrap_err();
        assert!(err.to_string().contains("`http`"), "{err}");
    }

    #[test]
    fn secrets_never_show_when_printed_or_serialized() {
        let s = sample("wait_ms = 1\nname = \"\"\ntoken = \"hunter2\"\nports = \"\"").unwrap();
        let shown = format!("{s:?} {}", toml::to_string(&s).unwrap());
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("<redacted>"));
        let url: SecretUrl = "postgres://u:pw@h/db".parse().unwrap();
        assert_eq!(url.redacted(), "postgres://u:<redacted>@h/db");
        assert_eq!(
            format!("{url:?}"),
            "SecretUrl(postgres://u:<redacted>@h/db)"
        );
        let url: SecretUrl = "redis://:tok@h:6379".parse().unwrap();
        assert_eq!(url.redacted(), "redis://:<redacted>@h:6379");
        let url: SecretUrl = "redis://h:6379".parse().unwrap();
        assert_eq!(url.redacted(), "redis://h:6379");
        assert_eq!(url.expose(), "redis://h:6379");
    }
}
