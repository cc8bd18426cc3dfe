//! Hocuspocus frames: `varString(address) varUint(type) payload`, one message per binary
//! WebSocket frame, plus the one-byte Ping/Pong of the v4 provider.
//!
//! Decoding borrows from the frame; encoding is split into a *body* (type + payload) and an
//! address prefix so the document actor can encode a broadcast once and only prepend each
//! connection's address.

use super::lib0::{Lib0Error, Reader, Writer, var_uint_len};
use thiserror::Error;

/// The `type` varUint of a Hocuspocus message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum MessageType {
    Sync = 0,
    Awareness = 1,
    Auth = 2,
    QueryAwareness = 3,
    SyncReply = 4,
    Stateless = 5,
    BroadcastStateless = 6,
    Close = 7,
    SyncStatus = 8,
    Ping = 9,
    Pong = 10,
}

impl MessageType {
    /// Every type, in wire order (`ALL[t as usize] == t`).
    pub const ALL: [MessageType; 11] = [
        Self::Sync,
        Self::Awareness,
        Self::Auth,
        Self::QueryAwareness,
        Self::SyncReply,
        Self::Stateless,
        Self::BroadcastStateless,
        Self::Close,
        Self::SyncStatus,
        Self::Ping,
        Self::Pong,
    ];

    pub fn from_u64(value: u64) -> Option<Self> {
        let index = usize::try_from(value).ok()?;
        Self::ALL.get(index).copied()
    }

    /// Stable lower-case name, used as a metric label (bounded cardinality).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sync => "sync",
            Self::Awareness => "awareness",
            Self::Auth => "auth",
            Self::QueryAwareness => "query_awareness",
            Self::SyncReply => "sync_reply",
            Self::Stateless => "stateless",
            Self::BroadcastStateless => "broadcast_stateless",
            Self::Close => "close",
            Self::SyncStatus => "sync_status",
            Self::Ping => "ping",
            Self::Pong => "pong",
        }
    }
}

/// y-protocols sync message; payloads are raw Yjs v1 bytes (state vector or update).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncMessage<'a> {
    Step1(&'a [u8]),
    Step2(&'a [u8]),
    Update(&'a [u8]),
}

impl SyncMessage<'_> {
    fn tag(&self) -> u64 {
        match self {
            SyncMessage::Step1(_) => 0,
            SyncMessage::Step2(_) => 1,
            SyncMessage::Update(_) => 2,
        }
    }

    fn payload(&self) -> &[u8] {
        match self {
            SyncMessage::Step1(p) | SyncMessage::Step2(p) | SyncMessage::Update(p) => p,
        }
    }
}

/// The Hocuspocus Auth message (not y-protocols' auth message, which is a different thing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMessage<'a> {
    /// Client → server: the token, and (v4 providers) the provider version after it.
    /// Server → client with an empty token: "send your token again".
    Token {
        token: &'a str,
        provider_version: Option<&'a str>,
    },
    PermissionDenied {
        reason: &'a str,
    },
    Authenticated {
        scope: &'a str,
    },
}

/// Scope strings exactly as the provider compares them.
pub const SCOPE_READ_WRITE: &str = "read-write";
pub const SCOPE_READ_ONLY: &str = "readonly";

