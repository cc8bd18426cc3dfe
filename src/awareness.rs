//! Awareness (presence) state of one document, with the exact semantics of y-protocols'
//! `applyAwarenessUpdate`, which is what the provider runs on its side.
//!
//! yrs ships an `Awareness` too, but it treats a first entry with clock 0 as an addition, while
//! y-protocols ignores it; the provider's very first awareness frame (clock 0, state `{}`) must
//! not be echoed, so we keep our own small table. Pure code: time is passed in.
//!
//! One rule is ours, not y-protocols': every live entry has an [`Owner`], the connection that
//! introduced its client id (or "another node", for entries that came through the relay). Only
//! the owner may update or remove it; anyone else's entry for that id is refused, and a
//! connection that leaves removes only what it owns. Otherwise any client could rewrite or erase
//! another's presence, and by disconnecting make the server erase it for everybody. A removal
//! (null state, the owner's or the server's on disconnect/expiry) releases the id, so a provider
//! that reconnects with the same Yjs clientID can introduce it again.

use std::collections::HashMap;
use std::sync::Arc;

use crate::protocol::lib0::{Lib0Error, Reader, Writer};

/// One `(clientId, clock, state JSON)` entry of an encoded awareness update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry<'a> {
    pub client_id: u64,
    pub clock: u64,
    pub state: &'a str,
}

/// Why an awareness payload was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AwarenessError {
    #[error("malformed awareness update: {0}")]
    Malformed(#[from] Lib0Error),
    #[error("awareness state of client {0} is not JSON")]
    NotJson(u64),
    #[error("awareness update lists {0} clients, more than the limit")]
    TooManyClients(u64),
    #[error("awareness clock or client id {0} is beyond what a JavaScript client can hold")]
    OutOfRange(u64),
}

/// JavaScript's `Number.MAX_SAFE_INTEGER`: lib0 decodes varUints into numbers, so a peer can
/// never legitimately send more, and keeping clocks below it leaves room to increment them.
const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

/// Most clients one update may carry; a provider sends one, a server replay sends all of a
/// document's, so this only stops absurd counts.
const MAX_ENTRIES_PER_UPDATE: u64 = 10_000;

/// Decodes an awareness update and checks every state is JSON (the provider would throw on a
/// non-JSON state, so relaying one would break every other client of the document).
pub fn decode_update(bytes: &[u8]) -> Result<Vec<Entry<'_>>, AwarenessError> {
    let mut r = Reader::new(bytes);
    let n = r.read_var_uint()?;
    if n > MAX_ENTRIES_PER_UPDATE {
        return Err(AwarenessError::TooManyClients(n));
    }
    let mut entries = Vec::with_capacity(n.min(64) as usize);
    for _ in 0..n {
        let client_id = r.read_var_uint()?;
        let clock = r.read_var_uint()?;
        for value in [client_id, clock] {
            if value > MAX_SAFE_INTEGER {
                return Err(AwarenessError::OutOfRange(value));
            }
        }
        let state = r.read_var_string()?;
        if serde_json::from_str::<serde::de::IgnoredAny>(state).is_err() {
            return Err(AwarenessError::NotJson(client_id));
        }
        entries.push(Entry {
            client_id,
            clock,
            state,
        });
    }
    Ok(entries)
}

/// Who introduced an awareness client id and alone may change it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Owner {
    /// One attachment of a socket to the document (a number the document actor hands out).
    Connection(u64),
    /// Another node, through the relay. That node checked its own connections; here they are
    /// one owner, so a local connection cannot take over a client of another node.
    Remote,
}

#[derive(Debug, Clone)]
struct ClientMeta {
    clock: u64,
    /// `None` once the client was removed; the clock is kept so stale re-sends are ignored.
    state: Option<Arc<str>>,
    /// Who may change the live state; `None` exactly when `state` is `None` (released).
    owner: Option<Owner>,
    last_updated_ms: u64,
}

/// What an applied update changed; every id in `added`, `updated` and `removed` is broadcast.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Changes {
    pub added: Vec<u64>,
    pub updated: Vec<u64>,
    pub removed: Vec<u64>,
    /// Ids whose entry was refused because another owner holds them (each once). Only entries
    /// that y-protocols' clock rule would have applied are listed: a replay of what the table
    /// already has changes nothing, whoever sends it.
    pub refused: Vec<u64>,
}

impl Changes {
    /// Nothing to broadcast (refused entries changed nothing).
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.updated.is_empty() && self.removed.is_empty()
    }

    pub fn all(&self) -> Vec<u64> {
        let mut ids =
            Vec::with_capacity(self.added.len() + self.updated.len() + self.removed.len());
        ids.extend_from_slice(&self.added);
        ids.extend_from_slice(&self.updated);
        ids.extend_from_slice(&self.removed);
        ids
    }
}

/// The awareness table of one document.
#[derive(Debug, Default)]
pub struct AwarenessTable {
    clients: HashMap<u64, ClientMeta>,
}

fn is_null(state: &str) -> bool {
    state.trim() == "null"
}

impl AwarenessTable {
    pub fn new() -> Self {
        Self::default()
    }

    /// Who owns `client_id`'s live state; `None` when it has none.
    pub fn owner(&self, client_id: u64) -> Option<Owner> {
        self.clients.get(&client_id).and_then(|m| m.owner)
    }

    /// Number of clients with a live (non-null) state.
    pub fn live_count(&self) -> usize {
        self.clients.values().filter(|m| m.state.is_some()).count()
    }

