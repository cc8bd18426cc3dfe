//! The `ClusterActor` and the messages document actors send it: compete for a document's
//! lease, drop it, release all at drain; `LeaseChanged` goes back to the document.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use actix::prelude::*;
use deadpool_redis::Pool;

use super::keys::Keys;
use super::lease::{self, Acquired};
use super::{ClusterSettings, ClusterStatus};
use crate::metrics::Metrics;

/// Tells a document actor whether this node now owns its lease, and the fencing token.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct LeaseChanged {
    pub owner: bool,
    pub fence: u64,
}

/// A document was loaded here: compete for its lease from now on.
#[derive(Message)]
#[rtype(result = "()")]
pub struct WantLease {
    pub doc: Arc<str>,
    pub id: u64,
    /// Fencing token stored with the snapshot: new tokens are issued above it.
    pub floor: u64,
    pub notify: Recipient<LeaseChanged>,
}

/// The document unloaded: release its lease if held.
#[derive(Message)]
#[rtype(result = "()")]
pub struct DropLease {
    pub doc: Arc<str>,
    pub id: u64,
}

/// Release every lease now (drain): other nodes can take over without waiting for expiry.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct ReleaseAll;

struct Lease {
    id: u64,
    floor: u64,
    notify: Recipient<LeaseChanged>,
    /// Our token and until when we may act as owner (lease TTL minus a safety margin,
    /// measured from *before* the Redis call, so a slow reply never extends it).
    owned: Option<(u64, Instant)>,
}

/// Holds this node's heartbeat and the leases of the documents loaded here; the Redis calls of
/// one tick run outside the actor (`run_lease_jobs`) and their outcomes come back to it.
pub struct ClusterActor {
    node_id: Arc<str>,
    pool: Pool,
    keys: Keys,
    settings: ClusterSettings,
    leases: HashMap<Arc<str>, Lease>,
    status: Arc<ClusterStatus>,
    metrics: Arc<Metrics>,
    ticking: bool,
    started: Instant,
    connections: Arc<dyn Fn() -> i64 + Send + Sync>,
}

impl ClusterActor {
    pub(super) fn new(
        node_id: Arc<str>,
        pool: Pool,
        keys: Keys,
        settings: ClusterSettings,
        status: Arc<ClusterStatus>,
        metrics: Arc<Metrics>,
        connections: Arc<dyn Fn() -> i64 + Send + Sync>,
    ) -> Self {
        ClusterActor {
            node_id,
            pool,
            keys,
            settings,
            leases: HashMap::new(),
            status,
            metrics,
            ticking: false,
            started: Instant::now(),
            connections,
        }
    }
}

/// Work of one lease tick, computed in the actor and run against Redis outside it.
enum LeaseJob {
    Renew { doc: Arc<str>, id: u64 },
    Acquire { doc: Arc<str>, id: u64, floor: u64 },
}

enum LeaseOutcome {
    Renewed {
        doc: Arc<str>,
        id: u64,
        at: Instant,
    },
    Lost {
        doc: Arc<str>,
        id: u64,
    },
    Acquired {
        doc: Arc<str>,
        id: u64,
        fence: u64,
        at: Instant,
    },
    Taken,
    Failed,
}

impl ClusterActor {
    fn ttl(&self) -> Duration {
        self.settings.lease_ttl
    }

    /// We act as owner only until a margin before the lease could have expired in Redis.
    fn valid_until(&self, at: Instant) -> Instant {
        at + self.ttl().mul_f64(0.8)
    }

    fn lease_tick(&mut self, ctx: &mut Context<Self>) {
        if self.ticking {
            return;
        }
        // Ownership we can no longer vouch for (Redis unreachable too long) is given up first.
        let now = Instant::now();
        for (doc, lease) in &mut self.leases {
            if let Some((_, until)) = lease.owned
                && until <= now
            {
                lease.owned = None;
                self.metrics.lease_losses_total.inc();
                tracing::warn!(document = %doc, "lease could not be renewed in time; no longer owner");
                lease.notify.do_send(LeaseChanged {
                    owner: false,
                    fence: 0,
                });
            }
        }
        let jobs: Vec<LeaseJob> = self
            .leases
            .iter()
            .map(|(doc, l)| match l.owned {
                Some(_) => LeaseJob::Renew {
                    doc: Arc::clone(doc),
                    id: l.id,
                },
                None => LeaseJob::Acquire {
                    doc: Arc::clone(doc),
                    id: l.id,
                    floor: l.floor,
                },
            })
            .collect();
        if jobs.is_empty() {
            return;
        }
        self.ticking = true;
        let pool = self.pool.clone();
        let keys = self.keys.clone();
        let node = Arc::clone(&self.node_id);
        let ttl_ms = u64::try_from(self.settings.lease_ttl.as_millis()).unwrap_or(u64::MAX);
        ctx.spawn(
            async move { run_lease_jobs(pool, keys, node, ttl_ms, jobs).await }
                .into_actor(self)
                .map(|outcomes, act, _| {
                    act.ticking = false;
                    act.apply(outcomes);
                }),
        );
    }

