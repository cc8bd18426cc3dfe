//! The WebSocket close codes this server sends, as Hocuspocus sends them (its `CloseEvents`):
//! one list, so the codes, their meaning and their metric labels cannot drift apart.

/// Why a socket is closed. The provider reconnects after every one of these except
/// [`CloseCode::Unauthorized`] and [`CloseCode::Forbidden`] (its `onAuthenticationFailed`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseCode {
    /// 1000: a clean close (drain).
    Normal,
    /// 1002: the WebSocket framing itself was broken (a text frame, a bad continuation).
    ProtocolError,
    /// 1009: a frame over the size limit.
    MessageTooBig,
    /// 4205 "Reset Connection": bad input, a limit, overload or shedding; reconnect and resync.
    ResetConnection,
    /// 4401 "Unauthorized": the token was refused or never sent.
    Unauthorized,
    /// 4403 "Forbidden": authenticated, but not allowed this.
    Forbidden,
    /// 4408 "Connection Timeout": idle, or no document authenticated in time.
    ConnectionTimeout,
}

impl CloseCode {
    pub const ALL: [CloseCode; 7] = [
        CloseCode::Normal,
        CloseCode::ProtocolError,
        CloseCode::MessageTooBig,
        CloseCode::ResetConnection,
        CloseCode::Unauthorized,
        CloseCode::Forbidden,
        CloseCode::ConnectionTimeout,
    ];

    /// The number on the wire.
    pub const fn code(self) -> u16 {
        match self {
            CloseCode::Normal => 1000,
            CloseCode::ProtocolError => 1002,
            CloseCode::MessageTooBig => 1009,
            CloseCode::ResetConnection => 4205,
            CloseCode::Unauthorized => 4401,
            CloseCode::Forbidden => 4403,
            CloseCode::ConnectionTimeout => 4408,
        }
    }

    /// The `reason` label of `zedi_closes_total`.
    pub const fn label(self) -> &'static str {
        match self {
            CloseCode::Normal => "normal",
            CloseCode::ProtocolError => "protocol_error",
            CloseCode::MessageTooBig => "message_too_big",
            CloseCode::ResetConnection => "reset_connection",
            CloseCode::Unauthorized => "unauthorized",
            CloseCode::Forbidden => "forbidden",
            CloseCode::ConnectionTimeout => "timeout",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_labels_are_distinct() {
        let mut codes: Vec<u16> = CloseCode::ALL.iter().map(|c| c.code()).collect();
        let mut labels: Vec<&str> = CloseCode::ALL.iter().map(|c| c.label()).collect();
        codes.sort_unstable();
        codes.dedup();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(codes.len(), CloseCode::ALL.len());
        assert_eq!(labels.len(), CloseCode::ALL.len());
        assert_eq!(CloseCode::ResetConnection.code(), 4205);
    }
}
