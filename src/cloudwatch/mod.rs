//! `ActiveConnections` for ECS autoscaling: every `cloudwatch.interval_secs` this node reports
//! its open WebSockets, either with `PutMetricData` (mode `api`, credentials from the standard
//! AWS chain, i.e. the ECS task role) or as a CloudWatch Embedded Metric Format line on stdout
//! (mode `emf`: no API call, no IAM permission; CloudWatch Logs extracts the metric).
//!
//! It runs on every node, clustered or not: the scaling signal is per task and must not depend
//! on Redis being configured. A failing publish is retried briefly, counted and logged; it never
//! blocks or slows serving (the actor only reads a gauge).
//!
//! Beside it, unless `cloudwatch.memory_metric_name` is empty, goes a second datum with the same
//! dimensions: the memory budget's use in percent (`MemoryPressure`), in the same API call or
//! EMF line, so that an alarm (or a step-scaling policy) can see a task filling up before it
//! starts shedding.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix::prelude::*;
use aws_sdk_cloudwatch::types::{Dimension, MetricDatum, StandardUnit};
use prometheus::IntGauge;

use crate::budget::MemoryBudget;
use crate::metrics::Metrics;

mod settings;
pub use settings::{CloudWatchMode, CloudWatchSettings, MetricDimension};

/// Attempts per datapoint before it is given up (the next interval brings a fresh one); the
/// SDK's standard retry mode waits between them (from 200 ms, doubling, with jitter).
const ATTEMPTS: u32 = 3;
const FIRST_RETRY: Duration = Duration::from_millis(200);
/// One attempt of `PutMetricData`; the SDK gives up an attempt (and retries) after this.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

pub struct CloudWatchActor {
    settings: CloudWatchSettings,
    client: Option<aws_sdk_cloudwatch::Client>,
    connections: IntGauge,
    budget: Arc<MemoryBudget>,
    metrics: Arc<Metrics>,
    publishing: bool,
}

/// What one interval reports.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// Open WebSockets (`metric_name`).
    pub connections: i64,
    /// The memory budget's use in percent (`memory_metric_name`).
    pub memory_percent: f64,
}

impl Sample {
    fn read(connections: &IntGauge, budget: &MemoryBudget) -> Self {
        Sample {
            connections: connections.get(),
            memory_percent: percent_value(budget.percent()),
        }
    }
}

/// Two decimals (0.01 % of a 384 MiB budget is 40 KB: finer says nothing an alarm can use), and
/// a finite number whatever the division gave, since JSON has no NaN.
fn percent_value(percent: f64) -> f64 {
    if percent.is_finite() {
        (percent * 100.0).round() / 100.0
    } else {
        0.0
    }
}

/// The memory metric's name, or `None` when it is switched off (empty).
fn memory_metric(settings: &CloudWatchSettings) -> Option<&str> {
    settings.memory_metric_name.as_deref()
}

/// The EMF document for one interval (pure, so tests can check its shape alone): one line,
/// one directive, both metrics under the same dimensions.
pub fn emf_line(settings: &CloudWatchSettings, sample: Sample, timestamp_ms: u128) -> String {
    let mut root = serde_json::Map::new();
    let dimensions = &settings.dimensions;
    let dimension_names: Vec<&str> = dimensions.iter().map(|d| d.name.as_str()).collect();
    let mut metrics = vec![serde_json::json!({"Name": settings.metric_name, "Unit": "Count"})];
    if let Some(name) = memory_metric(settings) {
        metrics.push(serde_json::json!({"Name": name, "Unit": "Percent"}));
    }
    root.insert(
        "_aws".into(),
        serde_json::json!({
            "Timestamp": timestamp_ms as u64,
            "CloudWatchMetrics": [{
                "Namespace": settings.namespace,
                "Dimensions": [dimension_names],
                "Metrics": metrics,
            }],
        }),
    );
    for d in dimensions {
        root.insert(d.name.clone(), serde_json::Value::String(d.value.clone()));
    }
    root.insert(
        settings.metric_name.clone(),
        serde_json::Value::from(sample.connections),
    );
    if let Some(name) = memory_metric(settings) {
        root.insert(
            name.to_string(),
            serde_json::Value::from(sample.memory_percent),
        );
    }
    serde_json::Value::Object(root).to_string()
}

