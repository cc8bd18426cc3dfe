//! Prometheus metrics. One registry per process, passed explicitly (no globals), so every
//! metric is visible where it is counted. Labels are small closed sets: never a document name.

use crate::protocol::MessageType;
use std::sync::Arc;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Latency buckets from 50 µs to 5 s: update apply is microseconds, an fsync milliseconds.
/// Every `kind` of `protocol_errors_total` (a closed set: see docs/metrics.md).
pub const PROTOCOL_ERROR_KINDS: &[&str] = &[
    "malformed_frame",
    "unknown_message_type",
    "unknown_sync_type",
    "unknown_auth_type",
    "invalid_document_name",
    "frame_too_large",
    "text_frame",
    "websocket_protocol",
    "preauth_limit",
    "too_many_documents",
    "server_only_message",
    "unexpected_message",
    "bad_update",
    "bad_state_vector",
    "poisoned_update",
    "bad_awareness",
    "awareness_not_owner",
    "awareness_state_too_large",
    "awareness_too_deep",
    "awareness_too_many_clients",
    "bad_relay_update",
    "bad_relay_entry",
    "rate_limited",
    "slow_consumer",
    "document_too_large",
    "invalid_address",
    "rate_throttled",
    "auth_timeout",
];

/// Every `result` of `auth_results_total`.
pub const AUTH_RESULTS: &[&str] = &[
    "read_write",
    "readonly",
    "denied_policy",
    "missing_token",
    "malformed",
    "algorithm_not_allowed",
    "bad_signature",
    "expired",
    "not_yet_valid",
    "wrong_issuer",
    "wrong_audience",
    "wrong_token_use",
    "unknown_key",
    "jwks_unavailable",
    "refresh_failed",
];

const LATENCY_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0,
];

/// Which way a frame went: the `direction` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    In = 0,
    Out = 1,
}

impl Direction {
    const ALL: [Direction; 2] = [Direction::In, Direction::Out];

    fn label(self) -> &'static str {
        match self {
            Direction::In => "in",
            Direction::Out => "out",
        }
    }
}

/// `messages_total` and `bytes_total`, every series resolved once.
struct Traffic {
    messages: [[IntCounter; MessageType::ALL.len()]; 2],
    bytes: [IntCounter; 2],
}

impl Traffic {
    fn resolve(messages: &IntCounterVec, bytes: &IntCounterVec) -> Self {
        Traffic {
            messages: Direction::ALL.map(|d| {
                MessageType::ALL.map(|t| messages.with_label_values(&[d.label(), t.as_str()]))
            }),
            bytes: Direction::ALL.map(|d| bytes.with_label_values(&[d.label()])),
        }
    }
}

pub struct Metrics {
    registry: Registry,
    pub connections_open: IntGauge,
    pub connections_total: IntCounter,
    pub documents_open: IntGauge,
    pub documents_loaded_total: IntCounter,
    pub documents_unloaded_total: IntCounter,
    /// `messages_total{direction, type}` and `bytes_total{direction}`, each series looked up
    /// once here: a label lookup is a hash and a lock, and every frame in and out counts twice.
    traffic: Traffic,
    pub update_apply_seconds: Histogram,
    /// labels: op (load|append|compact|fence)
    pub store_seconds: HistogramVec,
    /// labels: op, kind (backend|fenced|corrupt)
    pub store_errors_total: IntCounterVec,
    pub store_pending_writes: IntGauge,
    pub store_batch_size: Histogram,
    pub store_degraded: IntGauge,
    /// labels: kind (malformed_frame, unknown_message_type, bad_update, ...)
    pub protocol_errors_total: IntCounterVec,
    /// labels: reason
    pub closes_total: IntCounterVec,
    pub writes_refused_total: IntCounter,
    /// labels: result (read_write, readonly, denied_policy, expired, bad_signature, ...)
    pub auth_results_total: IntCounterVec,
    pub origin_rejections_total: IntCounter,
    pub relay_published_total: IntCounter,
    pub relay_received_total: IntCounter,
    pub relay_dropped_total: IntCounter,
    pub relay_lag_seconds: Histogram,
    /// labels: op (publish, read, lease, heartbeat)
    pub redis_errors_total: IntCounterVec,
    pub lease_acquisitions_total: IntCounter,
    pub lease_losses_total: IntCounter,
    pub leases_owned: IntGauge,
    pub catch_ups_total: IntCounter,
    /// labels: result (ok, error)
    pub cloudwatch_publish_total: IntCounterVec,
    pub draining: IntGauge,
    /// labels: reason (node_full, address_full)
    pub connections_refused_total: IntCounterVec,
    /// labels: holder (see `budget::Holder`)
    pub memory_budget_used_bytes: IntGaugeVec,
    pub memory_budget_limit_bytes: IntGauge,
    pub memory_budget_fill_bytes: IntGauge,
    pub memory_resident_bytes: IntGauge,
    /// labels: reason (see `budget::SHED_REASONS`)
    pub memory_sheds_total: IntCounterVec,
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("static metric definition");
    registry
        .register(Box::new(c.clone()))
        .expect("unique metric name");
    c
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("static metric definition");
    registry
        .register(Box::new(g.clone()))
        .expect("unique metric name");
    g
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("static metric definition");
    registry
        .register(Box::new(c.clone()))
        .expect("unique metric name");
    c
}

