//! The daemon's subcommands: check-config and healthcheck.

use super::*;

#[test]
fn check_config_prints_redacted_settings_and_rejects_bad_ones() {
    let out = Command::new(bin())
        .arg("check-config")
        .env("JWT_SECRET", "super-secret-value")
        .env("PORT", "4321")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("port = 4321"), "{text}");
    assert!(
        !text.contains("super-secret-value"),
        "secret leaked: {text}"
    );

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "[limits]\nmax_frame_bytes = 10\n").unwrap();
    let out = Command::new(bin())
        .arg("--config")
        .arg(&file)
        .arg("check-config")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("limits.max_frame_bytes"), "{err}");

    let out = Command::new(bin())
        .arg("check-config")
        .env("ZEDI__SERVER__PORT", "99999")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("server.port"));
}

#[test]
fn healthcheck_subcommand_reports_the_local_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), &[]);
    let port = daemon.port.to_string();
    let ok = Command::new(bin())
        .arg("healthcheck")
        .env("PORT", &port)
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    drop(daemon);
    let down = Command::new(bin())
        .arg("healthcheck")
        .env("PORT", &port)
        .output()
        .unwrap();
    assert_eq!(down.status.code(), Some(1));
}
