//! Prometheus metrics. One registry per process, passed explicitly (no globals), so every
//! metric is visible where it is counted. Labels are small closed sets: never a document name.

use crate::protocol::{ErrorKind, MessageType};
use std::sync::Arc;

use prometheus::core::Collector;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Latency buckets from 50 µs to 5 s: update apply is microseconds, an fsync milliseconds.
const LATENCY_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0,
];

/// Updates per group-commit transaction, powers of two up to 1024.
const BATCH_SIZE_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
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
    fn register(registrar: &Registrar) -> Self {
        let messages = registrar.counter_vec(
            "messages_total",
            "Hocuspocus messages by direction and type.",
            &["direction", "type"],
        );
        let bytes = registrar.counter_vec(
            "bytes_total",
            "WebSocket payload bytes by direction.",
            &["direction"],
        );
        Traffic {
            messages: Direction::ALL.map(|d| {
                MessageType::ALL.map(|t| messages.with_label_values(&[d.label(), t.as_str()]))
            }),
            bytes: Direction::ALL.map(|d| bytes.with_label_values(&[d.label()])),
        }
    }
}

/// Registers metrics in the process's registry. The `expect`s run on names and options fixed at
/// compile time, once at start: nothing a client or the network does can reach them.
struct Registrar(Registry);

impl Registrar {
    fn add<M: Collector + Clone + 'static>(&self, made: prometheus::Result<M>) -> M {
        let metric = made.expect("static metric definition");
        self.0
            .register(Box::new(metric.clone()))
            .expect("unique metric name");
        metric
    }

    fn counter(&self, name: &str, help: &str) -> IntCounter {
        self.add(IntCounter::new(name, help))
    }

    fn gauge(&self, name: &str, help: &str) -> IntGauge {
        self.add(IntGauge::new(name, help))
    }

    fn counter_vec(&self, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
        self.add(IntCounterVec::new(Opts::new(name, help), labels))
    }

    fn gauge_vec(&self, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
        self.add(IntGaugeVec::new(Opts::new(name, help), labels))
    }

    fn histogram(&self, name: &str, help: &str, buckets: &[f64]) -> Histogram {
        self.add(Histogram::with_opts(
            HistogramOpts::new(name, help).buckets(buckets.to_vec()),
        ))
    }

    fn histogram_vec(
        &self,
        name: &str,
        help: &str,
        buckets: &[f64],
        labels: &[&str],
    ) -> HistogramVec {
        self.add(HistogramVec::new(
            HistogramOpts::new(name, help).buckets(buckets.to_vec()),
            labels,
        ))
    }
}

