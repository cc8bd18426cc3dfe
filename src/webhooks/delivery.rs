//! Delivery: each queued event is one task on the runtime that started [`super::Webhooks`],
//! which POSTs it and retries it with backoff until it is delivered or `max_attempts` fail.
//!
//! - The queue is a semaphore of `max_queued` permits rather than a channel: a permit is taken
//!   by `send` (without waiting: none left means dropped) and held until the delivery ends, so
//!   the bound covers deliveries waiting, in flight and between retries alike. Memory stays
//!   bounded even when a receiver fails fast and every delivery sits in backoff.
//! - At most [`IN_FLIGHT`] requests run at once, and a delivery holds that slot only during
//!   an attempt, never while it waits for a retry: a receiver that hangs on some requests (or
//!   refuses some documents) delays the others by a slot, not by its whole retry schedule.
//! - Tokio's semaphore is fair, so attempts start in the order they asked (a retry queues
//!   behind the first attempts that were already waiting).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use prometheus::IntCounter;
use reqwest::header::CONTENT_TYPE;
use tokio::runtime::Handle;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};

use super::{SIGNATURE_HEADER, WebhookEvent, WebhookSettings, encode_body, signature};
use crate::backoff::{Backoff, BackoffPolicy};
use crate::metrics::Metrics;
use crate::values::{Secret, SecretUrl};

/// Requests in flight at once. Enough that one hanging request does not hold up the rest;
/// few enough that a burst of events does not open a connection storm on the receiver.
const IN_FLIGHT: usize = 4;

