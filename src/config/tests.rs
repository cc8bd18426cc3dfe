//! Layering, the task definition's env names, and validation naming the key.

use super::*;
use crate::auth::AuthMode;
use crate::logging::LogFormat;

fn redis_url(s: &Settings) -> &str {
    s.cluster.redis_url.as_ref().map_or("", |u| u.expose())
}

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
    assert_eq!(s.server.host.to_string(), "0.0.0.0");
    assert_eq!(s.store.kind(), StoreKind::Embedded);
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
    assert_eq!(
        s.server.host.to_string(),
        "0.0.0.0",
        "untouched keys keep defaults"
    );
}

#[test]
fn bad_values_name_the_key() {
    let err = Settings::load_from(None, env(&[("ZEDI__SERVER__PORT", "notaport")])).unwrap_err();
    assert!(err.to_string().contains("server.port"), "{err}");
    let err =
        Settings::load_from(None, env(&[("ZEDI__TIMEOUTS__PING_INTERVAL_MS", "0")])).unwrap_err();
    assert!(
        err.to_string().contains("timeouts.ping_interval_ms"),
        "{err}"
    );
    let err = Settings::load_from(None, env(&[("ZEDI__STORE__SSLMODE", "sometimes")])).unwrap_err();
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
    assert_eq!(s.store.kind(), StoreKind::Postgres);
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
        redis_url(&s),
        "rediss://:p%40ss%2Fw%3Ard%231@master.zedi.abc123.use1.cache.amazonaws.com:6380"
    );
    let s = Settings::load_from(None, env(&[("DATABASE_URL", DB), ("REDIS_HOST", "::1")])).unwrap();
    assert_eq!(
        redis_url(&s),
        "rediss://[::1]:6379",
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
    assert_eq!(redis_url(&s), "redis://b:6379");
    let s = Settings::load_from(None, env(&[])).unwrap();
    assert!(s.cluster.redis_url.is_none());
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
    assert!(shown.contains("postgres://u:<redacted>@h/db"), "{shown}");
}

#[test]
fn check_config_output_loads_back_as_a_config_file() {
    let s = Settings::load_from(
        None,
        env(&[
            ("ALLOWED_ORIGINS", "https://a.example/"),
            ("ZEDI__AUTH__AUDIENCES", "app1, app2"),
            ("ZEDI__SERVER__NODE_ID", "node-a"),
        ]),
    )
    .unwrap();
    let shown = s.redacted_toml();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("effective.toml");
    std::fs::write(&path, &shown).unwrap();
    let again = Settings::load_from(Some(&path), env(&[])).unwrap();
    assert_eq!(again.redacted_toml(), shown);
    assert_eq!(again.auth.audiences, vec!["app1", "app2"]);
    assert_eq!(again.server.origins(), vec!["https://a.example"]);
}

#[test]
fn the_webhooks_section_takes_env_overrides() {
    use crate::webhooks::WebhookEvent;
    let s = Settings::load_from(
        None,
        env(&[
            ("ZEDI__WEBHOOKS__URL", "https://u:pw3@hooks.example/zedi"),
            ("ZEDI__WEBHOOKS__SECRET", "hook-secret"),
            ("ZEDI__WEBHOOKS__EVENTS", "connect, change,disconnect"),
            ("ZEDI__WEBHOOKS__DEBOUNCE_MS", "0"),
            ("ZEDI__WEBHOOKS__TIMEOUT_MS", "750"),
            ("ZEDI__WEBHOOKS__MAX_ATTEMPTS", "3"),
            ("ZEDI__WEBHOOKS__MAX_QUEUED", "5"),
        ]),
    )
    .unwrap();
    let w = &s.webhooks;
    assert_eq!(
        w.url.as_ref().map(|u| u.expose()),
        Some("https://u:pw3@hooks.example/zedi")
    );
    assert_eq!(w.secret.as_ref().map(|s| s.expose()), Some("hook-secret"));
    assert_eq!(
        w.events,
        [
            WebhookEvent::Connect,
            WebhookEvent::Change,
            WebhookEvent::Disconnect
        ]
    );
    assert_eq!(w.debounce, std::time::Duration::ZERO);
    assert_eq!(w.max_debounce, std::time::Duration::from_secs(10));
    assert_eq!(w.timeout, std::time::Duration::from_millis(750));
    assert_eq!((w.max_attempts, w.max_queued), (3, 5));
    let shown = s.redacted_toml();
    assert!(
        !shown.contains("hook-secret") && !shown.contains("pw3"),
        "{shown}"
    );
    assert!(
        shown.contains("https://u:<redacted>@hooks.example/zedi"),
        "{shown}"
    );

    let err = Settings::load_from(None, env(&[("ZEDI__WEBHOOKS__EVENTS", "change,onConnect")]))
        .unwrap_err();
    assert!(err.to_string().contains("onConnect"), "{err}");
    let err = Settings::load_from(None, env(&[("ZEDI__WEBHOOKS__URL", "ftp://h/x")])).unwrap_err();
    assert!(err.to_string().contains("webhooks.url"), "{err}");
    let err = Settings::load_from(None, env(&[("ZEDI__WEBHOOKS__MAX_ATTEMPTS", "0")])).unwrap_err();
    assert!(err.to_string().contains("webhooks.max_attempts"), "{err}");
}
