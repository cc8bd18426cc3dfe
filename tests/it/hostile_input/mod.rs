//! Hostile Yjs updates from one ordinary, authenticated client (findings 1–7 of the hostile-input
//! review), end to end against the real daemon binary.
//!
//! Every test has an honest editor and a watcher on the document before the attack; the editor
//! writes, then an attacker on its own socket sends the crafted bytes. The contract the update
//! firewall keeps, asserted here: a refused update is answered on the attacker's connection with
//! `SyncStatus(0)` and then a CLOSE frame for that document; the attacker's socket stays open
//! (its other documents keep working); `zedi_protocol_errors_total{kind="invalid_update"}` grows;
//! nothing reaches the other connections and nothing is stored. Whatever the update's fate, the
//! daemon lives, the editor is never disconnected, its next edit is acknowledged and reaches the
//! watcher, `/health` is ok, and a late joiner's SyncStep2 renders to the editor's text.
//!
//! Each test gathers every deviation before failing, so one run shows all that is wrong.

mod crafting;
mod peer;
mod scene;

use crate::common;

use std::os::unix::process::ExitStatusExt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

use common::{Client, Daemon, Received, http_get, text_update};
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{GetString, ReadTxn, Text, TextRef, Transact, Update};
use zedi_sync::protocol::{self, AuthMessage, Message, Packet, SyncMessage};

use crafting::*;
use peer::*;
use scene::*;

/// Client ids of the honest editors. Anything else in a broadcast or in the stored document
/// came from an attacker.
const EDITOR_ID: u64 = 1001;
const WATCHER_ID: u64 = 1002;
const CALM_ID: u64 = 1003;
const HONEST: [u64; 3] = [EDITOR_ID, WATCHER_ID, CALM_ID];
/// A second document the attacker has open on the same socket: it must keep working.
const SIDE_DOC: &str = "attackers-other-document";
/// Bounded wait for anything the daemon should answer; generous so slow machines pass.
const WAIT: Duration = Duration::from_secs(30);
const INVALID_UPDATE: (&str, &[(&str, &str)]) =
    ("zedi_protocol_errors_total", &[("kind", "invalid_update")]);

// Findings
// ---------------------------------------------------------------------------------------------

/// Finding 1: two small updates on one socket made yrs dereference freed memory (SIGSEGV).
#[test]
fn crafted_update_pair_does_not_crash_the_node() {
    let mut s = Scene::start("pair", &[]);
    let answer = s.attack(&[
        hex("020200000001000103030100020a02000200"),
        hex("01020300840301030000004100000000"),
    ]);
    s.assert_alive(&answer);
    let mut p = Problems::default();
    s.honest_editing_goes_on(&mut p, Expect::RefusedOrAccepted);
    p.finish();
}

/// Finding 2: 10,000 nested Y.Maps and a delete of the outermost one overflowed the document
/// thread's stack (the process aborts).
#[test]
fn deeply_nested_maps_do_not_crash_the_node() {
    let mut s = Scene::start("nested", &[]);
    let update = nested_maps_update(4242, 10_000, "default");
    let answer = s.attack(&[update]);
    s.assert_alive(&answer);
    let mut p = Problems::default();
    s.honest_editing_goes_on(&mut p, Expect::Refused);
    s.refused(&mut p, &answer);
    p.finish();
}

/// Finding 3: an update that makes yrs panic inside a transaction made the document actor
/// close every connection of the document (4205) and reload it.
#[test]
fn update_that_panics_yrs_does_not_disconnect_every_editor() {
    let mut s = Scene::start("kick", &[]);
    let answer = s.attack(&[hex("01020000420000000100010000000000")]);
    s.assert_alive(&answer);
    let mut p = Problems::default();
    s.honest_editing_goes_on(&mut p, Expect::Refused);
    s.refused(&mut p, &answer);
    p.finish();
}

/// Finding 4: a ContentJSON item whose declared count disagrees with its strings was
/// acknowledged; every later joiner got a SyncStep2 it could not apply, i.e. an empty document.
#[test]
fn malformed_json_item_does_not_blank_the_document_for_late_joiners() {
    let mut s = Scene::start("blank", &[]);
    let answer = s.attack(&[hex("0101a1c439000201086a736f6e726f6f7400017800")]);
    s.assert_alive(&answer);
    let mut p = Problems::default();
    s.honest_editing_goes_on(&mut p, Expect::Refused);
    s.refused(&mut p, &answer);
    s.daemon.restart();
    s.late_joiner_sees_the_editors_text(&mut p, Expect::Refused, " after a restart");
    p.finish();
}

