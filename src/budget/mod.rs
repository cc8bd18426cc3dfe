//! The node-wide memory budget: one accountant that every holder of client-driven memory
//! charges (outbound and pre-auth queues, partly received frames, loaded documents, awareness,
//! store write queues), so that a 512 MB task sheds load before the kernel kills it.
//!
//! Why one budget and not only per-connection limits: per-connection limits multiply. 20
//! sockets × a 32 MiB outbound queue is more than the task has; a budget makes each limit a
//! share of one whole. Charging is two relaxed atomic adds (the holder's and the total), so it
//! can sit on every frame's path.
//!
//! The budget's fill is the larger of the charges and, when `limits.memory_budget_measures_rss`
//! is on (the default), the process's resident memory sampled every 100 ms ([`resident`]):
//! what nothing charges still counts, as it does for the container's limit.
//!
//! Shedding, in order, as the fill passes fractions of the limit ([`Pressure`]):
//! 80 %: new WebSockets are refused with HTTP 503 (the ALB retries another task; `/health`
//! stays 200, so the task is not replaced); 90 %: documents not loaded yet are refused;
//! 100 %: the sockets holding the most are closed first ([`MemoryBudget::shed_sockets`]).
//! The levels are in [`pressure`], the shedding in [`shed`], per-socket accounting and the close
//! itself in [`meter`].

mod charge;
pub mod meter;
mod pressure;
pub mod resident;
mod shed;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Instant;

use parking_lot::Mutex;
use prometheus::IntGauge;

pub use charge::Charge;
pub use meter::{AbortReason, OutboundCharge, SocketMeter};
pub use pressure::Pressure;
pub use shed::{SHED_FLOOR_BYTES, ShedReason};

use crate::metrics::Metrics;

/// What holds charged memory. The label of `zedi_memory_budget_used_bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holder {
    /// Frames queued for sockets and not yet written (mailbox and socket buffer).
    Outbound,
    /// Bytes read from sockets and not yet decoded into whole frames.
    Inbound,
    /// Frames held for documents whose Auth has not been decided.
    Preauth,
    /// Loaded documents (encoded size × `limits.document_memory_factor`).
    Documents,
    /// Awareness states of loaded documents.
    Awareness,
    /// Updates accepted and waiting for the store.
    StoreQueue,
}

