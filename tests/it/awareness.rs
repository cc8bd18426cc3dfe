//! Awareness ownership against the real daemon: a connection may change or remove only the
//! awareness client ids it introduced, and leaving removes only those.

use crate::common;

use std::time::Duration;

use common::{Client, Daemon, wait_until};
use zedi_sync::awareness::encode_update;
use zedi_sync::protocol::Message;

const DOC: &str = "presence";
const VICTIM: u64 = 1001;
const ATTACKER: u64 = 2002;
const VICTIM_STATE: &str = r#"{"user":{"name":"victim"}}"#;

fn awareness(entries: &[(u64, u64, &str)]) -> Vec<u8> {
    encode_update(entries)
}

/// Awareness frames on `DOC` until one matches `pred`, and all seen on the way.
fn await_awareness(
    client: &mut Client,
    what: &str,
    pred: impl Fn(&[(u64, u64, String)]) -> bool,
) -> Vec<Vec<(u64, u64, String)>> {
    common::awareness::await_awareness(client, DOC, what, pred)
}

/// The daemon's live awareness states, as QueryAwareness answers them.
fn query(client: &mut Client) -> Vec<(u64, u64, String)> {
    client.send(DOC, Message::QueryAwareness);
    // The answer is the only awareness frame that lists the victim; earlier broadcasts (the
    // attacker's own client) may still be queued.
    let seen = await_awareness(client, "QueryAwareness answer", |e| {
        e.iter().any(|(id, _, _)| *id == VICTIM) || e.is_empty()
    });
    seen.last().cloned().unwrap_or_default()
}

fn refusals(daemon: &Daemon) -> u64 {
    daemon.metrics().value(
        "zedi_protocol_errors_total",
        &[("kind", "awareness_not_owner")],
    ) as u64
}

#[test]
fn a_connection_cannot_overwrite_or_remove_another_connections_awareness() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), &[]);
    let mut victim = daemon.ws();
    victim.open(DOC);
    victim.send(
        DOC,
        Message::Awareness(&awareness(&[(VICTIM, 1, VICTIM_STATE)])),
    );
    await_awareness(&mut victim, "the victim's echo", |e| {
        e.iter().any(|(id, _, _)| *id == VICTIM)
    });

    let mut observer = daemon.ws();
    observer.open(DOC);
    let victim_entry = (VICTIM, 1, VICTIM_STATE.to_string());
    assert_eq!(query(&mut observer), vec![victim_entry.clone()]);

    let mut attacker = daemon.ws();
    attacker.open(DOC);
    assert_eq!(refusals(&daemon), 0);
    // Overwrite (higher clock) and removal (null at a higher clock, and at the same clock,
    // which y-protocols accepts as a removal), each in a frame that also carries the
    // attacker's own client: that part is applied.
    attacker.send(
        DOC,
        Message::Awareness(&awareness(&[
            (VICTIM, 7, r#"{"user":{"name":"mallory"}}"#),
            (ATTACKER, 1, r#"{"user":{"name":"attacker"}}"#),
        ])),
    );
    attacker.send(
        DOC,
        Message::Awareness(&awareness(&[(VICTIM, 8, "null"), (ATTACKER, 2, "{}")])),
    );
    attacker.send(
        DOC,
        Message::Awareness(&awareness(&[(ATTACKER, 3, "{}"), (VICTIM, 1, "null")])),
    );
    // The observer gets the attacker's own client (up to its last clock) and nothing about
    // the victim.
    let seen = await_awareness(&mut observer, "the attacker's own state", |e| {
        e.iter()
            .any(|(id, clock, _)| *id == ATTACKER && *clock == 3)
    });
    for entries in &seen {
        assert!(
            entries.iter().all(|(id, _, _)| *id != VICTIM),
            "the attacker's entry for the victim was broadcast: {seen:?}"
        );
    }
    assert_eq!(refusals(&daemon), 3, "one per refused entry");
    let live = query(&mut observer);
    assert!(live.contains(&victim_entry), "{live:?}");
    assert!(live.contains(&(ATTACKER, 3, "{}".to_string())), "{live:?}");

    // The attacker leaves: only its own client is removed.
    drop(attacker);
    let seen = await_awareness(&mut observer, "the attacker's removal", |e| {
        e.iter().any(|(id, _, s)| *id == ATTACKER && s == "null")
    });
    for entries in &seen {
        assert!(entries.iter().all(|(id, _, _)| *id != VICTIM), "{seen:?}");
    }
    assert_eq!(query(&mut observer), vec![victim_entry]);
    // The victim's own renewals still go through.
    victim.send(
        DOC,
        Message::Awareness(&awareness(&[(VICTIM, 2, VICTIM_STATE)])),
    );
    await_awareness(&mut observer, "the victim's renewal", |e| {
        e.contains(&(VICTIM, 2, VICTIM_STATE.to_string()))
    });
}

#[test]
fn a_provider_reconnecting_with_its_client_id_gets_it_back() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), &[]);
    let mut observer = daemon.ws();
    observer.open(DOC);

    let mut old = daemon.ws();
    old.open(DOC);
    old.send(
        DOC,
        Message::Awareness(&awareness(&[(VICTIM, 1, VICTIM_STATE)])),
    );
    await_awareness(&mut observer, "the first socket's state", |e| {
        e.contains(&(VICTIM, 1, VICTIM_STATE.to_string()))
    });

    // A second socket with the same clientID while the first is still attached (a half-open
    // socket the server has not noticed yet): refused, the first keeps it.
    let mut new = daemon.ws();
    new.open(DOC);
    new.send(
        DOC,
        Message::Awareness(&awareness(&[(VICTIM, 2, r#"{"v":2}"#)])),
    );
    wait_until(
        "the second socket's awareness refused",
        Duration::from_secs(10),
        || refusals(&daemon) >= 1,
    );
    assert_eq!(refusals(&daemon), 1);
    assert_eq!(
        query(&mut observer),
        vec![(VICTIM, 1, VICTIM_STATE.to_string())]
    );

    // The first socket goes away: its state is removed (clock 2)...
    drop(old);
    await_awareness(&mut observer, "the first socket's removal", |e| {
        e.contains(&(VICTIM, 2, "null".to_string()))
    });
    // ...and the provider's next renewal on the new socket introduces the id again.
    new.send(
        DOC,
        Message::Awareness(&awareness(&[(VICTIM, 3, r#"{"v":3}"#)])),
    );
    await_awareness(&mut observer, "the reconnected state", |e| {
        e.contains(&(VICTIM, 3, r#"{"v":3}"#.to_string()))
    });
    assert_eq!(
        query(&mut observer),
        vec![(VICTIM, 3, r#"{"v":3}"#.to_string())]
    );
    // It owns it now: leaving removes it.
    drop(new);
    await_awareness(&mut observer, "the new socket's removal", |e| {
        e.contains(&(VICTIM, 4, "null".to_string()))
    });
    assert_eq!(refusals(&daemon), 1);
}