fn gauge_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("static metric definition");
    registry
        .register(Box::new(g.clone()))
        .expect("unique metric name");
    g
}

fn histogram(registry: &Registry, name: &str, help: &str, buckets: &[f64]) -> Histogram {
    let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec()))
        .expect("static metric definition");
    registry
        .register(Box::new(h.clone()))
        .expect("unique metric name");
    h
}

impl Metrics {
    // The `expect`s above run on names fixed at compile time, once at start: they cannot be
    // reached by anything a client or the network does.
    pub fn new() -> Arc<Self> {
        let r = Registry::new_custom(Some("zedi".into()), None).expect("valid prefix");
        let store_seconds = HistogramVec::new(
            HistogramOpts::new("store_seconds", "Store operation latency by op.")
                .buckets(LATENCY_BUCKETS.to_vec()),
            &["op"],
        )
        .expect("static metric definition");
        r.register(Box::new(store_seconds.clone()))
            .expect("unique metric name");
        let messages_total = counter_vec(
            &r,
            "messages_total",
            "Hocuspocus messages by direction and type.",
            &["direction", "type"],
        );
        let bytes_total = counter_vec(
            &r,
            "bytes_total",
            "WebSocket payload bytes by direction.",
            &["direction"],
        );
        let traffic = Traffic::resolve(&messages_total, &bytes_total);
        let metrics = Arc::new(Metrics {
            traffic,
            connections_open: gauge(&r, "connections_open", "Open WebSocket connections."),
            connections_total: counter(&r, "connections_total", "WebSocket connections accepted."),
            documents_open: gauge(&r, "documents_open", "Documents loaded on this node."),
            documents_loaded_total: counter(&r, "documents_loaded_total", "Document loads."),
            documents_unloaded_total: counter(&r, "documents_unloaded_total", "Document unloads."),
            update_apply_seconds: histogram(
                &r,
                "update_apply_seconds",
                "Time to decode and apply one Yjs update to a document.",
                LATENCY_BUCKETS,
            ),
            store_seconds,
            store_errors_total: counter_vec(
                &r,
                "store_errors_total",
                "Failed store operations by op and error kind.",
                &["op", "kind"],
            ),
            store_pending_writes: gauge(
                &r,
                "store_pending_writes",
                "Updates accepted but not yet durable in the store.",
            ),
            store_batch_size: histogram(
                &r,
                "store_batch_size",
                "Updates per group-commit transaction.",
                &[
                    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
                ],
            ),
            store_degraded: gauge(
                &r,
                "store_degraded",
                "1 while store writes are failing and being retried.",
            ),
            protocol_errors_total: counter_vec(
                &r,
                "protocol_errors_total",
                "Bad input from clients by kind.",
                &["kind"],
            ),
            closes_total: counter_vec(
                &r,
                "closes_total",
                "Sockets or documents closed by the server, by reason.",
                &["reason"],
            ),
            writes_refused_total: counter(
                &r,
                "writes_refused_total",
                "Updates refused because the store queue was full.",
            ),
            auth_results_total: counter_vec(
                &r,
                "auth_results_total",
                "Token decisions per document by result (failure reason when refused).",
                &["result"],
            ),
            origin_rejections_total: counter(
                &r,
                "origin_rejections_total",
                "WebSocket upgrades refused because of their Origin.",
            ),
            relay_published_total: counter(
                &r,
                "relay_published_total",
                "Entries this node published to document streams.",
            ),
            relay_received_total: counter(
                &r,
                "relay_received_total",
                "Entries of other nodes received from document streams.",
            ),
            relay_dropped_total: counter(
                &r,
                "relay_dropped_total",
                "Entries not published because too many waited for Redis (others catch up from the store).",
            ),
            relay_lag_seconds: histogram(
                &r,
                "relay_lag_seconds",
                "Time from another node's publish (Redis entry id clock) to delivery here.",
                LATENCY_BUCKETS,
            ),
            redis_errors_total: counter_vec(
                &r,
                "redis_errors_total",
                "Failed Redis operations by op.",
                &["op"],
            ),
            lease_acquisitions_total: counter(
                &r,
                "lease_acquisitions_total",
                "Document leases acquired.",
            ),
            lease_losses_total: counter(
                &r,
                "lease_losses_total",
                "Document leases lost (taken over or not renewed in time).",
            ),
            leases_owned: gauge(&r, "leases_owned", "Document leases this node holds."),
            catch_ups_total: counter(
                &r,
                "catch_ups_total",
                "Documents reloaded from the store after a Redis outage.",
            ),
            cloudwatch_publish_total: counter_vec(
                &r,
                "cloudwatch_publish_total",
                "ActiveConnections datapoints sent to CloudWatch, by result.",
                &["result"],
            ),
            draining: gauge(&r, "draining", "1 from the shutdown signal until exit."),
            connections_refused_total: counter_vec(
                &r,
                "connections_refused_total",
                "WebSocket upgrades refused by a connection limit.",
                &["reason"],
            ),
            memory_budget_used_bytes: gauge_vec(
                &r,
                "memory_budget_used_bytes",
                "Memory charged to the node's budget, by holder.",
                &["holder"],
            ),
            memory_budget_limit_bytes: gauge(
                &r,
                "memory_budget_limit_bytes",
                "The node's memory budget (limits.memory_budget_bytes).",
            ),
            memory_budget_fill_bytes: gauge(
                &r,
                "memory_budget_fill_bytes",
                "What the budget's levels compare with its limit: the charges, or the resident size when measured and larger.",
            ),
            memory_resident_bytes: gauge(
                &r,
                "memory_resident_bytes",
                "The process's resident memory (VmRSS), sampled every 100 ms.",
            ),
            memory_sheds_total: counter_vec(
                &r,
                "memory_sheds_total",
                "Connections, documents and sockets refused or closed to stay inside the memory budget, by reason.",
                &["reason"],
            ),
            registry: r,
        });
        metrics.initialise_series();
        metrics
    }

