//! The per-document state machine of a socket: frames queued until the Auth message has been
//! decided, the join with the document actor, token refresh on expiry, and detaching.
//!
//! ```text
//!   (none) ──frame──▶ AwaitingAuth ──Auth──▶ AwaitingAuth{deciding} ──allowed──▶ Joining ──▶ Open
//!                          ▲                        │ denied: PermissionDenied, queue dropped
//!                          └────────────────────────┘
//!   Open ──token expires──▶ Auth(Token "") sent ──fresh valid token──▶ Open (new expiry)
//!                                               └──no token in time──▶ PermissionDenied, detached
//! ```

use std::sync::Arc;
use std::time::SystemTime;

use actix::prelude::*;
use actix_web_actors::ws;

use super::{Grant, Queued, SessionActor, Slot};
use crate::auth::{Access, Decision};
use crate::budget::Holder;
use crate::document::{
    ConnKey, DocumentActor, FromSession, Join, JoinError, Leave, SessionHandle, SetAccess,
};
use crate::protocol::CloseCode;
use crate::protocol::ErrorKind;
use crate::protocol::{AuthMessage, Message, SCOPE_READ_ONLY, SCOPE_READ_WRITE, document_name};
use crate::registry::Open;

/// How often a join that raced with an unloading document is retried before giving up.
const MAX_JOIN_ATTEMPTS: u32 = 5;

type Ctx = ws::WebsocketContext<SessionActor>;

fn scope(read_only: bool) -> &'static str {
    if read_only {
        SCOPE_READ_ONLY
    } else {
        SCOPE_READ_WRITE
    }
}

impl SessionActor {
    pub(super) fn remove_slot(&mut self, address: &str) {
        match self.docs.remove(address) {
            Some(Slot::Open { doc, key, .. }) => {
                doc.do_send(Leave {
                    key,
                    acknowledge: false,
                });
                self.hook_left(address, true);
            }
            Some(Slot::AwaitingAuth { queue, .. } | Slot::Joining { queue, .. }) => {
                self.release(&queue);
                self.hook_left(address, false);
            }
            None => {}
        }
    }

    /// Documents not yet open on this socket have reached the per-connection limit.
    fn too_many_pending(&self) -> bool {
        let pending = self
            .docs
            .values()
            .filter(|s| !matches!(s, Slot::Open { .. }))
            .count();
        pending >= self.shared.limits.max_documents_per_connection
    }

    fn release(&mut self, queue: &[(Queued, usize)]) {
        let bytes = queue.iter().map(|(_, n)| n).sum::<usize>();
        self.queued_messages -= queue.len();
        self.queued_bytes -= bytes;
        self.meter.sub(Holder::Preauth, bytes);
        self.connection.release_preauth(bytes);
    }

    /// Forwards to the document, or queues until it is open (bounded per socket).
    pub(super) fn route(&mut self, address: Arc<str>, item: Queued, size: usize, ctx: &mut Ctx) {
        let too_many_pending = self.too_many_pending();
        let slot = match self.docs.get_mut(&address) {
            Some(Slot::Open { doc, key, .. }) => {
                if let Queued::Input(input) = item {
                    doc.do_send(FromSession {
                        key: key.clone(),
                        input,
                    });
                }
                return;
            }
            Some(slot) => slot,
            None => {
                if too_many_pending {
                    return self.protocol_error(
                        ctx,
                        ErrorKind::PreauthLimit,
                        CloseCode::ResetConnection,
                        "too many documents waiting for authentication",
                    );
                }
                self.docs.insert_new(
                    Arc::clone(&address),
                    Slot::AwaitingAuth {
                        queue: Vec::new(),
                        deciding: false,
                    },
                )
            }
        };
        if let Slot::AwaitingAuth { queue, .. } | Slot::Joining { queue, .. } = slot {
            queue.push((item, size));
        }
        self.queued_messages += 1;
        self.queued_bytes += size;
        self.meter.add(Holder::Preauth, size);
        if !self.connection.charge_preauth(size) {
            // Counted above so that closing releases it like the rest of the queue.
            return self.protocol_error(
                ctx,
                ErrorKind::PreauthLimit,
                CloseCode::ResetConnection,
                "too much data before authentication from this address",
            );
        }
        if self.queued_messages > self.shared.limits.max_preauth_messages
            || self.queued_bytes > self.shared.limits.max_preauth_bytes
        {
            self.protocol_error(
                ctx,
                ErrorKind::PreauthLimit,
                CloseCode::ResetConnection,
                "too much data before authentication",
            );
        }
    }

