//! What one socket holds, charged to the node's [`MemoryBudget`], and the switch that closes it
//! at once.
//!
//! Three parties grow a socket's memory: document actors queue frames for it (outbound), its
//! reader takes bytes that are not a whole frame yet (inbound), and its session holds frames
//! until a document's Auth is decided (pre-auth). The meter is shared by all of them, so the
//! budget's shedder and the document actors can see the socket's size, and can close it without
//! waiting for its session actor: a socket that does not read is not polled, so a message to
//! its actor would wait as long as the client does. [`SocketMeter::abort`] wakes the socket's
//! write task instead, which drops the session and the connection in its next poll.

use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::task::Waker;

use futures_util::task::AtomicWaker;

use super::{Holder, MemoryBudget};

/// Why a socket was closed from outside its session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AbortReason {
    /// The budget was full and this socket held the most.
    Shed,
    /// Its outbound queue passed `limits.max_outbound_bytes`.
    SlowReader,
    /// It accepted no byte for `timeouts.write_stall_ms` while output was pending.
    WriteStall,
}

impl AbortReason {
    fn from_u8(value: u8) -> Option<Self> {
        match value {
            1 => Some(AbortReason::Shed),
            2 => Some(AbortReason::SlowReader),
            3 => Some(AbortReason::WriteStall),
            _ => None,
        }
    }

    fn as_u8(self) -> u8 {
        match self {
            AbortReason::Shed => 1,
            AbortReason::SlowReader => 2,
            AbortReason::WriteStall => 3,
        }
    }

    /// Close reason sent (best effort) to the client, with code 4205: providers reconnect.
    pub fn close_reason(self) -> &'static str {
        match self {
            AbortReason::Shed => "server memory full",
            AbortReason::SlowReader => "too slow: outbound queue full",
            AbortReason::WriteStall => "too slow: socket not reading",
        }
    }

    /// What `zedi_memory_sheds_total` counts it as.
    pub fn shed_reason(self) -> super::ShedReason {
        match self {
            AbortReason::Shed => super::ShedReason::SocketClosed,
            AbortReason::SlowReader => super::ShedReason::SlowReader,
            AbortReason::WriteStall => super::ShedReason::WriteStall,
        }
    }
}

pub struct SocketMeter {
    id: u64,
    budget: Arc<MemoryBudget>,
    outbound: AtomicUsize,
    inbound: AtomicUsize,
    preauth: AtomicUsize,
    abort: AtomicU8,
    waker: AtomicWaker,
}

impl SocketMeter {
    /// A meter for session `id`, known to the budget's shedder while it lives.
    pub fn new(id: u64, budget: &Arc<MemoryBudget>) -> Arc<Self> {
        let meter = Arc::new(SocketMeter {
            id,
            budget: Arc::clone(budget),
            outbound: AtomicUsize::new(0),
            inbound: AtomicUsize::new(0),
            preauth: AtomicUsize::new(0),
            abort: AtomicU8::new(0),
            waker: AtomicWaker::new(),
        });
        budget.register(id, Arc::downgrade(&meter));
        meter
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    fn counter(&self, holder: Holder) -> Option<&AtomicUsize> {
        match holder {
            Holder::Outbound => Some(&self.outbound),
            Holder::Inbound => Some(&self.inbound),
            Holder::Preauth => Some(&self.preauth),
            _ => None,
        }
    }

    /// Charges `bytes` to this socket and the budget (which may shed, possibly this socket).
    pub fn add(&self, holder: Holder, bytes: usize) {
        if let Some(counter) = self.counter(holder) {
            counter.fetch_add(bytes, Ordering::Relaxed);
            self.budget.charge(holder, bytes);
        }
    }

    /// Releases at most what this socket holds of `holder`.
    pub fn sub(&self, holder: Holder, bytes: usize) {
        if let Some(counter) = self.counter(holder) {
            let taken = super::saturating_sub(counter, bytes);
            self.budget.release(holder, taken);
        }
    }

    pub fn holding(&self, holder: Holder) -> usize {
        self.counter(holder)
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// Everything this socket holds.
    pub fn held(&self) -> usize {
        self.holding(Holder::Outbound)
            + self.holding(Holder::Inbound)
            + self.holding(Holder::Preauth)
    }

    /// Queues `len` outbound bytes unless the socket already holds `limit`; the charge lasts
    /// as long as the returned guard (carried by the frame until the socket's context has it).
    pub fn try_queue_outbound(
        self: &Arc<Self>,
        len: usize,
        limit: usize,
    ) -> Option<OutboundCharge> {
        if self.aborted().is_some() {
            return None;
        }
        if self.outbound.fetch_add(len, Ordering::Relaxed) + len > limit {
            self.outbound.fetch_sub(len, Ordering::Relaxed);
            return None;
        }
        self.budget.charge(Holder::Outbound, len);
        Some(OutboundCharge {
            meter: Arc::clone(self),
            bytes: len,
        })
    }

    /// Closes the socket as soon as its write task runs (the first reason wins).
    pub fn abort(&self, reason: AbortReason) {
        if self
            .abort
            .compare_exchange(0, reason.as_u8(), Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            self.waker.wake();
        }
    }

    pub fn aborted(&self) -> Option<AbortReason> {
        AbortReason::from_u8(self.abort.load(Ordering::Acquire))
    }

    /// The write task's waker, woken by [`Self::abort`].
    pub fn register_waker(&self, waker: &Waker) {
        self.waker.register(waker);
    }

    pub fn budget(&self) -> &Arc<MemoryBudget> {
        &self.budget
    }

    /// A handle that does not keep the meter alive.
    pub fn downgrade(self: &Arc<Self>) -> Weak<Self> {
        Arc::downgrade(self)
    }
}

impl Drop for SocketMeter {
    fn drop(&mut self) {
        for holder in [Holder::Outbound, Holder::Inbound, Holder::Preauth] {
            let left = self.holding(holder);
            self.budget.release(holder, left);
        }
        self.budget.unregister(self.id);
    }
}

/// Outbound bytes of one queued frame, charged until dropped.
pub struct OutboundCharge {
    meter: Arc<SocketMeter>,
    bytes: usize,
}

impl Drop for OutboundCharge {
    fn drop(&mut self) {
        self.meter.sub(Holder::Outbound, self.bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queued_frames_are_charged_until_their_guard_goes() {
        let budget = MemoryBudget::unmetered(64 << 20);
        let meter = SocketMeter::new(7, &budget);
        let a = meter.try_queue_outbound(1000, 1500).unwrap();
        assert!(
            meter.try_queue_outbound(1000, 1500).is_none(),
            "over the per-socket share"
        );
        assert_eq!(budget.used_by(Holder::Outbound), 1000);
        drop(a);
        assert_eq!(budget.used(), 0);
        let _b = meter.try_queue_outbound(1000, 1500).unwrap();
    }

    #[test]
    fn an_aborted_socket_takes_no_more_and_reports_why() {
        let budget = MemoryBudget::unmetered(64 << 20);
        let meter = SocketMeter::new(8, &budget);
        meter.abort(AbortReason::WriteStall);
        meter.abort(AbortReason::Shed);
        assert_eq!(
            meter.aborted(),
            Some(AbortReason::WriteStall),
            "the first reason wins"
        );
        assert!(meter.try_queue_outbound(10, 100).is_none());
    }
}
