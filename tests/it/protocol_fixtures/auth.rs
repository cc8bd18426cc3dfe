//! The captured authentication scenarios: accepted, denied, read-only, empty token.

use super::*;

// Follows the captured session frame by frame; it reads best in the capture's order.
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
