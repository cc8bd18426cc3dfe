//! `[limits]`: what one client, one socket and one document may hold, and the node's memory
//! budget those are shares of.

use serde::{Deserialize, Serialize};

use crate::values::{InvalidSetting, require};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    pub max_frame_bytes: usize,
    pub max_document_name_bytes: usize,
    pub max_documents_per_connection: usize,
    pub max_preauth_messages: usize,
    pub max_preauth_bytes: usize,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    pub max_messages_per_sec: u32,
    pub max_message_burst: u32,
    pub max_bytes_per_sec: u64,
    pub max_outbound_bytes: usize,
    pub max_document_bytes: usize,
    /// How deep shared types (and values inside them) may nest; deeper updates are refused
    /// before yrs sees them (yrs recurses per level).
    pub max_nesting_depth: u32,
    /// Bytes of updates one document may hold waiting for missing predecessors.
    pub max_pending_bytes: usize,
    /// Updates refused on one socket before the socket itself is closed (4205).
    pub max_refused_updates: u32,
    /// Node-wide memory budget every large holder charges (see `crate::budget`).
    pub memory_budget_bytes: usize,
    /// Whether the process's resident size is a floor of the budget's fill.
    pub memory_budget_measures_rss: bool,
    /// Longest whole address (`name` or `name\0sessionId`), in bytes.
    pub max_address_bytes: usize,
    /// Bytes held before Auth by all sockets of one client address together.
    pub max_preauth_bytes_per_address: usize,
    /// Largest awareness state (the JSON of one client), in bytes.
    pub max_awareness_state_bytes: usize,
    /// Deepest nesting of arrays/objects inside one awareness state.
    pub max_awareness_depth: u32,
    /// Awareness client ids one connection may introduce per document.
    pub max_awareness_clients_per_connection: usize,
    /// A loaded document is charged its encoded size times this (yrs' in-memory form is larger
    /// than the encoding).
    pub document_memory_factor: f64,
}

impl Limits {
    /// Ranges and relations between the limits; the shares of the budget last.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        self.validate_frames_and_rates()?;
        self.validate_documents()?;
        self.validate_budget_shares()
    }

    fn validate_frames_and_rates(&self) -> Result<(), InvalidSetting> {
        require(
            self.max_frame_bytes >= 1024,
            "limits.max_frame_bytes",
            "must be at least 1024",
        )?;
        require(
            self.max_messages_per_sec > 0 && self.max_message_burst >= self.max_messages_per_sec,
            "limits.max_message_burst",
            "rates must be > 0 and the burst at least the per-second rate",
        )?;
        require(
            self.max_bytes_per_sec > 0,
            "limits.max_bytes_per_sec",
            "must be > 0",
        )?;
        require(
            self.max_outbound_bytes >= self.max_frame_bytes,
            "limits.max_outbound_bytes",
            "must be at least limits.max_frame_bytes",
        )?;
        require(
            self.max_refused_updates > 0,
            "limits.max_refused_updates",
            "must be > 0",
        )?;
        require(
            self.max_address_bytes > self.max_document_name_bytes,
            "limits.max_address_bytes",
            "must be larger than limits.max_document_name_bytes",
        )?;
        require(
            self.max_documents_per_connection > 0,
            "limits.max_documents_per_connection",
            "must be at least 1",
        )
    }

    fn validate_documents(&self) -> Result<(), InvalidSetting> {
        require(
            (1..=1024).contains(&self.max_nesting_depth),
            "limits.max_nesting_depth",
            "must be between 1 and 1024 (yrs recurses once per level)",
        )?;
        require(
            self.max_awareness_state_bytes >= 1024
                && self.max_awareness_depth > 0
                && self.max_awareness_clients_per_connection > 0,
            "limits.max_awareness_state_bytes",
            "awareness bounds must be > 0 (the state at least 1024 bytes)",
        )?;
        require(
            self.document_memory_factor >= 1.0,
            "limits.document_memory_factor",
            "must be at least 1",
        )?;
        require(
            self.max_document_bytes > 0,
            "limits.max_document_bytes",
            "must be > 0",
        )?;
        require(
            self.max_document_name_bytes > 0,
            "limits.max_document_name_bytes",
            "must be at least 1",
        )
    }

    /// Per-socket and per-address bounds are shares of the budget: one client must never be
    /// able to hold all of it. A document at its largest is such a share too: it must leave
    /// the other half for everyone else.
    fn validate_budget_shares(&self) -> Result<(), InvalidSetting> {
        let budget = self.memory_budget_bytes;
        require(
            budget >= 16 * 1024 * 1024,
            "limits.memory_budget_bytes",
            "must be at least 16 MiB",
        )?;
        for (key, value) in [
            ("limits.max_outbound_bytes", self.max_outbound_bytes),
            ("limits.max_preauth_bytes", self.max_preauth_bytes),
            (
                "limits.max_preauth_bytes_per_address",
                self.max_preauth_bytes_per_address,
            ),
        ] {
            require(
                value > 0 && value <= budget / 2,
                key,
                "must be > 0 and at most half of limits.memory_budget_bytes",
            )?;
        }
        require(
            self.max_preauth_bytes_per_address >= self.max_preauth_bytes,
            "limits.max_preauth_bytes_per_address",
            "must be at least limits.max_preauth_bytes",
        )?;
        let largest_document = self.max_document_bytes as f64 * self.document_memory_factor;
        require(
            largest_document <= (budget / 2) as f64,
            "limits.max_document_bytes",
            "times limits.document_memory_factor must be at most half of limits.memory_budget_bytes",
        )
    }
}
