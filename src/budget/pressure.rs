//! The budget's pressure levels: how full it is, and so what the node refuses.

use super::MemoryBudget;

/// How full the budget is, and so what the node refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Pressure {
    Normal,
    /// New WebSockets get HTTP 503.
    RefuseConnections,
    /// Also: documents that are not loaded are not opened.
    RefuseDocuments,
    /// Also: the biggest sockets are being closed.
    Shed,
}

/// Fractions of the limit where each [`Pressure`] level starts, in percent.
const REFUSE_CONNECTIONS_PERCENT: usize = 80;
const REFUSE_DOCUMENTS_PERCENT: usize = 90;
impl MemoryBudget {
    /// The fill in percent of the limit (may pass 100).
    pub fn percent(&self) -> f64 {
        self.fill() as f64 * 100.0 / self.limit as f64
    }

    pub fn pressure(&self) -> Pressure {
        let used = self.fill();
        let at = |percent: usize| used >= self.limit / 100 * percent;
        if used >= self.limit {
            Pressure::Shed
        } else if at(REFUSE_DOCUMENTS_PERCENT) {
            Pressure::RefuseDocuments
        } else if at(REFUSE_CONNECTIONS_PERCENT) {
            Pressure::RefuseConnections
        } else {
            Pressure::Normal
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::budget::Holder;

    const MIB: usize = 1024 * 1024;

    #[test]
    fn pressure_levels_follow_the_fill() {
        let budget = MemoryBudget::unmetered(100 * MIB);
        assert_eq!(budget.pressure(), Pressure::Normal);
        budget.charge(Holder::Documents, 81 * MIB);
        assert_eq!(budget.pressure(), Pressure::RefuseConnections);
        budget.charge(Holder::Documents, 10 * MIB);
        assert_eq!(budget.pressure(), Pressure::RefuseDocuments);
        budget.charge(Holder::Documents, 10 * MIB);
        assert_eq!(budget.pressure(), Pressure::Shed);
    }

    #[test]
    fn resident_memory_is_a_floor_of_the_fill_only_when_measured() {
        let measured = MemoryBudget::unmetered_measuring(100 * MIB);
        measured.charge(Holder::Documents, 10 * MIB);
        assert_eq!(measured.fill(), 10 * MIB, "no sample yet");
        measured.set_resident(85 * MIB);
        assert_eq!(measured.fill(), 85 * MIB);
        assert_eq!(measured.pressure(), Pressure::RefuseConnections);
        measured.charge(Holder::Documents, 80 * MIB);
        assert_eq!(
            measured.fill(),
            90 * MIB,
            "charges above the resident size win"
        );
        assert_eq!(measured.pressure(), Pressure::RefuseDocuments);

        let charges_only = MemoryBudget::unmetered(100 * MIB);
        charges_only.charge(Holder::Documents, 10 * MIB);
        charges_only.set_resident(500 * MIB);
        assert_eq!(charges_only.fill(), 10 * MIB);
        assert_eq!(charges_only.pressure(), Pressure::Normal);
    }
}