    /// Creates every series of the bounded label sets at 0, so dashboards and alerts (`rate()`,
    /// `absent()`) see them before the first event.
    fn initialise_series(&self) {
        for op in ["load", "append", "compact"] {
            self.store_seconds.with_label_values(&[op]);
            for kind in ["backend", "fenced", "corrupt"] {
                self.store_errors_total.with_label_values(&[op, kind]);
            }
        }
        for kind in PROTOCOL_ERROR_KINDS {
            self.protocol_errors_total.with_label_values(&[kind]);
        }
        for code in crate::protocol::CloseCode::ALL {
            self.closes_total.with_label_values(&[code.label()]);
        }
        // One document closed (CLOSE), the socket kept.
        self.closes_total.with_label_values(&["document"]);
        for result in AUTH_RESULTS {
            self.auth_results_total.with_label_values(&[result]);
        }
        for op in ["publish", "read", "lease", "heartbeat"] {
            self.redis_errors_total.with_label_values(&[op]);
        }
        for reason in ["node_full", "address_full"] {
            self.connections_refused_total.with_label_values(&[reason]);
        }
        for holder in crate::budget::Holder::ALL {
            self.memory_budget_used_bytes
                .with_label_values(&[holder.as_str()]);
        }
        for reason in crate::budget::SHED_REASONS {
            self.memory_sheds_total.with_label_values(&[reason]);
        }
        for result in ["ok", "error"] {
            self.cloudwatch_publish_total.with_label_values(&[result]);
        }
    }

    /// One frame of `ty`, `bytes` long on the wire, in or out.
    pub fn frame(&self, direction: Direction, ty: MessageType, bytes: usize) {
        self.traffic.messages[direction as usize][ty as usize].inc();
        self.traffic.bytes[direction as usize].inc_by(bytes as u64);
    }

    /// One message of `ty` whose bytes are counted elsewhere (`frame` with 0 bytes).
    pub fn message(&self, direction: Direction, ty: MessageType) {
        self.traffic.messages[direction as usize][ty as usize].inc();
    }

    /// Bytes in or out not tied to one message type (a whole received frame before decoding).
    pub fn bytes(&self, direction: Direction, bytes: usize) {
        self.traffic.bytes[direction as usize].inc_by(bytes as u64);
    }

    pub fn protocol_error(&self, kind: &'static str) {
        self.protocol_errors_total.with_label_values(&[kind]).inc();
    }

    /// Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let encoder = TextEncoder::new();
        if let Err(e) = encoder.encode(&self.registry.gather(), &mut buf) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}