impl Holder {
    pub const ALL: [Holder; 6] = [
        Holder::Outbound,
        Holder::Inbound,
        Holder::Preauth,
        Holder::Documents,
        Holder::Awareness,
        Holder::StoreQueue,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Holder::Outbound => "outbound",
            Holder::Inbound => "inbound",
            Holder::Preauth => "preauth",
            Holder::Documents => "documents",
            Holder::Awareness => "awareness",
            Holder::StoreQueue => "store_queue",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Frames held before Auth, and frames partly received, each over all sockets may hold at most
/// this part of the limit (1/4): per-socket and per-address shares add up over many sockets
/// and addresses, and neither is what an honest editor holds for long.
const CLIENT_QUEUE_SHARE_DIVISOR: usize = 4;

pub struct MemoryBudget {
    limit: usize,
    /// Whether the resident size counts towards the fill (`limits.memory_budget_measures_rss`).
    measures_rss: bool,
    total: AtomicUsize,
    /// The last sampled resident size in bytes (0 until the first sample).
    resident: AtomicUsize,
    resident_gauge: IntGauge,
    fill_gauge: IntGauge,
    /// What the last shedding passes closed, and when: for a while it is taken off the
    /// resident floor ([`shed`]).
    recently_shed: AtomicUsize,
    recently_shed_ms: AtomicU64,
    used: [AtomicUsize; 6],
    gauges: [IntGauge; 6],
    /// `zedi_memory_sheds_total` by reason; a flood of refused upgrades counts one per upgrade.
    /// One series per reason, resolved at start (indexed by `ShedReason as usize`).
    sheds: [prometheus::IntCounter; ShedReason::ALL.len()],
    /// Every open socket's meter, for shedding the largest.
    sockets: Mutex<HashMap<u64, Weak<SocketMeter>>>,
    started: Instant,
    last_shed_ms: AtomicU64,
}

impl MemoryBudget {
    /// A budget of `limit` bytes; `measures_rss` makes the sampled resident size a floor of its
    /// fill (start [`resident::spawn_sampler`] to feed it).
    pub fn new(limit: usize, measures_rss: bool, metrics: &Metrics) -> Arc<Self> {
        metrics.memory_budget_limit_bytes.set(limit as i64);
        Arc::new(MemoryBudget {
            limit,
            measures_rss,
            total: AtomicUsize::new(0),
            resident: AtomicUsize::new(0),
            resident_gauge: metrics.memory_resident_bytes.clone(),
            fill_gauge: metrics.memory_budget_fill_bytes.clone(),
            recently_shed: AtomicUsize::new(0),
            recently_shed_ms: AtomicU64::new(0),
            used: Default::default(),
            gauges: Holder::ALL.map(|h| {
                metrics
                    .memory_budget_used_bytes
                    .with_label_values(&[h.as_str()])
            }),
            sheds: ShedReason::ALL
                .map(|r| metrics.memory_sheds_total.with_label_values(&[r.label()])),
            sockets: Mutex::new(HashMap::new()),
            started: Instant::now(),
            last_shed_ms: AtomicU64::new(0),
        })
    }

    /// A budget of charges alone with its own throw-away metrics, for tests of the parts that
    /// charge it.
    pub fn unmetered(limit: usize) -> Arc<Self> {
        Self::new(limit, false, &Metrics::new())
    }

    /// As [`Self::unmetered`], with the resident floor on.
    pub fn unmetered_measuring(limit: usize) -> Arc<Self> {
        Self::new(limit, true, &Metrics::new())
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// What is charged, over all holders.
    pub fn used(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }

    /// The last sampled resident size (0 before the first sample or where it is not measured).
    pub fn resident(&self) -> usize {
        self.resident.load(Ordering::Relaxed)
    }

    /// What the pressure levels compare with the limit: the charges, or the resident size if
    /// it is measured and larger.
    pub fn fill(&self) -> usize {
        let used = self.used();
        if self.measures_rss {
            used.max(self.resident())
        } else {
            used
        }
    }

    /// Records a resident sample; past the limit, sheds as a charge would.
    pub fn set_resident(&self, bytes: usize) {
        self.resident.store(bytes, Ordering::Relaxed);
        self.resident_gauge.set(bytes as i64);
        let fill = self.fill();
        self.fill_gauge.set(fill as i64);
        if fill >= self.limit {
            self.shed_sockets();
        }
    }

    pub fn used_by(&self, holder: Holder) -> usize {
        self.used[holder.index()].load(Ordering::Relaxed)
    }

    /// Whether all sockets together hold their whole share of the budget in `holder` (pre-auth
    /// frames or partly received frames; see [`CLIENT_QUEUE_SHARE_DIVISOR`]).
    pub fn share_full(&self, holder: Holder) -> bool {
        self.used_by(holder) >= self.limit / CLIENT_QUEUE_SHARE_DIVISOR
    }

    /// Adds `bytes` to `holder`. Never refuses: whoever grows decides by its own share; going
    /// over the whole budget starts shedding the largest sockets.
    pub fn charge(&self, holder: Holder, bytes: usize) {
        if bytes == 0 {
            return;
        }
        self.used[holder.index()].fetch_add(bytes, Ordering::Relaxed);
        self.gauges[holder.index()].add(bytes as i64);
        let total = self.total.fetch_add(bytes, Ordering::Relaxed) + bytes;
        if total > self.limit || (self.measures_rss && self.resident() >= self.limit) {
            self.shed_sockets();
        }
    }

    /// Gives back what [`Self::charge`] took. Never goes below zero.
    pub fn release(&self, holder: Holder, bytes: usize) {
        if bytes == 0 {
            return;
        }
        let released = saturating_sub(&self.used[holder.index()], bytes);
        self.gauges[holder.index()].sub(released as i64);
        saturating_sub(&self.total, released);
    }

    pub(crate) fn register(&self, id: u64, meter: Weak<SocketMeter>) {
        self.sockets.lock().insert(id, meter);
    }

    pub(crate) fn unregister(&self, id: u64) {
        self.sockets.lock().remove(&id);
    }
}

impl std::fmt::Debug for MemoryBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MemoryBudget({} of {})", self.fill(), self.limit)
    }
}

/// Subtracts at most what is there; returns what was subtracted.
fn saturating_sub(counter: &AtomicUsize, bytes: usize) -> usize {
    let mut taken = 0;
    let _ = counter.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |now| {
        taken = bytes.min(now);
        Some(now - taken)
    });
    taken
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1024 * 1024;

    #[test]
    fn charges_add_up_per_holder_and_release_never_underflows() {
        let budget = MemoryBudget::unmetered(100 * MIB);
        budget.charge(Holder::Outbound, 10 * MIB);
        budget.charge(Holder::Documents, 5 * MIB);
        assert_eq!(budget.used(), 15 * MIB);
        assert_eq!(budget.used_by(Holder::Outbound), 10 * MIB);
        budget.release(Holder::Outbound, 20 * MIB);
        assert_eq!(budget.used_by(Holder::Outbound), 0);
        assert_eq!(
            budget.used(),
            5 * MIB,
            "only what the holder had is released"
        );
    }

    #[test]
    fn client_queues_each_get_a_quarter() {
        let budget = MemoryBudget::unmetered(100 * MIB);
        budget.charge(Holder::Preauth, 24 * MIB);
        budget.charge(Holder::Inbound, 26 * MIB);
        assert!(!budget.share_full(Holder::Preauth));
        assert!(budget.share_full(Holder::Inbound));
        budget.charge(Holder::Preauth, MIB);
        assert!(budget.share_full(Holder::Preauth));
    }
}