impl CloudWatchActor {
    /// `None` when the mode is `off`.
    pub fn new(
        settings: &CloudWatchSettings,
        connections: IntGauge,
        budget: Arc<MemoryBudget>,
        metrics: Arc<Metrics>,
    ) -> Option<Self> {
        if settings.mode == CloudWatchMode::Off {
            return None;
        }
        Some(CloudWatchActor {
            settings: settings.clone(),
            client: None,
            connections,
            budget,
            metrics,
            publishing: false,
        })
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        let sample = Sample::read(&self.connections, &self.budget);
        match self.settings.mode {
            CloudWatchMode::Off => {}
            CloudWatchMode::Emf => {
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis());
                let line = emf_line(&self.settings, sample, now);
                use std::io::Write;
                let mut out = std::io::stdout().lock();
                let ok = writeln!(out, "{line}").and_then(|_| out.flush()).is_ok();
                self.metrics
                    .cloudwatch_publish_total
                    .with_label_values(&[if ok { "ok" } else { "error" }])
                    .inc();
            }
            CloudWatchMode::Api => {
                // A datapoint still being retried is not overtaken: the next tick brings a
                // fresh value anyway.
                if self.publishing {
                    return;
                }
                let Some(client) = self.client.clone() else {
                    return;
                };
                self.publishing = true;
                let data = self.data(sample);
                let value = sample.connections;
                let namespace = self.settings.namespace.clone();
                ctx.spawn(
                    async move {
                        // Retries and per-attempt timeouts are the SDK's (see `sdk_config`).
                        client
                            .put_metric_data()
                            .namespace(&namespace)
                            .set_metric_data(Some(data))
                            .send()
                            .await
                            .map_err(|e| aws_sdk_cloudwatch::error::DisplayErrorContext(e).to_string())
                    }
                    .into_actor(self)
                    .map(move |result, act, _| {
                        act.publishing = false;
                        match result {
                            Ok(_) => act.metrics.cloudwatch_publish_total.with_label_values(&["ok"]).inc(),
                            Err(error) => {
                                act.metrics.cloudwatch_publish_total.with_label_values(&["error"]).inc();
                                tracing::warn!(%error, value, "PutMetricData failed; the next interval sends a fresh datapoint");
                            }
                        }
                    }),
                );
            }
        }
    }
}

impl CloudWatchActor {
    /// The datums of one `PutMetricData` call: both metrics, same dimensions and timestamp.
    fn data(&self, sample: Sample) -> Vec<MetricDatum> {
        let timestamp = aws_sdk_cloudwatch::primitives::DateTime::from(SystemTime::now());
        let dimensions: Vec<Dimension> = self
            .settings
            .dimensions
            .iter()
            .map(|d| Dimension::builder().name(&d.name).value(&d.value).build())
            .collect();
        let datum = |name: &str, unit: StandardUnit, value: f64| {
            MetricDatum::builder()
                .metric_name(name)
                .unit(unit)
                .value(value)
                .timestamp(timestamp)
                .set_dimensions(Some(dimensions.clone()))
                .build()
        };
        let mut data = vec![datum(
            &self.settings.metric_name,
            StandardUnit::Count,
            sample.connections as f64,
        )];
        if let Some(name) = memory_metric(&self.settings) {
            data.push(datum(name, StandardUnit::Percent, sample.memory_percent));
        }
        data
    }
}