    /// An Auth message: checks the token (possibly fetching keys), then continues in
    /// [`Self::decided`] or [`Self::refreshed`]. Frames of the document keep queueing meanwhile.
    pub(super) fn authenticate(
        &mut self,
        address: Arc<str>,
        token: &str,
        provider_version: Option<&str>,
        ctx: &mut Ctx,
    ) {
        if let Some(major) = provider_version.and_then(|v| v.split('.').next()?.parse::<u32>().ok())
        {
            self.speaks_v4_ping |= major >= 4;
        }
        let refresh = match self.docs.get_mut(&address) {
            Some(Slot::Open { .. }) => true,
            // Still deciding or joining: the first answer is on its way.
            Some(Slot::AwaitingAuth { deciding: true, .. } | Slot::Joining { .. }) => return,
            Some(Slot::AwaitingAuth { deciding, .. }) => {
                *deciding = true;
                false
            }
            None => {
                if self.too_many_pending() {
                    return self.protocol_error(
                        ctx,
                        ErrorKind::PreauthLimit,
                        CloseCode::ResetConnection,
                        "too many documents waiting for authentication",
                    );
                }
                self.docs.insert(
                    Arc::clone(&address),
                    Slot::AwaitingAuth {
                        queue: Vec::new(),
                        deciding: true,
                    },
                );
                false
            }
        };
        let authorizer = self.shared.authorizer.clone();
        let token = token.to_string();
        let name = document_name(&address).to_string();
        ctx.spawn(
            async move { authorizer.decide(&token, &name).await }
                .into_actor(self)
                .map(move |decision, act, ctx| {
                    act.shared
                        .metrics
                        .auth_results_total
                        .with_label_values(&[decision.result.label()])
                        .inc();
                    if !decision.result.is_granted() {
                        tracing::info!(
                            session = act.id,
                            result = decision.result.label(),
                            refresh,
                            "authentication refused"
                        );
                    }
                    if refresh {
                        act.refreshed(address, decision, ctx);
                    } else {
                        act.decided(address, decision, ctx);
                    }
                }),
        );
    }

    fn next_grant(&mut self, read_only: bool, expires_at: Option<SystemTime>) -> Grant {
        self.next_generation += 1;
        Grant {
            read_only,
            expires_at,
            generation: self.next_generation,
        }
    }

