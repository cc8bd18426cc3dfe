//! Token expiry against the real daemon: RFC 7519 NumericDates may be fractional, and a far
//! future `exp` must neither overflow the clock arithmetic nor take the daemon down.

use crate::common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{Client, Daemon};
use jsonwebtoken::{EncodingKey, Header, encode};
use serde_json::{Value, json};
use zedi_sync::protocol::{AuthMessage, Message};

const SECRET: &str = "jwt-expiry-test-secret";

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64()
}

fn token(exp: Value) -> String {
    encode(
        &Header::default(),
        &json!({"sub": "u", "exp": exp}),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("encode a token")
}

fn auth(client: &mut Client, address: &str, token: &str) {
    client.send(
        address,
        Message::Auth(AuthMessage::Token {
            token,
            provider_version: Some("4.8.0"),
        }),
    );
}

fn expect_denied(client: &mut Client, address: &str) {
    client.expect("PermissionDenied", |a, m| {
        a == address && matches!(m, Message::Auth(AuthMessage::PermissionDenied { .. }))
    });
}

fn expect_authenticated(client: &mut Client, address: &str) {
    client.expect("Authenticated", |a, m| {
        a == address
            && matches!(
                m,
                Message::Auth(AuthMessage::Authenticated {
                    scope: "read-write"
                })
            )
    });
}

fn start(dir: &std::path::Path) -> Daemon {
    // No leeway, so "expired" means what the token says and the refresh comes on time.
    Daemon::start(
        dir,
        &[("JWT_SECRET", SECRET), ("ZEDI__AUTH__LEEWAY_SECS", "0")],
    )
}

#[test]
fn fractional_expiries_are_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = start(dir.path());
    let mut c = daemon.ws();

    // Correctly signed, fractional `exp` in the past: denied.
    auth(&mut c, "past", &token(json!(now().floor() - 10.5)));
    expect_denied(&mut c, "past");

    // Fractional `exp` two and a half seconds ahead: accepted, and when it passes the server
    // asks for a fresh token (an Auth Token with an empty payload). Read as an integer only,
    // such a token never expired.
    auth(&mut c, "soon", &token(json!(now().floor() + 2.5)));
    expect_authenticated(&mut c, "soon");
    c.expect("token refresh request", |a, m| {
        a == "soon" && matches!(m, Message::Auth(AuthMessage::Token { token: "", .. }))
    });
    assert_eq!(
        daemon
            .metrics()
            .value("zedi_auth_results_total", &[("result", "expired")]),
        1.0
    );
}

#[test]
fn far_future_expiries_do_not_crash_the_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = start(dir.path());
    // 9.2e18 as JSON float and integer, 2^63 (past i64 seconds: SystemTime overflowed), the
    // largest u64 and 1e300: each is a valid, very late NumericDate.
    let far: [Value; 5] = [
        json!(9.2e18),
        json!(9_200_000_000_000_000_000_u64),
        json!(9_223_372_036_854_775_808_u64),
        json!(u64::MAX),
        json!(1e300),
    ];
    let mut c = daemon.ws();
    for (i, exp) in far.iter().enumerate() {
        let address = format!("far-{i}");
        auth(&mut c, &address, &token(exp.clone()));
        expect_authenticated(&mut c, &address);
    }
    // Still healthy, the documents open on that socket work, and a fresh connection too.
    assert_eq!(daemon.health()["status"], "ok");
    c.send(
        "far-2",
        Message::Sync(zedi_sync::protocol::SyncMessage::Step1(&[0])),
    );
    c.expect("SyncStep2", |a, m| {
        a == "far-2" && matches!(m, Message::Sync(zedi_sync::protocol::SyncMessage::Step2(_)))
    });
    let mut other = daemon.ws();
    auth(&mut other, "after", &token(json!(now() + 60.0)));
    expect_authenticated(&mut other, "after");
    // Time for a mis-scheduled expiry timer to fire and take the daemon down, if it would.
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(daemon.health()["status"], "ok");
}