/// The SDK's configuration: region and endpoint from the settings, and its own standard retry
/// mode and per-attempt timeout instead of a loop of ours, so that backoff, jitter and which
/// errors are worth retrying follow the SDK (throttling is, a bad request is not).
fn sdk_config(settings: &CloudWatchSettings) -> aws_config::ConfigLoader {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .retry_config(
            aws_config::retry::RetryConfig::standard()
                .with_max_attempts(ATTEMPTS)
                .with_initial_backoff(FIRST_RETRY),
        )
        .timeout_config(
            aws_config::timeout::TimeoutConfig::builder()
                .operation_attempt_timeout(ATTEMPT_TIMEOUT)
                .build(),
        );
    if let Some(region) = &settings.region {
        loader = loader.region(aws_config::Region::new(region.clone()));
    }
    if let Some(endpoint) = &settings.endpoint_url {
        loader = loader.endpoint_url(endpoint);
    }
    loader
}

impl Actor for CloudWatchActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if self.settings.mode == CloudWatchMode::Api {
            let loader = sdk_config(&self.settings);
            ctx.wait(
                async move { aws_sdk_cloudwatch::Client::new(&loader.load().await) }
                    .into_actor(self)
                    .map(|client, act, _| act.client = Some(client)),
            );
        }
        tracing::info!(
            mode = ?self.settings.mode,
            namespace = %self.settings.namespace,
            metric = %self.settings.metric_name,
            memory_metric = memory_metric(&self.settings).unwrap_or("-"),
            interval_secs = self.settings.interval.as_secs(),
            "reporting ActiveConnections (and MemoryPressure) to CloudWatch"
        );
        ctx.run_interval(self.settings.interval, |act, ctx| act.tick(ctx));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn default_settings() -> CloudWatchSettings {
        // The compiled-in defaults' [cloudwatch] table, without the rest of the configuration.
        let defaults: toml::Table =
            toml::from_str(include_str!("../../config/default.toml")).unwrap();
        defaults["cloudwatch"].clone().try_into().unwrap()
    }

    const SAMPLE: Sample = Sample {
        connections: 42,
        memory_percent: 87.25,
    };

    #[test]
    fn emf_line_has_the_embedded_metric_format_shape() {
        let settings = default_settings();
        let line = emf_line(&settings, SAMPLE, 1_700_000_000_000);
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["_aws"]["Timestamp"], 1_700_000_000_000u64);
        let directive = &v["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], "zedi/dev");
        assert_eq!(
            directive["Dimensions"],
            serde_json::json!([["ServiceName"]])
        );
        assert_eq!(
            directive["Metrics"],
            serde_json::json!([
                {"Name": "ActiveConnections", "Unit": "Count"},
                {"Name": "MemoryPressure", "Unit": "Percent"},
            ])
        );
        assert_eq!(v["ServiceName"], "zedi-realtime");
        assert_eq!(v["ActiveConnections"], 42);
        assert_eq!(v["MemoryPressure"], 87.25);
        assert!(!line.contains('\n'));
    }

    #[test]
    fn an_empty_memory_metric_name_leaves_only_active_connections() {
        let mut settings = default_settings();
        settings.memory_metric_name = None;
        let v: serde_json::Value = serde_json::from_str(&emf_line(&settings, SAMPLE, 1)).unwrap();
        assert_eq!(
            v["_aws"]["CloudWatchMetrics"][0]["Metrics"],
            serde_json::json!([{"Name": "ActiveConnections", "Unit": "Count"}])
        );
        assert!(v.get("MemoryPressure").is_none(), "{v}");
        assert_eq!(v["ActiveConnections"], 42);
    }

    #[test]
    fn the_sample_reads_the_budget_in_percent() {
        let budget = MemoryBudget::unmetered(64 * 1024 * 1024);
        budget.charge(crate::budget::Holder::Documents, 16 * 1024 * 1024);
        let gauge = IntGauge::new("connections", "test").unwrap();
        gauge.set(3);
        let sample = Sample::read(&gauge, &budget);
        assert_eq!(sample.connections, 3);
        assert_eq!(sample.memory_percent, 25.0);
        assert_eq!(percent_value(100.0 / 3.0), 33.33);
        assert_eq!(percent_value(f64::NAN), 0.0);
    }
}