    fn apply(&mut self, outcomes: Vec<LeaseOutcome>) {
        let mut failed = false;
        for outcome in outcomes {
            match outcome {
                LeaseOutcome::Renewed { doc, id, at } => {
                    let until = self.valid_until(at);
                    if let Some(l) = self.leases.get_mut(&doc).filter(|l| l.id == id)
                        && let Some((fence, _)) = l.owned
                    {
                        l.owned = Some((fence, until));
                    }
                }
                LeaseOutcome::Lost { doc, id } => {
                    if let Some(l) = self.leases.get_mut(&doc).filter(|l| l.id == id)
                        && l.owned.take().is_some()
                    {
                        self.metrics.lease_losses_total.inc();
                        tracing::warn!(document = %doc, "lease taken by another node");
                        l.notify.do_send(LeaseChanged {
                            owner: false,
                            fence: 0,
                        });
                    }
                }
                LeaseOutcome::Acquired { doc, id, fence, at } => {
                    let until = self.valid_until(at);
                    if let Some(l) = self.leases.get_mut(&doc).filter(|l| l.id == id) {
                        l.owned = Some((fence, until));
                        self.metrics.lease_acquisitions_total.inc();
                        tracing::debug!(document = %doc, fence, "lease acquired");
                        l.notify.do_send(LeaseChanged { owner: true, fence });
                    } else {
                        // Unloaded meanwhile: hand it back at once.
                        let (pool, key, node) = (
                            self.pool.clone(),
                            self.keys.lease(&doc),
                            Arc::clone(&self.node_id),
                        );
                        actix::spawn(async move {
                            if let Ok(mut c) = pool.get().await {
                                let _ = lease::release(&mut c, &key, &node).await;
                            }
                        });
                    }
                }
                LeaseOutcome::Taken => {}
                LeaseOutcome::Failed => failed = true,
            }
        }
        if failed {
            self.metrics
                .redis_errors_total
                .with_label_values(&["lease"])
                .inc();
        }
        self.status.lease_ok.store(!failed, Ordering::Relaxed);
        self.publish_owned_count();
    }

    /// Leases held, for `/health` and the `leases_owned` gauge.
    fn publish_owned_count(&self) {
        let owned = self.leases.values().filter(|l| l.owned.is_some()).count() as i64;
        self.status.owned.store(owned, Ordering::Relaxed);
        self.metrics.leases_owned.set(owned);
    }

    fn heartbeat(&mut self, ctx: &mut Context<Self>) {
        let pool = self.pool.clone();
        let key = self.keys.node(&self.node_id);
        let pattern = self.keys.nodes_pattern();
        let ttl_ms = u64::try_from((self.settings.heartbeat * 3).as_millis()).unwrap_or(u64::MAX);
        let body = serde_json::json!({
            "node_id": &*self.node_id,
            "connections": (self.connections)(),
            "documents": self.leases.len(),
            "owned": self.status.owned.load(Ordering::Relaxed),
            "uptime_secs": self.started.elapsed().as_secs(),
        })
        .to_string();
        let status = Arc::clone(&self.status);
        ctx.spawn(
            async move {
                let mut conn = pool.get().await.map_err(|e| e.to_string())?;
                redis::cmd("SET")
                    .arg(&key)
                    .arg(body)
                    .arg("PX")
                    .arg(ttl_ms)
                    .query_async::<()>(&mut conn)
                    .await
                    .map_err(|e| e.to_string())?;
                let mut nodes = 0i64;
                let mut cursor: u64 = 0;
                for _ in 0..100 {
                    let (next, found): (u64, Vec<String>) = redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(&pattern)
                        .arg("COUNT")
                        .arg(100)
                        .query_async(&mut conn)
                        .await
                        .map_err(|e| e.to_string())?;
                    nodes += found.len() as i64;
                    cursor = next;
                    if cursor == 0 {
                        break;
                    }
                }
                status.nodes.store(nodes, Ordering::Relaxed);
                Ok::<_, String>(())
            }
            .into_actor(self)
            .map(|result, act, _| {
                if let Err(error) = result {
                    act.metrics
                        .redis_errors_total
                        .with_label_values(&["heartbeat"])
                        .inc();
                    tracing::debug!(%error, "heartbeat failed");
                }
            }),
        );
    }
}

