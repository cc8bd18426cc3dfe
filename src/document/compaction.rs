//! When a document folds its update log into a snapshot: after `compact_after_updates` log
//! entries, at most once per `compact_min_interval`, never while updates are in flight, and
//! only on the node that holds the document's lease (a single node always does).

use std::time::{Duration, Instant};

use actix::SpawnHandle;

/// What the actor does about compaction now.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum CompactionStep {
    Nothing,
    /// Too soon after the last one: look again after this long (arm a timer, then
    /// [`CompactionSchedule::retry_armed`]).
    RetryIn(Duration),
    /// Start one with this fencing token; the schedule counts it as running until
    /// [`CompactionSchedule::finished`].
    Compact {
        fence: u64,
    },
}

pub(super) struct CompactionSchedule {
    after_updates: u64,
    min_interval: Duration,
    /// Log entries written since the last compaction (an estimate that starts from the load).
    log_len: u64,
    running: bool,
    /// When the last compaction finished.
    last_finished: Option<Instant>,
    /// The timer that looks again once the interval since the last one has passed.
    retry: Option<SpawnHandle>,
    /// Whether this node may compact: always on a single node, the lease holder in a cluster.
    owner: bool,
    /// Fencing token for compaction: the store's (single node) or the lease's (cluster).
    fence: u64,
}

impl CompactionSchedule {
    pub(super) fn new(after_updates: u64, min_interval: Duration) -> Self {
        CompactionSchedule {
            after_updates,
            min_interval,
            log_len: 0,
            running: false,
            last_finished: None,
            retry: None,
            owner: false,
            fence: 0,
        }
    }

    /// Whether this node holds the document (single node: always, once loaded).
    pub(super) fn is_owner(&self) -> bool {
        self.owner
    }

    /// The document was loaded with a log of this many entries.
    pub(super) fn loaded(&mut self, log_len: u64) {
        self.log_len = log_len;
    }

    /// One more entry went to the log.
    pub(super) fn appended(&mut self) {
        self.log_len += 1;
    }

    /// This node owns the document (single node, or the lease was won) with `fence`.
    pub(super) fn owned_with(&mut self, fence: u64) {
        self.owner = true;
        self.fence = fence;
    }

    /// The lease went to another node: the last fence is kept, but not used.
    pub(super) fn disowned(&mut self) {
        self.owner = false;
    }

    pub(super) fn is_running(&self) -> bool {
        self.running
    }

    /// Decides at `now`, with `in_flight` updates not yet durable.
    pub(super) fn next_step(&mut self, now: Instant, in_flight: usize) -> CompactionStep {
        // Only the lease owner folds the shared log (a single node always owns its documents).
        if !self.owner || self.running || self.log_len < self.after_updates || in_flight > 0 {
            return CompactionStep::Nothing;
        }
        if let Some(last) = self.last_finished {
            let since = now.saturating_duration_since(last);
            if since < self.min_interval {
                if self.retry.is_some() {
                    return CompactionStep::Nothing;
                }
                return CompactionStep::RetryIn(self.min_interval - since);
            }
        }
        self.running = true;
        CompactionStep::Compact { fence: self.fence }
    }

    pub(super) fn retry_armed(&mut self, timer: SpawnHandle) {
        self.retry = Some(timer);
    }

    pub(super) fn retry_fired(&mut self) {
        self.retry = None;
    }

    /// The compaction ended at `now`; `folded` entries left the log (`None`: it failed and the
    /// log is kept).
    pub(super) fn finished(&mut self, now: Instant, folded: Option<u64>) {
        self.running = false;
        self.last_finished = Some(now);
        if let Some(folded) = folded {
            self.log_len = self.log_len.saturating_sub(folded);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INTERVAL: Duration = Duration::from_secs(10);

    fn schedule_with(log_len: u64) -> CompactionSchedule {
        let mut schedule = CompactionSchedule::new(3, INTERVAL);
        schedule.loaded(log_len);
        schedule.owned_with(7);
        schedule
    }

    #[test]
    fn compacts_after_enough_updates_and_only_as_owner_with_nothing_in_flight() {
        let now = Instant::now();
        let mut schedule = CompactionSchedule::new(3, INTERVAL);
        schedule.loaded(2);
        assert_eq!(
            schedule.next_step(now, 0),
            CompactionStep::Nothing,
            "not owner"
        );
        schedule.owned_with(7);
        assert_eq!(
            schedule.next_step(now, 0),
            CompactionStep::Nothing,
            "too few"
        );
        schedule.appended();
        assert_eq!(
            schedule.next_step(now, 1),
            CompactionStep::Nothing,
            "in flight"
        );
        assert_eq!(
            schedule.next_step(now, 0),
            CompactionStep::Compact { fence: 7 }
        );
        assert!(schedule.is_running());
        assert_eq!(
            schedule.next_step(now, 0),
            CompactionStep::Nothing,
            "running"
        );
        schedule.disowned();
        schedule.finished(now, None);
        assert_eq!(
            schedule.next_step(now + INTERVAL, 0),
            CompactionStep::Nothing
        );
    }

    #[test]
    fn at_most_once_per_interval() {
        let start = Instant::now();
        let mut schedule = schedule_with(5);
        assert_eq!(
            schedule.next_step(start, 0),
            CompactionStep::Compact { fence: 7 }
        );
        // Folded fewer than were written meanwhile: still over the threshold.
        schedule.finished(start, Some(1));
        let later = start + Duration::from_secs(4);
        assert_eq!(
            schedule.next_step(later, 0),
            CompactionStep::RetryIn(Duration::from_secs(6))
        );
        assert!(!schedule.is_running());
        schedule.retry_armed(SpawnHandle::default());
        assert_eq!(
            schedule.next_step(later, 0),
            CompactionStep::Nothing,
            "armed"
        );
        schedule.retry_fired();
        assert_eq!(
            schedule.next_step(start + INTERVAL, 0),
            CompactionStep::Compact { fence: 7 }
        );
        schedule.finished(start + INTERVAL, Some(4));
        assert_eq!(
            schedule.next_step(start + 3 * INTERVAL, 0),
            CompactionStep::Nothing,
            "the log was folded"
        );
    }
}
