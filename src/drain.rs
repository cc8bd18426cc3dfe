//! Graceful drain on SIGTERM/SIGINT, for ECS deploys, scale-in and Fargate Spot interruptions:
//!
//! 1. `/health` answers 503 at once and new WebSocket upgrades are refused, so the ALB stops
//!    routing here;
//! 2. after `server.drain_delay_ms` (time for the ALB to notice; 0 when ECS has deregistered the
//!    task before signalling), every accepted update is made durable;
//! 3. leases are released, so other nodes take documents over without waiting for expiry;
//! 4. every socket is closed with 4205, after which providers reconnect (through the ALB, to
//!    another task) and resync; a last flush covers updates that arrived meanwhile;
//! 5. the process exits 0, well within `server.drain_deadline_ms` (under ECS's 30 s stop
//!    timeout). A second signal exits at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::watch;

use crate::cluster::{Cluster, ReleaseAll};
use crate::metrics::Metrics;
use crate::persistence::Persistence;

/// Shared drain state: the flag `/health` and the upgrade handler read, and the signal every
/// session waits on.
#[derive(Clone)]
pub struct DrainState {
    draining: Arc<AtomicBool>,
    close_sessions: watch::Sender<bool>,
}

impl Default for DrainState {
    fn default() -> Self {
        Self::new()
    }
}

impl DrainState {
    pub fn new() -> Self {
        DrainState {
            draining: Arc::new(AtomicBool::new(false)),
            close_sessions: watch::channel(false).0,
        }
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// What a session waits on: becomes `true` when it must close.
    pub fn sessions_signal(&self) -> watch::Receiver<bool> {
        self.close_sessions.subscribe()
    }
}

/// What the drain needs to act on.
pub struct Drainer {
    pub state: DrainState,
    pub persistence: Persistence,
    pub cluster: Option<Cluster>,
    pub metrics: Arc<Metrics>,
    pub delay: Duration,
    pub deadline: Duration,
}

impl Drainer {
    /// Runs steps 1–4; the caller stops the HTTP server and exits. Bounded by the deadline.
    pub async fn run(self) {
        let Drainer {
            state,
            persistence,
            cluster,
            metrics,
            delay,
            deadline,
        } = self;
        state.draining.store(true, Ordering::Relaxed);
        metrics.draining.set(1);
        tracing::info!(
            delay_ms = delay.as_millis() as u64,
            "draining: /health is 503, new connections refused"
        );
        let steps = async {
            tokio::time::sleep(delay).await;
            persistence.flush().await;
            tracing::info!("draining: every accepted update is durable");
            if let Some(cluster) = &cluster {
                match cluster.actor.send(ReleaseAll).await {
                    Ok(released) => tracing::info!(released, "draining: leases released"),
                    Err(e) => tracing::warn!(error = %e, "draining: could not release leases"),
                }
            }
            let _ = state.close_sessions.send(true);
            // Sessions close on their own threads; give them a moment, then flush what they
            // handed over on the way out.
            tokio::time::sleep(Duration::from_millis(200)).await;
            persistence.flush().await;
            tracing::info!("draining: connections closed, store flushed");
        };
        if tokio::time::timeout(deadline, steps).await.is_err() {
            tracing::error!(
                deadline_ms = deadline.as_millis() as u64,
                "drain did not finish within its deadline; exiting anyway"
            );
        }
    }
}

/// Completes on the first SIGTERM or SIGINT.
pub async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
