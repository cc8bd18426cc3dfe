//! `[cloudwatch]`: how `ActiveConnections` (and `MemoryPressure`) reach CloudWatch.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::values::{InvalidSetting, comma_list, optional, require, secs};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CloudWatchMode {
    Off,
    Api,
    Emf,
}

/// One `Name=Value` dimension of the published metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricDimension {
    pub name: String,
    pub value: String,
}

impl std::str::FromStr for MetricDimension {
    type Err = &'static str;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.split_once('=') {
            Some((name, value)) if !name.trim().is_empty() && !value.trim().is_empty() => {
                Ok(MetricDimension {
                    name: name.trim().to_string(),
                    value: value.trim().to_string(),
                })
            }
            _ => Err("is not Name=Value"),
        }
    }
}

impl std::fmt::Display for MetricDimension {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}={}", self.name, self.value)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloudWatchSettings {
    pub mode: CloudWatchMode,
    pub namespace: String,
    pub metric_name: String,
    /// In order; every task publishes the same set.
    #[serde(with = "comma_list")]
    pub dimensions: Vec<MetricDimension>,
    #[serde(rename = "interval_secs", with = "secs")]
    pub interval: Duration,
    /// `None`: the standard chain (AWS_REGION, ECS task metadata).
    #[serde(with = "optional")]
    pub region: Option<String>,
    /// `None`: the AWS endpoint.
    #[serde(with = "optional")]
    pub endpoint_url: Option<String>,
    /// Second metric with the memory budget's use in percent; `None`: not published.
    #[serde(with = "optional")]
    pub memory_metric_name: Option<String>,
}

impl CloudWatchSettings {
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        require(
            !self.interval.is_zero(),
            "cloudwatch.interval_secs",
            "must be at least 1",
        )?;
        require(
            self.mode == CloudWatchMode::Off
                || (!self.namespace.is_empty() && !self.metric_name.is_empty()),
            "cloudwatch.namespace",
            "namespace and metric_name must be set",
        )
    }
}
