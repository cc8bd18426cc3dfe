//! Updates, awareness and stateless messages between nodes, through one Redis Stream per
//! document.
//!
//! Streams rather than pub/sub because pub/sub drops whatever is published while a subscriber
//! reconnects; a stream lets each node resume from the last id it saw. Every update is also in
//! PostgreSQL (each node appends its own clients' updates before acknowledging), so the stream
//! is only the fast path: after a Redis outage every document catches up from the store too, and
//! entries this node could not publish meanwhile are published when Redis is back.

mod reader;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use actix::prelude::*;
use bytes::Bytes;
use deadpool_redis::Pool;
use tokio::sync::mpsc;

use super::keys::Keys;
use crate::backoff::{Backoff, BackoffPolicy};
use crate::metrics::Metrics;

pub use reader::{RelayReader, stream_tip};

/// Retries while Redis does not answer: quick at first (a failover takes seconds), at most 2 s
/// apart so that relaying resumes soon after it is back.
/// What both halves of the relay share: the Redis pool and key scheme, this node's id (its
/// own entries are skipped when read), the health flags `/health` shows, the metrics, and how
/// a failing Redis is retried (`cluster.retry_*`).
#[derive(Clone)]
pub struct RelayLink {
    pub pool: Pool,
    pub keys: Keys,
    pub node_id: Arc<str>,
    pub health: Arc<RedisHealth>,
    pub metrics: Arc<Metrics>,
    pub retry: BackoffPolicy,
}

/// How the per-document streams are bounded in Redis (everything is also in the store).
#[derive(Debug, Clone, Copy)]
pub struct StreamBounds {
    /// Entries kept per stream (approximate trim).
    pub max_len: usize,
    /// A stream without new entries for this long is deleted.
    pub ttl: Duration,
}

/// What an entry carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayKind {
    /// A Yjs v1 update.
    Update,
    /// An encoded awareness update.
    Awareness,
    /// A stateless payload (UTF-8).
    Stateless,
    /// The document was deleted through another node's API (no payload).
    Deleted,
}

impl RelayKind {
    fn tag(self) -> &'static str {
        match self {
            RelayKind::Update => "u",
            RelayKind::Awareness => "a",
            RelayKind::Stateless => "s",
            RelayKind::Deleted => "d",
        }
    }

    fn from_tag(tag: &[u8]) -> Option<Self> {
        match tag {
            b"u" => Some(RelayKind::Update),
            b"a" => Some(RelayKind::Awareness),
            b"s" => Some(RelayKind::Stateless),
            b"d" => Some(RelayKind::Deleted),
            _ => None,
        }
    }
}

/// Another node's entry for a document this node has loaded.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct RemoteEntry {
    pub kind: RelayKind,
    pub payload: Bytes,
}

/// Redis was unreachable for a while: reload from the store what other nodes persisted.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct CatchUp;

/// Shared view of Redis health for `/health` and metrics.
#[derive(Debug, Default)]
pub struct RedisHealth {
    pub reader_ok: AtomicBool,
    pub publisher_ok: AtomicBool,
}

impl RedisHealth {
    pub fn is_ok(&self) -> bool {
        self.reader_ok.load(Ordering::Relaxed) && self.publisher_ok.load(Ordering::Relaxed)
    }
}

struct PublishRequest {
    doc: Arc<str>,
    kind: RelayKind,
    payload: Bytes,
}

/// Handle to the publishing task; cheap to clone.
#[derive(Clone)]
pub struct RelayPublisher {
    tx: mpsc::UnboundedSender<PublishRequest>,
    depth: Arc<AtomicUsize>,
    max_buffered: usize,
    metrics: Arc<Metrics>,
}

impl RelayPublisher {
    /// Starts the publishing task; at most `max_buffered` entries wait while Redis is down.
    pub fn start(link: RelayLink, bounds: StreamBounds, max_buffered: usize) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let depth = Arc::new(AtomicUsize::new(0));
        link.health.publisher_ok.store(true, Ordering::Relaxed);
        let metrics = Arc::clone(&link.metrics);
        tokio::spawn(publish_loop(rx, link, bounds, Arc::clone(&depth)));
        RelayPublisher {
            tx,
            depth,
            max_buffered,
            metrics,
        }
    }

    /// Queues an entry. While Redis is down entries wait (bounded); past the bound they are
    /// dropped and counted — other nodes then get them from the store when they catch up.
    pub fn publish(&self, doc: &Arc<str>, kind: RelayKind, payload: Bytes) {
        if self.depth.load(Ordering::Relaxed) >= self.max_buffered {
            self.metrics.relay_dropped_total.inc();
            return;
        }
        self.depth.fetch_add(1, Ordering::Relaxed);
        let _ = self.tx.send(PublishRequest {
            doc: Arc::clone(doc),
            kind,
            payload,
        });
    }
}

async fn publish_loop(
    mut rx: mpsc::UnboundedReceiver<PublishRequest>,
    link: RelayLink,
    bounds: StreamBounds,
    depth: Arc<AtomicUsize>,
) {
    let RelayLink {
        pool,
        keys,
        node_id,
        health,
        metrics,
        retry,
    } = link;
    let StreamBounds {
        max_len: stream_max_len,
        ttl: stream_ttl,
    } = bounds;
    let publish_errors = metrics.redis_errors_total.with_label_values(&["publish"]);
    let mut batch = Vec::with_capacity(256);
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while batch.len() < 256 {
            match rx.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let mut backoff = Backoff::new(retry);
        loop {
            let mut pipe = redis::pipe();
            for req in &batch {
                let key = keys.stream(&req.doc);
                pipe.cmd("XADD")
                    .arg(&key)
                    .arg("MAXLEN")
                    .arg("~")
                    .arg(stream_max_len)
                    .arg("*")
                    .arg("n")
                    .arg(&*node_id)
                    .arg("k")
                    .arg(req.kind.tag())
                    .arg("d")
                    .arg(&req.payload[..])
                    .ignore();
                pipe.cmd("PEXPIRE")
                    .arg(&key)
                    .arg(stream_ttl.as_millis() as u64)
                    .ignore();
            }
            let result = match pool.get().await {
                Ok(mut conn) => pipe
                    .query_async::<()>(&mut conn)
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            match result {
                Ok(()) => {
                    metrics.relay_published_total.inc_by(batch.len() as u64);
                    if !health.publisher_ok.swap(true, Ordering::Relaxed) {
                        tracing::info!("relay publishing recovered");
                    }
                    break;
                }
                Err(error) => {
                    if health.publisher_ok.swap(false, Ordering::Relaxed) {
                        tracing::warn!(%error, "relay publish failed; retrying");
                    }
                    publish_errors.inc();
                    backoff.wait().await;
                }
            }
        }
        depth.fetch_sub(batch.len(), Ordering::Relaxed);
        batch.clear();
    }
}
