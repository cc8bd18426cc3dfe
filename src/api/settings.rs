//! `[api]`: the keys of the document API. No key, no API (its routes answer 404).

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::values::{InvalidSetting, require};

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyAccess {
    ReadOnly,
    ReadWrite,
}

/// One API key: the name it is logged and counted under, what it may do, and the secret.
#[derive(Clone)]
pub struct ApiKey {
    pub name: String,
    pub access: KeyAccess,
    pub secret: String,
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self}")
    }
}

/// `name:access:<redacted>`: what check-config and logs may show.
impl std::fmt::Display for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let access = match self.access {
            KeyAccess::ReadOnly => "read-only",
            KeyAccess::ReadWrite => "read-write",
        };
        write!(f, "{}:{access}:<redacted>", self.name)
    }
}

/// Parses `name:access:secret`. The error never repeats the text: it holds a secret.
fn parse_key(entry: &str, index: usize) -> Result<ApiKey, String> {
    let mut parts = entry.splitn(3, ':');
    let (Some(name), Some(access), Some(secret)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(format!("key #{} is not name:access:secret", index + 1));
    };
    let access = match access.trim() {
        "read-only" | "readonly" => KeyAccess::ReadOnly,
        "read-write" => KeyAccess::ReadWrite,
        _ => {
            return Err(format!(
                "key `{}`: access must be read-only or read-write",
                name.trim()
            ));
        }
    };
    let (name, secret) = (name.trim(), secret.trim());
    if name.is_empty() || secret.len() < 16 {
        return Err(format!(
            "key #{}: needs a name and a secret of at least 16 characters",
            index + 1
        ));
    }
    Ok(ApiKey {
        name: name.to_string(),
        access,
        secret: secret.to_string(),
    })
}

fn keys_from<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<ApiKey>, D::Error> {
    let text = String::deserialize(d)?;
    text.split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .enumerate()
        .map(|(i, entry)| parse_key(entry, i))
        .collect::<Result<_, _>>()
        .map_err(serde::de::Error::custom)
}

fn keys_to<S: Serializer>(keys: &[ApiKey], s: S) -> Result<S::Ok, S::Error> {
    let shown: Vec<String> = keys.iter().map(ToString::to_string).collect();
    s.serialize_str(&shown.join(","))
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiSettings {
    #[serde(deserialize_with = "keys_from", serialize_with = "keys_to")]
    pub keys: Vec<ApiKey>,
    /// Largest page of `GET /api/documents`.
    pub max_list_limit: usize,
}

impl ApiSettings {
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        let mut names: Vec<&str> = self.keys.iter().map(|k| k.name.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        require(
            names.len() == self.keys.len(),
            "api.keys",
            "key names must be unique (they are what logs and metrics show)",
        )?;
        require(self.max_list_limit > 0, "api.max_list_limit", "must be > 0")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_and_never_show_their_secret() {
        let key = parse_key("indexer:read-only:0123456789abcdef:x", 0).unwrap();
        assert_eq!(key.name, "indexer");
        assert_eq!(key.access, KeyAccess::ReadOnly);
        assert_eq!(key.secret, "0123456789abcdef:x", "a secret may hold ':'");
        assert_eq!(key.to_string(), "indexer:read-only:<redacted>");
        assert_eq!(format!("{key:?}"), "indexer:read-only:<redacted>");
        for bad in [
            "nocolon",
            "a:admin:0123456789abcdef",
            "a:read-write:short",
            ":read-write:0123456789abcdef",
        ] {
            let error = parse_key(bad, 0).unwrap_err();
            assert!(
                !error.contains("0123456789abcdef") && !error.contains("short"),
                "{error}"
            );
        }
    }
}