/// Finding 5: the same kind of item with valid JSON ("1") went into the snapshot at compaction;
/// the snapshot then did not decode, so after a restart the honest content was gone.
#[test]
fn malformed_json_item_does_not_lose_the_document_after_compaction_and_restart() {
    let mut s = Scene::start(
        "compacted",
        &[
            ("ZEDI__STORE__COMPACT_AFTER_UPDATES", "3"),
            ("ZEDI__STORE__COMPACT_MIN_INTERVAL_MS", "0"),
        ],
    );
    let answer = s.attack(&[hex("0101a1c439000201086a736f6e726f6f7400013100")]);
    s.assert_alive(&answer);
    let mut p = Problems::default();
    // Ordinary edits after the attack, enough to trigger compaction (the log of the document
    // then holds the first edit, maybe the hostile update, and these).
    for i in 0..6 {
        s.editor.edit(&format!(" Edit {i}.")).unwrap();
        s.editor.await_ack().unwrap();
    }
    s.daemon.wait_metrics("a compaction", |m| {
        m.value("zedi_store_seconds_count", &[("op", "compact")]) >= 1.0
    });
    s.honest_editing_goes_on(&mut p, Expect::Refused);
    s.refused(&mut p, &answer);
    s.daemon.restart();
    s.late_joiner_sees_the_editors_text(&mut p, Expect::Refused, " after compaction and a restart");
    p.finish();
}

/// Finding 6: small updates that leave the document pending (a delete of an unknown client's
/// clock), sent a few hundred times to a large document, each re-encoded the whole document
/// and stalled the other documents of that thread. Functional guard: each is answered exactly
/// once and the unrelated document's editor keeps being acknowledged (the cost itself is a unit
/// test of the firewall).
// One scenario read top to bottom: large document, pending updates, every editor still works.
#[test]
fn pending_updates_against_a_large_document_leave_other_editors_working() {
    const SENDS: usize = 300;
    let pending = hex("0001a8b62f010501");
    // One document thread: the unrelated document shares it with the attacked one.
    let mut s = Scene::start_with("large", &[("ZEDI__SERVER__DOCUMENT_THREADS", "1")], |e| {
        // About 800 KB in 2,000 items: large for a debug build, cheap to make.
        e.edit_many(&"x".repeat(400), 2_000)
    });
    let mut calm = Peer::join(&s.daemon, "unrelated", CALM_ID, "unrelated editor").unwrap();
    let mut p = Problems::default();
    let (mut acked, mut refused, mut reconnects) = (0usize, 0usize, 0usize);
    let mut must_reopen = false;
    // The attacker's handshake after a refusal asks only for what it lacks: not 800 KB again.
    let state_vector = s.editor.state_vector();
    for i in 0..SENDS {
        if must_reopen {
            if let Err(e) = try_open(&mut s.attacker, s.doc, &state_vector) {
                // After three refusals the socket is closed (4205): a new one goes on.
                reconnects += 1;
                s.attacker = s.daemon.ws();
                try_open(&mut s.attacker, s.doc, &state_vector)
                    .unwrap_or_else(|e2| panic!("send {i}: reopen failed ({e}, then {e2})"));
            }
            must_reopen = false;
        }
        let answer = s.attack(std::slice::from_ref(&pending));
        match answer.as_slice() {
            [Event::Status(true)] => acked += 1,
            [Event::Status(false), Event::DocClosed(_)] => {
                refused += 1;
                must_reopen = true;
            }
            [Event::Status(false), Event::SocketClosed(Some((4205, _)))] => {
                refused += 1;
                reconnects += 1;
                s.attacker = s.daemon.ws();
                must_reopen = true;
            }
            other => {
                s.assert_alive(other);
                p.0.push(format!(
                    "pending update {i} was not answered once: {other:?}"
                ));
                break;
            }
        }
        if i % 25 == 0 {
            let edited = calm.edit("c").and_then(|()| calm.await_ack());
            p.check(edited.is_ok(), || {
                format!(
                    "the unrelated document's editor was not acknowledged during the flood (after {i} sends): {}",
                    edited.unwrap_err()
                )
            });
        }
    }
    // Nothing answered twice: no SyncStatus arrives beyond one per update.
    let settle = Instant::now() + Duration::from_secs(1);
    while Instant::now() < settle {
        if let Ok(Received::Frame(frame)) = s.attacker.try_recv(Duration::from_millis(200))
            && let Ok(Packet::Message {
                message: Message::SyncStatus(ok),
                ..
            }) = protocol::decode(&frame)
        {
            p.0.push(format!("an extra SyncStatus({ok}) after the last answer"));
        }
    }
    eprintln!("pending updates: {acked} acknowledged, {refused} refused, {reconnects} reconnects");
    let calm_text = calm.text();
    let mut calm_late = s.daemon.ws();
    match try_open(&mut calm_late, "unrelated", &[0]).and_then(|u| try_render(&u)) {
        Ok(text) => p.check(text == calm_text, || {
            format!(
                "the unrelated document's late joiner sees {} instead of {}",
                short(&text),
                short(&calm_text)
            )
        }),
        Err(e) => {
            p.0.push(format!("the unrelated document does not load: {e}"))
        }
    }
    s.honest_editing_goes_on(&mut p, Expect::RefusedOrAccepted);
    p.finish();
}

/// Finding 7: an ordinary insert by client 2^53 + 1 was acknowledged and re-broadcast with a
/// different (truncated) id; JavaScript cannot even represent such an id.
#[test]
fn client_ids_beyond_2_pow_53_are_refused_not_truncated() {
    let mut s = Scene::start("big-client-id", &[]);
    let answer = s.attack(&[text_insert_by((1 << 53) + 1, "evil")]);
    s.assert_alive(&answer);
    let mut p = Problems::default();
    s.honest_editing_goes_on(&mut p, Expect::Refused);
    s.refused(&mut p, &answer);
    p.finish();
}