    /// Applies decoded entries sent by `from` like y-protocols `applyAwarenessUpdate` on a
    /// server (which has no local state of its own), except that an entry for a client id with
    /// a live state owned by someone else is refused (see the module notes). A new live state
    /// makes `from` its owner; a null state releases the id.
    pub fn apply(&mut self, from: Owner, entries: &[Entry<'_>], now_ms: u64) -> Changes {
        let mut changes = Changes::default();
        for entry in entries {
            let null = is_null(entry.state);
            let meta = self.clients.get(&entry.client_id);
            let curr_clock = meta.map_or(0, |m| m.clock);
            let has_state = meta.is_some_and(|m| m.state.is_some());
            let accept =
                curr_clock < entry.clock || (curr_clock == entry.clock && null && has_state);
            if !accept {
                continue;
            }
            if let Some(owner) = meta.and_then(|m| m.owner)
                && owner != from
            {
                // One frame may list an id twice; report it once.
                if !changes.refused.contains(&entry.client_id) {
                    changes.refused.push(entry.client_id);
                }
                continue;
            }
            let known = meta.is_some();
            let (state, owner): (Option<Arc<str>>, Option<Owner>) = if null {
                (None, None)
            } else {
                (Some(Arc::from(entry.state)), Some(from))
            };
            self.clients.insert(
                entry.client_id,
                ClientMeta {
                    clock: entry.clock,
                    state,
                    owner,
                    last_updated_ms: now_ms,
                },
            );
            match (known, null) {
                (false, false) => changes.added.push(entry.client_id),
                (true, true) => changes.removed.push(entry.client_id),
                (_, false) => changes.updated.push(entry.client_id),
                // An unknown client announcing its own removal: recorded, nothing to tell.
                (false, true) => {}
            }
        }
        changes
    }

    /// Marks the clients of `owner` among `ids` as gone (their connection closed): clock + 1
    /// and a null state, as the y-protocols `removeAwarenessStates` does. An id now owned by
    /// someone else (the connection released it and another introduced it since) is left
    /// alone. Returns the ids that were removed.
    pub fn remove(
        &mut self,
        owner: Owner,
        ids: impl IntoIterator<Item = u64>,
        now_ms: u64,
    ) -> Vec<u64> {
        let mut removed = Vec::new();
        for id in ids {
            if let Some(meta) = self.clients.get_mut(&id)
                && meta.state.is_some()
                && meta.owner == Some(owner)
            {
                meta.state = None;
                meta.owner = None;
                meta.clock = meta.clock.saturating_add(1);
                meta.last_updated_ms = now_ms;
                removed.push(id);
            }
        }
        removed
    }

    /// Removes states not renewed for `timeout_ms` (y-protocols' outdated check; providers renew
    /// every 15 s, so 30 s means the client is gone without having said so).
    pub fn expire(&mut self, now_ms: u64, timeout_ms: u64) -> Vec<u64> {
        let stale: Vec<u64> = self
            .clients
            .iter()
            .filter(|(_, m)| {
                m.state.is_some() && now_ms.saturating_sub(m.last_updated_ms) >= timeout_ms
            })
            .map(|(id, _)| *id)
            .collect();
        for id in &stale {
            if let Some(meta) = self.clients.get_mut(id) {
                // Released too: a half-open socket stops renewing, so its provider, reconnected
                // on another socket with the same clientID, gets the id back here at the latest.
                meta.state = None;
                meta.owner = None;
            }
        }
        stale
    }

    /// Forgets removed clients older than `timeout_ms`, so the table does not grow forever with
    /// every client that ever connected.
    pub fn prune_removed(&mut self, now_ms: u64, timeout_ms: u64) {
        self.clients.retain(|_, m| {
            m.state.is_some() || now_ms.saturating_sub(m.last_updated_ms) < timeout_ms
        });
    }

    /// Encodes the given clients (removed ones as `null`); unknown ids are skipped.
    pub fn encode(&self, ids: &[u64]) -> Vec<u8> {
        let known: Vec<(u64, &ClientMeta)> = ids
            .iter()
            .filter_map(|id| self.clients.get(id).map(|m| (*id, m)))
            .collect();
        let mut w = Writer::with_capacity(8 + known.len() * 32);
        w.write_var_uint(known.len() as u64);
        for (id, meta) in known {
            w.write_var_uint(id).write_var_uint(meta.clock);
            w.write_var_string(meta.state.as_deref().unwrap_or("null"));
        }
        w.into_vec()
    }

    /// Encodes every live state, or `None` when there is none (nothing to send a newcomer).
    pub fn encode_live(&self) -> Option<Vec<u8>> {
        let mut ids: Vec<u64> = self
            .clients
            .iter()
            .filter(|(_, m)| m.state.is_some())
            .map(|(id, _)| *id)
            .collect();
        if ids.is_empty() {
            return None;
        }
        ids.sort_unstable();
        Some(self.encode(&ids))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Owner = Owner::Connection(1);
    const B: Owner = Owner::Connection(2);

    fn update(entries: &[(u64, u64, &str)]) -> Vec<u8> {
        let mut w = Writer::new();
        w.write_var_uint(entries.len() as u64);
        for (id, clock, state) in entries {
            w.write_var_uint(*id)
                .write_var_uint(*clock)
                .write_var_string(state);
        }
        w.into_vec()
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
            0x01, 0x01, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 0x02, 0x7b,
            0x7d,
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
}
