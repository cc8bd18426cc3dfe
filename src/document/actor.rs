//! The document actor. All access to a document goes through its mailbox, which gives every
//! connection's frames a total order without locks.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use actix::prelude::*;
use bytes::Bytes;
use tokio::sync::oneshot;

use super::{ConnKey, DocError, DocumentLimits, DocumentState};
use crate::awareness::Owner;
use crate::budget::{Charge, Holder, SocketMeter};
use crate::cluster::relay::RelayKind;
use crate::cluster::{Cluster, DropLease};
use crate::metrics::Metrics;
use crate::persistence::Persistence;
use crate::protocol::CloseCode;
use crate::protocol::{Message, SyncMessage};
use crate::store::AppendItem;

use super::{SessionHandle, Unregister};

/// Document-actor tunables, from `[documents]` and `[store]`.
#[derive(Debug, Clone)]
pub struct DocumentConfig {
    /// The node's memory budget: the loaded document and its awareness are charged to it.
    pub budget: Arc<crate::budget::MemoryBudget>,
    /// Charge per encoded byte of the document (`limits.document_memory_factor`).
    pub document_memory_factor: f64,
    /// Per-socket bound of unread outbound bytes (see [`Join::outbound`]).
    pub max_outbound_bytes: usize,
    /// Largest encoded document; growth past it is refused.
    pub max_document_bytes: usize,
    /// Nesting and pending bounds applied to every update (see [`DocumentLimits`]).
    pub limits: DocumentLimits,
    pub unload_grace: Duration,
    /// How long a load keeps retrying a failing store before the document is declared
    /// unavailable (sessions then get a CLOSE for it).
    pub load_timeout: Duration,
    pub awareness_timeout: Duration,
    pub compact_after_updates: u64,
    pub compact_min_interval: Duration,
}

/// A session attaches to this document. Answered `Err` when the actor is unloading: the
/// session then asks the registry again, which by then starts a fresh actor.
#[derive(Message)]
#[rtype(result = "Result<(), JoinError>")]
pub struct Join {
    pub key: ConnKey,
    /// Where this document's frames, refusals and closes for the session go.
    pub session: SessionHandle,
    pub read_only: bool,
    /// What the socket holds, shared with its session and write task: bounds what a slow
    /// reader can pile up, and closes it at once when it does.
    pub meter: Arc<SocketMeter>,
}

#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error("document is unloading")]
    Unloading,
    #[error("document could not be loaded")]
    Unavailable,
    #[error("the node's memory budget is nearly full: no more documents are loaded")]
    ServerBusy,
}

/// What a session forwards for one attachment, in the order it received it.
#[derive(Debug)]
pub enum SessionInput {
    SyncStep1(Bytes),
    /// A SyncStep2 or an Update: both are Yjs updates to apply and acknowledge.
    Update(Bytes),
    Awareness(Bytes),
    QueryAwareness,
    Stateless(String),
}

#[derive(Message)]
#[rtype(result = "()")]
pub struct FromSession {
    pub key: ConnKey,
    pub input: SessionInput,
}

/// The attachment ends (CLOSE from the provider, or the socket went away).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Leave {
    pub key: ConnKey,
    /// Answer with CLOSE `provider_initiated` (the provider asked to detach), as Hocuspocus does.
    pub acknowledge: bool,
}

/// The connection's token was refreshed and now grants a different scope.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SetAccess {
    pub key: ConnKey,
    pub read_only: bool,
}

pub(super) struct Conn {
    pub(super) session: SessionHandle,
    read_only: bool,
    /// The socket's meter: what is queued for it, and the switch that closes it at once.
    pub(super) meter: Arc<SocketMeter>,
    /// This attachment as an awareness owner: [`Owner::Connection`] of this number. The table
    /// knows which client ids it owns, and removes them when it leaves.
    pub(super) awareness_owner: u64,
    /// Whether a refusal for owning too many awareness client ids was logged (once per
    /// attachment; the metric counts every one).
    pub(super) awareness_over_limit_logged: bool,
    /// Client ids whose refused entries (owned by another connection) were logged for this
    /// attachment: one warning per id, not one per frame, and at most
    /// [`MAX_REFUSALS_LOGGED`] ids, so a flood cannot grow it; the metric counts every one.
    pub(super) refusals_logged: Vec<u64>,
}

/// Awareness owner numbers, unique in the process (ConnKeys are per socket and address; a
/// number is cheaper to compare and store in the awareness table).
static NEXT_AWARENESS_OWNER: AtomicU64 = AtomicU64::new(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    Loading,
    Ready,
    /// Told the registry it is going; every new Join is bounced.
    Unloading,
}