/// One decoded Hocuspocus message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Message<'a> {
    Sync(SyncMessage<'a>),
    /// An encoded awareness update (see [`crate::awareness`]).
    Awareness(&'a [u8]),
    Auth(AuthMessage<'a>),
    QueryAwareness,
    /// Server-to-server in Hocuspocus; a client must not send it.
    SyncReply(SyncMessage<'a>),
    Stateless(&'a str),
    /// Server-internal in Hocuspocus; a client must not send it.
    BroadcastStateless(&'a str),
    /// Client → server: detach this document (no body). Server → client: the reason.
    Close(Option<&'a str>),
    SyncStatus(bool),
}

impl Message<'_> {
    pub fn message_type(&self) -> MessageType {
        match self {
            Message::Sync(_) => MessageType::Sync,
            Message::Awareness(_) => MessageType::Awareness,
            Message::Auth(_) => MessageType::Auth,
            Message::QueryAwareness => MessageType::QueryAwareness,
            Message::SyncReply(_) => MessageType::SyncReply,
            Message::Stateless(_) => MessageType::Stateless,
            Message::BroadcastStateless(_) => MessageType::BroadcastStateless,
            Message::Close(_) => MessageType::Close,
            Message::SyncStatus(_) => MessageType::SyncStatus,
        }
    }
}

/// A whole WebSocket binary frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packet<'a> {
    /// The one-byte `0x09` (server → client in v4).
    Ping,
    /// The one-byte `0x0A` (client → server in v4).
    Pong,
    Message {
        address: &'a str,
        message: Message<'a>,
    },
}

/// Why a frame could not be decoded. Each variant maps to one metric label.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FrameError {
    #[error("empty frame")]
    Empty,
    #[error("malformed frame: {0}")]
    Malformed(#[from] Lib0Error),
    #[error("unknown message type {0}")]
    UnknownType(u64),
    #[error("unknown sync message type {0}")]
    UnknownSyncType(u64),
    #[error("unknown auth message type {0}")]
    UnknownAuthType(u64),
    #[error("{0} trailing bytes after the message")]
    TrailingBytes(usize),
    #[error("ping/pong must be a single byte without an address")]
    AddressedPing,
    #[error("more than {0} messages in one frame")]
    TooManyMessages(usize),
}

impl FrameError {
    /// Bounded label for the `protocol_errors_total{kind}` metric.
    pub fn kind(&self) -> super::ErrorKind {
        use super::ErrorKind;
        match self {
            FrameError::Empty
            | FrameError::Malformed(_)
            | FrameError::TrailingBytes(_)
            | FrameError::TooManyMessages(_) => ErrorKind::MalformedFrame,
            FrameError::UnknownType(_) | FrameError::AddressedPing => ErrorKind::UnknownMessageType,
            FrameError::UnknownSyncType(_) => ErrorKind::UnknownSyncType,
            FrameError::UnknownAuthType(_) => ErrorKind::UnknownAuthType,
        }
    }
}

/// Decodes one binary WebSocket frame.
pub fn decode(frame: &[u8]) -> Result<Packet<'_>, FrameError> {
    match frame {
        [] => return Err(FrameError::Empty),
        [9] => return Ok(Packet::Ping),
        [10] => return Ok(Packet::Pong),
        _ => {}
    }
    let mut r = Reader::new(frame);
    let address = r.read_var_string()?;
    let ty = r.read_var_uint()?;
    let message = match MessageType::from_u64(ty).ok_or(FrameError::UnknownType(ty))? {
        MessageType::Sync => Message::Sync(read_sync(&mut r)?),
        MessageType::SyncReply => Message::SyncReply(read_sync(&mut r)?),
        MessageType::Awareness => Message::Awareness(r.read_var_bytes()?),
        MessageType::Auth => {
            let auth = read_auth(&mut r)?;
            // v4 appends the provider version and future providers may append more: the auth
            // message is the one place where trailing bytes are expected and ignored.
            return Ok(Packet::Message {
                address,
                message: Message::Auth(auth),
            });
        }
        MessageType::QueryAwareness => Message::QueryAwareness,
        MessageType::Stateless => Message::Stateless(r.read_var_string()?),
        MessageType::BroadcastStateless => Message::BroadcastStateless(r.read_var_string()?),
        MessageType::Close => {
            if r.is_empty() {
                Message::Close(None)
            } else {
                Message::Close(Some(r.read_var_string()?))
            }
        }
        MessageType::SyncStatus => Message::SyncStatus(r.read_var_uint()? == 1),
        MessageType::Ping | MessageType::Pong => return Err(FrameError::AddressedPing),
    };
    if !r.is_empty() {
        return Err(FrameError::TrailingBytes(r.remaining()));
    }
    Ok(Packet::Message { address, message })
}

fn read_sync<'a>(r: &mut Reader<'a>) -> Result<SyncMessage<'a>, FrameError> {
    let tag = r.read_var_uint()?;
    let payload = r.read_var_bytes()?;
    match tag {
        0 => Ok(SyncMessage::Step1(payload)),
        1 => Ok(SyncMessage::Step2(payload)),
        2 => Ok(SyncMessage::Update(payload)),
        other => Err(FrameError::UnknownSyncType(other)),
    }
}

fn read_auth<'a>(r: &mut Reader<'a>) -> Result<AuthMessage<'a>, FrameError> {
    let tag = r.read_var_uint()?;
    match tag {
        0 => {
            let token = r.read_var_string()?;
            let provider_version = if r.is_empty() {
                None
            } else {
                r.read_var_string().ok()
            };
            Ok(AuthMessage::Token {
                token,
                provider_version,
            })
        }
        1 => Ok(AuthMessage::PermissionDenied {
            reason: r.read_var_string()?,
        }),
        2 => Ok(AuthMessage::Authenticated {
            scope: r.read_var_string()?,
        }),
        other => Err(FrameError::UnknownAuthType(other)),
    }
}

