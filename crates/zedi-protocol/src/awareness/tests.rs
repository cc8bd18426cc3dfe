//! Unit tests of the awareness table: y-protocols semantics, ownership, and the bounds.

use super::decode::MAX_SAFE_INTEGER;
use super::*;

const A: Owner = Owner::Connection(1);
const B: Owner = Owner::Connection(2);

fn update(entries: &[(u64, u64, &str)]) -> Vec<u8> {
    encode_update(entries)
}

#[test]
fn first_clock_zero_state_is_ignored_like_y_protocols() {
    let bytes = update(&[(3_846_846_611, 0, "{}")]);
    let mut table = AwarenessTable::new();
    let changes = table.apply(A, &decode_update(&bytes).unwrap(), 0);
    assert!(changes.is_empty());
    assert_eq!(table.encode_live(), None);
}

#[test]
fn renewal_is_an_update_and_reencodes_byte_for_byte() {
    let alice = update(&[(3_846_846_611, 1, "{\"user\":{\"name\":\"alice\"}}")]);
    let mut table = AwarenessTable::new();
    let changes = table.apply(A, &decode_update(&alice).unwrap(), 0);
    assert_eq!(changes.added, vec![3_846_846_611]);
    assert_eq!(table.encode(&changes.all()), alice);
    // Same clock again: ignored. Higher clock: an update even with the same state.
    assert!(
        table
            .apply(A, &decode_update(&alice).unwrap(), 1)
            .is_empty()
    );
    let renewed = update(&[(3_846_846_611, 2, "{\"user\":{\"name\":\"alice\"}}")]);
    let changes = table.apply(A, &decode_update(&renewed).unwrap(), 2);
    assert_eq!(changes.updated, vec![3_846_846_611]);
}

#[test]
fn null_state_removes_and_same_clock_null_is_accepted() {
    let mut table = AwarenessTable::new();
    table.apply(
        A,
        &decode_update(&update(&[(7, 3, "{\"a\":1}")])).unwrap(),
        0,
    );
    let changes = table.apply(A, &decode_update(&update(&[(7, 3, "null")])).unwrap(), 1);
    assert_eq!(changes.removed, vec![7]);
    assert_eq!(table.live_count(), 0);
    assert_eq!(table.encode(&[7]), update(&[(7, 3, "null")]));
}

#[test]
fn remove_bumps_the_clock_and_encodes_null() {
    let mut table = AwarenessTable::new();
    table.apply(A, &decode_update(&update(&[(9, 4, "{}")])).unwrap(), 0);
    assert_eq!(table.remove(A, [9, 10], 5), vec![9]);
    assert_eq!(table.encode(&[9]), update(&[(9, 5, "null")]));
    // A late re-send of the old state must not resurrect it.
    assert!(
        table
            .apply(A, &decode_update(&update(&[(9, 4, "{}")])).unwrap(), 6)
            .is_empty()
    );
}

#[test]
fn stale_states_expire() {
    let mut table = AwarenessTable::new();
    table.apply(
        A,
        &decode_update(&update(&[(1, 1, "{}"), (2, 1, "{}")])).unwrap(),
        0,
    );
    table.apply(A, &decode_update(&update(&[(2, 2, "{}")])).unwrap(), 20_000);
    assert_eq!(table.expire(30_000, 30_000), vec![1]);
    assert_eq!(table.live_count(), 1);
    table.prune_removed(100_000, 30_000);
    assert_eq!(table.encode(&[1]), update(&[]));
}

fn apply(table: &mut AwarenessTable, from: Owner, entries: &[(u64, u64, &str)]) -> Changes {
    table.apply(from, &decode_update(&update(entries)).unwrap(), 0)
}

