//! The HTTP upgrade itself, written by hand: frames sent along with it, and requests that are not WebSocket upgrades.

use super::*;

/// Sends raw bytes to the daemon and reads the HTTP response head (up to the blank line),
/// byte by byte so nothing after it is consumed.
pub(super) fn raw_request(port: u16, bytes: &[u8]) -> (std::net::TcpStream, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(bytes).unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 8192 {
        if s.read(&mut byte).unwrap() == 0 {
            break;
        }
        head.push(byte[0]);
    }
    (s, String::from_utf8_lossy(&head).into_owned())
}

pub(super) fn upgrade_request(extra_headers: &str) -> String {
    format!(
        "GET /any/path HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\n{extra_headers}\r\n"
    )
}

/// A client-to-server WebSocket frame: binary, final, masked (RFC 6455 5.3).
pub(super) fn masked_binary(payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() < 126, "short frames only");
    let key = [0x37, 0xfa, 0x21, 0x3d];
    let mut frame = vec![0x82, 0x80 | payload.len() as u8];
    frame.extend_from_slice(&key);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    frame
}

#[test]
fn frames_sent_together_with_the_upgrade_request_are_not_lost() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), &[]);
    let auth = protocol::encode(
        "early",
        &Message::Auth(AuthMessage::Token {
            token: "any",
            provider_version: Some("4.8.0"),
        }),
    );
    // Request and first frame in one write: the frame arrives in the same read as the
    // request, before the server has answered the handshake.
    let mut bytes = upgrade_request(
        "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
    )
    .into_bytes();
    bytes.extend(masked_binary(&auth));
    let (stream, head) = raw_request(daemon.port, &bytes);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
        "{head}"
    );
    let mut ws =
        tungstenite::WebSocket::from_raw_socket(stream, tungstenite::protocol::Role::Client, None);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        assert!(std::time::Instant::now() < deadline, "no Authenticated");
        if let tungstenite::Message::Binary(frame) = ws.read().unwrap()
            && let Ok(Packet::Message { address, message }) = protocol::decode(&frame)
        {
            assert_eq!(address, "early");
            assert!(matches!(
                message,
                Message::Auth(AuthMessage::Authenticated { .. })
            ));
            break;
        }
    }
}

#[test]
fn upgrades_that_are_not_websockets_get_plain_http_answers() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), &[]);
    // Another protocol: not ours, as on any other path.
    let (_, head) = raw_request(daemon.port, upgrade_request("Upgrade: h2c\r\n").as_bytes());
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    // A WebSocket upgrade without its key: a bad handshake, refused, and the node carries on.
    let (_, head) = raw_request(
        daemon.port,
        upgrade_request("Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n").as_bytes(),
    );
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    assert_eq!(daemon.health()["connections"], 0);
    let mut c = daemon.ws();
    c.open("still-serving");
}
