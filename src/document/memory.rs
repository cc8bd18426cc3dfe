//! What a loaded document costs: an upper bound of its encoded size (which the document size
//! limit is checked against) and its charges on the node's memory budget, for the document and
//! for its awareness table.

use std::sync::Arc;

use crate::budget::{Charge, Holder, MemoryBudget};

pub(super) struct DocumentMemory {
    /// Charge per encoded byte (`limits.document_memory_factor`).
    factor: f64,
    /// Largest encoded document; growth past it is refused.
    max_bytes: usize,
    /// Upper bound of the encoded document size: the exact size when last measured plus every
    /// update applied since (deletions only make it smaller). Measured again only when it nears
    /// the limit, so the common case costs nothing.
    approx_bytes: usize,
    /// `approx_bytes` when it was last measured by encoding the document.
    measured_bytes: usize,
    /// The document's share of the budget: `approx_bytes` × the factor while live; what its
    /// encoded state holds while at rest.
    document: Charge,
    /// Whether the document is at rest (see `DocumentState::rest`).
    at_rest: bool,
    /// What the awareness table holds; follows the table and goes with the actor.
    awareness: Charge,
}

impl DocumentMemory {
    pub(super) fn new(budget: &Arc<MemoryBudget>, factor: f64, max_bytes: usize) -> Self {
        DocumentMemory {
            factor,
            max_bytes,
            approx_bytes: 0,
            measured_bytes: 0,
            document: Charge::new(budget, Holder::Documents),
            at_rest: false,
            awareness: Charge::new(budget, Holder::Awareness),
        }
    }

    pub(super) fn max_bytes(&self) -> usize {
        self.max_bytes
    }

    /// The document was just encoded whole: it is exactly `bytes` long.
    pub(super) fn measured(&mut self, bytes: usize) {
        self.approx_bytes = bytes;
        self.measured_bytes = bytes;
        self.charge_document();
    }

    /// An update of `bytes` was applied.
    pub(super) fn grew(&mut self, bytes: usize) {
        self.approx_bytes += bytes;
        self.charge_document();
    }

    /// Whether an update of `incoming` bytes may be applied without the document outgrowing
    /// the limit. `measure` encodes the whole document (`usize::MAX / 2` when it cannot: a
    /// document that cannot even be encoded takes no more growth).
    pub(super) fn has_room_for(
        &mut self,
        incoming: usize,
        measure: impl FnOnce() -> usize,
    ) -> bool {
        let limit = self.max_bytes;
        if self.approx_bytes + incoming <= limit {
            return true;
        }
        // Measuring means encoding the whole document: only once it has grown by a sixteenth
        // of the limit since the last measurement, so a client sending update after update
        // at a full document cannot make each one cost a full encode.
        if self.approx_bytes.saturating_sub(self.measured_bytes) < limit / 16 {
            return false;
        }
        self.measured(measure());
        self.approx_bytes + incoming <= limit
    }

    /// The document went to rest, keeping `bytes` (its encoded state and state vector).
    pub(super) fn rested(&mut self, bytes: usize) {
        self.at_rest = true;
        self.measured_bytes = bytes;
        self.approx_bytes = bytes;
        self.document.set(bytes);
    }

    /// The live document is back: charged by the factor again.
    pub(super) fn revived(&mut self) {
        self.at_rest = false;
        self.charge_document();
    }

    /// Sets the awareness charge to what the table now holds.
    pub(super) fn awareness_holds(&mut self, bytes: usize) {
        self.awareness.set(bytes);
    }

    fn charge_document(&mut self) {
        if self.at_rest {
            return;
        }
        let bytes = self.approx_bytes as f64 * self.factor;
        self.document.set(bytes as usize);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_follow_the_size_and_the_awareness_table() {
        let budget = MemoryBudget::unmetered(1 << 30);
        let mut memory = DocumentMemory::new(&budget, 2.0, 1000);
        memory.measured(100);
        memory.grew(50);
        assert_eq!(budget.used_by(Holder::Documents), 300);
        memory.awareness_holds(40);
        assert_eq!(budget.used_by(Holder::Awareness), 40);
        drop(memory);
        assert_eq!(budget.used(), 0, "everything goes with the document");
    }

    #[test]
    fn a_document_at_rest_is_charged_what_it_keeps() {
        let budget = MemoryBudget::unmetered(1 << 30);
        let mut memory = DocumentMemory::new(&budget, 9.0, 1 << 20);
        memory.measured(1000);
        assert_eq!(budget.used_by(Holder::Documents), 9000);
        memory.rested(1010);
        assert_eq!(budget.used_by(Holder::Documents), 1010);
        memory.revived();
        assert_eq!(budget.used_by(Holder::Documents), 9090);
        memory.grew(10);
        assert_eq!(budget.used_by(Holder::Documents), 9180);
    }

    #[test]
    fn measures_only_after_growing_a_sixteenth_of_the_limit() {
        let budget = MemoryBudget::unmetered(1 << 30);
        let mut memory = DocumentMemory::new(&budget, 1.0, 1600);
        memory.measured(1550);
        let never = || -> usize { panic!("measured too early") };
        assert!(memory.has_room_for(50, never));
        assert!(
            !memory.has_room_for(51, never),
            "over, but grown by less than 100"
        );
        memory.grew(100);
        // Deletions made it smaller than the estimate: measuring finds the room.
        assert!(memory.has_room_for(200, || 1200));
        assert_eq!(budget.used_by(Holder::Documents), 1200);
        memory.grew(400);
        assert!(!memory.has_room_for(1, || 1600), "measured, and full");
        assert!(
            !memory.has_room_for(1, never),
            "and not measured again at once"
        );
    }
}