pub struct DocumentActor {
    pub(super) name: Arc<str>,
    pub(super) id: u64,
    pub(super) state: DocumentState,
    pub(super) conns: HashMap<ConnKey, Conn>,
    pub(super) phase: Phase,
    pub(super) persistence: Persistence,
    /// Told when this actor stops, so the registry forgets it.
    pub(super) registry: Recipient<Unregister>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) config: DocumentConfig,
    /// Updates handed to persistence and not yet durable.
    pub(super) inflight: usize,
    /// Log entries written since the last compaction (an estimate that starts from `load`).
    pub(super) log_len: u64,
    /// Upper bound of the encoded document size: the exact size when last measured plus every
    /// update applied since (deletions only make it smaller). Measured again only when it nears
    /// the limit, so the common case costs nothing.
    pub(super) approx_bytes: usize,
    /// The document's share of the node's memory budget: `approx_bytes` × the factor.
    pub(super) memory: Charge,
    /// `approx_bytes` when it was last measured by encoding the document.
    pub(super) measured_bytes: usize,
    /// Fencing token for compaction: the store's (single node) or the lease's (cluster).
    pub(super) fence: u64,
    /// Whether this node may compact: always on a single node, the lease holder in a cluster.
    pub(super) owner: bool,
    pub(super) cluster: Option<Cluster>,
    pub(super) unload_timer: Option<SpawnHandle>,
    pub(super) compacting: bool,
    /// When the last compaction finished, and the timer that retries once the interval since
    /// then has passed.
    pub(super) last_compaction: Option<Instant>,
    pub(super) compact_timer: Option<SpawnHandle>,
    /// Changes applied but not yet broadcast: sent as one merged update once the mailbox has
    /// been drained (see [`DocumentActor::queue_update_broadcast`]), or before anything else
    /// is sent, so every socket still sees messages in the order they happened.
    pub(super) unsent: Vec<Vec<u8>>,
    /// Updates handed to persistence, oldest first, with the completion that says durable.
    /// One [`AckWaiter`] watches the oldest: the group committer completes them in order.
    pub(super) acks: VecDeque<(ConnKey, oneshot::Receiver<()>)>,
    pub(super) ack_waiter_running: bool,
    /// What the awareness table holds, charged to the node's memory budget; follows the table
    /// (see [`DocumentActor::awareness_changed`]) and goes with the actor.
    pub(super) awareness_charge: Charge,
}

