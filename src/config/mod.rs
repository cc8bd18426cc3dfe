//! Settings: `config/default.toml` (compiled in) ← `--config FILE` ← the task definition's env
//! names ← `ZEDI__SECTION__KEY`. Unknown keys are errors, so a typo cannot silently fall back
//! to a default.
//!
//! This module only layers files and environment. Each section's type, its typed values and
//! its validation belong to the module that uses it (`server::ServerSettings`,
//! `store::StoreSettings`, …); shared value types are in `crate::values`.

#[cfg(test)]
mod tests;

use std::path::Path;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::api::ApiSettings;
use crate::auth::AuthSettings;
use crate::cloudwatch::CloudWatchSettings;
use crate::cluster::ClusterSettings;
use crate::document::DocumentSettings;
use crate::history::HistorySettings;
use crate::limits::Limits;
use crate::logging::LogSettings;
use crate::server::ServerSettings;
use crate::session::Timeouts;
use crate::store::{StoreKind, StoreSettings};
use crate::values::{InvalidSetting, require};
use crate::webhooks::WebhookSettings;

/// The defaults, compiled in so the binary works from any directory.
pub const DEFAULT_TOML: &str = include_str!("../../config/default.toml");

/// Env names used by the existing ECS task definition, mapped onto our keys.
const LEGACY_ENV: &[(&str, &str)] = &[
    ("PORT", "server.port"),
    ("DATABASE_URL", "store.database_url"),
    ("DATABASE_PASSWORD", "store.database_password"),
    ("REDIS_URL", "cluster.redis_url"),
    ("JWT_SECRET", "auth.jwt_secret"),
    ("COGNITO_USER_POOL_ID", "auth.cognito_user_pool_id"),
    ("COGNITO_REGION", "auth.cognito_region"),
    ("ALLOWED_ORIGINS", "server.allowed_origins"),
];

/// `REDIS_HOST` (+ `REDIS_PORT`, default 6379, + `REDIS_PASSWORD`, the ElastiCache AUTH
/// token), the planned task definition's names, as a `rediss://` URL: ElastiCache with transit
/// encryption is TLS-only. `REDIS_URL`, when set too, wins (it is applied after this).
fn redis_url_from_parts(env: &[(String, String)]) -> Option<String> {
    let get = |name: &str| {
        env.iter()
            .find(|(k, v)| k == name && !v.is_empty())
            .map(|(_, v)| v.as_str())
    };
    let host = get("REDIS_HOST")?;
    let port = get("REDIS_PORT").unwrap_or("6379");
    let auth = get("REDIS_PASSWORD").map_or(String::new(), |p| format!(":{}@", percent_encode(p)));
    // An IPv6 literal needs brackets in a URL.
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    Some(format!("rediss://{auth}{host}:{port}"))
}

/// Percent-encodes everything but RFC 3986's unreserved characters (an AUTH token may hold
/// `@`, `/`, `:` or `#`, which would change the URL's meaning).
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read configuration: {0}")]
    Load(#[from] config::ConfigError),
    #[error(transparent)]
    Invalid(#[from] InvalidSetting),
}

/// Every section, each owned (type and validation) by the module that uses it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub server: ServerSettings,
    pub store: StoreSettings,
    pub documents: DocumentSettings,
    pub auth: AuthSettings,
    pub cluster: ClusterSettings,
    pub cloudwatch: CloudWatchSettings,
    pub limits: Limits,
    pub timeouts: Timeouts,
    pub log: LogSettings,
    pub api: ApiSettings,
    pub webhooks: WebhookSettings,
    pub history: HistorySettings,
}

impl Settings {
    /// Loads the layers from the process environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_from(file, std::env::vars())
    }

    /// Loads the layers with an explicit environment (tests pass their own).
    pub fn load_from(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let env: Vec<(String, String)> = env.into_iter().collect();
        let mut builder = config::Config::builder().add_source(config::File::from_str(
            DEFAULT_TOML,
            config::FileFormat::Toml,
        ));
        if let Some(path) = file {
            builder = builder.add_source(config::File::from(path).format(config::FileFormat::Toml));
        }
        if let Some(url) = redis_url_from_parts(&env) {
            builder = builder.set_override("cluster.redis_url", url)?;
        }
        for (name, key) in LEGACY_ENV {
            if let Some((_, value)) = env.iter().find(|(k, _)| k == name) {
                builder = builder.set_override(*key, value.as_str())?;
            }
        }
        // `ZEDI__SECTION__KEY` comes last so it wins over the task-definition names.
        for (name, value) in &env {
            if let Some(rest) = name.strip_prefix("ZEDI__") {
                let key = rest.to_ascii_lowercase().replace("__", ".");
                builder = builder.set_override(key, value.as_str())?;
            }
        }
        let settings: Settings = builder.build()?.try_deserialize()?;
        settings.validate()?;
        Ok(settings)
    }

    /// Each section's own rules, then the few that relate sections to each other.
    fn validate(&self) -> Result<(), InvalidSetting> {
        self.server.validate()?;
        self.store.validate()?;
        self.documents.validate()?;
        self.auth.validate()?;
        self.cluster.validate()?;
        self.cloudwatch.validate()?;
        self.limits.validate()?;
        self.timeouts.validate()?;
        self.log.validate()?;
        self.api.validate()?;
        self.webhooks.validate()?;
        self.history.validate()?;
        require(
            self.cluster.redis_url.is_none() || self.store.kind() == StoreKind::Postgres,
            "cluster.redis_url",
            "a cluster node needs the shared PostgreSQL store: set DATABASE_URL too",
        )
    }

    /// The effective configuration as TOML, for `check-config`. Secrets are types that
    /// serialize as `<redacted>` (URLs keep everything but the password), so nothing here has
    /// to remember which keys are secret.
    pub fn redacted_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }
}