#[test]
fn only_the_owner_may_update_or_remove_its_client() {
    let mut table = AwarenessTable::new();
    assert_eq!(
        apply(&mut table, A, &[(7, 1, "{\"v\":\"a\"}")]).added,
        vec![7]
    );
    // B overwrites with a higher clock, then removes (null, same and higher clock).
    for attack in [(7, 5, "{\"v\":\"b\"}"), (7, 1, "null"), (7, 9, "null")] {
        let changes = apply(&mut table, B, &[attack]);
        assert!(changes.is_empty(), "{attack:?}");
        assert_eq!(changes.refused, vec![7], "{attack:?}");
    }
    assert_eq!(table.encode(&[7]), update(&[(7, 1, "{\"v\":\"a\"}")]));
    // B leaving removes nothing of A's.
    assert!(table.remove(B, [7], 1).is_empty());
    assert_eq!(table.live_count(), 1);
    // The owner itself still updates.
    assert_eq!(apply(&mut table, A, &[(7, 2, "{}")]).updated, vec![7]);
    // Another node's entry for a local client is refused too, and the other way round.
    assert_eq!(
        apply(&mut table, Owner::Remote, &[(7, 3, "{}")]).refused,
        vec![7]
    );
    assert_eq!(
        apply(&mut table, Owner::Remote, &[(8, 1, "{}")]).added,
        vec![8]
    );
    assert_eq!(apply(&mut table, A, &[(8, 2, "null")]).refused, vec![8]);
    assert_eq!(
        apply(&mut table, Owner::Remote, &[(8, 2, "{}")]).updated,
        vec![8]
    );
}

#[test]
fn refused_entries_do_not_stop_the_rest_of_the_frame() {
    let mut table = AwarenessTable::new();
    apply(&mut table, A, &[(1, 1, "{}")]);
    let changes = apply(
        &mut table,
        B,
        &[(1, 2, "{}"), (2, 1, "{}"), (1, 3, "null"), (3, 1, "{}")],
    );
    assert_eq!(changes.refused, vec![1], "listed once");
    assert_eq!(changes.added, vec![2, 3]);
    assert_eq!(
        changes.all(),
        vec![2, 3],
        "only what was applied is broadcast"
    );
    // What the table would ignore anyway (an old clock) is not a refusal.
    assert!(apply(&mut table, B, &[(1, 1, "{}")]).refused.is_empty());
}

#[test]
fn removal_releases_the_id_for_a_reconnecting_provider() {
    let mut table = AwarenessTable::new();
    apply(&mut table, A, &[(5, 3, "{\"user\":\"alice\"}")]);
    // A's socket closed: the server removes its state (clock 4)...
    assert_eq!(table.remove(A, [5], 1), vec![5]);
    // ...and the same provider, same clientID, on a new socket introduces it again (the
    // provider's renewals raise its clock past the server's removal).
    let back = apply(&mut table, B, &[(5, 5, "{\"user\":\"alice\"}")]);
    assert_eq!((back.all(), back.refused), (vec![5], vec![]));
    // Now B owns it: A's late frames are refused and A's second leave removes nothing.
    assert_eq!(apply(&mut table, A, &[(5, 6, "{}")]).refused, vec![5]);
    assert!(table.remove(A, [5], 2).is_empty());
    assert_eq!(table.remove(B, [5], 3), vec![5]);

    // The owner's own null releases it as well.
    apply(&mut table, A, &[(6, 1, "{}")]);
    assert_eq!(apply(&mut table, A, &[(6, 2, "null")]).removed, vec![6]);
    assert_eq!(apply(&mut table, B, &[(6, 3, "{}")]).all(), vec![6]);
}

#[test]
fn expiry_releases_the_id_of_a_silent_owner() {
    // A half-open socket stops renewing; once its state expires the provider's new socket
    // can introduce the id again, even though the old attachment is still there.
    let mut table = AwarenessTable::new();
    table.apply(A, &decode_update(&update(&[(4, 2, "{}")])).unwrap(), 0);
    let early = table.apply(B, &decode_update(&update(&[(4, 3, "{}")])).unwrap(), 15_000);
    assert_eq!(early.refused, vec![4]);
    assert_eq!(table.expire(30_000, 30_000), vec![4]);
    let late = table.apply(B, &decode_update(&update(&[(4, 4, "{}")])).unwrap(), 31_000);
    assert_eq!((late.all(), late.refused), (vec![4], vec![]));
    assert!(
        table.remove(A, [4], 60_000).is_empty(),
        "the old socket leaving"
    );
    assert_eq!(table.live_count(), 1);
}

