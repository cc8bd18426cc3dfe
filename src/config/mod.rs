//! Settings: `config/default.toml` (compiled in) ← `--config FILE` ← the task definition's env
//! names ← `ZEDI__SECTION__KEY`. Unknown keys are errors, so a typo cannot silently fall back
//! to a default.

mod validate;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

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
    #[error("invalid configuration key `{key}`: {reason}")]
    Invalid { key: &'static str, reason: String },
}

fn invalid(key: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        reason: reason.into(),
    }
}

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
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    pub host: String,
    pub port: u16,
    pub node_id: String,
    pub workers: usize,
    pub document_threads: usize,
    pub drain_delay_ms: u64,
    pub drain_deadline_ms: u64,
    pub trusted_proxies: String,
    pub allowed_origins: String,
}

impl ServerSettings {
    /// The allow-list, parsed; empty means any origin.
    pub fn origins(&self) -> Vec<String> {
        self.allowed_origins
            .split(',')
            .map(|o| o.trim().trim_end_matches('/').to_string())
            .filter(|o| !o.is_empty())
            .collect()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    Auto,
    Embedded,
    Memory,
    Postgres,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSettings {
    pub kind: StoreKind,
    pub path: PathBuf,
    pub database_url: String,
    pub database_password: String,
    pub sslmode: String,
    pub ssl_root_cert: PathBuf,
    pub pool_size: usize,
    pub connect_timeout_ms: u64,
    pub startup_timeout_ms: u64,
    pub legacy_table: String,
    pub max_batch: usize,
    pub max_pending_writes: usize,
    pub retry_initial_ms: u64,
    pub retry_max_ms: u64,
    pub compact_after_updates: u64,
    pub compact_min_interval_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DocumentSettings {
    pub unload_grace_ms: u64,
    pub load_timeout_ms: u64,
    pub awareness_timeout_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    Auto,
    Off,
    Jwt,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    pub mode: AuthMode,
    pub jwt_secret: String,
    pub cognito_user_pool_id: String,
    pub cognito_region: String,
    pub issuer: String,
    pub jwks_url: String,
    pub audiences: String,
    pub token_use: String,
    pub leeway_secs: u64,
    pub jwks_timeout_ms: u64,
    pub jwks_min_refresh_interval_ms: u64,
    pub jwks_max_age_secs: u64,
    pub refresh_grace_ms: u64,
    pub default_access: crate::auth::DefaultAccess,
    pub documents_claim: String,
    pub groups_claim: String,
    pub readonly_groups: String,
    pub readonly_claim: String,
}

impl AuthSettings {
    /// `auto` resolved: JWT as soon as any way to verify a token is configured, so the old task
    /// definition (which sets JWT_SECRET / COGNITO_*) never runs without auth by accident.
    pub fn effective_mode(&self) -> AuthMode {
        match self.mode {
            AuthMode::Auto if !self.jwt_secret.is_empty() || self.effective_issuer().is_some() => {
                AuthMode::Jwt
            }
            AuthMode::Auto => AuthMode::Off,
            other => other,
        }
    }

    /// The RS256 issuer: explicit, or Cognito's from region + pool id.
    pub fn effective_issuer(&self) -> Option<String> {
        if !self.issuer.trim().is_empty() {
            return Some(self.issuer.trim().trim_end_matches('/').to_string());
        }
        if self.cognito_user_pool_id.is_empty() {
            return None;
        }
        let region = if self.cognito_region.is_empty() {
            // Pool ids look like "eu-west-1_AbCdEf": the region is the part before '_'.
            self.cognito_user_pool_id
                .split('_')
                .next()
                .unwrap_or_default()
                .to_string()
        } else {
            self.cognito_region.clone()
        };
        Some(format!(
            "https://cognito-idp.{region}.amazonaws.com/{}",
            self.cognito_user_pool_id
        ))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSettings {
    pub redis_url: String,
    pub key_prefix: String,
    pub lease_ttl_ms: u64,
    pub lease_renew_ms: u64,
    pub heartbeat_ms: u64,
    pub stream_max_len: usize,
    pub stream_ttl_secs: u64,
    pub max_unpublished: usize,
    pub relay_block_ms: u64,
    pub redis_timeout_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CloudWatchMode {
    Off,
    Api,
    Emf,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloudWatchSettings {
    pub mode: CloudWatchMode,
    pub namespace: String,
    pub metric_name: String,
    pub dimensions: String,
    pub interval_secs: u64,
    pub region: String,
    pub endpoint_url: String,
    /// Second metric with the memory budget's use in percent; empty: not published.
    pub memory_metric_name: String,
}

impl CloudWatchSettings {
    /// `Name=Value` pairs, in order.
    pub fn dimension_pairs(&self) -> Result<Vec<(String, String)>, String> {
        self.dimensions
            .split(',')
            .map(str::trim)
            .filter(|d| !d.is_empty())
            .map(|d| match d.split_once('=') {
                Some((k, v)) if !k.trim().is_empty() && !v.trim().is_empty() => {
                    Ok((k.trim().to_string(), v.trim().to_string()))
                }
                _ => Err(format!("`{d}` is not Name=Value")),
            })
            .collect()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    pub max_frame_bytes: usize,
    pub max_document_name_bytes: usize,
    pub max_documents_per_connection: usize,
    pub max_preauth_messages: usize,
    pub max_preauth_bytes: usize,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    pub max_messages_per_sec: u32,
    pub max_message_burst: u32,
    pub max_bytes_per_sec: u64,
    pub max_outbound_bytes: usize,
    pub max_document_bytes: usize,
    /// How deep shared types (and values inside them) may nest; deeper updates are refused
    /// before yrs sees them (yrs recurses per level).
    pub max_nesting_depth: u32,
    /// Bytes of updates one document may hold waiting for missing predecessors.
    pub max_pending_bytes: usize,
    /// Updates refused on one socket before the socket itself is closed (4205).
    pub max_refused_updates: u32,
    /// Node-wide memory budget every large holder charges (see `crate::budget`).
    pub memory_budget_bytes: usize,
    /// Whether the process's resident size is a floor of the budget's fill.
    pub memory_budget_measures_rss: bool,
    /// Longest whole address (`name` or `name\0sessionId`), in bytes.
    pub max_address_bytes: usize,
    /// Bytes held before Auth by all sockets of one client address together.
    pub max_preauth_bytes_per_address: usize,
    /// Largest awareness state (the JSON of one client), in bytes.
    pub max_awareness_state_bytes: usize,
    /// Deepest nesting of arrays/objects inside one awareness state.
    pub max_awareness_depth: u32,
    /// Awareness client ids one connection may introduce per document.
    pub max_awareness_clients_per_connection: usize,
    /// A loaded document is charged its encoded size times this (yrs' in-memory form is larger
    /// than the encoding).
    pub document_memory_factor: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Timeouts {
    pub idle_ms: u64,
    pub ping_interval_ms: u64,
    /// A socket with output pending that accepts no byte for this long is closed at once.
    pub write_stall_ms: u64,
    /// A socket with no authenticated document for this long is closed.
    pub auth_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    pub format: LogFormat,
    pub level: String,
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

    /// The store this configuration selects, with `auto` resolved.
    pub fn store_kind(&self) -> StoreKind {
        match self.store.kind {
            StoreKind::Auto if self.store.database_url.is_empty() => StoreKind::Embedded,
            StoreKind::Auto => StoreKind::Postgres,
            other => other,
        }
    }

    /// The effective configuration as TOML with every secret replaced, for `check-config`.
    pub fn redacted_toml(&self) -> String {
        let mut copy = self.clone();
        redact(&mut copy.auth.jwt_secret);
        redact(&mut copy.store.database_password);
        copy.store.database_url = redact_url(&copy.store.database_url);
        copy.cluster.redis_url = redact_url(&copy.cluster.redis_url);
        toml::to_string_pretty(&copy).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }
}

fn redact(secret: &mut String) {
    if !secret.is_empty() {
        *secret = "<redacted>".to_string();
    }
}

/// Hides the password of `scheme://user:password@host`, keeping the rest readable.
fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return if url.is_empty() {
            String::new()
        } else {
            "<redacted>".into()
        };
    };
    let rest = &url[scheme_end + 3..];
    match rest.rfind('@') {
        Some(at) => {
            let userinfo = &rest[..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!(
                "{}://{}:<redacted>@{}",
                &url[..scheme_end],
                user,
                &rest[at + 1..]
            )
        }
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_are_valid_and_match_the_issue() {
        let s = Settings::load_from(None, env(&[])).unwrap();
        assert_eq!(s.server.port, 1234);
        assert_eq!(s.server.host, "0.0.0.0");
        assert_eq!(s.store_kind(), StoreKind::Embedded);
        assert_eq!(s.auth.effective_mode(), AuthMode::Off);
    }

    #[test]
    fn env_layers_override_in_order() {
        let s = Settings::load_from(None, env(&[("PORT", "4000")])).unwrap();
        assert_eq!(s.server.port, 4000);
        let s = Settings::load_from(
            None,
            env(&[
                ("PORT", "4000"),
                ("ZEDI__SERVER__PORT", "5000"),
                ("ZEDI__LIMITS__MAX_FRAME_BYTES", "65536"),
            ]),
        )
        .unwrap();
        assert_eq!(s.server.port, 5000);
        assert_eq!(s.limits.max_frame_bytes, 65536);
    }

    #[test]
    fn file_layer_overrides_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("z.toml");
        std::fs::write(&path, "[server]\nport = 9999\n[log]\nformat = \"json\"\n").unwrap();
        let s = Settings::load_from(Some(&path), env(&[])).unwrap();
        assert_eq!(s.server.port, 9999);
        assert_eq!(s.log.format, LogFormat::Json);
        assert_eq!(s.server.host, "0.0.0.0", "untouched keys keep defaults");
    }

    #[test]
    fn bad_values_name_the_key() {
        let err =
            Settings::load_from(None, env(&[("ZEDI__SERVER__PORT", "notaport")])).unwrap_err();
        assert!(err.to_string().contains("server.port"), "{err}");
        let err = Settings::load_from(None, env(&[("ZEDI__TIMEOUTS__PING_INTERVAL_MS", "0")]))
            .unwrap_err();
        assert!(
            err.to_string().contains("timeouts.ping_interval_ms"),
            "{err}"
        );
        let err =
            Settings::load_from(None, env(&[("ZEDI__STORE__SSLMODE", "sometimes")])).unwrap_err();
        assert!(err.to_string().contains("store.sslmode"), "{err}");
        let err = Settings::load_from(None, env(&[("ZEDI__STORE__KIND", "postgres")])).unwrap_err();
        assert!(err.to_string().contains("store.database_url"), "{err}");
    }

    #[test]
    fn the_task_definition_env_turns_auth_on() {
        let s = Settings::load_from(None, env(&[("JWT_SECRET", "x")])).unwrap();
        assert_eq!(s.auth.effective_mode(), AuthMode::Jwt);
        let s = Settings::load_from(
            None,
            env(&[
                ("COGNITO_USER_POOL_ID", "eu-west-1_Abc"),
                ("COGNITO_REGION", "eu-west-1"),
            ]),
        )
        .unwrap();
        assert_eq!(s.auth.effective_mode(), AuthMode::Jwt);
        assert_eq!(
            s.auth.effective_issuer().as_deref(),
            Some("https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_Abc")
        );
        let err = Settings::load_from(None, env(&[("ZEDI__AUTH__MODE", "jwt")])).unwrap_err();
        assert!(err.to_string().contains("auth.mode"), "{err}");
        let s = Settings::load_from(
            None,
            env(&[("ALLOWED_ORIGINS", "https://a.example, https://b.example/")]),
        )
        .unwrap();
        assert_eq!(
            s.server.origins(),
            vec!["https://a.example", "https://b.example"]
        );
    }

    #[test]
    fn database_url_selects_postgres() {
        let s = Settings::load_from(None, env(&[("DATABASE_URL", "postgres://u:p@h/db")])).unwrap();
        assert_eq!(s.store_kind(), StoreKind::Postgres);
        let err = Settings::load_from(
            None,
            env(&[
                ("DATABASE_URL", "postgres://u:p@h/db"),
                ("ZEDI__STORE__KIND", "embedded"),
            ]),
        )
        .unwrap_err();
        assert!(err.to_string().contains("store.kind"), "{err}");
    }

    #[test]
    fn redis_host_port_and_password_make_a_tls_url() {
        // A cluster node needs the shared PostgreSQL store.
        const DB: &str = "postgres://zedi@db.internal:5432/zedi";
        let s = Settings::load_from(
            None,
            env(&[
                ("DATABASE_URL", DB),
                ("REDIS_HOST", "master.zedi.abc123.use1.cache.amazonaws.com"),
                ("REDIS_PORT", "6380"),
                ("REDIS_PASSWORD", "p@ss/w:rd#1"),
            ]),
        )
        .unwrap();
        assert_eq!(
            s.cluster.redis_url,
            "rediss://:p%40ss%2Fw%3Ard%231@master.zedi.abc123.use1.cache.amazonaws.com:6380"
        );
        let s =
            Settings::load_from(None, env(&[("DATABASE_URL", DB), ("REDIS_HOST", "::1")])).unwrap();
        assert_eq!(
            s.cluster.redis_url, "rediss://[::1]:6379",
            "default port, no AUTH"
        );
        // REDIS_URL, when both are set, is what the operator wrote out in full.
        let s = Settings::load_from(
            None,
            env(&[
                ("DATABASE_URL", DB),
                ("REDIS_HOST", "a"),
                ("REDIS_URL", "redis://b:6379"),
            ]),
        )
        .unwrap();
        assert_eq!(s.cluster.redis_url, "redis://b:6379");
        let s = Settings::load_from(None, env(&[])).unwrap();
        assert!(s.cluster.redis_url.is_empty());
    }

    #[test]
    fn unknown_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("z.toml");
        std::fs::write(&path, "[server]\nprot = 1\n").unwrap();
        let err = Settings::load_from(Some(&path), env(&[])).unwrap_err();
        assert!(err.to_string().contains("prot"), "{err}");
    }

    #[test]
    fn per_socket_limits_must_be_shares_of_the_memory_budget() {
        let err = Settings::load_from(
            None,
            env(&[("ZEDI__LIMITS__MEMORY_BUDGET_BYTES", "33554432")]),
        )
        .unwrap_err();
        // The default 32 MiB outbound share is the whole of a 32 MiB budget.
        assert!(
            err.to_string().contains("limits.max_outbound_bytes"),
            "{err}"
        );
        let ok = Settings::load_from(
            None,
            env(&[
                ("ZEDI__LIMITS__MEMORY_BUDGET_BYTES", "33554432"),
                ("ZEDI__LIMITS__MAX_FRAME_BYTES", "8388608"),
                ("ZEDI__LIMITS__MAX_OUTBOUND_BYTES", "16777216"),
                ("ZEDI__LIMITS__MAX_PREAUTH_BYTES_PER_ADDRESS", "16777216"),
                ("ZEDI__LIMITS__MAX_DOCUMENT_BYTES", "1048576"),
            ]),
        );
        assert!(ok.is_ok(), "{:?}", ok.err());
        let defaults = Settings::load_from(None, env(&[])).unwrap();
        assert_eq!(defaults.limits.memory_budget_bytes, 384 * 1024 * 1024);
        assert!(defaults.limits.memory_budget_measures_rss);
    }

    #[test]
    fn a_document_at_its_largest_is_at_most_half_the_budget() {
        // 16 MiB × 9 = 144 MiB fits half of 384 MiB; × 13 = 208 MiB does not.
        let err = Settings::load_from(None, env(&[("ZEDI__LIMITS__DOCUMENT_MEMORY_FACTOR", "13")]))
            .unwrap_err();
        assert!(
            err.to_string().contains("limits.max_document_bytes"),
            "{err}"
        );
        let ok = Settings::load_from(
            None,
            env(&[
                ("ZEDI__LIMITS__DOCUMENT_MEMORY_FACTOR", "13"),
                ("ZEDI__LIMITS__MAX_DOCUMENT_BYTES", "8388608"),
            ]),
        );
        assert!(ok.is_ok(), "{:?}", ok.err());
    }

    #[test]
    fn secrets_are_redacted() {
        let s = Settings::load_from(
            None,
            env(&[
                ("JWT_SECRET", "hunter2"),
                ("DATABASE_URL", "postgres://u:pw1@h/db"),
                ("DATABASE_PASSWORD", "pw2"),
            ]),
        )
        .unwrap();
        let shown = s.redacted_toml();
        assert!(
            !shown.contains("hunter2") && !shown.contains("pw1") && !shown.contains("pw2"),
            "{shown}"
        );
        assert!(shown.contains("<redacted>"));
        assert_eq!(
            redact_url("redis://:tok@h:6379"),
            "redis://:<redacted>@h:6379"
        );
        assert_eq!(
            redact_url("postgres://u:pw@h/db"),
            "postgres://u:<redacted>@h/db"
        );
    }
}