pub(super) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl DocumentActor {
    pub fn new(
        name: Arc<str>,
        id: u64,
        persistence: Persistence,
        registry: Recipient<Unregister>,
        metrics: Arc<Metrics>,
        config: DocumentConfig,
        cluster: Option<Cluster>,
    ) -> Self {
        let memory = Charge::new(&config.budget, Holder::Documents);
        let awareness_charge = Charge::new(&config.budget, Holder::Awareness);
        DocumentActor {
            name,
            id,
            state: DocumentState::with_limits(config.limits),
            conns: HashMap::new(),
            phase: Phase::Loading,
            persistence,
            registry,
            metrics,
            config,
            inflight: 0,
            log_len: 0,
            approx_bytes: 0,
            memory,
            measured_bytes: 0,
            fence: 0,
            owner: false,
            cluster,
            unload_timer: None,
            compacting: false,
            last_compaction: None,
            compact_timer: None,
            unsent: Vec::new(),
            acks: VecDeque::new(),
            ack_waiter_running: false,
            awareness_charge,
        }
    }

    /// Whether an update of `incoming` bytes may be applied without the document outgrowing
    /// `limits.max_document_bytes`.
    fn has_room_for(&mut self, incoming: usize) -> bool {
        let limit = self.config.max_document_bytes;
        if self.approx_bytes + incoming <= limit {
            return true;
        }
        // Measuring means encoding the whole document: only once it has grown by a sixteenth
        // of the limit since the last measurement, so a client sending update after update
        // at a full document cannot make each one cost a full encode.
        if self.approx_bytes.saturating_sub(self.measured_bytes) < limit / 16 {
            return false;
        }
        // A document that cannot even be encoded takes no more growth.
        self.approx_bytes = self
            .state
            .encode_state()
            .map_or(usize::MAX / 2, |s| s.len());
        self.measured_bytes = self.approx_bytes;
        self.charge_memory();
        self.approx_bytes + incoming <= limit
    }

    /// Follows `approx_bytes` in the memory budget.
    pub(super) fn charge_memory(&mut self) {
        let bytes = self.approx_bytes as f64 * self.config.document_memory_factor;
        self.memory.set(bytes as usize);
    }

    /// An update (or state vector) this document will not take: answered `SyncStatus(0)` on
    /// that connection, which is then detached from this document only (its session closes
    /// the document with a CLOSE frame, or the socket if it keeps doing this). The document,
    /// the store and every other connection never see it.
    fn refuse_update(&mut self, key: &ConnKey, error: &DocError) {
        self.metrics.protocol_error(error.kind());
        tracing::warn!(document = %self.name, session = key.session, %error, "update refused");
        if !matches!(
            error,
            DocError::RefusedStateVector(_) | DocError::BadStateVector
        ) {
            self.send_to(key, &Message::SyncStatus(false));
        }
        if let Some(conn) = self.conns.get(key) {
            conn.session.update_refused(&key.address, error.to_string());
        }
        self.detach(key);
    }

    /// yrs failed on input the firewall passed: a bug of ours or of yrs, and the in-memory
    /// document can no longer be trusted. The store never saw the update, so the document is
    /// reloaded from it, which closes every connection (4205; providers reconnect and resync).
    /// A client that found such a bug could repeat it at will, so a document reloads at most
    /// once per `RELOAD_INTERVAL`; within it only the offending connection is closed.
    pub(super) fn internal_fault(&mut self, key: Option<&ConnKey>, ctx: &mut Context<Self>) {
        self.metrics.protocol_error(DocError::Poisoned.kind());
        if super::reloads::may_reload(&self.name) {
            tracing::error!(document = %self.name, session = key.map(|k| k.session), "yrs failed on a checked update; reloading the document from the store");
            self.close_all("document reloaded after an internal error");
            ctx.stop();
            return;
        }
        tracing::error!(document = %self.name, session = key.map(|k| k.session), "yrs failed on a checked update again; closing only the sender (reload rate-limited)");
        if let Some(key) = key {
            if let Some(conn) = self.conns.get(key) {
                conn.session
                    .close_socket(CloseCode::ResetConnection, "internal error");
            }
            self.detach(key);
        }
    }

    fn handle_update(&mut self, key: ConnKey, update: Bytes, ctx: &mut Context<Self>) {
        let Some(conn) = self.conns.get(&key) else {
            return;
        };
        if conn.read_only {
            // Hocuspocus acks what is already known (the handshake) and refuses the rest.
            let known = match self.state.contains_update(&update) {
                Ok(known) => known,
                Err(e) => return self.refuse_update(&key, &e),
            };
            self.send_to(&key, &Message::SyncStatus(known));
            return;
        }
        // Reserve room in the write queue *before* applying, so a full queue refuses the
        // update instead of applying something that might not become durable.
        let reservation = match self.persistence.try_reserve() {
            Ok(r) => r,
            Err(_) => {
                // Refuse, and close the socket: the provider keeps the edit, reconnects with
                // backoff and sends it again in its SyncStep2 once the store has caught up.
                self.metrics.writes_refused_total.inc();
                tracing::warn!(document = %self.name, session = key.session, "store queue full: update refused");
                self.send_to(&key, &Message::SyncStatus(false));
                if let Some(conn) = self.conns.get(&key) {
                    conn.session.close_socket(
                        CloseCode::ResetConnection,
                        "store overloaded; reconnect later",
                    );
                }
                self.detach(&key);
                return;
            }
        };
        if !self.has_room_for(update.len()) {
            self.metrics.protocol_error("document_too_large");
            tracing::warn!(document = %self.name, session = key.session, limit = self.config.max_document_bytes, "update refused: document too large");
            self.send_to(&key, &Message::SyncStatus(false));
            self.send_to(&key, &Message::Close(Some("document too large")));
            self.detach(&key);
            return;
        }
        let started = Instant::now();
        let applied = match self.state.apply_update(&update) {
            Ok(applied) => applied,
            Err(DocError::Poisoned) => return self.internal_fault(Some(&key), ctx),
            Err(e) => return self.refuse_update(&key, &e),
        };
        self.metrics
            .update_apply_seconds
            .observe(started.elapsed().as_secs_f64());
        self.approx_bytes += update.len();
        self.charge_memory();
        if let Some(changes) = applied.broadcast {
            self.queue_update_broadcast(changes, ctx);
        }
        if applied.store {
            self.publish(RelayKind::Update, update.clone());
        }
        let item = applied.store.then(|| AppendItem {
            name: Arc::clone(&self.name),
            update,
        });
        if item.is_some() {
            self.log_len += 1;
        }
        self.inflight += 1;
        self.acks.push_back((key, reservation.submit(item)));
        if !self.ack_waiter_running {
            self.ack_waiter_running = true;
            ctx.spawn(super::outbound::AckWaiter);
        }
    }

    /// Removes an attachment and the awareness clients it still owns.
    pub(super) fn detach(&mut self, key: &ConnKey) {
        let Some(conn) = self.conns.remove(key) else {
            return;
        };
        let removed = self
            .state
            .awareness
            .remove_owner(Owner::Connection(conn.awareness_owner), now_ms());
        if !removed.is_empty() {
            self.awareness_changed();
            let encoded = self.state.awareness.encode(&removed);
            self.broadcast(&Message::Awareness(&encoded), None);
            self.publish(RelayKind::Awareness, Bytes::from(encoded));
        }
    }

    pub(super) fn close_all(&mut self, reason: &str) {
        for conn in self.conns.values() {
            conn.session
                .close_socket(CloseCode::ResetConnection, reason);
        }
        self.conns.clear();
    }
}

