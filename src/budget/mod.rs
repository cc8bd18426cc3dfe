//! The node-wide memory budget: one accountant that every holder of client-driven memory
//! charges (outbound and pre-auth queues, partly received frames, loaded documents, awareness,
//! store write queues), so that a 512 MB task sheds load before the kernel kills it.
//!
//! Why one budget and not only per-connection limits: per-connection limits multiply. 20
//! sockets × a 32 MiB outbound queue is more than the task has; a budget makes each limit a
//! share of one whole. Charging is two relaxed atomic adds (the holder's and the total), so it
//! can sit on every frame's path.
//!
//! Shedding, in order, as the total passes fractions of the limit ([`Pressure`]):
//! 80 %: new WebSockets are refused with HTTP 503 (the ALB retries another task; `/health`
//! stays 200, so the task is not replaced); 90 %: documents not loaded yet are refused;
//! 100 %: the sockets holding the most are closed first ([`MemoryBudget::shed_sockets`]).
//! Per-socket accounting and the close itself are in [`meter`].

pub mod meter;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Instant;

use parking_lot::Mutex;
use prometheus::{IntCounterVec, IntGauge};

pub use meter::{AbortReason, OutboundCharge, SocketMeter};

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

/// Why the node refused or closed something to stay inside the budget: the label of
/// `zedi_memory_sheds_total`.
pub const SHED_REASONS: &[&str] = &[
    "connection_refused",
    "document_refused",
    "socket_closed",
    "slow_reader",
    "write_stall",
];

/// Fractions of the limit where each [`Pressure`] level starts, in percent.
const REFUSE_CONNECTIONS_PERCENT: usize = 80;
const REFUSE_DOCUMENTS_PERCENT: usize = 90;
/// Shedding closes sockets until the total is back under this.
const SHED_TARGET_PERCENT: usize = 95;
/// A socket holding less than this is never shed: an honest editor holds next to nothing, and
/// closing it would free nothing.
pub const SHED_FLOOR_BYTES: usize = 64 * 1024;
/// Least time between two shedding passes (the closes take a moment to free their memory).
const SHED_INTERVAL_MS: u64 = 100;

pub struct MemoryBudget {
    limit: usize,
    total: AtomicUsize,
    used: [AtomicUsize; 6],
    gauges: [IntGauge; 6],
    sheds: IntCounterVec,
    /// Every open socket's meter, for shedding the largest.
    sockets: Mutex<HashMap<u64, Weak<SocketMeter>>>,
    started: Instant,
    last_shed_ms: AtomicU64,
}

impl MemoryBudget {
    pub fn new(limit: usize, metrics: &Metrics) -> Arc<Self> {
        metrics.memory_budget_limit_bytes.set(limit as i64);
        Arc::new(MemoryBudget {
            limit,
            total: AtomicUsize::new(0),
            used: Default::default(),
            gauges: Holder::ALL.map(|h| {
                metrics
                    .memory_budget_used_bytes
                    .with_label_values(&[h.as_str()])
            }),
            sheds: metrics.memory_sheds_total.clone(),
            sockets: Mutex::new(HashMap::new()),
            started: Instant::now(),
            last_shed_ms: AtomicU64::new(0),
        })
    }

    /// A budget with its own throw-away metrics, for tests of the parts that charge it.
    pub fn unmetered(limit: usize) -> Arc<Self> {
        Self::new(limit, &Metrics::new())
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    pub fn used(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }

    pub fn used_by(&self, holder: Holder) -> usize {
        self.used[holder.index()].load(Ordering::Relaxed)
    }

    /// Use of the budget in percent (may pass 100).
    pub fn percent(&self) -> f64 {
        self.used() as f64 * 100.0 / self.limit as f64
    }

    pub fn pressure(&self) -> Pressure {
        let used = self.used();
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

    /// Adds `bytes` to `holder`. Never refuses: whoever grows decides by its own share; going
    /// over the whole budget starts shedding the largest sockets.
    pub fn charge(&self, holder: Holder, bytes: usize) {
        if bytes == 0 {
            return;
        }
        self.used[holder.index()].fetch_add(bytes, Ordering::Relaxed);
        self.gauges[holder.index()].add(bytes as i64);
        let total = self.total.fetch_add(bytes, Ordering::Relaxed) + bytes;
        if total > self.limit {
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

    /// Counts one refusal or close in `zedi_memory_sheds_total`.
    pub fn count_shed(&self, reason: &'static str) {
        self.sheds.with_label_values(&[reason]).inc();
    }

    pub(crate) fn register(&self, id: u64, meter: Weak<SocketMeter>) {
        self.sockets.lock().insert(id, meter);
    }

    pub(crate) fn unregister(&self, id: u64) {
        self.sockets.lock().remove(&id);
    }

    /// Over the limit: closes the sockets holding the most (each at least
    /// [`SHED_FLOOR_BYTES`]) until what they hold brings the total under 95 %. Their memory
    /// goes when their tasks notice, within one poll; a pass runs at most every 100 ms so that
    /// the same excess is not shed twice.
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
        let mut excess = self.used().saturating_sub(target);
        let mut candidates: Vec<(usize, Arc<SocketMeter>)> = self
            .sockets
            .lock()
            .values()
            .filter_map(Weak::upgrade)
            .filter(|m| m.aborted().is_none())
            .map(|m| (m.held(), m))
            .filter(|(held, _)| *held >= SHED_FLOOR_BYTES)
            .collect();
        candidates.sort_unstable_by_key(|c| std::cmp::Reverse(c.0));
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
            self.count_shed("socket_closed");
            excess = excess.saturating_sub(held);
            closed += 1;
        }
        closed
    }
}

impl std::fmt::Debug for MemoryBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MemoryBudget({} of {})", self.used(), self.limit)
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

/// Memory charged to one holder while this lives; its size can follow what it stands for.
pub struct Charge {
    budget: Arc<MemoryBudget>,
    holder: Holder,
    bytes: usize,
}

impl Charge {
    pub fn new(budget: &Arc<MemoryBudget>, holder: Holder) -> Self {
        Charge {
            budget: Arc::clone(budget),
            holder,
            bytes: 0,
        }
    }

    /// Makes the charge `bytes`, charging or releasing the difference.
    pub fn set(&mut self, bytes: usize) {
        if bytes > self.bytes {
            self.budget.charge(self.holder, bytes - self.bytes);
        } else {
            self.budget.release(self.holder, self.bytes - bytes);
        }
        self.bytes = bytes;
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.budget.release(self.holder, self.bytes);
    }
}

impl std::fmt::Debug for Charge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Charge({} {})", self.holder.as_str(), self.bytes)
    }
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
    fn a_charge_follows_its_size_and_goes_with_its_owner() {
        let budget = MemoryBudget::unmetered(100 * MIB);
        let mut charge = Charge::new(&budget, Holder::Awareness);
        charge.set(3 * MIB);
        charge.set(MIB);
        assert_eq!(budget.used_by(Holder::Awareness), MIB);
        drop(charge);
        assert_eq!(budget.used(), 0);
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
