//! Validation of the loaded settings: what types alone cannot say (ranges, relations between
//! keys, the shares of the memory budget). Each error names the key to fix.

use super::{AuthMode, CloudWatchMode, ConfigError, Settings, StoreKind, invalid};

impl Settings {
    /// Checks what types alone cannot; each error names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.server.host.trim().is_empty() {
            return Err(invalid("server.host", "must not be empty"));
        }
        if self.server.host.parse::<std::net::IpAddr>().is_err() && self.server.host != "localhost"
        {
            return Err(invalid("server.host", "must be an IP address or localhost"));
        }
        match (self.store.kind, self.store.database_url.is_empty()) {
            (StoreKind::Postgres, true) => {
                return Err(invalid(
                    "store.database_url",
                    "must be set when store.kind = \"postgres\"",
                ));
            }
            (StoreKind::Embedded | StoreKind::Memory, false) => {
                return Err(invalid(
                    "store.kind",
                    "is embedded/memory while store.database_url (DATABASE_URL) is set; use \"auto\" or \"postgres\"",
                ));
            }
            _ => {}
        }
        if !self.store.sslmode.is_empty()
            && crate::store::SslMode::parse(&self.store.sslmode).is_none()
        {
            return Err(invalid(
                "store.sslmode",
                "must be one of disable, prefer, require, verify-ca, verify-full",
            ));
        }
        if self.store.pool_size == 0 {
            return Err(invalid("store.pool_size", "must be at least 1"));
        }
        if self.store.connect_timeout_ms == 0 {
            return Err(invalid("store.connect_timeout_ms", "must be at least 1"));
        }
        if self.store_kind() == StoreKind::Embedded && self.store.path.as_os_str().is_empty() {
            return Err(invalid(
                "store.path",
                "must name a file for the embedded store",
            ));
        }
        if self.store.max_batch == 0 {
            return Err(invalid("store.max_batch", "must be at least 1"));
        }
        if self.store.max_pending_writes < self.store.max_batch {
            return Err(invalid(
                "store.max_pending_writes",
                "must be at least store.max_batch",
            ));
        }
        if self.store.retry_initial_ms == 0 || self.store.retry_max_ms < self.store.retry_initial_ms
        {
            return Err(invalid(
                "store.retry_max_ms",
                "retry_initial_ms must be > 0 and retry_max_ms >= retry_initial_ms",
            ));
        }
        if self.store.compact_after_updates == 0 {
            return Err(invalid("store.compact_after_updates", "must be at least 1"));
        }
        if !self.cluster.redis_url.is_empty() {
            if self.store_kind() != StoreKind::Postgres {
                return Err(invalid(
                    "cluster.redis_url",
                    "a cluster node needs the shared PostgreSQL store: set DATABASE_URL too",
                ));
            }
            let c = &self.cluster;
            if c.lease_renew_ms == 0 || c.lease_renew_ms * 2 >= c.lease_ttl_ms {
                return Err(invalid(
                    "cluster.lease_renew_ms",
                    "must be > 0 and less than half of cluster.lease_ttl_ms",
                ));
            }
            if c.relay_block_ms == 0 || c.relay_block_ms >= 400 {
                return Err(invalid(
                    "cluster.relay_block_ms",
                    "must be between 1 and 399 (below the Redis reply timeout)",
                ));
            }
            if c.heartbeat_ms == 0 || c.stream_max_len == 0 || c.redis_timeout_ms == 0 {
                return Err(invalid(
                    "cluster.heartbeat_ms",
                    "heartbeat, stream length and timeouts must be > 0",
                ));
            }
        }
        if self.limits.max_frame_bytes < 1024 {
            return Err(invalid("limits.max_frame_bytes", "must be at least 1024"));
        }
        if let Err(reason) = crate::limits::parse_cidrs(&self.server.trusted_proxies) {
            return Err(invalid("server.trusted_proxies", reason));
        }
        if self.limits.max_messages_per_sec == 0
            || self.limits.max_message_burst < self.limits.max_messages_per_sec
        {
            return Err(invalid(
                "limits.max_message_burst",
                "rates must be > 0 and the burst at least the per-second rate",
            ));
        }
        if self.limits.max_bytes_per_sec == 0 {
            return Err(invalid("limits.max_bytes_per_sec", "must be > 0"));
        }
        if self.limits.max_outbound_bytes < self.limits.max_frame_bytes {
            return Err(invalid(
                "limits.max_outbound_bytes",
                "must be at least limits.max_frame_bytes",
            ));
        }
        if self.limits.max_nesting_depth == 0 || self.limits.max_nesting_depth > 1024 {
            return Err(invalid(
                "limits.max_nesting_depth",
                "must be between 1 and 1024 (yrs recurses once per level)",
            ));
        }
        if self.limits.max_refused_updates == 0 {
            return Err(invalid("limits.max_refused_updates", "must be > 0"));
        }
        let budget = self.limits.memory_budget_bytes;
        if budget < 16 * 1024 * 1024 {
            return Err(invalid(
                "limits.memory_budget_bytes",
                "must be at least 16 MiB",
            ));
        }
        // Per-socket and per-address bounds are shares of the budget: one client must never be
        // able to hold all of it.
        for (key, value) in [
            ("limits.max_outbound_bytes", self.limits.max_outbound_bytes),
            ("limits.max_preauth_bytes", self.limits.max_preauth_bytes),
            (
                "limits.max_preauth_bytes_per_address",
                self.limits.max_preauth_bytes_per_address,
            ),
        ] {
            if value == 0 || value > budget / 2 {
                return Err(invalid(
                    key,
                    "must be > 0 and at most half of limits.memory_budget_bytes",
                ));
            }
        }
        if self.limits.max_preauth_bytes_per_address < self.limits.max_preauth_bytes {
            return Err(invalid(
                "limits.max_preauth_bytes_per_address",
                "must be at least limits.max_preauth_bytes",
            ));
        }
        if self.limits.max_address_bytes <= self.limits.max_document_name_bytes {
            return Err(invalid(
                "limits.max_address_bytes",
                "must be larger than limits.max_document_name_bytes",
            ));
        }
        if self.limits.max_awareness_state_bytes < 1024
            || self.limits.max_awareness_depth == 0
            || self.limits.max_awareness_clients_per_connection == 0
        {
            return Err(invalid(
                "limits.max_awareness_state_bytes",
                "awareness bounds must be > 0 (the state at least 1024 bytes)",
            ));
        }
        if self.limits.document_memory_factor.is_nan() || self.limits.document_memory_factor < 1.0 {
            return Err(invalid(
                "limits.document_memory_factor",
                "must be at least 1",
            ));
        }
        // A document at its largest is a share of the budget like a socket's queue: one such
        // document must leave the other half for everyone else.
        let largest_document =
            self.limits.max_document_bytes as f64 * self.limits.document_memory_factor;
        if largest_document > (self.limits.memory_budget_bytes / 2) as f64 {
            return Err(invalid(
                "limits.max_document_bytes",
                "times limits.document_memory_factor must be at most half of limits.memory_budget_bytes",
            ));
        }
        if self.timeouts.write_stall_ms == 0 || self.timeouts.auth_ms == 0 {
            return Err(invalid(
                "timeouts.write_stall_ms",
                "write_stall_ms and auth_ms must be > 0",
            ));
        }
        if self.limits.max_document_bytes == 0 {
            return Err(invalid("limits.max_document_bytes", "must be > 0"));
        }
        if self.limits.max_document_name_bytes == 0 {
            return Err(invalid(
                "limits.max_document_name_bytes",
                "must be at least 1",
            ));
        }
        if self.limits.max_documents_per_connection == 0 {
            return Err(invalid(
                "limits.max_documents_per_connection",
                "must be at least 1",
            ));
        }
        if self.timeouts.ping_interval_ms == 0
            || self.timeouts.ping_interval_ms >= self.timeouts.idle_ms
        {
            return Err(invalid(
                "timeouts.ping_interval_ms",
                "must be > 0 and shorter than timeouts.idle_ms",
            ));
        }
        if self.auth.mode == AuthMode::Jwt
            && self.auth.jwt_secret.is_empty()
            && self.auth.effective_issuer().is_none()
        {
            return Err(invalid(
                "auth.mode",
                "is \"jwt\" but neither auth.jwt_secret (JWT_SECRET) nor a Cognito pool / auth.issuer is set",
            ));
        }
        if !matches!(self.auth.token_use.as_str(), "" | "id" | "access") {
            return Err(invalid(
                "auth.token_use",
                "must be \"id\", \"access\" or empty",
            ));
        }
        if self.auth.jwks_min_refresh_interval_ms == 0 || self.auth.jwks_timeout_ms == 0 {
            return Err(invalid(
                "auth.jwks_min_refresh_interval_ms",
                "JWKS intervals and timeouts must be > 0",
            ));
        }
        if let Err(reason) = self.cloudwatch.dimension_pairs() {
            return Err(invalid("cloudwatch.dimensions", reason));
        }
        if self.server.drain_deadline_ms == 0
            || self.server.drain_delay_ms >= self.server.drain_deadline_ms
        {
            return Err(invalid(
                "server.drain_deadline_ms",
                "must be > 0 and longer than server.drain_delay_ms",
            ));
        }
        if self.cloudwatch.interval_secs == 0 {
            return Err(invalid("cloudwatch.interval_secs", "must be at least 1"));
        }
        if self.cloudwatch.mode != CloudWatchMode::Off
            && (self.cloudwatch.namespace.is_empty() || self.cloudwatch.metric_name.is_empty())
        {
            return Err(invalid(
                "cloudwatch.namespace",
                "namespace and metric_name must be set",
            ));
        }
        if self.documents.awareness_timeout_ms < 1000 {
            return Err(invalid(
                "documents.awareness_timeout_ms",
                "must be at least 1000",
            ));
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            return Err(invalid("log.level", "is not a valid tracing filter"));
        }
        Ok(())
    }
}