impl Actor for DocumentActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.metrics.documents_open.inc();
        self.metrics.documents_loaded_total.inc();
        self.load(ctx);
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        if let Some(cluster) = &self.cluster {
            cluster.reader.unsubscribe(Arc::clone(&self.name), self.id);
            cluster.actor.do_send(DropLease {
                doc: Arc::clone(&self.name),
                id: self.id,
            });
        }
        // Given back now rather than when the actor value is dropped, whenever that is.
        self.awareness_charge.set(0);
        self.metrics.documents_open.dec();
        self.metrics.documents_unloaded_total.inc();
        tracing::debug!(document = %self.name, "document unloaded");
    }
}

impl Handler<Join> for DocumentActor {
    type Result = Result<(), JoinError>;

    fn handle(&mut self, join: Join, ctx: &mut Self::Context) -> Self::Result {
        match self.phase {
            Phase::Ready => {}
            Phase::Unloading => return Err(JoinError::Unloading),
            Phase::Loading => return Err(JoinError::Unavailable),
        }
        self.cancel_unload(ctx);
        let key = join.key;
        self.conns.insert(
            key.clone(),
            Conn {
                session: join.session,
                read_only: join.read_only,
                meter: join.meter,
                awareness_owner: NEXT_AWARENESS_OWNER.fetch_add(1, Ordering::Relaxed),
                awareness_over_limit_logged: false,
                refusals_logged: Vec::new(),
            },
        );
        if let Some(states) = self.state.awareness.encode_live() {
            self.send_to(&key, &Message::Awareness(&states));
        }
        Ok(())
    }
}

impl Handler<FromSession> for DocumentActor {
    type Result = ();

    fn handle(&mut self, msg: FromSession, ctx: &mut Self::Context) {
        if !self.conns.contains_key(&msg.key) {
            return; // detached meanwhile (closed after an error): drop what was in flight
        }
        let key = msg.key;
        match msg.input {
            SessionInput::SyncStep1(sv) => match self.state.sync_step1_reply(&sv) {
                Ok((server_sv, diff)) => {
                    self.send_to(&key, &Message::Sync(SyncMessage::Step1(&server_sv)));
                    self.send_to(&key, &Message::Sync(SyncMessage::Step2(&diff)));
                }
                Err(e) => self.refuse_update(&key, &e),
            },
            SessionInput::Update(update) => self.handle_update(key, update, ctx),
            SessionInput::Awareness(payload) => self.handle_awareness(key, &payload),
            SessionInput::QueryAwareness => {
                let states = self
                    .state
                    .awareness
                    .encode_live()
                    .unwrap_or_else(|| vec![0]);
                self.send_to(&key, &Message::Awareness(&states));
            }
            SessionInput::Stateless(payload) => {
                self.broadcast(&Message::Stateless(&payload), Some(&key));
                self.publish(RelayKind::Stateless, Bytes::from(payload));
            }
        }
        // An error above may have detached the last attachment.
        self.maybe_schedule_unload(ctx);
    }
}

impl Handler<Leave> for DocumentActor {
    type Result = ();

    fn handle(&mut self, msg: Leave, ctx: &mut Self::Context) {
        if msg.acknowledge {
            self.send_to(&msg.key, &Message::Close(Some("provider_initiated")));
        }
        self.detach(&msg.key);
        self.maybe_schedule_unload(ctx);
    }
}

impl Handler<SetAccess> for DocumentActor {
    type Result = ();

    fn handle(&mut self, msg: SetAccess, _: &mut Self::Context) {
        if let Some(conn) = self.conns.get_mut(&msg.key) {
            conn.read_only = msg.read_only;
        }
    }
}
