//! Decoding an awareness update, with the per-state bounds (see the notes of [`super`]).

use super::json_depth::within_depth;
use crate::protocol::lib0::{Lib0Error, Reader, Writer};

/// One `(clientId, clock, state JSON)` entry of an encoded awareness update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry<'a> {
    pub client_id: u64,
    pub clock: u64,
    pub state: &'a str,
}

/// Why an awareness payload was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AwarenessError {
    #[error("malformed awareness update: {0}")]
    Malformed(#[from] Lib0Error),
    #[error("awareness state of client {0} is not JSON")]
    NotJson(u64),
    #[error("awareness update lists {0} clients, more than the limit")]
    TooManyClients(u64),
    #[error("awareness clock or client id {0} is beyond what a JavaScript client can hold")]
    OutOfRange(u64),
    #[error("awareness state of client {client_id} is {bytes} bytes, more than the limit {limit}")]
    StateTooLarge {
        client_id: u64,
        bytes: usize,
        limit: usize,
    },
    #[error("awareness state of client {client_id} nests deeper than the limit {limit}")]
    TooDeep { client_id: u64, limit: u32 },
}

impl AwarenessError {
    /// The `kind` label of `zedi_protocol_errors_total` for this refusal.
    pub fn kind(&self) -> crate::protocol::ErrorKind {
        use crate::protocol::ErrorKind;
        match self {
            AwarenessError::StateTooLarge { .. } => ErrorKind::AwarenessStateTooLarge,
            AwarenessError::TooDeep { .. } => ErrorKind::AwarenessTooDeep,
            AwarenessError::Malformed(_)
            | AwarenessError::NotJson(_)
            | AwarenessError::TooManyClients(_)
            | AwarenessError::OutOfRange(_) => ErrorKind::BadAwareness,
        }
    }

    /// Whether this is an exceeded bound of a well-formed update (the document is closed for
    /// the sender) rather than a broken one (no provider sends that: the socket is closed).
    pub fn is_limit(&self) -> bool {
        matches!(
            self,
            AwarenessError::StateTooLarge { .. } | AwarenessError::TooDeep { .. }
        )
    }
}

/// What clients may make one document's awareness hold (`[limits]` `max_awareness_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AwarenessLimits {
    /// Longest state JSON of one client, in bytes.
    pub max_state_bytes: usize,
    /// Deepest nesting of arrays/objects inside one state.
    pub max_depth: u32,
    /// Live client ids one connection (attachment) may own.
    pub max_clients_per_connection: usize,
}

impl Default for AwarenessLimits {
    /// The defaults of `config/default.toml`.
    fn default() -> Self {
        AwarenessLimits {
            max_state_bytes: 65_536,
            max_depth: 32,
            max_clients_per_connection: 8,
        }
    }
}

/// JavaScript's `Number.MAX_SAFE_INTEGER`: lib0 decodes varUints into numbers, so a peer can
/// never legitimately send more, and keeping clocks below it leaves room to increment them.
pub(super) const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

/// Most clients one update may carry; a provider sends one, a server replay sends all of a
/// document's, so this only stops absurd counts.
pub const MAX_ENTRIES_PER_UPDATE: u64 = 10_000;

/// [`decode_update_with`] under the default [`AwarenessLimits`] (tests, tools, fuzzing).
pub fn decode_update(bytes: &[u8]) -> Result<Vec<Entry<'_>>, AwarenessError> {
    decode_update_with(bytes, &AwarenessLimits::default())
}

/// Decodes an awareness update and checks every state is JSON (the provider would throw on a
/// non-JSON state, so relaying one would break every other client of the document) within
/// `limits`' size and depth. Size is checked before the bytes are even read as UTF-8, depth
/// before serde_json sees them, so an oversized or deep state costs one pass at most.
pub fn decode_update_with<'a>(
    bytes: &'a [u8],
    limits: &AwarenessLimits,
) -> Result<Vec<Entry<'a>>, AwarenessError> {
    let mut r = Reader::new(bytes);
    let n = r.read_var_uint()?;
    if n > MAX_ENTRIES_PER_UPDATE {
        return Err(AwarenessError::TooManyClients(n));
    }
    let mut entries = Vec::with_capacity(n.min(64) as usize);
    for _ in 0..n {
        let client_id = r.read_var_uint()?;
        let clock = r.read_var_uint()?;
        for value in [client_id, clock] {
            if value > MAX_SAFE_INTEGER {
                return Err(AwarenessError::OutOfRange(value));
            }
        }
        let raw = r.read_var_bytes()?;
        if raw.len() > limits.max_state_bytes {
            return Err(AwarenessError::StateTooLarge {
                client_id,
                bytes: raw.len(),
                limit: limits.max_state_bytes,
            });
        }
        let state = std::str::from_utf8(raw).map_err(|_| Lib0Error::InvalidUtf8)?;
        if !within_depth(state, limits.max_depth) {
            return Err(AwarenessError::TooDeep {
                client_id,
                limit: limits.max_depth,
            });
        }
        if serde_json::from_str::<serde::de::IgnoredAny>(state).is_err() {
            return Err(AwarenessError::NotJson(client_id));
        }
        entries.push(Entry {
            client_id,
            clock,
            state,
        });
    }
    Ok(entries)
}

/// Encodes `(clientId, clock, state JSON)` entries as one awareness update, the inverse of
/// [`decode_update`] (tests and load generators build their frames with it).
pub fn encode_update(entries: &[(u64, u64, &str)]) -> Vec<u8> {
    let mut w = Writer::new();
    w.write_var_uint(entries.len() as u64);
    for (id, clock, state) in entries {
        w.write_var_uint(*id)
            .write_var_uint(*clock)
            .write_var_string(state);
    }
    w.into_vec()
}