#[test]
fn huge_clocks_are_refused_instead_of_overflowing_later() {
    // Found while fuzzing: client 1 at clock u64::MAX, then its connection closes.
    let bytes = [
        0x01, 0x01, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 0x02, 0x7b, 0x7d,
    ];
    assert_eq!(
        decode_update(&bytes),
        Err(AwarenessError::OutOfRange(u64::MAX))
    );
    let mut table = AwarenessTable::new();
    let max = update(&[(1, MAX_SAFE_INTEGER, "{}")]);
    table.apply(A, &decode_update(&max).unwrap(), 0);
    assert_eq!(table.remove(A, [1], 1), vec![1]);
}

#[test]
fn bad_payloads_are_errors() {
    assert!(matches!(
        decode_update(&[1, 1]),
        Err(AwarenessError::Malformed(_))
    ));
    assert_eq!(
        decode_update(&update(&[(1, 1, "{nope")])),
        Err(AwarenessError::NotJson(1))
    );
    let mut w = Writer::new();
    w.write_var_uint(1 << 40);
    assert!(matches!(
        decode_update(&w.into_vec()),
        Err(AwarenessError::TooManyClients(_))
    ));
}

fn limits(max_state_bytes: usize, max_depth: u32, max_clients: usize) -> AwarenessLimits {
    AwarenessLimits {
        max_state_bytes,
        max_depth,
        max_clients_per_connection: max_clients,
    }
}

#[test]
fn a_state_over_the_size_limit_refuses_the_frame() {
    let l = limits(1024, 32, 8);
    let at_limit = format!("{{\"s\":\"{}\"}}", "x".repeat(1024 - 8));
    assert_eq!(at_limit.len(), 1024);
    let over = format!("{{\"s\":\"{}\"}}", "x".repeat(1024 - 7));
    assert_eq!(
        decode_update_with(&update(&[(1, 1, &at_limit)]), &l)
            .unwrap()
            .len(),
        1
    );
    let error = decode_update_with(&update(&[(1, 1, "{}"), (2, 1, &over)]), &l).unwrap_err();
    assert_eq!(
        error,
        AwarenessError::StateTooLarge {
            client_id: 2,
            bytes: 1025,
            limit: 1024
        }
    );
    assert_eq!(error.kind().label(), "awareness_state_too_large");
    assert!(error.is_limit());
    // Checked before UTF-8: an oversized state that is not even text is still "too large".
    let mut w = Writer::new();
    w.write_var_uint(1).write_var_uint(3).write_var_uint(1);
    w.write_var_bytes(&vec![0xff; 2048]);
    assert!(matches!(
        decode_update_with(&w.into_vec(), &l),
        Err(AwarenessError::StateTooLarge { client_id: 3, .. })
    ));
    // The default is 64 KiB per state.
    let big = format!("\"{}\"", "x".repeat(65_536));
    assert!(matches!(
        decode_update(&update(&[(1, 1, &big)])),
        Err(AwarenessError::StateTooLarge { bytes: 65_538, .. })
    ));
}