    /// First decision for a document on this socket.
    pub(super) fn decided(&mut self, address: Arc<str>, decision: Decision, ctx: &mut Ctx) {
        let queue = match self.docs.remove(&address) {
            Some(Slot::AwaitingAuth { queue, .. }) => queue,
            // The client detached (CLOSE) while its token was being checked.
            Some(other) => {
                self.docs.insert(Arc::clone(&address), other);
                return;
            }
            None => return,
        };
        self.release(&queue);
        let read_only = match decision.access {
            Access::Denied { reason } => {
                // Nothing of the document reaches this connection: its queued frames are
                // dropped, and the socket stays open for a retry with another token.
                self.send(
                    ctx,
                    &address,
                    &Message::Auth(AuthMessage::PermissionDenied { reason: &reason }),
                );
                return;
            }
            Access::ReadOnly => true,
            Access::ReadWrite => false,
        };
        let attached = self
            .docs
            .values()
            .filter(|s| !matches!(s, Slot::AwaitingAuth { .. }))
            .count();
        if attached >= self.shared.limits.max_documents_per_connection {
            self.shared
                .metrics
                .protocol_error(ErrorKind::TooManyDocuments);
            self.send(
                ctx,
                &address,
                &Message::Auth(AuthMessage::PermissionDenied {
                    reason: "too many documents on this connection",
                }),
            );
            return;
        }
        // Re-count the queue: it moves to the Joining slot.
        self.queued_messages += queue.len();
        self.queued_bytes += queue.iter().map(|(_, n)| n).sum::<usize>();
        // Authenticated goes out at once: the provider counts its first reply as "connected".
        self.send(
            ctx,
            &address,
            &Message::Auth(AuthMessage::Authenticated {
                scope: scope(read_only),
            }),
        );
        let grant = self.next_grant(read_only, decision.expires_at);
        // History records who wrote what: the token's subject.
        let author: Arc<str> = decision
            .claims
            .as_deref()
            .and_then(|c| c.get("sub"))
            .and_then(|s| s.as_str())
            .map_or_else(crate::store::anonymous, Arc::from);
        self.hook_granted(&address, decision.claims);
        self.docs
            .insert(Arc::clone(&address), Slot::Joining { queue, grant });
        self.join(address, grant, author, 1, ctx);
    }

    /// A fresh token for a document that is already open (answer to our refresh request, or
    /// the provider's own re-auth).
    fn refreshed(&mut self, address: Arc<str>, decision: Decision, ctx: &mut Ctx) {
        let Some(Slot::Open { doc, key, grant }) = self.docs.get(&address) else {
            return;
        };
        let (doc, key, previous) = (doc.clone(), key.clone(), *grant);
        let read_only = match decision.access {
            Access::Denied { reason } => {
                self.remove_slot(&address);
                self.send(
                    ctx,
                    &address,
                    &Message::Auth(AuthMessage::PermissionDenied { reason: &reason }),
                );
                return;
            }
            Access::ReadOnly => true,
            Access::ReadWrite => false,
        };
        if read_only != previous.read_only {
            doc.do_send(SetAccess {
                key: key.clone(),
                read_only,
            });
        }
        let grant = self.next_grant(read_only, decision.expires_at);
        self.docs
            .insert(Arc::clone(&address), Slot::Open { doc, key, grant });
        self.send(
            ctx,
            &address,
            &Message::Auth(AuthMessage::Authenticated {
                scope: scope(read_only),
            }),
        );
        self.schedule_expiry(address, grant, ctx);
    }

    /// When the token expires, ask the provider for a fresh one (an Auth `Token` with an empty
    /// payload: the v4 provider answers by calling its token function again); without a valid
    /// answer within `refresh_grace`, the document is closed for this connection.
    fn schedule_expiry(&mut self, address: Arc<str>, grant: Grant, ctx: &mut Ctx) {
        let Some(expires_at) = grant.expires_at else {
            return;
        };
        let wait = expires_at
            .duration_since(SystemTime::now())
            .unwrap_or_default();
        ctx.run_later(wait, move |act, ctx| {
            if !act.is_current(&address, grant.generation) {
                return;
            }
            act.send(
                ctx,
                &address,
                &Message::Auth(AuthMessage::Token {
                    token: "",
                    provider_version: None,
                }),
            );
            let grace = act.shared.refresh_grace;
            ctx.run_later(grace, move |act, ctx| {
                if !act.is_current(&address, grant.generation) {
                    return;
                }
                act.shared
                    .metrics
                    .auth_results_total
                    .with_label_values(&[crate::auth::AuthResult::RefreshFailed.label()])
                    .inc();
                tracing::info!(
                    session = act.id,
                    "token expired and was not refreshed; closing the document"
                );
                act.remove_slot(&address);
                act.send(
                    ctx,
                    &address,
                    &Message::Auth(AuthMessage::PermissionDenied {
                        reason: "permission-denied: token expired",
                    }),
                );
            });
        });
    }

