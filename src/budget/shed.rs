//! Largest-first shedding: past the limit, the sockets holding the most are closed until the
//! fill is back under its target, at most once per excess.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use super::MemoryBudget;
use super::meter::{AbortReason, SocketMeter};

/// Why memory pressure refused or closed something: the `reason` label of
/// `zedi_memory_sheds_total`, one enum so the series registered, counted and documented agree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShedReason {
    /// A new WebSocket got HTTP 503 (80 %).
    ConnectionRefused,
    /// A document not yet loaded was refused (90 %).
    DocumentRefused,
    /// A socket holding the most was closed (100 %).
    SocketClosed,
    /// A socket over its outbound share was closed.
    SlowReader,
    /// A socket that took no byte within the write deadline was closed.
    WriteStall,
}

impl ShedReason {
    pub const ALL: [ShedReason; 5] = [
        ShedReason::ConnectionRefused,
        ShedReason::DocumentRefused,
        ShedReason::SocketClosed,
        ShedReason::SlowReader,
        ShedReason::WriteStall,
    ];

    pub const fn label(self) -> &'static str {
        match self {
            ShedReason::ConnectionRefused => "connection_refused",
            ShedReason::DocumentRefused => "document_refused",
            ShedReason::SocketClosed => "socket_closed",
            ShedReason::SlowReader => "slow_reader",
            ShedReason::WriteStall => "write_stall",
        }
    }
}

/// Shedding closes sockets until the total is back under this.
const SHED_TARGET_PERCENT: usize = 95;
/// A socket holding less than this is never shed: an honest editor holds next to nothing, and
/// closing it would free nothing.
pub const SHED_FLOOR_BYTES: usize = 64 * 1024;
/// Least time between two shedding passes (the closes take a moment to free their memory).
const SHED_INTERVAL_MS: u64 = 100;
/// How long memory freed by shedding may still show as resident: jemalloc hands freed pages
/// back within its 1 s decay. Within this, the resident floor is lowered by what was shed, so
/// that one excess does not close socket after socket while the pages go back.
const RESIDENT_LAG_MS: u64 = 2000;

impl MemoryBudget {
    /// Counts one refusal or close in `zedi_memory_sheds_total`.
    pub fn count_shed(&self, reason: ShedReason) {
        self.sheds[reason as usize].inc();
    }

    /// Over the limit: closes the sockets holding the most (each at least
    /// [`SHED_FLOOR_BYTES`]) until what they hold brings the fill under 95 %. Their memory
    /// goes when their tasks notice, within one poll; a pass runs at most every 100 ms so that
    /// the same excess is not shed twice, and for [`RESIDENT_LAG_MS`] what was shed is taken
    /// off the resident floor (the pages take that long to leave).
    pub fn shed_sockets(&self) -> usize {
        let now_ms = self.started.elapsed().as_millis() as u64;
        let last = self.last_shed_ms.load(Ordering::Relaxed);
        if last != 0 && now_ms.saturating_sub(last) < SHED_INTERVAL_MS {
            return 0;
        }
        if self
            .last_shed_ms
            .compare_exchange(last, now_ms.max(1), Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            return 0; // another thread is shedding
        }
        let target = self.limit / 100 * SHED_TARGET_PERCENT;
        let mut excess = self.fill_after_recent_sheds(now_ms).saturating_sub(target);
        let excess_before = excess;
        let mut candidates: Vec<(usize, Arc<SocketMeter>)> = self
            .sockets
            .lock()
            .values()
            .filter_map(Weak::upgrade)
            .filter(|m| m.aborted().is_none())
            .map(|m| (m.held(), m))
            .filter(|(held, _)| *held >= SHED_FLOOR_BYTES)
            .collect();
        candidates.sort_unstable_by_key(|(held, _)| std::cmp::Reverse(*held));
        let mut closed = 0;
        for (held, meter) in candidates {
            if excess == 0 {
                break;
            }
            tracing::warn!(
                session = meter.id(),
                held,
                budget_used = self.used(),
                budget_limit = self.limit,
                "memory budget full: closing the socket that holds the most"
            );
            meter.abort(AbortReason::Shed);
            self.count_shed(ShedReason::SocketClosed);
            excess = excess.saturating_sub(held);
            closed += 1;
        }
        if closed > 0 {
            self.note_shed(now_ms, excess_before - excess);
        }
        closed
    }

