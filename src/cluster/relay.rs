//! Updates, awareness and stateless messages between nodes, through one Redis Stream per
//! document.
//!
//! Streams rather than pub/sub because pub/sub drops whatever is published while a subscriber
//! reconnects; a stream lets each node resume from the last id it saw. Every update is also in
//! PostgreSQL (each node appends its own clients' updates before acknowledging), so the stream
//! is only the fast path: after a Redis outage every document catches up from the store too, and
//! entries this node could not publish meanwhile are published when Redis is back.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use actix::prelude::*;
use bytes::Bytes;
use deadpool_redis::Pool;
use redis::Value;
use redis::streams::StreamReadReply;
use tokio::sync::mpsc;

use super::keys::Keys;
use crate::backoff::{Backoff, BackoffPolicy};
use crate::metrics::Metrics;

/// Retries while Redis does not answer: quick at first (a failover takes seconds), at most 2 s
/// apart so that relaying resumes soon after it is back.
const REDIS_RETRY: BackoffPolicy =
    BackoffPolicy::new(Duration::from_millis(50), Duration::from_secs(2));

/// What an entry carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayKind {
    /// A Yjs v1 update.
    Update,
    /// An encoded awareness update.
    Awareness,
    /// A stateless payload (UTF-8).
    Stateless,
}

impl RelayKind {
    fn tag(self) -> &'static str {
        match self {
            RelayKind::Update => "u",
            RelayKind::Awareness => "a",
            RelayKind::Stateless => "s",
        }
    }

    fn from_tag(tag: &[u8]) -> Option<Self> {
        match tag {
            b"u" => Some(RelayKind::Update),
            b"a" => Some(RelayKind::Awareness),
            b"s" => Some(RelayKind::Stateless),
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
    // The publishing task's inputs, passed straight through to `publish_loop` (allowed there
    // too); a struct for one call site would only rename them.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        pool: Pool,
        keys: Keys,
        node_id: Arc<str>,
        stream_max_len: usize,
        stream_ttl: Duration,
        max_buffered: usize,
        health: Arc<RedisHealth>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let depth = Arc::new(AtomicUsize::new(0));
        health.publisher_ok.store(true, Ordering::Relaxed);
        tokio::spawn(publish_loop(
            rx,
            pool,
            keys,
            node_id,
            stream_max_len,
            stream_ttl,
            Arc::clone(&depth),
            health,
            Arc::clone(&metrics),
        ));
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

#[allow(clippy::too_many_arguments)]
async fn publish_loop(
    mut rx: mpsc::UnboundedReceiver<PublishRequest>,
    pool: Pool,
    keys: Keys,
    node_id: Arc<str>,
    stream_max_len: usize,
    stream_ttl: Duration,
    depth: Arc<AtomicUsize>,
    health: Arc<RedisHealth>,
    metrics: Arc<Metrics>,
) {
    let mut batch = Vec::with_capacity(256);
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while batch.len() < 256 {
            match rx.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let mut backoff = Backoff::new(REDIS_RETRY);
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
                    metrics
                        .redis_errors_total
                        .with_label_values(&["publish"])
                        .inc();
                    backoff.wait().await;
                }
            }
        }
        depth.fetch_sub(batch.len(), Ordering::Relaxed);
        batch.clear();
    }
}

enum ReaderCommand {
    Subscribe {
        doc: Arc<str>,
        id: u64,
        from: String,
        to: Recipient<RemoteEntry>,
        catch_up: Recipient<CatchUp>,
    },
    Unsubscribe {
        doc: Arc<str>,
        id: u64,
    },
}

struct Subscription {
    id: u64,
    last_id: String,
    to: Recipient<RemoteEntry>,
    catch_up: Recipient<CatchUp>,
}

/// Handle to the reading task; cheap to clone.
#[derive(Clone)]
pub struct RelayReader {
    tx: mpsc::UnboundedSender<ReaderCommand>,
}

impl RelayReader {
    pub fn start(
        pool: Pool,
        keys: Keys,
        node_id: Arc<str>,
        block: Duration,
        health: Arc<RedisHealth>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        health.reader_ok.store(true, Ordering::Relaxed);
        tokio::spawn(read_loop(rx, pool, keys, node_id, block, health, metrics));
        RelayReader { tx }
    }

    /// Delivers entries of `doc` after `from` (a stream id) to `to`, skipping this node's own.
    pub fn subscribe(
        &self,
        doc: Arc<str>,
        id: u64,
        from: String,
        to: Recipient<RemoteEntry>,
        catch_up: Recipient<CatchUp>,
    ) {
        let _ = self.tx.send(ReaderCommand::Subscribe {
            doc,
            id,
            from,
            to,
            catch_up,
        });
    }

    pub fn unsubscribe(&self, doc: Arc<str>, id: u64) {
        let _ = self.tx.send(ReaderCommand::Unsubscribe { doc, id });
    }
}

/// The id of the newest entry of a stream ("0-0" when empty): where a document that is about
/// to load from the store starts reading, so nothing published during the load is missed.
pub async fn stream_tip(pool: &Pool, keys: &Keys, doc: &str) -> Result<String, String> {
    let mut conn = pool.get().await.map_err(|e| e.to_string())?;
    let reply: redis::streams::StreamRangeReply = redis::cmd("XREVRANGE")
        .arg(keys.stream(doc))
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1)
        .query_async(&mut conn)
        .await
        .map_err(|e| e.to_string())?;
    Ok(reply
        .ids
        .first()
        .map_or_else(|| "0-0".to_string(), |e| e.id.clone()))
}

