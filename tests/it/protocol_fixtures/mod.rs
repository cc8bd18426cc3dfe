//! Test vectors from frames captured between the real `@hocuspocus/provider` 4.8.0 and the real
//! Hocuspocus 4.7.0 server (`tests/fixtures/hocuspocus-v4-frames.json`, described in the
//! fixtures README in the project's shared notes).
//!
//! Per scenario:
//! 1. every frame (both directions) decodes with our decoder and matches the fixture's `decoded`
//!    (address, type, sub-type, strings, payload length, awareness entries), and re-encodes to
//!    the captured bytes;
//! 2. the deterministic server replies (Authenticated, PermissionDenied, SyncStatus, CLOSE,
//!    SyncStep1/SyncStep2 of an empty document) are encoded by *us* and compared byte for byte
//!    with the frames the real server sent, found by their fixture fields;
//! 3. Yjs payloads are applied with yrs and the resulting document is checked, never the bytes
//!    (client ids are random per capture);
//! 4. the per-address order of the server's handshake replies is checked, not the interleaving.

mod auth;
mod sessions;

use serde_json::Value;
use yrs::updates::decoder::Decode;
use yrs::{ClientID, Doc, GetString, ReadTxn, StateVector, Transact, Update};
use zedi_sync::awareness::{AwarenessTable, Owner, decode_update};
use zedi_sync::protocol::{
    AuthMessage, Message, Packet, SCOPE_READ_ONLY, SCOPE_READ_WRITE, SyncMessage, decode, encode,
};

/// The captured provider's connection, as an awareness owner.
const PROVIDER: Owner = Owner::Connection(1);

const FIXTURE: &str = include_str!("../../fixtures/hocuspocus-v4-frames.json");

/// The client id of the `auth-ok` provider, which wrote `hello` into `fixture-doc`; the later
/// scenarios see the document as stored by it.
const HELLO_WRITER: u64 = 3_846_846_611;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dir {
    ClientToServer,
    ServerToClient,
}

#[derive(Debug, Clone)]
struct Frame {
    index: usize,
    dir: Dir,
    bytes: Vec<u8>,
    decoded: Value,
    summary: String,
}

impl Frame {
    fn address(&self) -> &str {
        self.decoded["address"].as_str().expect("address")
    }
    fn ty(&self) -> u64 {
        self.decoded["type"].as_u64().expect("type")
    }
    fn sub(&self) -> Option<u64> {
        self.decoded.get("sub").and_then(Value::as_u64)
    }
    fn str_field(&self, key: &str) -> Option<&str> {
        self.decoded.get(key).and_then(Value::as_str)
    }
    fn is(&self, dir: Dir, address: &str, ty: u64, sub: Option<u64>) -> bool {
        self.dir == dir && self.address() == address && self.ty() == ty && self.sub() == sub
    }
    /// The Yjs / awareness payload inside the frame, via our decoder.
    fn payload(&self) -> &[u8] {
        match decode(&self.bytes).unwrap() {
            Packet::Message {
                message:
                    Message::Sync(
                        SyncMessage::Step1(p) | SyncMessage::Step2(p) | SyncMessage::Update(p),
                    ),
                ..
            }
            | Packet::Message {
                message: Message::Awareness(p),
                ..
            } => p,
            other => panic!("frame {} has no payload: {other:?}", self.summary),
        }
    }
}

fn fixture() -> Value {
    serde_json::from_str(FIXTURE).expect("fixture JSON parses")
}

fn unhex(hex: &str) -> Vec<u8> {
    assert!(hex.len().is_multiple_of(2), "odd hex length");
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex digit"))
        .collect()
}

fn scenario(name: &str) -> Vec<Frame> {
    let fixture = fixture();
    let frames = fixture["scenarios"][name]
        .as_array()
        .unwrap_or_else(|| panic!("scenario {name} missing from fixture"));
    assert!(!frames.is_empty(), "scenario {name} is empty");
    frames
        .iter()
        .enumerate()
        .map(|(index, f)| {
            assert_eq!(
                f["socket"].as_u64(),
                Some(1),
                "every scenario uses one socket"
            );
            Frame {
                index,
                dir: match f["dir"].as_str().unwrap() {
                    "client->server" => Dir::ClientToServer,
                    "server->client" => Dir::ServerToClient,
                    other => panic!("unknown dir {other}"),
                },
                bytes: unhex(f["hex"].as_str().unwrap()),
                decoded: f["decoded"].clone(),
                summary: format!("{name}#{index} {}", f["summary"].as_str().unwrap_or("")),
            }
        })
        .collect()
}

