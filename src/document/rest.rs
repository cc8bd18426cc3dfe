//! When an idle document goes to rest: `documents.rest_after_ms` after the last update it
//! applied, its `DocumentState` drops the live `yrs::Doc` and keeps the encoded state (see
//! `zedi_protocol::document`). One timer at a time: armed when the document becomes live, and
//! on firing either rests the document or waits for the rest of the idle time, so a busy
//! document costs a timestamp per update, not a timer.

use std::time::{Duration, Instant};

use actix::SpawnHandle;

/// What the actor does when its rest timer fires.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum RestStep {
    /// Idle long enough: put the document to rest.
    Rest,
    /// Something happened meanwhile: look again after this long.
    CheckIn(Duration),
    /// Resting is off, or the document is at rest already.
    Nothing,
}

pub(super) struct RestSchedule {
    after: Option<Duration>,
    last_update: Instant,
    timer: Option<SpawnHandle>,
}

impl RestSchedule {
    pub(super) fn new(after: Option<Duration>, now: Instant) -> Self {
        RestSchedule {
            after,
            last_update: now,
            timer: None,
        }
    }

    /// The live document applied an update (or came back from rest). Returns how long to arm
    /// the timer for, when none is armed (then [`Self::armed`]).
    pub(super) fn updated(&mut self, now: Instant) -> Option<Duration> {
        self.last_update = now;
        match (self.after, &self.timer) {
            (Some(after), None) => Some(after),
            _ => None,
        }
    }

    pub(super) fn armed(&mut self, timer: SpawnHandle) {
        self.timer = Some(timer);
    }

    /// The timer fired.
    pub(super) fn fired(&mut self, now: Instant, at_rest: bool) -> RestStep {
        self.timer = None;
        let Some(after) = self.after else {
            return RestStep::Nothing;
        };
        if at_rest {
            return RestStep::Nothing;
        }
        let idle = now.saturating_duration_since(self.last_update);
        if idle >= after {
            RestStep::Rest
        } else {
            RestStep::CheckIn(after - idle)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AFTER: Duration = Duration::from_secs(30);

    #[test]
    fn rests_once_idle_for_the_whole_period() {
        let t0 = Instant::now();
        let mut schedule = RestSchedule::new(Some(AFTER), t0);
        assert_eq!(schedule.updated(t0), Some(AFTER), "first arm");
        assert_eq!(schedule.fired(t0 + AFTER, false), RestStep::Rest);
    }

    #[test]
    fn an_update_meanwhile_pushes_the_rest_back_without_a_second_timer() {
        let t0 = Instant::now();
        let mut schedule = RestSchedule::new(Some(AFTER), t0);
        schedule.updated(t0);
        schedule.armed(SpawnHandle::default());
        let t10 = t0 + Duration::from_secs(10);
        assert_eq!(schedule.updated(t10), None, "already armed");
        assert_eq!(
            schedule.fired(t0 + AFTER, false),
            RestStep::CheckIn(Duration::from_secs(10))
        );
        assert_eq!(schedule.fired(t10 + AFTER, false), RestStep::Rest);
    }

    #[test]
    fn nothing_when_off_or_at_rest() {
        let t0 = Instant::now();
        let mut off = RestSchedule::new(None, t0);
        assert_eq!(off.updated(t0), None);
        assert_eq!(off.fired(t0 + AFTER * 10, false), RestStep::Nothing);
        let mut on = RestSchedule::new(Some(AFTER), t0);
        assert_eq!(on.fired(t0 + AFTER, true), RestStep::Nothing);
    }
}
