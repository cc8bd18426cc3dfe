//! Automatic versions (`history.auto_version_ms`): after that much editing activity on the node
//! that holds the document, its current state is kept as a version named `auto`. Activity is
//! the time between local edits that follow each other within [`ACTIVE_GAP`]: a document typed
//! into for an hour gets versions, one left open in a tab does not.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;

use super::DocumentActor;
use crate::store::{Version, VersionInfo};

/// Edits further apart than this are two sessions of activity, not one.
const ACTIVE_GAP: Duration = Duration::from_secs(60);

/// Editing activity since the last automatic version.
#[derive(Default)]
pub(super) struct Activity {
    active: Duration,
    last_edit: Option<Instant>,
}

impl Activity {
    /// An edit at `now`: `true` when `every` of activity has gathered (and it starts over).
    fn edited(&mut self, now: Instant, every: Duration) -> bool {
        if let Some(last) = self.last_edit {
            let gap = now.duration_since(last);
            if gap <= ACTIVE_GAP {
                self.active += gap;
            }
        }
        self.last_edit = Some(now);
        if self.active >= every {
            self.active = Duration::ZERO;
            true
        } else {
            false
        }
    }
}

impl DocumentActor {
    /// A local edit (a client's or the API's) was applied.
    pub(super) fn note_activity(&mut self, ctx: &mut Context<Self>) {
        let Some(every) = self.config.auto_version else {
            return;
        };
        if !self.activity.edited(Instant::now(), every) || !self.compaction.is_owner() {
            return;
        }
        let Ok(state) = self.state.full_state() else {
            return;
        };
        let version = Version {
            info: VersionInfo {
                id: uuid::Uuid::new_v4().simple().to_string(),
                name: "auto".into(),
                meta: serde_json::json!({}),
                at_ms: super::now_ms() as i64,
                author: "auto".into(),
                auto: true,
            },
            state: state.to_vec(),
        };
        let store = Arc::clone(self.persistence.store());
        let name = Arc::clone(&self.name);
        ctx.spawn(
            async move { store.put_version(&name, &version).await }
                .into_actor(self)
                .map(|result, act, _| match result {
                    Ok(()) => tracing::debug!(document = %act.name, "automatic version"),
                    Err(error) => {
                        tracing::warn!(document = %act.name, %error, "automatic version not stored")
                    }
                }),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_editing_time_counts() {
        let mut activity = Activity::default();
        let every = Duration::from_secs(30);
        let start = Instant::now();
        assert!(!activity.edited(start, every));
        // Edits 10 s apart: 30 s of activity after three more.
        assert!(!activity.edited(start + Duration::from_secs(10), every));
        assert!(!activity.edited(start + Duration::from_secs(20), every));
        assert!(activity.edited(start + Duration::from_secs(30), every));
        // An hour's pause is not activity.
        assert!(!activity.edited(start + Duration::from_secs(3_630), every));
        assert!(!activity.edited(start + Duration::from_secs(3_640), every));
    }
}
