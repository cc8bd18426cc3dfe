//! The session's webhook events: `connect` once a document is open on this socket, and
//! `disconnect` when it closes (detach, token refusal, socket gone). Only kept when webhooks are
//! configured: an idle socket then also holds its request's headers and parameters.

use std::collections::HashMap;
use std::sync::Arc;

use super::SessionActor;
use crate::protocol::document_name;
use crate::webhooks::{
    HookContext, RequestInfo, WebhookEvent, Webhooks, connect_payload, disconnect_payload,
};

pub(super) struct SessionHooks {
    webhooks: Webhooks,
    request: Arc<RequestInfo>,
    /// Per open (or joining) document: what its events carry.
    by_address: HashMap<Arc<str>, Arc<HookContext>>,
}

impl SessionHooks {
    pub(super) fn new(webhooks: Webhooks, request: Arc<RequestInfo>) -> Box<Self> {
        Box::new(SessionHooks {
            webhooks,
            request,
            by_address: HashMap::new(),
        })
    }
}

impl SessionActor {
    /// Access to `address` was granted with these claims: what its events (and the document's
    /// `change`) will carry.
    pub(super) fn hook_granted(
        &mut self,
        address: &Arc<str>,
        claims: Option<Arc<serde_json::Value>>,
    ) -> Option<Arc<HookContext>> {
        let hooks = self.hooks.as_mut()?;
        let context = claims.map_or_else(
            || serde_json::Value::Object(Default::default()),
            |c| (*c).clone(),
        );
        let hook = Arc::new(HookContext {
            request: Arc::clone(&hooks.request),
            context,
        });
        hooks
            .by_address
            .insert(Arc::clone(address), Arc::clone(&hook));
        Some(hook)
    }

    /// What this socket's document `address` carries into the document's events.
    pub(super) fn hook_of(&self, address: &str) -> Option<Arc<HookContext>> {
        self.hooks.as_ref()?.by_address.get(address).cloned()
    }

    /// The document is open on this socket.
    pub(super) fn hook_connected(&self, address: &str) {
        let Some(hooks) = &self.hooks else { return };
        if hooks.webhooks.wants(WebhookEvent::Connect) {
            let hook = hooks.by_address.get(address).map(Arc::as_ref);
            hooks.webhooks.send(
                WebhookEvent::Connect,
                connect_payload(document_name(address), hook),
            );
        }
    }

    /// The document is no longer open on this socket (sent only if it was).
    pub(super) fn hook_left(&mut self, address: &str, was_open: bool) {
        let Some(hooks) = &mut self.hooks else { return };
        let hook = hooks.by_address.remove(address);
        if was_open && hooks.webhooks.wants(WebhookEvent::Disconnect) {
            hooks.webhooks.send(
                WebhookEvent::Disconnect,
                disconnect_payload(document_name(address), hook.as_deref()),
            );
        }
    }
}
