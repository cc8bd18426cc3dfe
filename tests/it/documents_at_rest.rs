//! Documents at rest: a loaded document that received no update for `documents.rest_after_ms`
//! keeps only its encoded state. What a user sees must not change: a joiner (fresh or
//! reconnecting with a state vector) gets the whole document, an edit is acknowledged, reaches
//! the other editors and survives a crash; the node's memory budget is charged what the
//! document at rest keeps instead of the live document's estimate.

use crate::common;

use common::{Daemon, render, text_update};
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{GetString, ReadTxn, Transact};
use zedi_sync::protocol::{self, Message, Packet, SyncMessage};

const DOC: &str = "rest-doc";

fn at_rest(daemon: &Daemon) -> f64 {
    daemon.metrics().value("zedi_documents_at_rest", &[])
}

fn documents_charge(daemon: &Daemon) -> f64 {
    daemon
        .metrics()
        .value("zedi_memory_budget_used_bytes", &[("holder", "documents")])
}

fn step2_payload(frame: &[u8]) -> Vec<u8> {
    match protocol::decode(frame) {
        Ok(Packet::Message {
            message: Message::Sync(SyncMessage::Step2(p)),
            ..
        }) => p.to_vec(),
        other => panic!("not a SyncStep2: {other:?}"),
    }
}

#[test]
fn an_idle_document_rests_answers_joiners_and_wakes_on_the_first_edit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut daemon = Daemon::start(dir.path(), &[("ZEDI__DOCUMENTS__REST_AFTER_MS", "300")]);

    // An editor writes 40 paragraphs and stays connected, idle (an open tab).
    let mut editor = daemon.ws();
    editor.open(DOC);
    let updates: Vec<Vec<u8>> = (0..40)
        .map(|i| text_update(100 + i, &format!("paragraph {i} with some words in it. ")))
        .collect();
    for u in &updates {
        editor.send(DOC, Message::Sync(SyncMessage::Update(u)));
    }
    for _ in &updates {
        editor.expect_ack(DOC);
    }
    let refs: Vec<&[u8]> = updates.iter().map(Vec::as_slice).collect();
    let expected = render(&refs);

    daemon.wait_metrics("the idle document at rest", |m| {
        m.value("zedi_documents_at_rest", &[]) == 1.0
            && m.value("zedi_document_rests_total", &[]) == 1.0
    });
    assert_eq!(daemon.health()["documents"].as_i64(), Some(1), "still open");
    let full = {
        let mut joiner = daemon.ws();
        joiner.open(DOC)
    };
    assert_eq!(render(&[&full]), expected, "a fresh joiner gets everything");
    // Charged what it keeps (its encoded state and state vector), not the live estimate.
    let charge = documents_charge(&daemon);
    assert!(
        charge <= 2.0 * full.len() as f64,
        "at rest: {charge} bytes charged for {} encoded",
        full.len()
    );

    // A reconnecting provider sends the state vector of what it has: it gets the rest only.
    let partial = yrs::Doc::new();
    partial
        .transact_mut()
        .apply_update(yrs::Update::decode_v1(&updates[0]).expect("decodes"))
        .expect("applies");
    let sv = partial.transact().state_vector().encode_v1();
    let mut reconnecting = daemon.ws();
    reconnecting.auth(DOC);
    reconnecting.expect("Authenticated", |a, m| {
        a == DOC && matches!(m, Message::Auth(_))
    });
    reconnecting.send(DOC, Message::Sync(SyncMessage::Step1(&sv)));
    let diff = step2_payload(&reconnecting.expect("SyncStep2", |a, m| {
        a == DOC && matches!(m, Message::Sync(SyncMessage::Step2(_)))
    }));
    assert!(diff.len() < full.len(), "only what it lacks");
    partial
        .transact_mut()
        .apply_update(yrs::Update::decode_v1(&diff).expect("decodes"))
        .expect("applies");
    let text = partial.get_or_insert_text("default");
    assert_eq!(text.get_string(&partial.transact()), expected);
    let metrics = daemon.metrics();
    assert_eq!(
        metrics.value("zedi_documents_at_rest", &[]),
        1.0,
        "joiners do not wake it"
    );
    assert_eq!(metrics.value("zedi_document_revivals_total", &[]), 0.0);

    // The first edit brings the live document back: acknowledged and delivered as always.
    let edit = text_update(7, "woken: ");
    editor.send(DOC, Message::Sync(SyncMessage::Update(&edit)));
    editor.expect_ack(DOC);
    reconnecting.expect_text(DOC, "the edit on the document that was at rest", |t| {
        t.contains("woken: ")
    });
    let metrics = daemon.metrics();
    assert_eq!(metrics.value("zedi_document_revivals_total", &[]), 1.0);
    assert!(
        metrics.value("zedi_memory_budget_used_bytes", &[("holder", "documents")]) > charge,
        "live again: charged by the factor"
    );
    // Idle again, it goes back to rest.
    daemon.wait_metrics("the document at rest again", |m| {
        m.value("zedi_document_rests_total", &[]) == 2.0
    });
    assert_eq!(at_rest(&daemon), 1.0);

    // Acknowledged means durable, at rest or not: a crash keeps the edit.
    drop((editor, reconnecting));
    daemon.kill();
    daemon.restart();
    let mut after = daemon.ws();
    let reloaded = render(&[&after.open(DOC)]);
    assert!(reloaded.contains("woken: "), "{reloaded}");
    assert_eq!(reloaded.len(), expected.len() + "woken: ".len());
}