    fn is_current(&self, address: &str, generation: u64) -> bool {
        matches!(self.docs.get(address), Some(Slot::Open { grant, .. }) if grant.generation == generation)
    }

    fn join(
        &mut self,
        address: Arc<str>,
        grant: Grant,
        author: Arc<str>,
        attempt: u32,
        ctx: &mut Ctx,
    ) {
        let registry = self.shared.registry.clone();
        let key = ConnKey {
            session: self.id,
            address: Arc::clone(&address),
        };
        let join = Join {
            key: key.clone(),
            session: SessionHandle::new(ctx.address()),
            read_only: grant.read_only,
            meter: Arc::clone(&self.meter),
            greet: self.wire.is_ywebsocket(),
            hook: self.hook_of(&address),
            author: Arc::clone(&author),
        };
        let name: Arc<str> = Arc::from(document_name(&address));
        let attempt_join = async move {
            let doc = registry
                .send(Open {
                    name,
                    near: actix::Arbiter::try_current(),
                })
                .await
                .map_err(|_| JoinError::Unavailable)??;
            match doc.send(join).await {
                Ok(Ok(())) => Ok(doc),
                Ok(Err(e)) => Err(e),
                // The actor stopped with our Join in its mailbox: it was unloading.
                Err(_) => Err(JoinError::Unloading),
            }
        };
        ctx.spawn(
            attempt_join
                .into_actor(self)
                .map(move |result, act, ctx| match result {
                    Ok(doc) => act.joined(address, doc, key, ctx),
                    Err(JoinError::Unloading) if attempt < MAX_JOIN_ATTEMPTS => {
                        act.join(address, grant, author, attempt + 1, ctx)
                    }
                    Err(error) => {
                        tracing::warn!(session = act.id, %error, "cannot open document");
                        let reason = match error {
                            JoinError::ServerBusy => "server busy: try again later",
                            _ => "document unavailable",
                        };
                        if act.docs.contains_key(&address) {
                            act.close_document(ctx, &address, reason);
                        }
                    }
                }),
        );
    }

    fn joined(&mut self, address: Arc<str>, doc: Addr<DocumentActor>, key: ConnKey, ctx: &mut Ctx) {
        let (queue, grant) = match self.docs.remove(&address) {
            Some(Slot::Joining { queue, grant }) => (queue, grant),
            // The socket detached the document while it was loading.
            _ => {
                doc.do_send(Leave {
                    key,
                    acknowledge: false,
                });
                return;
            }
        };
        self.hook_connected(&address);
        self.release(&queue);
        for (item, _) in queue {
            match item {
                Queued::Input(input) => doc.do_send(FromSession {
                    key: key.clone(),
                    input,
                }),
                Queued::Close => {
                    doc.do_send(Leave {
                        key,
                        acknowledge: true,
                    });
                    self.hook_left(&address, true);
                    return;
                }
            }
        }
        self.docs
            .insert(Arc::clone(&address), Slot::Open { doc, key, grant });
        self.schedule_expiry(address, grant, ctx);
    }

    /// The provider's CLOSE for one document (`provider.destroy()` / detach).
    pub(super) fn client_close(&mut self, address: Arc<str>, size: usize, ctx: &mut Ctx) {
        match self.docs.get(&address) {
            Some(Slot::Open { .. }) => {
                // The document actor answers CLOSE after everything it still owes this
                // attachment (e.g. the echo of the provider's last awareness), keeping order.
                if let Some(Slot::Open { doc, key, .. }) = self.docs.remove(&address) {
                    doc.do_send(Leave {
                        key,
                        acknowledge: true,
                    });
                }
                self.hook_left(&address, true);
            }
            Some(Slot::Joining { .. }) => self.route(address, Queued::Close, size, ctx),
            Some(Slot::AwaitingAuth { .. }) => self.remove_slot(&address),
            None => {}
        }
    }
}
