//! Putting an idle document to rest and bringing it back (see `document::rest`).

use std::time::{Duration, Instant};

use actix::prelude::*;

use super::DocumentActor;
use crate::document::DocError;
use crate::document::DocumentState;
use crate::document::rest::RestStep;

impl DocumentActor {
    /// Runs `op` on the document, which may bring a document at rest back to life (any update
    /// that changes something does); the actor then charges it as live again and restarts its
    /// rest schedule. Every update the document applies goes through here.
    pub(super) fn on_live_state<R>(
        &mut self,
        ctx: &mut Context<Self>,
        op: impl FnOnce(&mut DocumentState) -> R,
    ) -> R {
        let was_at_rest = self.state.is_at_rest();
        let result = op(&mut self.state);
        if self.state.is_at_rest() {
            return result;
        }
        if was_at_rest {
            self.metrics.documents_at_rest.dec();
            self.metrics.document_revivals_total.inc();
            self.memory.revived();
            tracing::debug!(document = %self.name, "document revived");
        }
        self.rest_schedule_updated(ctx);
        result
    }

    /// The live document applied an update (or was loaded): it rests after
    /// `documents.rest_after_ms` without another one.
    pub(super) fn rest_schedule_updated(&mut self, ctx: &mut Context<Self>) {
        if let Some(after) = self.rest.updated(Instant::now()) {
            self.arm_rest(after, ctx);
        }
    }

    fn arm_rest(&mut self, after: Duration, ctx: &mut Context<Self>) {
        let timer = ctx.run_later(after, |act, ctx| act.try_rest(ctx));
        self.rest.armed(timer);
    }

    fn try_rest(&mut self, ctx: &mut Context<Self>) {
        match self.rest.fired(Instant::now(), self.state.is_at_rest()) {
            RestStep::Nothing => {}
            RestStep::CheckIn(wait) => self.arm_rest(wait, ctx),
            RestStep::Rest => match self.state.rest() {
                Ok(Some(kept)) => {
                    self.memory.rested(kept);
                    self.metrics.documents_at_rest.inc();
                    self.metrics.document_rests_total.inc();
                    tracing::debug!(document = %self.name, bytes = kept, "document at rest");
                }
                // Updates wait for missing predecessors: stays live, looks again later.
                Ok(None) => self.rest_schedule_updated(ctx),
                Err(DocError::Poisoned) => self.internal_fault(None, ctx),
                Err(error) => {
                    tracing::warn!(document = %self.name, %error, "document cannot go to rest");
                }
            },
        }
    }
}
