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
//!
//! Bounds ([`AwarenessLimits`], from `[limits]`), because the server stores every state and
//! repeats it to every editor of the document and to each newcomer:
//! - each state's JSON is at most `max_state_bytes` long and nests arrays/objects at most
//!   `max_depth` deep. Checked per state, as Hocuspocus users think of it ("my cursor state"),
//!   not per frame: a frame is bounded by `limits.max_frame_bytes` and at most
//!   [`MAX_ENTRIES_PER_UPDATE`] entries. One state over either bound refuses the whole frame
//!   ([`decode_update_with`] fails): no honest provider sends one, so nothing of it is kept.
//! - a connection owns at most `max_clients_per_connection` live client ids; an entry that
//!   would introduce one more is refused on its own ([`Changes::over_limit`]), the rest of the
//!   frame stands. Removal releases an id, so a provider that reloads gets a new one.
//! - removed clients are remembered (their clock, so that a late re-send does not resurrect
//!   them) for a while, but at most [`MAX_REMOVED_KEPT`]; past it the oldest are forgotten.
//!   Otherwise introducing and removing ids in a loop would grow the table without bound.
//!
//! [`AwarenessTable::memory_bytes`] estimates what the table holds, for the memory budget.

use std::collections::HashMap;
use std::sync::Arc;

use crate::protocol::lib0::Writer;

mod decode;
mod json_depth;

pub use decode::{
    AwarenessError, AwarenessLimits, Entry, MAX_ENTRIES_PER_UPDATE, decode_update,
    decode_update_with, encode_update,
};
pub use json_depth::within_depth;

/// Most removed clients a table remembers (see the module notes). An honest document sees a
/// few removals per editor per page load, and they are forgotten after two awareness timeouts.
pub const MAX_REMOVED_KEPT: usize = 4096;

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
    /// Ids whose entry was refused because another owner holds them (each once, ascending).
    /// Only entries that y-protocols' clock rule would have applied are listed: a replay of
    /// what the table already has changes nothing, whoever sends it.
    pub refused: Vec<u64>,
    /// Ids whose entry was refused because it would have introduced one client more than the
    /// sending connection may own (each once, ascending).
    pub over_limit: Vec<u64>,
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

/// Estimated heap bytes of one slot of the client map (hashbrown: the pair plus a control
/// byte, at a load factor of 7/8).
const CLIENT_SLOT_BYTES: usize = (std::mem::size_of::<(u64, ClientMeta)>() + 1) * 8 / 7;
/// One slot of the per-connection map of owned ids, with its `Vec`'s allocation header.
const OWNER_SLOT_BYTES: usize = (std::mem::size_of::<(u64, Vec<u64>)>() + 1) * 8 / 7 + 16;
/// Per live client beyond its state's text: the reference counts in front of the `Arc<str>`,
/// and its id in its owner's list.
const LIVE_CLIENT_BYTES: usize = 16 + 8;

/// The awareness table of one document.
#[derive(Debug, Default)]
pub struct AwarenessTable {
    clients: HashMap<u64, ClientMeta>,
    limits: AwarenessLimits,
    /// Live client ids of each connection owner (at most `max_clients_per_connection` each),
    /// so counting and removing a connection's clients never scans the table.
    owned: HashMap<u64, Vec<u64>>,
    /// Sum of the live states' lengths.
    state_bytes: usize,
    /// Clients kept with a null state (removed, remembered for their clock).
    removed: usize,
}

fn is_null(state: &str) -> bool {
    state.trim() == "null"
}

impl AwarenessTable {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_limits(limits: AwarenessLimits) -> Self {
        AwarenessTable {
            limits,
            ..Self::default()
        }
    }

    pub fn limits(&self) -> &AwarenessLimits {
        &self.limits
    }

    /// Who owns `client_id`'s live state; `None` when it has none.
    pub fn owner(&self, client_id: u64) -> Option<Owner> {
        self.clients.get(&client_id).and_then(|m| m.owner)
    }

    /// Number of clients with a live (non-null) state.
    pub fn live_count(&self) -> usize {
        self.clients.len() - self.removed
    }

    /// Number of removed clients still remembered.
    pub fn removed_count(&self) -> usize {
        self.removed
    }

    /// Live client ids `owner` holds (always 0 for [`Owner::Remote`], which is not counted).
    pub fn owned_count(&self, owner: Owner) -> usize {
        match owner {
            Owner::Connection(c) => self.owned.get(&c).map_or(0, Vec::len),
            Owner::Remote => 0,
        }
    }

    /// Estimated heap bytes the table holds: the states, plus every slot of its maps (their
    /// capacity, which is what is allocated). What the memory budget is charged for it.
    /// Constant time: it runs after every awareness frame.
    pub fn memory_bytes(&self) -> usize {
        self.state_bytes
            + self.live_count() * LIVE_CLIENT_BYTES
            + self.clients.capacity() * CLIENT_SLOT_BYTES
            + self.owned.capacity() * OWNER_SLOT_BYTES
    }

    /// Whether `from` may introduce one more live client id.
    fn may_introduce(&self, from: Owner) -> bool {
        self.owned_count(from) < self.limits.max_clients_per_connection
    }