    /// The fill, with the resident floor lowered by what shedding closed in the last
    /// [`RESIDENT_LAG_MS`] (charges already dropped with their sockets).
    fn fill_after_recent_sheds(&self, now_ms: u64) -> usize {
        let used = self.used();
        if !self.measures_rss {
            return used;
        }
        let shed_ms = self.recently_shed_ms.load(Ordering::Relaxed);
        let in_flight = if shed_ms != 0 && now_ms.saturating_sub(shed_ms) < RESIDENT_LAG_MS {
            self.recently_shed.load(Ordering::Relaxed)
        } else {
            0
        };
        used.max(self.resident().saturating_sub(in_flight))
    }

    fn note_shed(&self, now_ms: u64, bytes: usize) {
        let shed_ms = self.recently_shed_ms.load(Ordering::Relaxed);
        if shed_ms != 0 && now_ms.saturating_sub(shed_ms) < RESIDENT_LAG_MS {
            self.recently_shed.fetch_add(bytes, Ordering::Relaxed);
        } else {
            self.recently_shed.store(bytes, Ordering::Relaxed);
        }
        self.recently_shed_ms
            .store(now_ms.max(1), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::budget::Holder;

    const MIB: usize = 1024 * 1024;

    #[test]
    fn resident_memory_over_the_limit_sheds_once_per_excess() {
        let budget = MemoryBudget::unmetered_measuring(100 * MIB);
        let first = SocketMeter::new(1, &budget);
        let second = SocketMeter::new(2, &budget);
        first.add(Holder::Outbound, 8 * MIB);
        second.add(Holder::Outbound, 6 * MIB);
        // Charges are 14 MiB, but the process holds 101 MiB: 6 MiB over the 95 % target.
        budget.set_resident(101 * MIB);
        assert_eq!(first.aborted(), Some(AbortReason::Shed));
        assert!(second.aborted().is_none(), "8 MiB covers the excess");
        drop(first);
        // The pages of the closed socket have not left yet when the next samples come.
        std::thread::sleep(std::time::Duration::from_millis(SHED_INTERVAL_MS + 20));
        budget.set_resident(101 * MIB);
        assert!(
            second.aborted().is_none(),
            "what was just shed is taken off the resident size"
        );
        // A new excess on top of that is shed.
        std::thread::sleep(std::time::Duration::from_millis(SHED_INTERVAL_MS + 20));
        budget.set_resident(110 * MIB);
        assert_eq!(second.aborted(), Some(AbortReason::Shed));
    }

    #[test]
    fn shedding_closes_the_largest_sockets_first_and_spares_small_ones() {
        let budget = MemoryBudget::unmetered(16 * MIB);
        let small = SocketMeter::new(1, &budget);
        let big = SocketMeter::new(2, &budget);
        let bigger = SocketMeter::new(3, &budget);
        small.add(Holder::Preauth, 1024);
        big.add(Holder::Preauth, 4 * MIB);
        budget.charge(Holder::Documents, 8 * MIB);
        assert!(big.aborted().is_none() && bigger.aborted().is_none());
        // This passes the limit: the shedder must free ~1.7 MiB, so only the largest goes.
        bigger.add(Holder::Outbound, 5 * MIB);
        assert_eq!(bigger.aborted(), Some(AbortReason::Shed));
        assert!(big.aborted().is_none(), "one close was enough");
        assert!(small.aborted().is_none());
        drop(bigger);
        assert_eq!(
            budget.used(),
            8 * MIB + 4 * MIB + 1024,
            "a dropped meter gives back all"
        );
    }
}