async fn run_lease_jobs(
    pool: Pool,
    keys: Keys,
    node: Arc<str>,
    ttl_ms: u64,
    jobs: Vec<LeaseJob>,
) -> Vec<LeaseOutcome> {
    let mut outcomes = Vec::with_capacity(jobs.len());
    let mut conn = match pool.get().await {
        Ok(c) => c,
        Err(_) => {
            return jobs.into_iter().map(|_| LeaseOutcome::Failed).collect();
        }
    };
    for job in jobs {
        let at = Instant::now();
        outcomes.push(match job {
            LeaseJob::Renew { doc, id } => {
                match lease::renew(&mut conn, &keys.lease(&doc), &node, ttl_ms).await {
                    Ok(true) => LeaseOutcome::Renewed { doc, id, at },
                    Ok(false) => LeaseOutcome::Lost { doc, id },
                    Err(_) => LeaseOutcome::Failed,
                }
            }
            LeaseJob::Acquire { doc, id, floor } => {
                match lease::acquire(
                    &mut conn,
                    &keys.lease(&doc),
                    &keys.fence(&doc),
                    &node,
                    ttl_ms,
                    floor,
                )
                .await
                {
                    Ok(Acquired::New(fence)) => LeaseOutcome::Acquired { doc, id, fence, at },
                    // Ours from an earlier life of this actor whose token we lost: give it
                    // back so the next tick acquires it properly with a fresh token.
                    Ok(Acquired::AlreadyOurs) => {
                        let _ = lease::release(&mut conn, &keys.lease(&doc), &node).await;
                        LeaseOutcome::Taken
                    }
                    Ok(Acquired::Taken) => LeaseOutcome::Taken,
                    Err(_) => LeaseOutcome::Failed,
                }
            }
        });
    }
    outcomes
}

impl Actor for ClusterActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(self.settings.lease_renew, |act, ctx| act.lease_tick(ctx));
        self.heartbeat(ctx);
        ctx.run_interval(self.settings.heartbeat, |act, ctx| act.heartbeat(ctx));
    }
}

impl Handler<WantLease> for ClusterActor {
    type Result = ();

    fn handle(&mut self, msg: WantLease, ctx: &mut Self::Context) {
        self.leases.insert(
            msg.doc,
            Lease {
                id: msg.id,
                floor: msg.floor,
                notify: msg.notify,
                owned: None,
            },
        );
        // Try at once rather than at the next tick: the first node to load a document should
        // own it right away.
        self.lease_tick(ctx);
    }
}

impl Handler<DropLease> for ClusterActor {
    type Result = ();

    fn handle(&mut self, msg: DropLease, _: &mut Self::Context) {
        if self.leases.get(&msg.doc).is_none_or(|l| l.id != msg.id) {
            return;
        }
        let Some(lease) = self.leases.remove(&msg.doc) else {
            return;
        };
        if lease.owned.is_some() {
            let (pool, key, node) = (
                self.pool.clone(),
                self.keys.lease(&msg.doc),
                Arc::clone(&self.node_id),
            );
            actix::spawn(async move {
                if let Ok(mut c) = pool.get().await {
                    let _ = lease::release(&mut c, &key, &node).await;
                }
            });
        }
        self.publish_owned_count();
    }
}

impl Handler<ReleaseAll> for ClusterActor {
    type Result = ResponseActFuture<Self, usize>;

    fn handle(&mut self, _: ReleaseAll, _: &mut Self::Context) -> Self::Result {
        let owned: Vec<Arc<str>> = self
            .leases
            .iter_mut()
            .filter_map(|(doc, l)| l.owned.take().map(|_| Arc::clone(doc)))
            .collect();
        for doc in &owned {
            if let Some(l) = self.leases.get(doc) {
                l.notify.do_send(LeaseChanged {
                    owner: false,
                    fence: 0,
                });
            }
        }
        let (pool, keys, node) = (
            self.pool.clone(),
            self.keys.clone(),
            Arc::clone(&self.node_id),
        );
        // Stop competing for them too: this node is going away.
        self.leases.clear();
        Box::pin(
            async move {
                let mut released = 0;
                if let Ok(mut c) = pool.get().await {
                    for doc in owned {
                        if lease::release(&mut c, &keys.lease(&doc), &node)
                            .await
                            .unwrap_or(false)
                        {
                            released += 1;
                        }
                    }
                    let _ = redis::cmd("DEL")
                        .arg(keys.node(&node))
                        .query_async::<()>(&mut c)
                        .await;
                }
                released
            }
            .into_actor(self),
        )
    }
}
