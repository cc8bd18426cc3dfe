//! `ActiveConnections` for ECS autoscaling: every `cloudwatch.interval_secs` this node reports
//! its open WebSockets, either with `PutMetricData` (mode `api`, credentials from the standard
//! AWS chain, i.e. the ECS task role) or as a CloudWatch Embedded Metric Format line on stdout
//! (mode `emf`: no API call, no IAM permission; CloudWatch Logs extracts the metric).
//!
//! It runs on every node, clustered or not: the scaling signal is per task and must not depend
//! on Redis being configured. A failing publish is retried briefly, counted and logged; it never
//! blocks or slows serving (the actor only reads a gauge).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix::prelude::*;
use aws_sdk_cloudwatch::types::{Dimension, MetricDatum, StandardUnit};
use prometheus::IntGauge;

use crate::config::{CloudWatchMode, CloudWatchSettings};
use crate::metrics::Metrics;

/// Attempts per datapoint before it is given up (the next interval brings a fresh one).
const ATTEMPTS: u32 = 3;

pub struct CloudWatchActor {
    settings: CloudWatchSettings,
    dimensions: Vec<(String, String)>,
    client: Option<aws_sdk_cloudwatch::Client>,
    connections: IntGauge,
    metrics: Arc<Metrics>,
    publishing: bool,
}

/// The EMF document for one datapoint (pure, so tests can check its shape alone).
pub fn emf_line(
    settings: &CloudWatchSettings,
    dimensions: &[(String, String)],
    value: i64,
    timestamp_ms: u128,
) -> String {
    let mut root = serde_json::Map::new();
    let dimension_names: Vec<&str> = dimensions.iter().map(|(k, _)| k.as_str()).collect();
    root.insert(
        "_aws".into(),
        serde_json::json!({
            "Timestamp": timestamp_ms as u64,
            "CloudWatchMetrics": [{
                "Namespace": settings.namespace,
                "Dimensions": [dimension_names],
                "Metrics": [{"Name": settings.metric_name, "Unit": "Count"}],
            }],
        }),
    );
    for (k, v) in dimensions {
        root.insert(k.clone(), serde_json::Value::String(v.clone()));
    }
    root.insert(settings.metric_name.clone(), serde_json::Value::from(value));
    serde_json::Value::Object(root).to_string()
}

impl CloudWatchActor {
    /// `None` when the mode is `off`.
    pub fn new(
        settings: &CloudWatchSettings,
        connections: IntGauge,
        metrics: Arc<Metrics>,
    ) -> Option<Self> {
        if settings.mode == CloudWatchMode::Off {
            return None;
        }
        Some(CloudWatchActor {
            dimensions: settings.dimension_pairs().unwrap_or_default(),
            settings: settings.clone(),
            client: None,
            connections,
            metrics,
            publishing: false,
        })
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        let value = self.connections.get();
        match self.settings.mode {
            CloudWatchMode::Off => {}
            CloudWatchMode::Emf => {
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis());
                let line = emf_line(&self.settings, &self.dimensions, value, now);
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
                let datum = MetricDatum::builder()
                    .metric_name(&self.settings.metric_name)
                    .unit(StandardUnit::Count)
                    .value(value as f64)
                    .timestamp(aws_sdk_cloudwatch::primitives::DateTime::from(
                        SystemTime::now(),
                    ))
                    .set_dimensions(Some(
                        self.dimensions
                            .iter()
                            .map(|(k, v)| Dimension::builder().name(k).value(v).build())
                            .collect(),
                    ))
                    .build();
                let namespace = self.settings.namespace.clone();
                ctx.spawn(
                    async move {
                        let mut delay = Duration::from_millis(200);
                        let mut last_error = String::new();
                        for attempt in 1..=ATTEMPTS {
                            let call = client.put_metric_data().namespace(&namespace).metric_data(datum.clone()).send();
                            match tokio::time::timeout(Duration::from_secs(10), call).await {
                                Ok(Ok(_)) => return Ok(attempt),
                                Ok(Err(e)) => last_error = aws_sdk_cloudwatch::error::DisplayErrorContext(e).to_string(),
                                Err(_) => last_error = "timed out".into(),
                            }
                            if attempt < ATTEMPTS {
                                tokio::time::sleep(delay).await;
                                delay *= 2;
                            }
                        }
                        Err(last_error)
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

impl Actor for CloudWatchActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if self.settings.mode == CloudWatchMode::Api {
            let region = Some(self.settings.region.clone()).filter(|r| !r.is_empty());
            let endpoint = Some(self.settings.endpoint_url.clone()).filter(|e| !e.is_empty());
            ctx.wait(
                async move {
                    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
                    if let Some(region) = region {
                        loader = loader.region(aws_config::Region::new(region));
                    }
                    if let Some(endpoint) = endpoint {
                        loader = loader.endpoint_url(endpoint);
                    }
                    aws_sdk_cloudwatch::Client::new(&loader.load().await)
                }
                .into_actor(self)
                .map(|client, act, _| act.client = Some(client)),
            );
        }
        tracing::info!(
            mode = ?self.settings.mode,
            namespace = %self.settings.namespace,
            metric = %self.settings.metric_name,
            interval_secs = self.settings.interval_secs,
            "reporting ActiveConnections to CloudWatch"
        );
        ctx.run_interval(
            Duration::from_secs(self.settings.interval_secs),
            |act, ctx| act.tick(ctx),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emf_line_has_the_embedded_metric_format_shape() {
        let settings = crate::config::Settings::load_from(None, Vec::<(String, String)>::new())
            .unwrap()
            .cloudwatch;
        let dims = vec![("ServiceName".to_string(), "zedi-realtime".to_string())];
        let line = emf_line(&settings, &dims, 42, 1_700_000_000_000);
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
            serde_json::json!([{"Name": "ActiveConnections", "Unit": "Count"}])
        );
        assert_eq!(v["ServiceName"], "zedi-realtime");
        assert_eq!(v["ActiveConnections"], 42);
        assert!(!line.contains('\n'));
    }
}
