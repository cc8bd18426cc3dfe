//! Where a document actor is in its life (loading, ready, unloading) and when it unloads:
//! `documents.unload_grace` after the last attachment left, once every accepted update is
//! durable and no compaction runs.

use actix::SpawnHandle;

use super::JoinError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Loading,
    Ready,
    /// Told the registry it is going; every new Join is bounced.
    Unloading,
}

/// What the actor does when its unload timer fires.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum UnloadStep {
    /// Someone attached meanwhile, or the document is not ready: it stays.
    Stay,
    /// Writes or a compaction are still running: look again shortly rather than leave
    /// without them.
    RetrySoon,
    /// Go: the schedule is now `Unloading`; tell the registry and stop.
    Unload,
}

pub(super) struct UnloadSchedule {
    phase: Phase,
    timer: Option<SpawnHandle>,
}

impl UnloadSchedule {
    pub(super) fn new() -> Self {
        UnloadSchedule {
            phase: Phase::Loading,
            timer: None,
        }
    }

    /// Whether a session may attach now, and if not what it is told.
    pub(super) fn admit(&self) -> Result<(), JoinError> {
        match self.phase {
            Phase::Ready => Ok(()),
            Phase::Unloading => Err(JoinError::Unloading),
            Phase::Loading => Err(JoinError::Unavailable),
        }
    }

    pub(super) fn loaded(&mut self) {
        self.phase = Phase::Ready;
    }

    /// The load failed: the actor unregisters and stops.
    pub(super) fn load_failed(&mut self) {
        self.phase = Phase::Unloading;
    }

    /// Whether the actor should arm the unload timer now (and then [`Self::armed`]).
    pub(super) fn should_arm(&self, attached: bool) -> bool {
        !attached && self.phase == Phase::Ready && self.timer.is_none()
    }

    pub(super) fn armed(&mut self, timer: SpawnHandle) {
        self.timer = Some(timer);
    }

    /// The timer to cancel because someone attached, if one is armed.
    pub(super) fn take_timer(&mut self) -> Option<SpawnHandle> {
        self.timer.take()
    }

    /// The timer fired. `busy`: updates are in flight or a compaction runs.
    pub(super) fn fired(&mut self, attached: bool, busy: bool) -> UnloadStep {
        self.timer = None;
        if attached || self.phase != Phase::Ready {
            return UnloadStep::Stay;
        }
        if busy {
            return UnloadStep::RetrySoon;
        }
        self.phase = Phase::Unloading;
        UnloadStep::Unload
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_are_admitted_only_while_ready() {
        let mut schedule = UnloadSchedule::new();
        assert!(matches!(schedule.admit(), Err(JoinError::Unavailable)));
        schedule.loaded();
        assert!(schedule.admit().is_ok());
        assert_eq!(schedule.fired(false, false), UnloadStep::Unload);
        assert!(matches!(schedule.admit(), Err(JoinError::Unloading)));

        let mut failed = UnloadSchedule::new();
        failed.load_failed();
        assert!(matches!(failed.admit(), Err(JoinError::Unloading)));
        assert!(!failed.should_arm(false), "a failed load schedules nothing");
    }

    #[test]
    fn unloads_once_nobody_is_attached_and_nothing_is_in_flight() {
        let mut schedule = UnloadSchedule::new();
        assert!(!schedule.should_arm(false), "still loading");
        schedule.loaded();
        assert!(!schedule.should_arm(true), "attached");
        assert!(schedule.should_arm(false));
        schedule.armed(SpawnHandle::default());
        assert!(!schedule.should_arm(false), "armed once");
        assert!(schedule.take_timer().is_some(), "a join cancels it");
        assert!(schedule.take_timer().is_none());

        schedule.armed(SpawnHandle::default());
        assert_eq!(schedule.fired(true, false), UnloadStep::Stay);
        assert!(schedule.should_arm(false), "the fired timer is gone");
        assert_eq!(schedule.fired(false, true), UnloadStep::RetrySoon);
        assert!(schedule.admit().is_ok(), "still ready while it waits");
        assert_eq!(schedule.fired(false, false), UnloadStep::Unload);
        assert!(!schedule.should_arm(false));
    }
}
