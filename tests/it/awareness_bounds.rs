//! Awareness bounds against the real daemon: a state over `limits.max_awareness_state_bytes`
//! or `limits.max_awareness_depth` closes the document for its sender and reaches nobody; a
//! connection owns at most `limits.max_awareness_clients_per_connection` client ids; what the
//! awareness tables hold is charged to the memory budget and given back when the document goes.

use crate::common;

use common::{Client, Daemon, Metrics, text_update};
use zedi_sync::awareness::encode_update;
use zedi_sync::protocol::{self, Message, Packet, SyncMessage};

const DOC: &str = "bounded-presence";
const HONEST: u64 = 1001;
const OBSERVER: u64 = 1002;
const ATTACKER: u64 = 6666;

fn awareness(entries: &[(u64, u64, &str)]) -> Vec<u8> {
    encode_update(entries)
}

/// The `(client, clock)` pairs of awareness entries.
fn ids(entries: &[(u64, u64, String)]) -> Vec<(u64, u64)> {
    entries.iter().map(|(id, clock, _)| (*id, *clock)).collect()
}

/// Awareness frames on `DOC` until one matches `pred`, and all seen on the way, as
/// `(client, clock)` pairs (decoded without the bounds: an oversized state relayed by mistake
/// would be seen).
fn await_awareness(
    client: &mut Client,
    what: &str,
    pred: impl Fn(&[(u64, u64)]) -> bool,
) -> Vec<Vec<(u64, u64)>> {
    common::awareness::await_awareness(client, DOC, what, |e| pred(&ids(e)))
        .iter()
        .map(|e| ids(e))
        .collect()
}

/// Waits for the daemon's CLOSE of `DOC`; returns its reason.
fn expect_document_closed(client: &mut Client) -> String {
    let frame = client.expect("CLOSE of the document", |a, m| {
        a == DOC && matches!(m, Message::Close(_))
    });
    match protocol::decode(&frame) {
        Ok(Packet::Message {
            message: Message::Close(reason),
            ..
        }) => reason.unwrap_or_default().to_string(),
        _ => unreachable!("matched above"),
    }
}

fn protocol_errors(daemon: &Daemon, kind: &str) -> u64 {
    daemon
        .metrics()
        .value("zedi_protocol_errors_total", &[("kind", kind)]) as u64
}

fn awareness_budget(metrics: &Metrics) -> u64 {
    metrics.value("zedi_memory_budget_used_bytes", &[("holder", "awareness")]) as u64
}

/// Polls `/metrics` until the awareness budget satisfies `cond` (bounded); returns it.
fn await_budget(daemon: &Daemon, what: &str, cond: impl Fn(u64) -> bool) -> u64 {
    let metrics = daemon.wait_metrics(&format!("the awareness budget {what}"), |m| {
        cond(awareness_budget(m))
    });
    awareness_budget(&metrics)
}