/// Encodes a message *without* its address: `varUint(type) payload`. Broadcasts encode this once
/// and prepend each connection's address with [`prepend_address`].
pub fn encode_body(message: &Message<'_>) -> Vec<u8> {
    let mut w = Writer::with_capacity(16 + payload_len_hint(message));
    w.write_var_uint(message.message_type() as u64);
    match message {
        Message::Sync(sync) | Message::SyncReply(sync) => {
            w.write_var_uint(sync.tag()).write_var_bytes(sync.payload());
        }
        Message::Awareness(update) => {
            w.write_var_bytes(update);
        }
        Message::Auth(AuthMessage::Token {
            token,
            provider_version,
        }) => {
            w.write_var_uint(0).write_var_string(token);
            if let Some(version) = provider_version {
                w.write_var_string(version);
            }
        }
        Message::Auth(AuthMessage::PermissionDenied { reason }) => {
            w.write_var_uint(1).write_var_string(reason);
        }
        Message::Auth(AuthMessage::Authenticated { scope }) => {
            w.write_var_uint(2).write_var_string(scope);
        }
        Message::QueryAwareness => {}
        Message::Stateless(payload) | Message::BroadcastStateless(payload) => {
            w.write_var_string(payload);
        }
        Message::Close(reason) => {
            if let Some(reason) = reason {
                w.write_var_string(reason);
            }
        }
        Message::SyncStatus(applied) => {
            w.write_var_uint(u64::from(*applied));
        }
    }
    w.into_vec()
}

fn payload_len_hint(message: &Message<'_>) -> usize {
    match message {
        Message::Sync(s) | Message::SyncReply(s) => s.payload().len(),
        Message::Awareness(a) => a.len(),
        Message::Stateless(s) | Message::BroadcastStateless(s) => s.len(),
        _ => 0,
    }
}

/// `varString(address)` followed by an already encoded body.
pub fn prepend_address(address: &str, body: &[u8]) -> Vec<u8> {
    let mut out =
        Vec::with_capacity(var_uint_len(address.len() as u64) + address.len() + body.len());
    let mut w = Writer::new();
    w.write_var_string(address);
    out.extend_from_slice(&w.into_vec());
    out.extend_from_slice(body);
    out
}

/// Encodes a whole addressed frame.
pub fn encode(address: &str, message: &Message<'_>) -> Vec<u8> {
    prepend_address(address, &encode_body(message))
}

/// The v4 one-byte Ping frame.
pub const PING_FRAME: [u8; 1] = [MessageType::Ping as u8];
/// The v4 one-byte Pong frame.
pub const PONG_FRAME: [u8; 1] = [MessageType::Pong as u8];

