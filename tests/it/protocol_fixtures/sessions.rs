//! The captured session scenarios: the fixture itself, multiplexing, late joiners, awareness.

use super::*;

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
