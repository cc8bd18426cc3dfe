//! `[log]`: the log format (text for a terminal, JSON for CloudWatch Logs) and level, and the
//! subscriber they configure.

use serde::{Deserialize, Serialize};

use crate::values::{InvalidSetting, require};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    pub format: LogFormat,
    /// A `tracing` filter (`info`, `zedi_sync=debug,info`); `RUST_LOG` overrides it.
    pub level: String,
}

impl LogSettings {
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        require(
            tracing_subscriber::EnvFilter::try_new(&self.level).is_ok(),
            "log.level",
            "is not a valid tracing filter",
        )
    }

    /// Installs the global subscriber, writing to stderr.
    pub fn init(&self) {
        use tracing_subscriber::EnvFilter;
        let filter = std::env::var("RUST_LOG")
            .ok()
            .and_then(|f| EnvFilter::try_new(f).ok())
            .unwrap_or_else(|| EnvFilter::new(&self.level));
        let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(ansi);
        match self.format {
            LogFormat::Json => builder.json().init(),
            LogFormat::Text => builder.init(),
        }
    }
}
