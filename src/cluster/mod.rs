//! A node of a cluster, when `REDIS_URL` is set: the [`ClusterActor`] keeps this node's
//! heartbeat and the leases of the documents it has loaded; [`relay`] carries updates,
//! awareness and stateless messages between nodes; [`lease`] and [`keys`] are the Redis side.
//!
//! Ownership only decides who compacts the store's log into snapshots (with the lease's fencing
//! token). Durability never depends on Redis: every node appends its own clients' updates to the
//! shared PostgreSQL log before acknowledging them.

mod actor;
pub mod keys;
pub mod lease;
pub mod relay;
mod settings;

pub use actor::{ClusterActor, DropLease, LeaseChanged, ReleaseAll, WantLease};
pub use settings::ClusterSettings;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use actix::prelude::*;
use deadpool_redis::{Pool, PoolConfig, Runtime, Timeouts};

use crate::metrics::Metrics;
use keys::Keys;
use relay::{RedisHealth, RelayLink, RelayPublisher, RelayReader, StreamBounds};

#[derive(Debug, thiserror::Error)]
#[error("cannot set up Redis: {0}")]
pub struct ClusterError(String);

/// What `/health` shows of the cluster.
#[derive(Debug, Default)]
pub struct ClusterStatus {
    pub redis: Arc<RedisHealth>,
    pub lease_ok: AtomicBool,
    pub nodes: AtomicI64,
    pub owned: AtomicI64,
}

impl ClusterStatus {
    pub fn redis_ok(&self) -> bool {
        self.redis.is_ok() && self.lease_ok.load(Ordering::Relaxed)
    }
}

/// What document actors need of the cluster; cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    pub actor: Addr<ClusterActor>,
    pub publisher: RelayPublisher,
    pub reader: RelayReader,
    pub pool: Pool,
    pub keys: Keys,
    pub status: Arc<ClusterStatus>,
}

/// Builds the pool, checks Redis answers, and starts the actor and the relay tasks.
pub async fn start(
    settings: &ClusterSettings,
    node_id: Arc<str>,
    metrics: Arc<Metrics>,
    connections: Arc<dyn Fn() -> i64 + Send + Sync>,
) -> Result<Cluster, ClusterError> {
    crate::tls::install_crypto_provider();
    let url = settings
        .redis_url
        .as_ref()
        .ok_or_else(|| ClusterError("cluster.redis_url is not set".into()))?;
    let mut config = deadpool_redis::Config::from_url(url.expose());
    let timeout = Some(settings.redis_timeout);
    config.pool = Some(PoolConfig {
        max_size: 16,
        timeouts: Timeouts {
            wait: timeout,
            create: timeout,
            recycle: timeout,
        },
        ..PoolConfig::default()
    });
    let pool = config
        .create_pool(Some(Runtime::Tokio1))
        .map_err(|e| ClusterError(e.to_string()))?;
    {
        let mut conn = pool
            .get()
            .await
            .map_err(|e| ClusterError(format!("Redis unreachable: {e}")))?;
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .map_err(|e| ClusterError(format!("Redis PING failed: {e}")))?;
    }
    let keys = Keys::new(&settings.key_prefix);
    let redis_health = Arc::new(RedisHealth::default());
    let status = Arc::new(ClusterStatus {
        redis: Arc::clone(&redis_health),
        ..ClusterStatus::default()
    });
    status.lease_ok.store(true, Ordering::Relaxed);
    let link = RelayLink {
        pool: pool.clone(),
        keys: keys.clone(),
        node_id: Arc::clone(&node_id),
        health: redis_health,
        metrics: Arc::clone(&metrics),
        retry: settings.retry(),
    };
    let bounds = StreamBounds {
        max_len: settings.stream_max_len,
        ttl: settings.stream_ttl,
    };
    let publisher = RelayPublisher::start(link.clone(), bounds, settings.max_unpublished);
    let reader = RelayReader::start(link, settings.relay_block);
    let actor = ClusterActor::new(
        node_id,
        pool.clone(),
        keys.clone(),
        settings.clone(),
        Arc::clone(&status),
        metrics,
        connections,
    )
    .start();
    Ok(Cluster {
        actor,
        publisher,
        reader,
        pool,
        keys,
        status,
    })
}