/// Decodes one frame with our decoder and checks every field the fixture lists.
// One check per fixture field, in the fixture's order; splitting it would scatter the list.
fn check_frame(frame: &Frame) {
    let ctx = &frame.summary;
    let known = [
        "address",
        "type",
        "typeName",
        "sub",
        "subName",
        "token",
        "providerVersion",
        "scope",
        "reason",
        "payload",
        "payloadBytes",
        "awareness",
        "status",
        "applied",
    ];
    for key in frame.decoded.as_object().unwrap().keys() {
        assert!(
            known.contains(&key.as_str()),
            "{ctx}: fixture field {key} is not checked"
        );
    }

    let (address, message) = match decode(&frame.bytes) {
        Ok(Packet::Message { address, message }) => (address, message),
        other => panic!("{ctx}: decoded as {other:?}"),
    };
    assert_eq!(address, frame.address(), "{ctx}: address");
    assert_eq!(message.message_type() as u64, frame.ty(), "{ctx}: type");

    let d = &frame.decoded;
    let payload_bytes = d.get("payloadBytes").and_then(Value::as_u64);
    match message {
        Message::Sync(sync) => {
            let (sub, payload) = match sync {
                SyncMessage::Step1(p) => (0, p),
                SyncMessage::Step2(p) => (1, p),
                SyncMessage::Update(p) => (2, p),
            };
            assert_eq!(frame.sub(), Some(sub), "{ctx}: sync sub-type");
            assert_eq!(
                payload_bytes,
                Some(payload.len() as u64),
                "{ctx}: payload length"
            );
        }
        Message::Awareness(payload) => {
            assert_eq!(frame.sub(), None, "{ctx}");
            assert_eq!(
                payload_bytes,
                Some(payload.len() as u64),
                "{ctx}: payload length"
            );
            let entries = decode_update(payload).unwrap_or_else(|e| panic!("{ctx}: {e}"));
            let expected = d["awareness"].as_array().expect("awareness entries");
            assert_eq!(
                entries.len(),
                expected.len(),
                "{ctx}: awareness entry count"
            );
            for (got, want) in entries.iter().zip(expected) {
                assert_eq!(
                    Some(got.client_id),
                    want["clientId"].as_u64(),
                    "{ctx}: clientId"
                );
                assert_eq!(Some(got.clock), want["clock"].as_u64(), "{ctx}: clock");
                assert_eq!(Some(got.state), want["state"].as_str(), "{ctx}: state");
            }
        }
        Message::Auth(AuthMessage::Token {
            token,
            provider_version,
        }) => {
            assert_eq!(frame.sub(), Some(0), "{ctx}: auth sub-type");
            assert_eq!(Some(token), frame.str_field("token"), "{ctx}: token");
            assert_eq!(
                provider_version,
                frame.str_field("providerVersion"),
                "{ctx}: version"
            );
        }
        Message::Auth(AuthMessage::PermissionDenied { reason }) => {
            assert_eq!(frame.sub(), Some(1), "{ctx}: auth sub-type");
            assert_eq!(Some(reason), frame.str_field("reason"), "{ctx}: reason");
        }
        Message::Auth(AuthMessage::Authenticated { scope }) => {
            assert_eq!(frame.sub(), Some(2), "{ctx}: auth sub-type");
            assert_eq!(Some(scope), frame.str_field("scope"), "{ctx}: scope");
        }
        Message::Stateless(payload) => {
            assert_eq!(
                Some(payload),
                frame.str_field("payload"),
                "{ctx}: stateless payload"
            );
        }
        Message::Close(reason) => {
            assert_eq!(reason, frame.str_field("reason"), "{ctx}: close reason");
        }
        Message::SyncStatus(applied) => {
            assert_eq!(
                d["status"].as_u64(),
                Some(u64::from(applied)),
                "{ctx}: status"
            );
            assert_eq!(d["applied"].as_bool(), Some(applied), "{ctx}: applied");
        }
        other => panic!("{ctx}: the capture holds no {other:?}"),
    }
    if payload_bytes.is_some() {
        assert!(
            matches!(message, Message::Sync(_) | Message::Awareness(_)),
            "{ctx}: payloadBytes on a message without payload"
        );
    }

    // Yjs and awareness payloads are carried as opaque bytes and lib0 has one canonical
    // encoding for the rest, so every captured frame (not only those without Yjs data)
    // re-encodes to exactly the captured bytes.
    assert_eq!(
        encode(address, &message),
        frame.bytes,
        "{ctx}: re-encoding differs"
    );
}