/// Declares `Metrics` from a table with one entry per registered metric: the field, which is
/// also the metric's name after the `zedi_` prefix, its type, and the [`Registrar`] method and
/// arguments that make it. A table rather than one long constructor, so that a metric's name,
/// type and help stay side by side and cannot drift apart. The `resolved` entries come first:
/// private fields made from the table's metrics (series looked up once for hot paths).
macro_rules! metrics_table {
    (
        resolved { $($(#[$rdoc:meta])* $resolved:ident: $rty:ty = $resolve:expr;)* }
        $($(#[$doc:meta])* $field:ident: $ty:ty = $make:ident($($arg:expr),* $(,)?);)*
    ) => {
        pub struct Metrics {
            registry: Registry,
            /// `messages_total{direction, type}` and `bytes_total{direction}`, each series
            /// looked up once here: a label lookup is a hash and a lock, and every frame in and
            /// out counts twice.
            traffic: Traffic,
            $($(#[$rdoc])* $resolved: $rty,)*
            $($(#[$doc])* pub $field: $ty,)*
        }

        impl Metrics {
            /// Registers every metric of the table, in the table's order.
            fn register(registrar: Registrar, traffic: Traffic) -> Self {
                $(let $field = registrar.$make(stringify!($field), $($arg),*);)*
                $(let $resolved = $resolve;)*
                Metrics {
                    $($resolved,)*
                    $($field,)*
                    traffic,
                    registry: registrar.0,
                }
            }
        }
    };
}

metrics_table! {
    resolved {
        /// Every kind of `protocol_errors_total`: some count on every throttled frame.
        protocol_errors: [IntCounter; ErrorKind::ALL.len()] = ErrorKind::ALL
            .map(|kind| protocol_errors_total.with_label_values(&[kind.label()]));
    }

    // Connections.
    connections_open: IntGauge = gauge("Open WebSocket connections.");
    connections_total: IntCounter = counter("WebSocket connections accepted.");
    /// labels: op (`crate::api::OPS`), status (HTTP status code)
    api_requests_total: IntCounterVec = counter_vec(
        "Document API requests by operation and HTTP status.",
        &["op", "status"],
    );
    ywebsocket_sessions_total: IntCounter = counter("Connections that spoke the y-websocket protocol.");
    /// labels: reason (node_full, address_full)
    connections_refused_total: IntCounterVec = counter_vec(
        "WebSocket upgrades refused by a connection limit.",
        &["reason"],
    );
    origin_rejections_total: IntCounter = counter(
        "WebSocket upgrades refused because of their Origin.",
    );
    draining: IntGauge = gauge("1 from the shutdown signal until exit.");

    // Documents.
    documents_open: IntGauge = gauge("Documents loaded on this node.");
    documents_loaded_total: IntCounter = counter("Document loads.");
    documents_unloaded_total: IntCounter = counter("Document unloads.");
    documents_at_rest: IntGauge = gauge("Loaded documents held as their encoded state only (idle).");
    document_rests_total: IntCounter = counter("Documents put to rest after documents.rest_after_ms without updates.");
    document_revivals_total: IntCounter = counter("Documents at rest brought back to a live Yjs document by an update.");
    update_apply_seconds: Histogram = histogram(
        "Time to decode and apply one Yjs update to a document.",
        LATENCY_BUCKETS,
    );

    // Client input, auth and closes.
    /// labels: kind (malformed_frame, unknown_message_type, bad_update, ...)
    protocol_errors_total: IntCounterVec = counter_vec(
        "Bad input from clients by kind.",
        &["kind"],
    );
    /// labels: reason
    closes_total: IntCounterVec = counter_vec(
        "Sockets or documents closed by the server, by reason.",
        &["reason"],
    );
    writes_refused_total: IntCounter = counter(
        "Updates refused because the store queue was full.",
    );
    /// labels: result (read_write, readonly, denied_policy, expired, bad_signature, ...)
    auth_results_total: IntCounterVec = counter_vec(
        "Token decisions per document by result (failure reason when refused).",
        &["result"],
    );

    // The store.
    /// labels: op (load|append|compact|fence)
    store_seconds: HistogramVec = histogram_vec(
        "Store operation latency by op.",
        LATENCY_BUCKETS,
        &["op"],
    );
    /// labels: op, kind (backend|fenced|corrupt)
    store_errors_total: IntCounterVec = counter_vec(
        "Failed store operations by op and error kind.",
        &["op", "kind"],
    );
    store_pending_writes: IntGauge = gauge(
        "Updates accepted but not yet durable in the store.",
    );
    store_batch_size: Histogram = histogram(
        "Updates per group-commit transaction.",
        BATCH_SIZE_BUCKETS,
    );
    store_degraded: IntGauge = gauge("1 while store writes are failing and being retried.");

    // The cluster: relay and leases.
    relay_published_total: IntCounter = counter(
        "Entries this node published to document streams.",
    );
    relay_received_total: IntCounter = counter(
        "Entries of other nodes received from document streams.",
    );
    relay_dropped_total: IntCounter = counter(
        "Entries not published because too many waited for Redis (others catch up from the store).",
    );
    relay_lag_seconds: Histogram = histogram(
        "Time from another node's publish (Redis entry id clock) to delivery here.",
        LATENCY_BUCKETS,
    );
    /// labels: op (publish, read, lease, heartbeat)
    redis_errors_total: IntCounterVec = counter_vec("Failed Redis operations by op.", &["op"]);
    lease_acquisitions_total: IntCounter = counter("Document leases acquired.");
    lease_losses_total: IntCounter = counter(
        "Document leases lost (taken over or not renewed in time).",
    );
    leases_owned: IntGauge = gauge("Document leases this node holds.");
    catch_ups_total: IntCounter = counter(
        "Documents reloaded from the store after a Redis outage.",
    );

    // CloudWatch.
    /// labels: result (ok, error)
    cloudwatch_publish_total: IntCounterVec = counter_vec(
        "ActiveConnections datapoints sent to CloudWatch, by result.",
        &["result"],
    );

    // Webhooks.
    /// labels: event (connect, create, change, disconnect)
    webhooks_sent_total: IntCounterVec = counter_vec(
        "Webhooks delivered (the receiver answered 2xx), by event.",
        &["event"],
    );
    /// labels: event
    webhook_attempts_failed_total: IntCounterVec = counter_vec(
        "Webhook attempts that failed (non-2xx answer, timeout or connection error), by event.",
        &["event"],
    );
    /// labels: event
    webhook_retries_total: IntCounterVec = counter_vec(
        "Webhook attempts retried after a failure, by event.",
        &["event"],
    );
    /// labels: event
    webhooks_given_up_total: IntCounterVec = counter_vec(
        "Webhooks given up after webhooks.max_attempts failed attempts, by event.",
        &["event"],
    );
    webhooks_dropped_total: IntCounter = counter(
        "Webhooks not queued because webhooks.max_queued deliveries were pending.",
    );

    // The memory budget.
    /// labels: holder (see `budget::Holder`)
    memory_budget_used_bytes: IntGaugeVec = gauge_vec(
        "Memory charged to the node's budget, by holder.",
        &["holder"],
    );
    memory_budget_limit_bytes: IntGauge = gauge(
        "The node's memory budget (limits.memory_budget_bytes).",
    );
    memory_budget_fill_bytes: IntGauge = gauge(
        "What the budget's levels compare with its limit: the charges, or the resident size when measured and larger.",
    );
    memory_resident_bytes: IntGauge = gauge(
        "The process's resident memory (VmRSS), sampled every 100 ms.",
    );
    /// labels: reason (see `budget::ShedReason`)
    memory_sheds_total: IntCounterVec = counter_vec(
        "Connections, documents and sockets refused or closed to stay inside the memory budget, by reason.",
        &["reason"],
    );
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        // A fixed, valid prefix: cannot fail.
        let registry = Registry::new_custom(Some("zedi".into()), None).expect("valid prefix");
        let registrar = Registrar(registry);
        let traffic = Traffic::register(&registrar);
        let metrics = Arc::new(Metrics::register(registrar, traffic));
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
        for kind in ErrorKind::ALL {
            self.protocol_errors_total
                .with_label_values(&[kind.label()]);
        }
        for code in crate::protocol::CloseCode::ALL {
            self.closes_total.with_label_values(&[code.label()]);
        }
        // One document closed (CLOSE), the socket kept.
        self.closes_total.with_label_values(&["document"]);
        for result in crate::auth::AuthResult::all() {
            self.auth_results_total.with_label_values(&[result.label()]);
        }
        for op in ["publish", "read", "lease", "heartbeat"] {
            self.redis_errors_total.with_label_values(&[op]);
        }
        // The status label is open-ended (whatever HTTP status a call ended with): each
        // operation's success series exists from the start.
        for op in crate::api::OPS {
            self.api_requests_total.with_label_values(&[op, "200"]);
        }
        for reason in ["node_full", "address_full"] {
            self.connections_refused_total.with_label_values(&[reason]);
        }
        for holder in crate::budget::Holder::ALL {
            self.memory_budget_used_bytes
                .with_label_values(&[holder.as_str()]);
        }
        for reason in crate::budget::ShedReason::ALL {
            self.memory_sheds_total.with_label_values(&[reason.label()]);
        }
        for result in ["ok", "error"] {
            self.cloudwatch_publish_total.with_label_values(&[result]);
        }
        // Webhooks.
        for event in crate::webhooks::WebhookEvent::ALL {
            for counter in [
                &self.webhooks_sent_total,
                &self.webhook_attempts_failed_total,
                &self.webhook_retries_total,
                &self.webhooks_given_up_total,
            ] {
                counter.with_label_values(&[event.as_str()]);
            }
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

    pub fn protocol_error(&self, kind: ErrorKind) {
        self.protocol_errors[kind.index()].inc();
    }

    /// Counts `count` refusals of one kind at once (entries of one awareness update).
    pub fn protocol_errors(&self, kind: ErrorKind, count: u64) {
        self.protocol_errors[kind.index()].inc_by(count);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The row of `metric` in docs/metrics.md.
    fn documented(metric: &str) -> &'static str {
        include_str!("../docs/metrics.md")
            .lines()
            .find(|line| line.starts_with(&format!("| `{metric}`")))
            .unwrap_or_else(|| panic!("{metric} is not in docs/metrics.md"))
    }

    fn labels_of(row: &str) -> Vec<&str> {
        row.split(['|', ':', ',', '('])
            .map(str::trim)
            .filter(|w| !w.is_empty())
            .collect()
    }

    #[test]
    fn every_label_of_the_closed_sets_is_registered_and_documented() {
        let metrics = Metrics::new();
        let text = metrics.render();
        let kinds = labels_of(documented("zedi_protocol_errors_total"));
        for kind in ErrorKind::ALL {
            assert!(kinds.contains(&kind.label()), "{kind:?} not documented");
            let series = format!("zedi_protocol_errors_total{{kind=\"{}\"}} 0", kind.label());
            assert!(text.contains(&series), "{series} not registered at start");
        }
        let reasons = labels_of(documented("zedi_memory_sheds_total"));
        for reason in crate::budget::ShedReason::ALL {
            assert!(
                reasons.contains(&reason.label()),
                "{reason:?} not documented"
            );
            let series = format!("zedi_memory_sheds_total{{reason=\"{}\"}} 0", reason.label());
            assert!(text.contains(&series), "{series} not registered at start");
        }
        let results = labels_of(documented("zedi_auth_results_total"));
        for result in crate::auth::AuthResult::all() {
            assert!(
                results.contains(&result.label()),
                "{result:?} not documented"
            );
            let series = format!("zedi_auth_results_total{{result=\"{}\"}} 0", result.label());
            assert!(text.contains(&series), "{series} not registered at start");
        }
    }
}
