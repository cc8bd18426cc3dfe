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
//! Per-socket accounting and the close itself are in [`meter`].

pub mod meter;
pub mod resident;

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
/// Frames held before Auth, and frames partly received, each over all sockets may hold at most
/// this part of the limit (1/4): per-socket and per-address shares add up over many sockets
/// and addresses, and neither is what an honest editor holds for long.
const CLIENT_QUEUE_SHARE_DIVISOR: usize = 4;
/// Least time between two shedding passes (the closes take a moment to free their memory).
const SHED_INTERVAL_MS: u64 = 100;
/// How long memory freed by shedding may still show as resident: jemalloc hands freed pages
/// back within its 1 s decay. Within this, the resident floor is lowered by what was shed, so
/// that one excess does not close socket after socket while the pages go back.
const RESIDENT_LAG_MS: u64 = 2000;

pub struct MemoryBudget {
    limit: usize,
    /// Whether the resident size counts towards the fill (`limits.memory_budget_measures_rss`).
    measures_rss: bool,
    total: AtomicUsize,
    /// The last sampled resident size in bytes (0 until the first sample).
    resident: AtomicUsize,
    resident_gauge: IntGauge,
    fill_gauge: IntGauge,
    /// What the last shedding passes closed, and when, for [`RESIDENT_LAG_MS`].
    recently_shed: AtomicUsize,
    recently_shed_ms: AtomicU64,
    used: [AtomicUsize; 6],
    gauges: [IntGauge; 6],
    sheds: IntCounterVec,
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
            sheds: metrics.memory_sheds_total.clone(),
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
            self.count_shed("socket_closed");
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
    fn client_queues_each_get_a_quarter() {
        let budget = MemoryBudget::unmetered(100 * MIB);
        budget.charge(Holder::Preauth, 24 * MIB);
        budget.charge(Holder::Inbound, 26 * MIB);
        assert!(!budget.share_full(Holder::Preauth));
        assert!(budget.share_full(Holder::Inbound));
        budget.charge(Holder::Preauth, MIB);
        assert!(budget.share_full(Holder::Preauth));
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