fn check_all_frames(frames: &[Frame]) {
    for frame in frames {
        check_frame(frame);
    }
}

/// Every server->client frame for `address` that matches `pred` on the fixture's fields must be
/// exactly what our encoder produces for `message`; at least one must exist.
fn assert_server_replies(
    frames: &[Frame],
    address: &str,
    pred: impl Fn(&Frame) -> bool,
    message: Message<'_>,
) {
    let expected = encode(address, &message);
    let matching: Vec<&Frame> = frames
        .iter()
        .filter(|f| f.dir == Dir::ServerToClient && f.address() == address && pred(f))
        .collect();
    assert!(
        !matching.is_empty(),
        "no server frame for {address} like {message:?}"
    );
    for f in matching {
        assert_eq!(
            f.bytes, expected,
            "{}: our encoding of {message:?} differs",
            f.summary
        );
    }
}

fn authenticated(scope: &str) -> Message<'_> {
    Message::Auth(AuthMessage::Authenticated { scope })
}

/// Checks the replies the captured server made that any conforming server makes byte for byte.
fn assert_handshake_replies(frames: &[Frame], address: &str, scope: &str) {
    assert_server_replies(
        frames,
        address,
        |f| f.ty() == 2 && f.sub() == Some(2),
        authenticated(scope),
    );
    assert_server_replies(
        frames,
        address,
        |f| f.ty() == 7,
        Message::Close(Some("provider_initiated")),
    );
}

/// The index, in capture order, of the first frame matching.
fn position(frames: &[Frame], pred: impl Fn(&Frame) -> bool) -> Option<usize> {
    frames.iter().find(|f| pred(f)).map(|f| f.index)
}

/// The server's handshake for one address, in order: Authenticated first, then its SyncStep1,
/// then its SyncStep2; the SyncStatus acking the client's SyncStep2 comes after that SyncStep2.
fn assert_handshake_order(frames: &[Frame], address: &str) {
    use Dir::*;
    let first_server = position(frames, |f| {
        f.dir == ServerToClient && f.address() == address
    })
    .unwrap();
    let authenticated = position(frames, |f| f.is(ServerToClient, address, 2, Some(2))).unwrap();
    let step1 = position(frames, |f| f.is(ServerToClient, address, 0, Some(0))).unwrap();
    let step2 = position(frames, |f| f.is(ServerToClient, address, 0, Some(1))).unwrap();
    let client_step2 = position(frames, |f| f.is(ClientToServer, address, 0, Some(1))).unwrap();
    let status = position(frames, |f| {
        f.dir == ServerToClient && f.address() == address && f.ty() == 8
    })
    .unwrap();
    assert_eq!(
        first_server, authenticated,
        "{address}: Authenticated is the first server frame"
    );
    assert!(
        authenticated < step1,
        "{address}: Authenticated before SyncStep1"
    );
    assert!(step1 < step2, "{address}: SyncStep1 before SyncStep2");
    assert!(
        client_step2 < status,
        "{address}: SyncStatus after the client's SyncStep2"
    );
}

fn apply_all(payloads: &[&[u8]]) -> Doc {
    let doc = Doc::new();
    {
        let mut txn = doc.transact_mut();
        for payload in payloads {
            let update = Update::decode_v1(payload).expect("Yjs v1 update decodes");
            txn.apply_update(update).expect("Yjs update applies");
        }
    }
    doc
}

fn text_of(doc: &Doc) -> String {
    let text = doc.get_or_insert_text("default");
    let txn = doc.transact();
    assert!(
        txn.store().pending_update().is_none(),
        "update left pending (missing predecessors)"
    );
    text.get_string(&txn)
}

fn single<'a>(frames: &'a [Frame], pred: impl Fn(&Frame) -> bool, what: &str) -> &'a Frame {
    let matching: Vec<&Frame> = frames.iter().filter(|f| pred(f)).collect();
    assert_eq!(matching.len(), 1, "exactly one {what}");
    matching[0]
}