fn field<'a>(map: &'a HashMap<String, Value>, name: &str) -> Option<&'a [u8]> {
    match map.get(name)? {
        Value::BulkString(bytes) => Some(bytes),
        Value::SimpleString(s) => Some(s.as_bytes()),
        _ => None,
    }
}

async fn read_loop(
    mut rx: mpsc::UnboundedReceiver<ReaderCommand>,
    pool: Pool,
    keys: Keys,
    node_id: Arc<str>,
    block: Duration,
    health: Arc<RedisHealth>,
    metrics: Arc<Metrics>,
) {
    let mut subs: HashMap<Arc<str>, Subscription> = HashMap::new();
    // A dedicated connection: a blocking XREAD would stall every command multiplexed with it.
    let mut conn: Option<deadpool_redis::Connection> = None;
    let mut outage = false;
    let mut backoff = Backoff::new(REDIS_RETRY);
    loop {
        // Apply subscription changes; with nothing to read, sleep until there is.
        loop {
            let command = if subs.is_empty() {
                match rx.recv().await {
                    Some(c) => c,
                    None => return,
                }
            } else {
                match rx.try_recv() {
                    Ok(c) => c,
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => return,
                }
            };
            match command {
                ReaderCommand::Subscribe {
                    doc,
                    id,
                    from,
                    to,
                    catch_up,
                } => {
                    subs.insert(
                        doc,
                        Subscription {
                            id,
                            last_id: from,
                            to,
                            catch_up,
                        },
                    );
                }
                ReaderCommand::Unsubscribe { doc, id } => {
                    if subs.get(&doc).is_some_and(|s| s.id == id) {
                        subs.remove(&doc);
                    }
                }
            }
        }
        if conn.is_none() {
            match pool.get().await {
                Ok(c) => conn = Some(c),
                Err(error) => {
                    if health.reader_ok.swap(false, Ordering::Relaxed) {
                        tracing::warn!(%error, "relay reader cannot reach Redis; retrying");
                    }
                    outage = true;
                    metrics
                        .redis_errors_total
                        .with_label_values(&["read"])
                        .inc();
                    backoff.wait().await;
                    continue;
                }
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        let docs: Vec<Arc<str>> = subs.keys().cloned().collect();
        let mut cmd = redis::cmd("XREAD");
        cmd.arg("COUNT")
            .arg(512)
            .arg("BLOCK")
            .arg(block.as_millis() as u64)
            .arg("STREAMS");
        for doc in &docs {
            cmd.arg(keys.stream(doc));
        }
        for doc in &docs {
            cmd.arg(subs.get(doc).map_or("0-0", |s| s.last_id.as_str()));
        }
        match cmd.query_async::<Option<StreamReadReply>>(c).await {
            Ok(reply) => {
                backoff.reset();
                if !health.reader_ok.swap(true, Ordering::Relaxed) {
                    tracing::info!("relay reader reconnected");
                }
                if outage {
                    // Whatever other nodes persisted while we could not read is in the store.
                    outage = false;
                    for sub in subs.values() {
                        sub.catch_up.do_send(CatchUp);
                    }
                }
                for stream in reply.map(|r| r.keys).unwrap_or_default() {
                    let Some(doc) = keys.doc_of_stream(&stream.key) else {
                        continue;
                    };
                    let Some(sub) = subs.get_mut(doc) else {
                        continue;
                    };
                    for entry in stream.ids {
                        sub.last_id = entry.id.clone();
                        // Entry ids start with the Redis server's clock in ms: lag from publish
                        // to delivery here, without adding a byte to any entry.
                        if let Some(published_ms) = entry
                            .id
                            .split('-')
                            .next()
                            .and_then(|ms| ms.parse::<u64>().ok())
                        {
                            let now_ms = std::time::SystemTime::now()
                                .duration_since(std::time::UNIX_EPOCH)
                                .map_or(0, |d| d.as_millis() as u64);
                            metrics
                                .relay_lag_seconds
                                .observe(now_ms.saturating_sub(published_ms) as f64 / 1000.0);
                        }
                        if field(&entry.map, "n") == Some(node_id.as_bytes()) {
                            continue;
                        }
                        let (Some(kind), Some(payload)) = (
                            field(&entry.map, "k").and_then(RelayKind::from_tag),
                            field(&entry.map, "d"),
                        ) else {
                            metrics.protocol_error("bad_relay_entry");
                            continue;
                        };
                        metrics.relay_received_total.inc();
                        sub.to.do_send(RemoteEntry {
                            kind,
                            payload: Bytes::copy_from_slice(payload),
                        });
                    }
                }
            }
            Err(error) => {
                if health.reader_ok.swap(false, Ordering::Relaxed) {
                    tracing::warn!(%error, "relay read failed; reconnecting");
                }
                metrics
                    .redis_errors_total
                    .with_label_values(&["read"])
                    .inc();
                outage = true;
                conn = None;
                backoff.wait().await;
            }
        }
    }
}