#[test]
fn a_state_nested_too_deep_refuses_the_frame() {
    let nested = |depth: usize| format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    let l = limits(1 << 20, 32, 8);
    assert!(decode_update_with(&update(&[(1, 1, &nested(32))]), &l).is_ok());
    let error = decode_update_with(&update(&[(1, 1, &nested(33))]), &l).unwrap_err();
    assert_eq!(
        error,
        AwarenessError::TooDeep {
            client_id: 1,
            limit: 32
        }
    );
    assert_eq!(error.kind().label(), "awareness_too_deep");
    // 100,000 deep, which serde_json's `IgnoredAny` alone would accept.
    let deep = nested(100_000);
    assert!(serde_json::from_str::<serde::de::IgnoredAny>(&deep).is_ok());
    assert!(matches!(
        decode_update_with(&update(&[(1, 1, &deep)]), &l),
        Err(AwarenessError::TooDeep { .. })
    ));
    let objects = "{\"a\":".repeat(100_000) + "1" + &"}".repeat(100_000);
    assert!(matches!(
        decode_update_with(&update(&[(1, 1, &objects)]), &l),
        Err(AwarenessError::TooDeep { .. })
    ));
    // Brackets in strings, behind escaped quotes, are text.
    let text = format!(r#"{{"user":{{"name":"[{{\"{}\\"}}}}"#, "[".repeat(100));
    assert!(
        serde_json::from_str::<serde::de::IgnoredAny>(&text).is_ok(),
        "{text}"
    );
    assert_eq!(
        decode_update_with(&update(&[(1, 1, &text)]), &limits(1 << 20, 2, 8))
            .unwrap()
            .len(),
        1
    );
    // Broken JSON is still just not JSON, and not a limit.
    let error = decode_update(&update(&[(1, 1, "[[[")])).unwrap_err();
    assert_eq!(
        (error.kind().label(), error.is_limit()),
        ("bad_awareness", false)
    );
}

#[test]
fn a_connection_owns_at_most_its_share_of_client_ids() {
    let mut table = AwarenessTable::with_limits(limits(1024, 8, 2));
    let changes = apply(
        &mut table,
        A,
        &[(1, 1, "{}"), (2, 1, "{}"), (3, 1, "{}"), (3, 2, "{}")],
    );
    assert_eq!(changes.added, vec![1, 2]);
    assert_eq!(changes.over_limit, vec![3], "listed once");
    assert!(changes.refused.is_empty());
    assert_eq!(table.owned_count(A), 2);
    assert_eq!(table.owner(3), None, "nothing stored");
    // Its own ids still update, alongside a refused introduction: the rest of the frame stands.
    let changes = apply(&mut table, A, &[(4, 1, "{}"), (1, 2, "{\"v\":1}")]);
    assert_eq!((changes.updated, changes.over_limit), (vec![1], vec![4]));
    // Other connections and other nodes have their own share.
    assert_eq!(apply(&mut table, B, &[(3, 1, "{}")]).added, vec![3]);
    assert_eq!(
        apply(
            &mut table,
            Owner::Remote,
            &[(10, 1, "{}"), (11, 1, "{}"), (12, 1, "{}")]
        )
        .added,
        vec![10, 11, 12]
    );
    assert_eq!(table.live_count(), 6);
}

#[test]
fn removal_gives_a_connection_its_share_back() {
    let mut table = AwarenessTable::with_limits(limits(1024, 8, 1));
    apply(&mut table, A, &[(1, 1, "{}")]);
    assert_eq!(apply(&mut table, A, &[(2, 1, "{}")]).over_limit, vec![2]);
    // A provider reloading: the old client id is removed (null), the new one introduced, in
    // one frame or two.
    let changes = apply(&mut table, A, &[(1, 2, "null"), (2, 2, "{}")]);
    assert_eq!((changes.removed, changes.added), (vec![1], vec![2]));
    assert!(changes.over_limit.is_empty());
    // Expiry releases too, and so does the connection leaving.
    table.expire(60_000, 30_000);
    assert_eq!(table.owned_count(A), 0);
    assert_eq!(
        table
            .apply(A, &decode_update(&update(&[(3, 1, "{}")])).unwrap(), 60_001)
            .added,
        vec![3]
    );
    assert_eq!(table.remove_owner(A, 60_002), vec![3]);
    assert_eq!(table.owned_count(A), 0);
    assert_eq!(apply(&mut table, A, &[(4, 1, "{}")]).added, vec![4]);
    // An id another connection took over after A released it is not A's to remove.
    apply(&mut table, A, &[(4, 2, "null")]);
    apply(&mut table, B, &[(4, 3, "{}")]);
    assert!(table.remove_owner(A, 60_003).is_empty());
    assert_eq!(table.owner(4), Some(B));
}

#[test]
fn churning_client_ids_does_not_grow_the_table_without_bound() {
    let mut table = AwarenessTable::new();
    let mut id = 0u64;
    for frame in 0..40u64 {
        // Each frame introduces and removes 2,000 ids (within the share of 8 at any time).
        let mut entries = Vec::new();
        for _ in 0..2_000 {
            id += 1;
            entries.push((id, 1, "{}"));
            entries.push((id, 2, "null"));
        }
        let changes = table.apply(A, &decode_update(&update(&entries)).unwrap(), frame);
        assert_eq!(changes.added.len(), 2_000);
        assert!(
            table.removed_count() <= MAX_REMOVED_KEPT,
            "{}",
            table.removed_count()
        );
    }
    assert_eq!(table.live_count(), 0);
    assert_eq!(table.owned_count(A), 0);
    // The newest removals are the ones remembered.
    let encoded = table.encode(&[id]);
    let newest = decode_update(&encoded).unwrap();
    assert_eq!((newest[0].client_id, newest[0].state), (id, "null"));
}

#[test]
fn memory_follows_the_states_and_is_given_back() {
    let mut table = AwarenessTable::new();
    assert_eq!(table.memory_bytes(), 0);
    let state = format!("{{\"s\":\"{}\"}}", "x".repeat(10_000));
    apply(&mut table, A, &[(1, 1, &state)]);
    let one = table.memory_bytes();
    assert!(one > 10_000, "{one}");
    apply(&mut table, B, &[(2, 1, &state)]);
    assert!(table.memory_bytes() >= one + 10_000);
    // Smaller states, smaller charge; removed clients keep only their slot.
    apply(&mut table, A, &[(1, 2, "{}")]);
    assert!(table.memory_bytes() < one + 1_000);
    table.remove_owner(A, 1);
    table.remove_owner(B, 1);
    assert!(table.memory_bytes() < 1_000);
    assert_eq!(table.live_count(), 0);
    table.prune_removed(1_000_000, 1);
    assert_eq!(table.removed_count(), 0);
    assert!(table.memory_bytes() < 1_000);
}

#[test]
fn counters_agree_with_the_table() {
    // A mixed sequence; the incremental counts must match a recount.
    let mut table = AwarenessTable::with_limits(limits(1024, 8, 3));
    let frames: [&[(u64, u64, &str)]; 5] = [
        &[
            (1, 1, "{\"a\":1}"),
            (2, 1, "{}"),
            (3, 1, "null"),
            (4, 1, "{}"),
            (5, 1, "{}"),
        ],
        &[(1, 2, "null"), (2, 2, "{\"bb\":2}"), (5, 2, "{}")],
        &[(1, 3, "{}"), (3, 2, "{}")],
        &[(2, 3, "null"), (2, 4, "{\"c\":3}")],
        &[(6, 1, "{}")],
    ];
    for (t, frame) in frames.iter().enumerate() {
        for from in [A, B] {
            table.apply(from, &decode_update(&update(frame)).unwrap(), t as u64);
            let live: Vec<_> = table
                .clients
                .iter()
                .filter(|(_, m)| m.state.is_some())
                .collect();
            assert_eq!(table.live_count(), live.len());
            assert_eq!(table.removed_count(), table.clients.len() - live.len());
            let bytes: usize = live
                .iter()
                .map(|(_, m)| m.state.as_ref().map_or(0, |s| s.len()))
                .sum();
            assert_eq!(table.state_bytes, bytes);
            for owner in [A, B] {
                let owned = live.iter().filter(|(_, m)| m.owner == Some(owner)).count();
                assert_eq!(table.owned_count(owner), owned);
                assert!(owned <= 3);
            }
        }
    }
    table.expire(100_000, 1);
    assert_eq!(
        (table.live_count(), table.owned_count(A), table.state_bytes),
        (0, 0, 0)
    );
}
