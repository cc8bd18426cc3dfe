//! Updates that re-use ids the document holds pending.
//!
//! When an update's structs overlap structs yrs is holding pending (waiting for missing
//! predecessors), yrs merges the two, and which copy of an overlapping id survives depends on
//! its merge order, not on anything the firewall can predict. The nesting check resolves each
//! reference against one copy; if the other survives, the document can end up with an item
//! inside plain content or a type with no known parent, which a fresh load then refuses
//! (found by the `update_sequence` fuzzer). So an overlap must describe the same structure in
//! both copies: the same kind of struct, placed relative to the same id. An honest client
//! that re-sends pending structs (a reconnect's SyncStep2) sends the same items, possibly
//! split or merged differently, which this allows.

use super::Refusal;
use super::structs::{Anchor, Id, ParsedUpdate, Struct, StructKind};

/// Where the part of `s` starting at clock `at` hangs: a struct's first clock hangs where the
/// struct says; any later clock of it hangs right of the clock before (how Yjs splits items).
fn anchor_at(s: &Struct, anchor: &Anchor, at: u64) -> Anchor {
    if at > u64::from(s.id.clock) {
        Anchor::Beside(Id {
            client: s.id.client,
            // `at` is inside `s`, whose clocks fit in u32.
            clock: (at - 1) as u32,
        })
    } else {
        anchor.clone()
    }
}

/// Whether two structs of the same client say the same about the clocks from `at` on.
fn same_structure(update: &Struct, pending: &Struct, at: u64) -> bool {
    match (&update.kind, &pending.kind) {
        // A gap says nothing about the clocks it skips.
        (StructKind::Skip, _) | (_, StructKind::Skip) => true,
        (StructKind::Gc, StructKind::Gc) => true,
        (
            StructKind::Item {
                anchor: a,
                is_type: ta,
                is_deleted: da,
            },
            StructKind::Item {
                anchor: b,
                is_type: tb,
                is_deleted: db,
            },
        ) => {
            // Deletedness matters only for what may be placed inside plain content.
            ta == tb && (*ta || da == db) && anchor_at(update, a, at) == anchor_at(pending, b, at)
        }
        _ => false,
    }
}

/// Refuses `update` if any of its structs overlaps a struct of `pending` with another
/// structure (see the module comment). Linear in the two updates' struct counts.
pub fn check_pending_overlap(update: &ParsedUpdate, pending: &ParsedUpdate) -> Result<(), Refusal> {
    for ours in &update.clients {
        let Some(theirs) = pending.clients.iter().find(|c| c.client == ours.client) else {
            continue;
        };
        let (mut i, mut j) = (0, 0);
        while let (Some(u), Some(p)) = (ours.structs.get(i), theirs.structs.get(j)) {
            let u_end = u64::from(u.id.clock) + u64::from(u.len);
            let p_end = u64::from(p.id.clock) + u64::from(p.len);
            let lo = u64::from(u.id.clock).max(u64::from(p.id.clock));
            if lo < u_end.min(p_end) && !same_structure(u, p, lo) {
                return Err(Refusal::ConflictsWithPending {
                    client: ours.client,
                    clock: lo,
                });
            }
            if u_end <= p_end {
                i += 1;
            } else {
                j += 1;
            }
        }
    }
    Ok(())
}
