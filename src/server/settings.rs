//! `[server]`: where the node listens, its threads, its drain timings, and who may connect.

use std::net::IpAddr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

use crate::limits::Cidr;
use crate::values::{InvalidSetting, comma_list, millis, optional, require};

/// The listening address: an IP literal, or `localhost` (the loopback address).
fn listen_host<'de, D: Deserializer<'de>>(d: D) -> Result<IpAddr, D::Error> {
    let text = String::deserialize(d)?;
    match text.trim() {
        "localhost" => Ok(IpAddr::from([127, 0, 0, 1])),
        host => host
            .parse()
            .map_err(|_| serde::de::Error::custom("must be an IP address or localhost")),
    }
}

/// An allowed browser `Origin` (`https://app.example`); a trailing `/` is not part of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin(String);

impl Origin {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for Origin {
    type Err = std::convert::Infallible;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Ok(Origin(text.trim().trim_end_matches('/').to_string()))
    }
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    #[serde(deserialize_with = "listen_host")]
    pub host: IpAddr,
    pub port: u16,
    /// `None`: a random id per start.
    #[serde(with = "optional")]
    pub node_id: Option<String>,
    /// HTTP workers; 0: one per core.
    pub workers: usize,
    /// Document actor threads; 0: one per core.
    pub document_threads: usize,
    /// Where a document actor runs.
    pub document_placement: DocumentPlacement,
    #[serde(rename = "drain_delay_ms", with = "millis")]
    pub drain_delay: Duration,
    #[serde(rename = "drain_deadline_ms", with = "millis")]
    pub drain_deadline: Duration,
    #[serde(with = "comma_list")]
    pub trusted_proxies: Vec<Cidr>,
    /// Empty: any origin.
    #[serde(with = "comma_list")]
    pub allowed_origins: Vec<Origin>,
    /// Prefix under which a path names a y-websocket document; empty: no such endpoint.
    pub ywebsocket_path: String,
}

/// `server.document_placement`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DocumentPlacement {
    /// On `document_threads` threads of their own, round-robin: document work (loads, large
    /// encodes) never delays socket I/O, at the cost of two thread hops per delivered update.
    Threads,
    /// On the thread of the session that opened it: that session's frames reach it without a
    /// hop (others' still cross threads), and no document threads are started.
    Opener,
}

impl ServerSettings {
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        require(
            !self.drain_deadline.is_zero() && self.drain_delay < self.drain_deadline,
            "server.drain_deadline_ms",
            "must be > 0 and longer than server.drain_delay_ms",
        )?;
        // "/y" would make "/yes" the document "es".
        let path = &self.ywebsocket_path;
        require(
            path.is_empty() || (path.starts_with('/') && path.ends_with('/')),
            "server.ywebsocket_path",
            "must be empty or start and end with /",
        )
    }

    /// The allow-list as the upgrade check compares it.
    pub fn origins(&self) -> Vec<String> {
        self.allowed_origins
            .iter()
            .map(|o| o.as_str().to_string())
            .filter(|o| !o.is_empty())
            .collect()
    }
}