    /// Sets `client_id`'s entry, keeping the counters and the owner lists in step.
    fn set(&mut self, client_id: u64, meta: ClientMeta) {
        let (new_len, new_owner) = (meta.state.as_ref().map(|s| s.len()), meta.owner);
        let old = self.clients.insert(client_id, meta);
        let old_owner = old.as_ref().and_then(|m| m.owner);
        match old.as_ref().map(|m| m.state.as_ref().map(|s| s.len())) {
            Some(Some(len)) => self.state_bytes -= len,
            Some(None) => self.removed -= 1,
            None => {}
        }
        match new_len {
            Some(len) => self.state_bytes += len,
            None => self.removed += 1,
        }
        if old_owner != new_owner {
            if let Some(Owner::Connection(c)) = old_owner {
                self.disown(c, client_id);
            }
            if let Some(Owner::Connection(c)) = new_owner {
                self.owned.entry(c).or_default().push(client_id);
            }
        }
    }

    fn disown(&mut self, connection: u64, client_id: u64) {
        if let Some(ids) = self.owned.get_mut(&connection) {
            if let Some(at) = ids.iter().position(|id| *id == client_id) {
                ids.swap_remove(at);
            }
            if ids.is_empty() {
                self.owned.remove(&connection);
            }
        }
    }

    /// Makes a live client removed (null state, released), optionally bumping its clock.
    fn release(&mut self, client_id: u64, bump_clock: bool, now_ms: u64) {
        if let Some(meta) = self.clients.get(&client_id) {
            let clock = if bump_clock {
                meta.clock.saturating_add(1)
            } else {
                meta.clock
            };
            self.set(
                client_id,
                ClientMeta {
                    clock,
                    state: None,
                    owner: None,
                    last_updated_ms: now_ms,
                },
            );
        }
    }

    /// Applies decoded entries sent by `from` like y-protocols `applyAwarenessUpdate` on a
    /// server (which has no local state of its own), except that an entry for a client id with
    /// a live state owned by someone else is refused (see the module notes), and so is one that
    /// would give a connection more live ids than it may own. A new live state makes `from` its
    /// owner; a null state releases the id.
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
            let owner = meta.and_then(|m| m.owner);
            if owner.is_some_and(|o| o != from) {
                changes.refused.push(entry.client_id);
                continue;
            }
            if !null && owner.is_none() && !self.may_introduce(from) {
                changes.over_limit.push(entry.client_id);
                continue;
            }
            let known = meta.is_some();
            let (state, owner): (Option<Arc<str>>, Option<Owner>) = if null {
                (None, None)
            } else {
                (Some(Arc::from(entry.state)), Some(from))
            };
            self.set(
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
        // One frame may list an id many times; sorting keeps this linear-logarithmic where a
        // `contains` per entry was quadratic in the (up to 10,000) entries of a frame.
        for ids in [&mut changes.refused, &mut changes.over_limit] {
            ids.sort_unstable();
            ids.dedup();
        }
        self.forget_oldest_removed();
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
            if self.owner(id) == Some(owner) {
                self.release(id, true, now_ms);
                removed.push(id);
            }
        }
        self.forget_oldest_removed();
        removed
    }

    /// [`Self::remove`] of every live client `owner` holds: its connection left.
    pub fn remove_owner(&mut self, owner: Owner, now_ms: u64) -> Vec<u64> {
        let ids = match owner {
            Owner::Connection(c) => self.owned.get(&c).cloned().unwrap_or_default(),
            Owner::Remote => Vec::new(),
        };
        self.remove(owner, ids, now_ms)
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
            // Released too: a half-open socket stops renewing, so its provider, reconnected
            // on another socket with the same clientID, gets the id back here at the latest.
            // The clock and the time stay: the removal is remembered from when it went silent.
            if let Some(last_updated_ms) = self.clients.get(id).map(|m| m.last_updated_ms) {
                self.release(*id, false, last_updated_ms);
            }
        }
        self.forget_oldest_removed();
        stale
    }

    /// Forgets removed clients older than `timeout_ms`, so the table does not grow forever with
    /// every client that ever connected; gives memory back once the table has shrunk a lot.
    pub fn prune_removed(&mut self, now_ms: u64, timeout_ms: u64) {
        self.forget_removed(|m| now_ms.saturating_sub(m.last_updated_ms) >= timeout_ms);
        if self.clients.capacity() > 64 && self.clients.len() < self.clients.capacity() / 4 {
            self.clients.shrink_to_fit();
        }
        if self.owned.capacity() > 64 && self.owned.len() < self.owned.capacity() / 4 {
            self.owned.shrink_to_fit();
        }
    }

    fn forget_removed(&mut self, forget: impl Fn(&ClientMeta) -> bool) {
        let mut forgotten = 0;
        self.clients.retain(|_, m| {
            let drop = m.state.is_none() && forget(m);
            forgotten += usize::from(drop);
            !drop
        });
        self.removed -= forgotten;
    }

    /// Past [`MAX_REMOVED_KEPT`] removed clients, forgets the older half of them. A scan of the
    /// table at most once per `MAX_REMOVED_KEPT / 2` removals, so constant work per removal.
    fn forget_oldest_removed(&mut self) {
        if self.removed <= MAX_REMOVED_KEPT {
            return;
        }
        let mut times: Vec<u64> = self
            .clients
            .values()
            .filter(|m| m.state.is_none())
            .map(|m| m.last_updated_ms)
            .collect();
        let keep = MAX_REMOVED_KEPT / 2;
        let cut = times.len() - keep;
        let (_, newest_forgotten, _) = times.select_nth_unstable(cut - 1);
        let newest_forgotten = *newest_forgotten;
        // Ties at the cut are forgotten too: at least the older half, all of them when they
        // share one time (the removals of one frame do).
        self.forget_removed(|m| m.last_updated_ms <= newest_forgotten);
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
mod tests;
