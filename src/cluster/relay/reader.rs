//! The reading half of the relay: one task that blocks on XREAD over every stream of a loaded
//! document and hands other nodes' entries to the document actors.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use actix::prelude::*;
use bytes::Bytes;
use deadpool_redis::Pool;
use prometheus::IntCounter;
use redis::Value;
use redis::streams::StreamReadReply;
use tokio::sync::mpsc;

use super::{CatchUp, RedisHealth, RelayKind, RelayLink, RemoteEntry};
use crate::backoff::Backoff;
use crate::cluster::keys::Keys;
use crate::metrics::Metrics;
use crate::protocol::ErrorKind;

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
    /// Starts the reading task; one XREAD waits at most `block`.
    pub fn start(link: RelayLink, block: Duration) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        link.health.reader_ok.store(true, Ordering::Relaxed);
        tokio::spawn(read_loop(rx, link, block));
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

async fn read_loop(rx: mpsc::UnboundedReceiver<ReaderCommand>, link: RelayLink, block: Duration) {
    let RelayLink {
        pool,
        keys,
        node_id,
        health,
        metrics,
        retry,
    } = link;
    let mut reader = StreamReader {
        read_errors: metrics.redis_errors_total.with_label_values(&["read"]),
        rx,
        subs: HashMap::new(),
        pool,
        conn: None,
        outage: false,
        backoff: Backoff::new(retry),
        keys,
        node_id,
        block,
        health,
        metrics,
    };
    while reader.apply_commands().await {
        if reader.conn.is_none() && !reader.connect().await {
            continue;
        }
        reader.read_once().await;
    }
}

/// The reading task's state: the subscriptions, its own connection and whether Redis was
/// unreachable since the last successful read.
struct StreamReader {
    rx: mpsc::UnboundedReceiver<ReaderCommand>,
    subs: HashMap<Arc<str>, Subscription>,
    pool: Pool,
    /// A dedicated connection: a blocking XREAD would stall every command multiplexed with it.
    conn: Option<deadpool_redis::Connection>,
    outage: bool,
    backoff: Backoff,
    keys: Keys,
    node_id: Arc<str>,
    block: Duration,
    health: Arc<RedisHealth>,
    metrics: Arc<Metrics>,
    /// `redis_errors_total{op="read"}`, looked up once.
    read_errors: IntCounter,
}

impl StreamReader {
    /// Applies subscription changes; with nothing to read, sleeps until there is. `false` once
    /// every handle is gone.
    async fn apply_commands(&mut self) -> bool {
        loop {
            let command = if self.subs.is_empty() {
                match self.rx.recv().await {
                    Some(c) => c,
                    None => return false,
                }
            } else {
                match self.rx.try_recv() {
                    Ok(c) => c,
                    Err(mpsc::error::TryRecvError::Empty) => return true,
                    Err(mpsc::error::TryRecvError::Disconnected) => return false,
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
                    let sub = Subscription {
                        id,
                        last_id: from,
                        to,
                        catch_up,
                    };
                    self.subs.insert(doc, sub);
                }
                ReaderCommand::Unsubscribe { doc, id } => {
                    if self.subs.get(&doc).is_some_and(|s| s.id == id) {
                        self.subs.remove(&doc);
                    }
                }
            }
        }
    }

    /// Takes a connection from the pool; on failure records the outage and waits out the
    /// backoff.
    async fn connect(&mut self) -> bool {
        match self.pool.get().await {
            Ok(c) => {
                self.conn = Some(c);
                true
            }
            Err(error) => {
                if self.health.reader_ok.swap(false, Ordering::Relaxed) {
                    tracing::warn!(%error, "relay reader cannot reach Redis; retrying");
                }
                self.outage = true;
                self.count_read_error();
                self.backoff.wait().await;
                false
            }
        }
    }

    /// One blocking XREAD over every subscribed stream, from each one's last id.
    async fn read_once(&mut self) {
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        let docs: Vec<Arc<str>> = self.subs.keys().cloned().collect();
        let mut cmd = redis::cmd("XREAD");
        cmd.arg("COUNT")
            .arg(512)
            .arg("BLOCK")
            .arg(self.block.as_millis() as u64)
            .arg("STREAMS");
        for doc in &docs {
            cmd.arg(self.keys.stream(doc));
        }
        for doc in &docs {
            cmd.arg(self.subs.get(doc).map_or("0-0", |s| s.last_id.as_str()));
        }
        match cmd.query_async::<Option<StreamReadReply>>(conn).await {
            Ok(reply) => {
                self.on_read_ok();
                for stream in reply.map(|r| r.keys).unwrap_or_default() {
                    self.deliver(stream);
                }
            }
            Err(error) => {
                if self.health.reader_ok.swap(false, Ordering::Relaxed) {
                    tracing::warn!(%error, "relay read failed; reconnecting");
                }
                self.count_read_error();
                self.outage = true;
                self.conn = None;
                self.backoff.wait().await;
            }
        }
    }

    /// Redis answered: health is back, and after an outage every document catches up.
    fn on_read_ok(&mut self) {
        self.backoff.reset();
        if !self.health.reader_ok.swap(true, Ordering::Relaxed) {
            tracing::info!("relay reader reconnected");
        }
        if self.outage {
            // Whatever other nodes persisted while we could not read is in the store.
            self.outage = false;
            for sub in self.subs.values() {
                sub.catch_up.do_send(CatchUp);
            }
        }
    }

    /// Hands a stream's new entries to its subscriber, skipping this node's own.
    fn deliver(&mut self, stream: redis::streams::StreamKey) {
        let Some(doc) = self.keys.doc_of_stream(&stream.key) else {
            return;
        };
        let Some(sub) = self.subs.get_mut(doc) else {
            return;
        };
        for entry in stream.ids {
            sub.last_id = entry.id.clone();
            observe_lag(&self.metrics, &entry.id);
            if field(&entry.map, "n") == Some(self.node_id.as_bytes()) {
                continue;
            }
            let (Some(kind), Some(payload)) = (
                field(&entry.map, "k").and_then(RelayKind::from_tag),
                field(&entry.map, "d"),
            ) else {
                self.metrics.protocol_error(ErrorKind::BadRelayEntry);
                continue;
            };
            self.metrics.relay_received_total.inc();
            sub.to.do_send(RemoteEntry {
                kind,
                payload: Bytes::copy_from_slice(payload),
            });
        }
    }

    fn count_read_error(&self) {
        self.read_errors.inc();
    }
}

/// Entry ids start with the Redis server's clock in ms: lag from publish to delivery here,
/// without adding a byte to any entry.
fn observe_lag(metrics: &Metrics, entry_id: &str) {
    let Some(published_ms) = entry_id
        .split('-')
        .next()
        .and_then(|ms| ms.parse::<u64>().ok())
    else {
        return;
    };
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    metrics
        .relay_lag_seconds
        .observe(now_ms.saturating_sub(published_ms) as f64 / 1000.0);
}
