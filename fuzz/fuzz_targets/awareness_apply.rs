//! Awareness updates applied to one `AwarenessTable`, as a server would.
//!
//! Input: if it is a Hocuspocus Awareness frame (the seed corpus holds captured frames), its
//! payload is one update; otherwise the input is a sequence of lib0 `varBytes`, each one
//! awareness update (the seed corpus also holds each scenario's awareness payloads in this
//! form). Between updates the clock advances and expiry / pruning / removal run. Updates come
//! alternately from two connections and, every fifth, from another node (the relay).
//!
//! Properties: nothing panics; every encoding the table produces (the broadcast of a change,
//! the replay for a newcomer) decodes again with `decode_update`, and the replay lists exactly
//! the live clients; no sender changes or removes a client another owner holds, and what it
//! introduces is its own; no connection owns more client ids than the default share.

#![no_main]

use libfuzzer_sys::fuzz_target;
use zedi_protocol::awareness::{AwarenessTable, Owner, decode_update};
use zedi_protocol::protocol::lib0::Reader;
use zedi_protocol::protocol::{Message, Packet, decode};

fn updates(data: &[u8]) -> Vec<&[u8]> {
    if let Ok(Packet::Message {
        message: Message::Awareness(payload),
        ..
    }) = decode(data)
    {
        return vec![payload];
    }
    let mut r = Reader::new(data);
    let mut out = Vec::new();
    while let Ok(chunk) = r.read_var_bytes() {
        out.push(chunk);
        if r.is_empty() {
            break;
        }
    }
    out
}

fn check_encoding(bytes: &[u8], expected_len: usize) {
    let entries = decode_update(bytes).expect("the table's own encoding decodes");
    assert_eq!(entries.len(), expected_len);
}

fuzz_target!(|data: &[u8]| {
    let mut table = AwarenessTable::new();
    let mut now_ms = 0u64;
    for (i, update) in updates(data).into_iter().enumerate() {
        now_ms += 7_000;
        let Ok(entries) = decode_update(update) else { continue };
        let from = if i % 5 == 4 { Owner::Remote } else { Owner::Connection((i % 2) as u64) };
        let before: Vec<(u64, Option<Owner>)> =
            entries.iter().map(|e| (e.client_id, table.owner(e.client_id))).collect();
        let changes = table.apply(from, &entries, now_ms);
        for (id, owner) in &before {
            if changes.refused.contains(id) {
                assert!(owner.is_some_and(|o| o != from), "refused {id} without cause");
                assert_eq!(table.owner(*id), *owner, "a refused entry changed {id}");
            }
        }
        // One frame may introduce and remove an id (or the other way round): what it changed
        // was free or its own before, and is its own or free after.
        for id in changes.all() {
            let prior = before.iter().find(|(b, _)| *b == id).and_then(|(_, o)| *o);
            assert!(prior.is_none() || prior == Some(from), "{from:?} changed {id} of {prior:?}");
            let now = table.owner(id);
            assert!(now.is_none() || now == Some(from), "{id} now owned by {now:?}");
        }
        let ids = changes.all();
        let broadcast = table.encode(&ids);
        check_encoding(&broadcast, ids.len());
        // No connection owns more live client ids than it may.
        assert!(table.owned_count(from) <= table.limits().max_clients_per_connection);
        // A client new to the table keeps the highest clock this update gave it (y-protocols
        // accepts only a higher clock, or the same clock with a null state). Not when a later
        // entry for it was refused for the connection's share (it was released in between and
        // the connection had introduced others meanwhile).
        for id in changes.added.iter().filter(|id| !changes.over_limit.contains(id)) {
            let max_clock = entries.iter().filter(|e| e.client_id == *id).map(|e| e.clock).max();
            let one = table.encode(&[*id]);
            let got = decode_update(&one).unwrap();
            assert_eq!(Some(got[0].clock), max_clock, "client {id}");
        }
        // Exercise the connection-closed and timeout paths too.
        if i % 3 == 2 {
            let first: Vec<u64> = entries.iter().map(|e| e.client_id).take(1).collect();
            let owners: Vec<Option<Owner>> = first.iter().map(|id| table.owner(*id)).collect();
            let removed = table.remove(from, first.clone(), now_ms);
            for (id, owner) in first.iter().zip(owners) {
                let expected = owner == Some(from);
                assert_eq!(removed.contains(id), expected, "{from:?} leaving, {id} of {owner:?}");
            }
            check_encoding(&table.encode(&removed), removed.len());
        }
        let expired = table.expire(now_ms, 30_000);
        check_encoding(&table.encode(&expired), expired.len());
        table.prune_removed(now_ms, 60_000);
    }
    match table.encode_live() {
        Some(live) => check_encoding(&live, table.live_count()),
        None => assert_eq!(table.live_count(), 0),
    }
});