/// The honest editor renews its awareness and edits; the observer must get both, and no
/// awareness of the attacker's client on the way.
fn honest_editing_goes_on(honest: &mut Client, observer: &mut Client, clock: u64, word: &str) {
    honest.send(
        DOC,
        Message::Awareness(&awareness(&[(HONEST, clock, r#"{"user":"honest"}"#)])),
    );
    let seen = await_awareness(observer, "the honest renewal", |e| {
        e.contains(&(HONEST, clock))
    });
    assert!(
        seen.iter().flatten().all(|(id, _)| *id != ATTACKER),
        "the refused state reached a co-editor: {seen:?}"
    );
    let client = 100 + clock;
    honest.send(
        DOC,
        Message::Sync(SyncMessage::Update(&text_update(client, word))),
    );
    honest.expect_ack(DOC);
    observer.expect_text(DOC, "the honest edit", |t| t.contains(word));
}

#[test]
fn an_oversized_or_too_deep_state_closes_the_document_for_its_sender_only() {
    let dir = tempfile::tempdir().unwrap();
    // 1 MiB per state, so that the 100,000-deep state (200 KB) meets the depth bound, not
    // the size bound.
    let daemon = Daemon::start(
        dir.path(),
        &[("ZEDI__LIMITS__MAX_AWARENESS_STATE_BYTES", "1048576")],
    );
    let mut honest = daemon.ws();
    honest.open(DOC);
    let mut observer = daemon.ws();
    observer.open(DOC);
    observer.send(
        DOC,
        Message::Awareness(&awareness(&[(OBSERVER, 1, r#"{"user":"observer"}"#)])),
    );
    await_awareness(&mut honest, "the observer's state", |e| {
        e.contains(&(OBSERVER, 1))
    });
    honest_editing_goes_on(&mut honest, &mut observer, 1, "before");

    let mut attacker = daemon.ws();
    attacker.open(DOC);
    // 8 MiB of valid JSON: inside the frame limit (32 MiB), far over the state limit.
    let huge = format!(r#"{{"user":"{}"}}"#, "x".repeat(8 << 20));
    attacker.send(DOC, Message::Awareness(&awareness(&[(ATTACKER, 1, &huge)])));
    let reason = expect_document_closed(&mut attacker);
    assert!(reason.contains("more than the limit 1048576"), "{reason}");
    assert_eq!(protocol_errors(&daemon, "awareness_state_too_large"), 1);
    honest_editing_goes_on(&mut honest, &mut observer, 2, "between");

    // The socket is still open: the document only was closed. Reopened, a state nested
    // 100,000 deep is refused the same way.
    attacker.open(DOC);
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    attacker.send(DOC, Message::Awareness(&awareness(&[(ATTACKER, 1, &deep)])));
    let reason = expect_document_closed(&mut attacker);
    assert!(
        reason.contains("nests deeper than the limit 32"),
        "{reason}"
    );
    assert_eq!(protocol_errors(&daemon, "awareness_too_deep"), 1);
    honest_editing_goes_on(&mut honest, &mut observer, 3, "after");

    // Nothing of the attacker's was stored either: a newcomer's replay lists only the two.
    let mut newcomer = daemon.ws();
    newcomer.open(DOC);
    newcomer.send(DOC, Message::QueryAwareness);
    let seen = await_awareness(&mut newcomer, "the replay", |e| {
        e.iter().any(|(id, _)| *id == HONEST)
    });
    let mut replay = seen.last().cloned().unwrap_or_default();
    replay.sort_unstable();
    assert_eq!(replay, vec![(HONEST, 3), (OBSERVER, 1)]);
}

#[test]
fn a_connection_owns_a_bounded_number_of_client_ids() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), &[]);
    let mut observer = daemon.ws();
    observer.open(DOC);
    let mut minter = daemon.ws();
    minter.open(DOC);
    // One frame introducing 20 client ids: the first 8 are kept and relayed, the rest refused.
    let many: Vec<(u64, u64, &str)> = (1..=20).map(|id| (id, 1, "{}")).collect();
    minter.send(DOC, Message::Awareness(&awareness(&many)));
    let seen = await_awareness(&mut observer, "the minted ids", |e| !e.is_empty());
    assert_eq!(seen.last(), Some(&(1..=8).map(|id| (id, 1)).collect()));
    assert_eq!(protocol_errors(&daemon, "awareness_too_many_clients"), 12);
    // Removing one gives its place back (a provider that reloads gets a new client id).
    minter.send(
        DOC,
        Message::Awareness(&awareness(&[(1, 2, "null"), (21, 1, "{}"), (22, 1, "{}")])),
    );
    let seen = await_awareness(&mut observer, "the swap", |e| e.contains(&(21, 1)));
    assert_eq!(seen.last(), Some(&vec![(21, 1), (1, 2)]));
    assert_eq!(protocol_errors(&daemon, "awareness_too_many_clients"), 13);
}

#[test]
fn awareness_is_charged_to_the_memory_budget_until_the_document_goes() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), &[("ZEDI__DOCUMENTS__UNLOAD_GRACE_MS", "50")]);
    assert_eq!(awareness_budget(&daemon.metrics()), 0);
    let state = format!(r#"{{"user":"{}"}}"#, "x".repeat(30_000));
    let mut a = daemon.ws();
    a.open(DOC);
    a.send(DOC, Message::Awareness(&awareness(&[(HONEST, 1, &state)])));
    let one = await_budget(&daemon, "held the first state", |b| b >= 30_000);
    let mut b = daemon.ws();
    b.open(DOC);
    b.send(
        DOC,
        Message::Awareness(&awareness(&[(OBSERVER, 1, &state)])),
    );
    let both = await_budget(&daemon, "held both states", |b| b >= one + 30_000);
    // A leaves: its state is removed, only its slot is still charged.
    drop(a);
    await_budget(&daemon, "dropped the first state", |b| b + 30_000 <= both);
    // Everyone gone: the document unloads and the charge with it.
    drop(b);
    await_budget(&daemon, "went back to 0", |b| b == 0);
}