/// With `sessionAwareness` the v4 provider addresses frames as `name "\0" sessionId`; the
/// document is the part before the NUL, while replies must carry the full address.
pub fn document_name(address: &str) -> &str {
    match address.find('\0') {
        Some(i) => &address[..i],
        None => address,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_types_are_listed_in_wire_order() {
        for (i, ty) in MessageType::ALL.iter().enumerate() {
            assert_eq!(*ty as usize, i);
            assert_eq!(MessageType::from_u64(i as u64), Some(*ty));
        }
        assert_eq!(MessageType::from_u64(11), None);
        assert_eq!(MessageType::from_u64(u64::MAX), None);
    }

    fn round_trip(address: &str, message: Message<'_>) {
        let bytes = encode(address, &message);
        assert_eq!(
            decode(&bytes).unwrap(),
            Packet::Message { address, message },
            "round trip of {message:?}"
        );
    }

    #[test]
    fn every_message_kind_round_trips() {
        round_trip("doc", Message::Sync(SyncMessage::Step1(&[0])));
        round_trip("doc", Message::Sync(SyncMessage::Step2(&[0, 0])));
        round_trip("doc", Message::Sync(SyncMessage::Update(&[1, 2, 3])));
        round_trip("doc", Message::SyncReply(SyncMessage::Update(&[1])));
        round_trip("doc", Message::Awareness(&[1, 5, 0, 2, b'{', b'}']));
        round_trip(
            "doc",
            Message::Auth(AuthMessage::Token {
                token: "t",
                provider_version: Some("4.8.0"),
            }),
        );
        round_trip(
            "doc",
            Message::Auth(AuthMessage::Token {
                token: "",
                provider_version: None,
            }),
        );
        round_trip(
            "d",
            Message::Auth(AuthMessage::PermissionDenied { reason: "no" }),
        );
        round_trip(
            "d",
            Message::Auth(AuthMessage::Authenticated {
                scope: SCOPE_READ_ONLY,
            }),
        );
        round_trip("d", Message::QueryAwareness);
        round_trip("d", Message::Stateless("{\"op\":1}"));
        round_trip("d", Message::BroadcastStateless("x"));
        round_trip("d", Message::Close(None));
        round_trip("d", Message::Close(Some("provider_initiated")));
        round_trip("d", Message::SyncStatus(true));
        round_trip("d", Message::SyncStatus(false));
        round_trip("dé\0session-1", Message::SyncStatus(true));
    }

    #[test]
    fn ping_and_pong_are_single_bytes() {
        assert_eq!(decode(&PING_FRAME).unwrap(), Packet::Ping);
        assert_eq!(decode(&PONG_FRAME).unwrap(), Packet::Pong);
        // An addressed ping is not something any provider sends.
        let bytes = prepend_address("doc", &[9]);
        assert_eq!(decode(&bytes), Err(FrameError::AddressedPing));
    }

    #[test]
    fn malformed_frames_are_typed_errors() {
        assert_eq!(decode(&[]), Err(FrameError::Empty));
        assert!(matches!(decode(&[5, b'a']), Err(FrameError::Malformed(_))));
        assert_eq!(
            decode(&prepend_address("d", &[42])),
            Err(FrameError::UnknownType(42))
        );
        assert_eq!(
            decode(&prepend_address("d", &[0, 7, 0])),
            Err(FrameError::UnknownSyncType(7))
        );
        assert_eq!(
            decode(&prepend_address("d", &[2, 9])),
            Err(FrameError::UnknownAuthType(9))
        );
        assert_eq!(
            decode(&prepend_address("d", &[8, 1, 99])),
            Err(FrameError::TrailingBytes(1))
        );
    }

    #[test]
    fn auth_ignores_trailing_bytes() {
        let mut body = encode_body(&Message::Auth(AuthMessage::Token {
            token: "tok",
            provider_version: Some("9.9.9"),
        }));
        body.extend_from_slice(&[1, 2, 3]);
        let frame = prepend_address("doc", &body);
        assert!(matches!(
            decode(&frame),
            Ok(Packet::Message {
                message: Message::Auth(AuthMessage::Token { token: "tok", .. }),
                ..
            })
        ));
    }

    #[test]
    fn document_name_strips_the_session_suffix() {
        assert_eq!(document_name("notes/1\0abc"), "notes/1");
        assert_eq!(document_name("notes/1"), "notes/1");
    }
}
