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

use serde_json::Value;
use yrs::updates::decoder::Decode;
use yrs::{ClientID, Doc, GetString, ReadTxn, StateVector, Transact, Update};
use zedi_sync::awareness::{AwarenessTable, Owner, decode_update};
use zedi_sync::protocol::{
    AuthMessage, Message, Packet, SCOPE_READ_ONLY, SCOPE_READ_WRITE, SyncMessage, decode, encode,
};

/// The captured provider's connection, as an awareness owner.
const PROVIDER: Owner = Owner::Connection(1);

const FIXTURE: &str = include_str!("../fixtures/hocuspocus-v4-frames.json");

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
    assert!(hex.len() % 2 == 0, "odd hex length");
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

#[test]
fn fixture_has_exactly_the_known_scenarios() {
    let fixture = fixture();
    let names: Vec<&str> = fixture["scenarios"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    // A scenario added to the fixture must get its own test below.
    let mut sorted = names.clone();
    sorted.sort_unstable();
    assert_eq!(
        sorted,
        [
            "auth-denied",
            "auth-ok",
            "empty-token",
            "late-joiner",
            "multiplex",
            "read-only"
        ]
    );
}

#[test]
fn auth_ok() {
    use Dir::*;
    let frames = scenario("auth-ok");
    check_all_frames(&frames);
    let doc = "fixture-doc";

    // Client frames without Yjs data, built from scratch.
    let auth = single(
        &frames,
        |f| f.is(ClientToServer, doc, 2, Some(0)),
        "client Auth",
    );
    assert_eq!(
        encode(
            doc,
            &Message::Auth(AuthMessage::Token {
                token: "good-token",
                provider_version: Some("4.8.0")
            })
        ),
        auth.bytes
    );
    let stateless = single(
        &frames,
        |f| f.dir == ClientToServer && f.ty() == 5,
        "stateless",
    );
    assert_eq!(
        encode(doc, &Message::Stateless(r#"{"op":"ping"}"#)),
        stateless.bytes
    );
    let close = single(
        &frames,
        |f| f.dir == ClientToServer && f.ty() == 7,
        "client CLOSE",
    );
    assert_eq!(encode(doc, &Message::Close(None)), close.bytes);
    let step1 = single(
        &frames,
        |f| f.is(ClientToServer, doc, 0, Some(0)),
        "client SyncStep1",
    );
    assert_eq!(
        encode(doc, &Message::Sync(SyncMessage::Step1(&[0]))),
        step1.bytes
    );

    // Deterministic server replies: the document is empty when this scenario starts.
    assert_handshake_replies(&frames, doc, SCOPE_READ_WRITE);
    assert_server_replies(
        &frames,
        doc,
        |f| f.ty() == 0 && f.sub() == Some(0),
        Message::Sync(SyncMessage::Step1(&[0])),
    );
    assert_server_replies(
        &frames,
        doc,
        |f| f.ty() == 0 && f.sub() == Some(1),
        Message::Sync(SyncMessage::Step2(&[0, 0])),
    );
    assert_server_replies(&frames, doc, |f| f.ty() == 8, Message::SyncStatus(true));
    assert_eq!(
        frames
            .iter()
            .filter(|f| f.dir == ServerToClient && f.ty() == 8)
            .count(),
        2
    );
    assert_handshake_order(&frames, doc);

    // The client's Update writes "hello"; the server acks it, then echoes the same bytes.
    let update = single(
        &frames,
        |f| f.is(ClientToServer, doc, 0, Some(2)),
        "client Update",
    );
    assert_eq!(text_of(&apply_all(&[update.payload()])), "hello");
    let ack = position(&frames, |f| {
        f.dir == ServerToClient && f.ty() == 8 && f.index > update.index
    })
    .unwrap();
    let echo = single(
        &frames,
        |f| f.is(ServerToClient, doc, 0, Some(2)),
        "server Update echo",
    );
    assert!(ack < echo.index, "SyncStatus before the echo of the update");
    assert_eq!(
        echo.bytes, update.bytes,
        "the update is echoed to its sender unchanged"
    );
    let sv = apply_all(&[update.payload()]).transact().state_vector();
    assert_eq!(
        sv.get(&ClientID::new(HELLO_WRITER)),
        5,
        "hello is 5 items by the writer"
    );

    // Stateless gets no answer (no hook configured).
    assert!(
        !frames
            .iter()
            .any(|f| f.dir == ServerToClient && f.ty() == 5)
    );
}

#[test]
fn auth_ok_awareness() {
    use Dir::*;
    let frames = scenario("auth-ok");
    let doc = "fixture-doc";
    let client_awareness: Vec<&Frame> = frames
        .iter()
        .filter(|f| f.is(ClientToServer, doc, 1, None))
        .collect();
    assert_eq!(
        client_awareness.len(),
        3,
        "initial {{}}, alice, null on destroy"
    );
    let echoes: Vec<&Frame> = frames
        .iter()
        .filter(|f| f.is(ServerToClient, doc, 1, None))
        .collect();
    assert_eq!(echoes.len(), 1, "only the alice state is echoed");

    let mut table = AwarenessTable::new();

    // The provider's first awareness (clock 0, `{}`) changes nothing, as in y-protocols.
    let first = decode_update(client_awareness[0].payload()).unwrap();
    assert_eq!(
        (first[0].client_id, first[0].clock, first[0].state),
        (HELLO_WRITER, 0, "{}")
    );
    assert!(
        table.apply(PROVIDER, &first, 0).is_empty(),
        "clock 0 from an unknown client is ignored"
    );
    assert_eq!(table.encode_live(), None);

    // alice (clock 1) is an addition, and our re-encoding is the captured echo, byte for byte.
    let alice = decode_update(client_awareness[1].payload()).unwrap();
    assert_eq!(alice[0].clock, 1);
    let changes = table.apply(PROVIDER, &alice, 10);
    assert_eq!(changes.added, vec![HELLO_WRITER]);
    assert!(changes.updated.is_empty() && changes.removed.is_empty());
    let broadcast = table.encode(&changes.all());
    assert_eq!(broadcast, echoes[0].payload(), "awareness echo payload");
    assert_eq!(
        encode(doc, &Message::Awareness(&broadcast)),
        echoes[0].bytes,
        "awareness echo frame"
    );
    assert_eq!(table.encode_live().as_deref(), Some(echoes[0].payload()));
    assert!(client_awareness[1].index < echoes[0].index);

    // destroy() sends null (clock 2): a removal, encoded as the client sent it.
    let gone = decode_update(client_awareness[2].payload()).unwrap();
    assert_eq!((gone[0].clock, gone[0].state), (2, "null"));
    let changes = table.apply(PROVIDER, &gone, 20);
    assert_eq!(changes.removed, vec![HELLO_WRITER]);
    assert_eq!(table.encode(&changes.all()), client_awareness[2].payload());
    assert_eq!(table.encode_live(), None);
}

#[test]
fn auth_denied() {
    use Dir::*;
    let frames = scenario("auth-denied");
    check_all_frames(&frames);
    let doc = "fixture-doc";
    let auth = single(
        &frames,
        |f| f.is(ClientToServer, doc, 2, Some(0)),
        "client Auth",
    );
    assert_eq!(
        encode(
            doc,
            &Message::Auth(AuthMessage::Token {
                token: "bad-token",
                provider_version: Some("4.8.0")
            })
        ),
        auth.bytes
    );
    let denied = Message::Auth(AuthMessage::PermissionDenied {
        reason: "permission-denied",
    });
    assert_server_replies(&frames, doc, |f| f.ty() == 2 && f.sub() == Some(1), denied);
    // After a denial the server sends nothing else, not even an answer to the client's CLOSE.
    let server: Vec<&Frame> = frames.iter().filter(|f| f.dir == ServerToClient).collect();
    assert_eq!(server.len(), 1, "only PermissionDenied");
    assert_eq!(
        encode(doc, &Message::Close(None)),
        frames.last().unwrap().bytes
    );

    // The rejected client's awareness: clock 0 is ignored, and its null (clock 1) removes a
    // client the table never knew, so there is nothing to broadcast either way.
    let mut table = AwarenessTable::new();
    for f in frames.iter().filter(|f| f.is(ClientToServer, doc, 1, None)) {
        assert!(
            table
                .apply(PROVIDER, &decode_update(f.payload()).unwrap(), 0)
                .is_empty(),
            "{}",
            f.summary
        );
    }
}

#[test]
fn read_only() {
    use Dir::*;
    let frames = scenario("read-only");
    check_all_frames(&frames);
    let doc = "fixture-doc";
    assert_handshake_replies(&frames, doc, SCOPE_READ_ONLY);
    assert_handshake_order(&frames, doc);

    // The handshake's empty SyncStep2 is acked with 1, the real edit with 0.
    let statuses: Vec<&Frame> = frames
        .iter()
        .filter(|f| f.dir == ServerToClient && f.ty() == 8)
        .collect();
    assert_eq!(statuses.len(), 2);
    assert_eq!(statuses[0].bytes, encode(doc, &Message::SyncStatus(true)));
    assert_eq!(statuses[1].bytes, encode(doc, &Message::SyncStatus(false)));

    // The stored document (from auth-ok) arrives as SyncStep2, plus the extra 4.7.0 Update.
    let server_step1 = single(
        &frames,
        |f| f.is(ServerToClient, doc, 0, Some(0)),
        "server SyncStep1",
    );
    let sv = StateVector::decode_v1(server_step1.payload()).unwrap();
    assert_eq!(sv.len(), 1);
    assert_eq!(sv.get(&ClientID::new(HELLO_WRITER)), 5);
    let server_step2 = single(
        &frames,
        |f| f.is(ServerToClient, doc, 0, Some(1)),
        "server SyncStep2",
    );
    assert_eq!(text_of(&apply_all(&[server_step2.payload()])), "hello");
    for extra in frames
        .iter()
        .filter(|f| f.is(ServerToClient, doc, 0, Some(2)))
    {
        assert_eq!(
            text_of(&apply_all(&[extra.payload()])),
            "hello",
            "{}",
            extra.summary
        );
    }

    // Why 1 then 0: the empty SyncStep2 adds nothing to the document, the edit adds content
    // (`nope`, inserted before the `h` it was typed in front of).
    let client_step2 = single(
        &frames,
        |f| f.is(ClientToServer, doc, 0, Some(1)),
        "client SyncStep2",
    );
    assert_eq!(client_step2.payload(), [0, 0]);
    let edit = single(
        &frames,
        |f| f.is(ClientToServer, doc, 0, Some(2)),
        "client edit",
    );
    assert!(edit.index > statuses[0].index && edit.index < statuses[1].index);
    let stored = apply_all(&[server_step2.payload()]);
    let before = stored.transact().state_vector();
    stored
        .transact_mut()
        .apply_update(Update::decode_v1(client_step2.payload()).unwrap())
        .unwrap();
    assert_eq!(
        stored.transact().state_vector(),
        before,
        "empty SyncStep2 changes nothing"
    );
    stored
        .transact_mut()
        .apply_update(Update::decode_v1(edit.payload()).unwrap())
        .unwrap();
    assert_ne!(
        stored.transact().state_vector(),
        before,
        "the edit is new content"
    );
    assert_eq!(text_of(&stored), "nopehello");
}

#[test]
fn multiplex() {
    use Dir::*;
    let frames = scenario("multiplex");
    check_all_frames(&frames);

    // With two documents on one socket both Auth frames go first.
    assert!(frames[0].is(ClientToServer, "doc-a", 2, Some(0)));
    assert!(frames[1].is(ClientToServer, "doc-b", 2, Some(0)));

    for (doc, letter) in [("doc-a", "A"), ("doc-b", "B")] {
        let mine: Vec<Frame> = frames
            .iter()
            .filter(|f| f.address() == doc)
            .cloned()
            .collect();
        assert_handshake_replies(&mine, doc, SCOPE_READ_WRITE);
        assert_server_replies(
            &mine,
            doc,
            |f| f.ty() == 0 && f.sub() == Some(0),
            Message::Sync(SyncMessage::Step1(&[0])),
        );
        assert_server_replies(
            &mine,
            doc,
            |f| f.ty() == 0 && f.sub() == Some(1),
            Message::Sync(SyncMessage::Step2(&[0, 0])),
        );
        assert_server_replies(&mine, doc, |f| f.ty() == 8, Message::SyncStatus(true));
        assert_handshake_order(&mine, doc);

        let update = single(
            &mine,
            |f| f.is(ClientToServer, doc, 0, Some(2)),
            "client Update",
        );
        assert_eq!(text_of(&apply_all(&[update.payload()])), letter, "{doc}");
        let echo = single(&mine, |f| f.is(ServerToClient, doc, 0, Some(2)), "echo");
        assert_eq!(echo.bytes, update.bytes);
        // Acked, then echoed; both after the update itself.
        let ack = position(&mine, |f| {
            f.dir == ServerToClient && f.ty() == 8 && f.index > update.index
        })
        .unwrap();
        assert!(ack < echo.index, "{doc}: ack before echo");
    }
}

#[test]
fn empty_token() {
    use Dir::*;
    let frames = scenario("empty-token");
    check_all_frames(&frames);
    let doc = "fixture-doc";
    // The provider still sends Auth: an empty token, then its version.
    let auth = single(
        &frames,
        |f| f.is(ClientToServer, doc, 2, Some(0)),
        "client Auth",
    );
    assert_eq!(
        decode(&auth.bytes).unwrap(),
        Packet::Message {
            address: doc,
            message: Message::Auth(AuthMessage::Token {
                token: "",
                provider_version: Some("4.8.0")
            }),
        }
    );
    assert_eq!(
        encode(
            doc,
            &Message::Auth(AuthMessage::Token {
                token: "",
                provider_version: Some("4.8.0")
            })
        ),
        auth.bytes
    );
    let denied = Message::Auth(AuthMessage::PermissionDenied {
        reason: "permission-denied",
    });
    assert_server_replies(&frames, doc, |f| f.ty() == 2 && f.sub() == Some(1), denied);
    assert_eq!(frames.iter().filter(|f| f.dir == ServerToClient).count(), 1);
}

#[test]
fn late_joiner() {
    use Dir::*;
    let frames = scenario("late-joiner");
    check_all_frames(&frames);
    let doc = "fixture-doc";
    assert_handshake_replies(&frames, doc, SCOPE_READ_WRITE);
    assert_server_replies(&frames, doc, |f| f.ty() == 8, Message::SyncStatus(true));
    assert_handshake_order(&frames, doc);

    // The server's state vector names the auth-ok writer at clock 5 ...
    let server_step1 = single(
        &frames,
        |f| f.is(ServerToClient, doc, 0, Some(0)),
        "server SyncStep1",
    );
    let sv = StateVector::decode_v1(server_step1.payload()).unwrap();
    assert_eq!(sv.get(&ClientID::new(HELLO_WRITER)), 5);
    // ... and its SyncStep2 (the diff against the client's empty state vector) gives "hello".
    let client_step1 = single(
        &frames,
        |f| f.is(ClientToServer, doc, 0, Some(0)),
        "client SyncStep1",
    );
    assert!(
        StateVector::decode_v1(client_step1.payload())
            .unwrap()
            .is_empty()
    );
    let server_step2 = single(
        &frames,
        |f| f.is(ServerToClient, doc, 0, Some(1)),
        "server SyncStep2",
    );
    let joined = apply_all(&[server_step2.payload()]);
    assert_eq!(text_of(&joined), "hello");
    assert_eq!(
        joined.transact().state_vector(),
        sv,
        "SyncStep1 and SyncStep2 agree"
    );
    // The extra 4.7.0 Update carries the same content; applying it twice is harmless.
    for extra in frames
        .iter()
        .filter(|f| f.is(ServerToClient, doc, 0, Some(2)))
    {
        assert_eq!(
            text_of(&apply_all(&[server_step2.payload(), extra.payload()])),
            "hello"
        );
    }

    // A server rebuilding the document from the auth-ok update serves the same content.
    let auth_ok = scenario("auth-ok");
    let written = single(
        &auth_ok,
        |f| f.is(ClientToServer, doc, 0, Some(2)),
        "auth-ok Update",
    );
    let ours = apply_all(&[written.payload()]);
    let diff = ours
        .transact()
        .encode_diff_v1(&StateVector::decode_v1(client_step1.payload()).unwrap());
    assert_eq!(text_of(&apply_all(&[&diff])), "hello");
    assert_eq!(ours.transact().state_vector(), sv);

    // No awareness came from the server: nobody else was connected, and the client's own
    // clock-0 state is not echoed.
    assert!(
        !frames
            .iter()
            .any(|f| f.dir == ServerToClient && f.ty() == 1)
    );
}

#[test]
fn provider_first_awareness_is_never_echoed() {
    // In every scenario, each server awareness frame only carries clocks >= 1.
    for name in [
        "auth-ok",
        "auth-denied",
        "read-only",
        "multiplex",
        "empty-token",
        "late-joiner",
    ] {
        for f in scenario(name)
            .iter()
            .filter(|f| f.dir == Dir::ServerToClient && f.ty() == 1)
        {
            for entry in decode_update(f.payload()).unwrap() {
                assert!(entry.clock >= 1, "{}: clock-0 state echoed", f.summary);
            }
        }
    }
}