/// Response bytes read (and thrown away) after the status, so the connection can be reused;
/// a longer body is abandoned with its connection.
const MAX_DRAINED_BYTES: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub(super) enum StartError {
    #[error("webhooks must start inside the actix System (no Tokio runtime here)")]
    NoRuntime,
    /// Settings validation refuses such a URL first; the text is the `url` crate's reason.
    #[error("webhooks.url is not a URL: {0}")]
    Url(String),
    #[error("cannot build the webhook HTTP client: {0}")]
    Client(#[source] reqwest::Error),
}

/// Why one attempt failed. The URL is never part of it (it may carry a password).
#[derive(Debug, thiserror::Error)]
enum AttemptError {
    #[error("HTTP status {0}")]
    Status(u16),
    #[error("no response within the timeout")]
    Timeout,
    /// The error and its causes (reqwest's own text names only the kind of failure).
    #[error("{0}")]
    Request(String),
}

/// The per-event series, resolved once at start (a label lookup is a hash and a lock).
struct Counters {
    sent: [IntCounter; WebhookEvent::ALL.len()],
    attempts_failed: [IntCounter; WebhookEvent::ALL.len()],
    retries: [IntCounter; WebhookEvent::ALL.len()],
    given_up: [IntCounter; WebhookEvent::ALL.len()],
    dropped: IntCounter,
}

impl Counters {
    fn resolve(metrics: &Metrics) -> Self {
        let each = |vec: &prometheus::IntCounterVec| {
            WebhookEvent::ALL.map(|event| vec.with_label_values(&[event.as_str()]))
        };
        Counters {
            sent: each(&metrics.webhooks_sent_total),
            attempts_failed: each(&metrics.webhook_attempts_failed_total),
            retries: each(&metrics.webhook_retries_total),
            given_up: each(&metrics.webhooks_given_up_total),
            dropped: metrics.webhooks_dropped_total.clone(),
        }
    }
}

pub(super) struct Deliverer {
    runtime: Handle,
    client: reqwest::Client,
    url: reqwest::Url,
    /// The URL as logs may show it: no password, no query (which may hold a token).
    shown_url: String,
    /// `None`: the empty key. Kept as a `Secret` so no `Debug` can ever print it.
    secret: Option<Secret>,
    max_attempts: u32,
    backoff: BackoffPolicy,
    max_queued: usize,
    queue: Arc<Semaphore>,
    in_flight: Arc<Semaphore>,
    counters: Counters,
    /// Set by the first drop of a run of drops, cleared by the next delivery accepted: one
    /// warning per episode of a full queue, not one per event.
    dropping: AtomicBool,
}

impl Deliverer {
    pub(super) fn new(
        settings: &WebhookSettings,
        url: &SecretUrl,
        metrics: &Metrics,
    ) -> Result<Self, StartError> {
        let runtime = Handle::try_current().map_err(|_| StartError::NoRuntime)?;
        let url = reqwest::Url::parse(url.expose()).map_err(|e| StartError::Url(e.to_string()))?;
        // reqwest is built without a bundled crypto provider: ring, as for JWKS.
        crate::tls::install_crypto_provider();
        let client = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout)
            .user_agent(concat!("zedi-sync/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(StartError::Client)?;
        let shown_url = format!(
            "{}://{}{}",
            url.scheme(),
            url.host_str().unwrap_or(""),
            url.port().map_or(String::new(), |p| format!(":{p}"))
        ) + url.path();
        Ok(Deliverer {
            runtime,
            client,
            url,
            shown_url,
            secret: settings.secret.clone(),
            max_attempts: settings.max_attempts,
            backoff: settings.backoff(),
            max_queued: settings.max_queued,
            queue: Arc::new(Semaphore::new(settings.max_queued)),
            in_flight: Arc::new(Semaphore::new(IN_FLIGHT)),
            counters: Counters::resolve(metrics),
            dropping: AtomicBool::new(false),
        })
    }

    pub(super) fn shown_url(&self) -> &str {
        &self.shown_url
    }

    /// Takes a queue place without waiting and starts the delivery; drops it when the queue
    /// is full.
    pub(super) fn enqueue(self: &Arc<Self>, event: WebhookEvent, payload: serde_json::Value) {
        match Arc::clone(&self.queue).try_acquire_owned() {
            Ok(place) => {
                if self.dropping.load(Ordering::Relaxed) {
                    self.dropping.store(false, Ordering::Relaxed);
                }
                self.runtime
                    .spawn(Arc::clone(self).deliver(event, payload, place));
            }
            Err(TryAcquireError::NoPermits | TryAcquireError::Closed) => {
                self.counters.dropped.inc();
                if !self.dropping.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        event = event.as_str(),
                        max_queued = self.max_queued,
                        "webhook queue full: dropping deliveries until it has room"
                    );
                }
            }
        }
    }

    /// One delivery, from its first attempt to success or giving up. `_place` is its queue
    /// place, given back when this returns.
    async fn deliver(
        self: Arc<Self>,
        event: WebhookEvent,
        payload: serde_json::Value,
        _place: OwnedSemaphorePermit,
    ) {
        let i = event.index();
        // For the logs only; the payload's shape is the caller's.
        let document = payload
            .get("documentName")
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned);
        let body = match encode_body(event, &payload) {
            Ok(body) => Bytes::from(body),
            Err(error) => {
                // A `Value` always serializes; counted as given up should that ever change.
                self.counters.given_up[i].inc();
                tracing::error!(event = event.as_str(), ?document, %error, "webhook payload not serializable");
                return;
            }
        };
        // The bytes are all that is kept from here on (retries resend them unchanged).
        drop(payload);
        let signature = signature(self.secret.as_ref().map_or("", Secret::expose), &body);
        let mut backoff = Backoff::new(self.backoff);
        let mut attempt = 1;
        let last_error = loop {
            let result = {
                let Ok(_slot) = self.in_flight.acquire().await else {
                    return; // never closed
                };
                self.attempt(&body, &signature).await
            };
            let error = match result {
                Ok(()) => {
                    self.counters.sent[i].inc();
                    tracing::debug!(
                        event = event.as_str(),
                        ?document,
                        attempt,
                        "webhook delivered"
                    );
                    return;
                }
                Err(error) => error,
            };
            self.counters.attempts_failed[i].inc();
            if attempt >= self.max_attempts {
                break error;
            }
            tracing::debug!(
                event = event.as_str(), ?document, attempt, %error,
                retry_in_ms = backoff.delay().as_millis() as u64,
                "webhook attempt failed; retrying"
            );
            self.counters.retries[i].inc();
            backoff.wait().await;
            attempt += 1;
        };
        self.counters.given_up[i].inc();
        tracing::warn!(
            event = event.as_str(), ?document, attempts = attempt, error = %last_error,
            url = %self.shown_url, "webhook given up: every attempt failed"
        );
    }

    /// One POST; `Ok` on a 2xx answer.
    async fn attempt(&self, body: &Bytes, signature: &str) -> Result<(), AttemptError> {
        let sent = self
            .client
            .post(self.url.clone())
            .header(CONTENT_TYPE, "application/json")
            .header(SIGNATURE_HEADER, signature)
            .body(body.clone())
            .send()
            .await;
        match sent {
            Ok(response) => {
                let status = response.status();
                drain(response).await;
                if status.is_success() {
                    Ok(())
                } else {
                    Err(AttemptError::Status(status.as_u16()))
                }
            }
            Err(error) if error.is_timeout() => Err(AttemptError::Timeout),
            Err(error) => Err(AttemptError::Request(with_causes(&error.without_url()))),
        }
    }
}

/// `error: cause: cause ...`, as one log field.
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// Reads a short response to its end (so its connection goes back to the pool) and ignores
/// it: the extension uses the answer only for `connect` and `create`, which are notifications
/// here. A failure while reading does not change the status already received.
async fn drain(mut response: reqwest::Response) {
    let mut read = 0;
    while let Ok(Some(chunk)) = response.chunk().await {
        read += chunk.len();
        if read > MAX_DRAINED_BYTES {
            return;
        }
    }
}
