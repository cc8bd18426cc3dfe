//! The document's webhook events: `create` when this node loaded it (with the first
//! connection's request), and the debounced `change` with the document as Tiptap's transformer
//! renders it. In a cluster only the lease owner sends `change`, so one receiver gets one event
//! per burst whichever nodes the editors are on.

use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;

use super::DocumentActor;
use crate::document::DocumentState;
use crate::document::change_hook::ChangeStep;
use crate::webhooks::{HookContext, WebhookEvent, change_payload, connect_payload};
use zedi_protocol::document::export::{JsonStyle, document_json};

impl DocumentActor {
    /// The first connection (or API call) of this load: `create`, once.
    pub(super) fn announce_created(&mut self, by: Option<&HookContext>) {
        if std::mem::replace(&mut self.created_announced, true) {
            return;
        }
        if let Some(webhooks) = &self.config.webhooks
            && webhooks.wants(WebhookEvent::Create)
        {
            webhooks.send(WebhookEvent::Create, connect_payload(&self.name, by));
        }
    }

    /// The document changed (a local client's, the API's or another node's update).
    pub(super) fn document_changed(
        &mut self,
        by: Option<Arc<HookContext>>,
        ctx: &mut Context<Self>,
    ) {
        let Some(webhooks) = &self.config.webhooks else {
            return;
        };
        if !webhooks.wants(WebhookEvent::Change) || !self.compaction.is_owner() {
            return;
        }
        match self.change_hook.changed(Instant::now(), by) {
            ChangeStep::SendNow => self.send_change(ctx),
            ChangeStep::SendIn(wait) => {
                let timer = ctx.run_later(wait, |act, ctx| act.send_change(ctx));
                if let Some(earlier) = self.change_hook.armed(timer) {
                    ctx.cancel_future(earlier);
                }
            }
        }
    }

    /// Sends the pending `change`, if any.
    pub(super) fn send_change(&mut self, ctx: &mut Context<Self>) {
        let (pending, timer) = self.change_hook.take();
        if let Some(timer) = timer {
            ctx.cancel_future(timer);
        }
        let (Some(by), Some(webhooks)) = (pending, self.config.webhooks.clone()) else {
            return;
        };
        let Some(document) = self.render_for_webhook() else {
            tracing::error!(document = %self.name, "cannot render the document for its change webhook");
            return;
        };
        webhooks.send(
            WebhookEvent::Change,
            change_payload(&self.name, document, by.as_deref()),
        );
    }

    /// The document as `TiptapTransformer.fromYdoc` would give it, live or at rest.
    fn render_for_webhook(&mut self) -> Option<serde_json::Value> {
        if let Some(doc) = self.state.live_doc() {
            return Some(document_json(doc, JsonStyle::Tiptap));
        }
        let encoded = self.state.full_state().ok()?;
        let (copy, _) = DocumentState::restore([&encoded[..]], self.config.limits);
        copy.live_doc()
            .map(|doc| document_json(doc, JsonStyle::Tiptap))
    }
}
