//! When a document's `change` webhook goes out, as `@hocuspocus/extension-webhook` debounces it:
//! `debounce` after the last change, but at the latest `max_wait` after the first change not yet
//! sent. The schedule only decides; the actor owns the timer and sends.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::SpawnHandle;

use crate::webhooks::HookContext;

/// What the actor does after a change.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum ChangeStep {
    /// Send now (`max_wait` reached, or no debounce).
    SendNow,
    /// (Re)arm the timer: send after this long unless another change comes first.
    SendIn(Duration),
}

pub(super) struct ChangeDebounce {
    debounce: Duration,
    max_wait: Duration,
    /// The first change not sent yet.
    first: Option<Instant>,
    /// What the last change's connection carries (`None` for the API or another node).
    last: Option<Arc<HookContext>>,
    timer: Option<SpawnHandle>,
}

impl ChangeDebounce {
    pub(super) fn new((debounce, max_wait): (Duration, Duration)) -> Self {
        ChangeDebounce {
            debounce,
            max_wait,
            first: None,
            last: None,
            timer: None,
        }
    }

    pub(super) fn changed(&mut self, now: Instant, by: Option<Arc<HookContext>>) -> ChangeStep {
        self.last = by;
        let first = *self.first.get_or_insert(now);
        if self.debounce.is_zero() || now.duration_since(first) >= self.max_wait {
            ChangeStep::SendNow
        } else {
            ChangeStep::SendIn(self.debounce)
        }
    }

    /// A timer was armed; returns the one it replaces (to cancel).
    pub(super) fn armed(&mut self, timer: SpawnHandle) -> Option<SpawnHandle> {
        self.timer.replace(timer)
    }

    /// Sending now: `Some(last change's context)` when a change is pending (the schedule starts
    /// over), with the timer to cancel.
    pub(super) fn take(&mut self) -> (Option<Option<Arc<HookContext>>>, Option<SpawnHandle>) {
        let timer = self.timer.take();
        match self.first.take() {
            Some(_) => (Some(self.last.take()), timer),
            None => (None, timer),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debounced_until_quiet_but_never_past_max_wait() {
        let mut schedule = ChangeDebounce::new((Duration::from_secs(2), Duration::from_secs(10)));
        let start = Instant::now();
        assert!(schedule.take().0.is_none(), "nothing pending");
        for second in 0..10 {
            assert_eq!(
                schedule.changed(start + Duration::from_secs(second), None),
                ChangeStep::SendIn(Duration::from_secs(2)),
                "a burst keeps pushing it back"
            );
        }
        assert_eq!(
            schedule.changed(start + Duration::from_secs(10), None),
            ChangeStep::SendNow,
            "10 s after the first change it goes out whatever follows"
        );
        assert!(schedule.take().0.is_some());
        assert_eq!(
            schedule.changed(start + Duration::from_secs(11), None),
            ChangeStep::SendIn(Duration::from_secs(2)),
            "the next change starts a new window"
        );
        let mut immediate = ChangeDebounce::new((Duration::ZERO, Duration::ZERO));
        assert_eq!(immediate.changed(start, None), ChangeStep::SendNow);
    }
}
