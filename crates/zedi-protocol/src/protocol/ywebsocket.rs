//! The y-websocket protocol: what `y-websocket`'s `WebsocketProvider` and every server of that
//! family (y-websocket's own, y-sweet, y-redis) speak. One document per socket, named by the URL
//! path; a frame is `varUint(type) payload`, and one frame may carry several messages back to
//! back (`0` sync, `1` awareness, `2` auth, `3` query awareness).
//!
//! The daemon's document actors speak one internal language, the Hocuspocus message set, and
//! encode each broadcast once for every socket. A y-websocket session therefore translates at its
//! edge: inbound messages become the same [`Message`]s a Hocuspocus frame decodes to, and an
//! outbound Hocuspocus frame becomes a y-websocket one by cutting off its address (Sync and
//! Awareness bodies are byte-identical in both protocols) or by a small re-encoding.

use super::lib0::{Reader, Writer, var_uint_len};
use super::message::{FrameError, Message, Packet, SyncMessage, decode};

/// y-protocols' auth message type and its only variant, "permission denied".
const MESSAGE_AUTH: u64 = 2;
const AUTH_PERMISSION_DENIED: u64 = 0;

/// One message of a y-websocket frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum YMessage<'a> {
    Sync(SyncMessage<'a>),
    /// An encoded awareness update, as in Hocuspocus.
    Awareness(&'a [u8]),
    /// y-protocols' auth message (server → client only; a client sending it is ignored).
    Auth {
        denied_reason: &'a str,
    },
    QueryAwareness,
}

impl<'a> YMessage<'a> {
    /// The internal message this one stands for; `None` for what only a server sends.
    pub fn as_message(&self) -> Option<Message<'a>> {
        match *self {
            YMessage::Sync(sync) => Some(Message::Sync(sync)),
            YMessage::Awareness(update) => Some(Message::Awareness(update)),
            YMessage::QueryAwareness => Some(Message::QueryAwareness),
            YMessage::Auth { .. } => None,
        }
    }
}

/// Decodes every message of one binary frame, at most `max_messages` of them (a frame of a few
/// kilobytes could otherwise pack thousands of tiny messages behind one rate-limit token). Each
/// message comes with the number of bytes it took in the frame.
pub fn decode_frame(
    frame: &[u8],
    max_messages: usize,
) -> Result<Vec<(YMessage<'_>, usize)>, FrameError> {
    if frame.is_empty() {
        return Err(FrameError::Empty);
    }
    let mut r = Reader::new(frame);
    let mut messages = Vec::new();
    while !r.is_empty() {
        if messages.len() == max_messages {
            return Err(FrameError::TooManyMessages(max_messages));
        }
        let start = r.remaining();
        let ty = r.read_var_uint()?;
        let message = match ty {
            0 => YMessage::Sync(read_sync(&mut r)?),
            1 => YMessage::Awareness(r.read_var_bytes()?),
            MESSAGE_AUTH => match r.read_var_uint()? {
                AUTH_PERMISSION_DENIED => YMessage::Auth {
                    denied_reason: r.read_var_string()?,
                },
                other => return Err(FrameError::UnknownAuthType(other)),
            },
            3 => YMessage::QueryAwareness,
            other => return Err(FrameError::UnknownType(other)),
        };
        messages.push((message, start - r.remaining()));
    }
    Ok(messages)
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

/// Whether the first frame of a socket is a y-websocket one. Every y-websocket client opens with
/// a sync message (type 0), and a Hocuspocus frame never starts with a zero byte: that would be
/// an empty address, which names no document (Ping and Pong are 9 and 10).
pub fn opens_ywebsocket(first_frame: &[u8]) -> bool {
    first_frame.first() == Some(&0)
}

/// y-protocols' "permission denied" auth message.
pub fn permission_denied(reason: &str) -> Vec<u8> {
    let mut w = Writer::with_capacity(2 + reason.len() + 2);
    w.write_var_uint(MESSAGE_AUTH)
        .write_var_uint(AUTH_PERMISSION_DENIED)
        .write_var_string(reason);
    w.into_vec()
}

/// A y-websocket sync message (what a Hocuspocus frame's body is after its address).
pub fn encode(message: &YMessage<'_>) -> Vec<u8> {
    match message {
        YMessage::Auth { denied_reason } => permission_denied(denied_reason),
        YMessage::Sync(sync) => super::encode_body(&Message::Sync(*sync)),
        YMessage::Awareness(update) => super::encode_body(&Message::Awareness(update)),
        YMessage::QueryAwareness => super::encode_body(&Message::QueryAwareness),
    }
}

/// What an outbound Hocuspocus frame (or message) becomes on a y-websocket socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outgoing<'a> {
    /// Send the frame from this byte offset on (its address cut off): Sync and Awareness.
    Forward { from: usize, step1: bool },
    /// The document refused this connection's update (Hocuspocus `SyncStatus(0)`).
    Refused,
    /// Access was denied (at auth, or when a token ran out): y-protocols "permission denied".
    Denied(&'a str),
    /// The server asks for a fresh token; y-websocket has no way to send one.
    TokenRequested,
    /// The document was closed for this socket, with a reason.
    Close(&'a str),
    /// Nothing y-websocket has (Authenticated, SyncStatus(1), Stateless, Ping).
    Nothing,
}

/// Translates one outbound Hocuspocus frame. Only the header is read; the payload is not copied.
pub fn translate(frame: &[u8]) -> Result<Outgoing<'_>, FrameError> {
    let (address, message) = match decode(frame)? {
        Packet::Message { address, message } => (address, message),
        Packet::Ping | Packet::Pong => return Ok(Outgoing::Nothing),
    };
    let from = var_uint_len(address.len() as u64) + address.len();
    Ok(match message {
        Message::Sync(sync) => Outgoing::Forward {
            from,
            step1: matches!(sync, SyncMessage::Step1(_)),
        },
        Message::Awareness(_) | Message::QueryAwareness => Outgoing::Forward { from, step1: false },
        Message::SyncStatus(false) => Outgoing::Refused,
        Message::Auth(super::AuthMessage::PermissionDenied { reason }) => Outgoing::Denied(reason),
        Message::Auth(super::AuthMessage::Token { .. }) => Outgoing::TokenRequested,
        Message::Close(reason) => Outgoing::Close(reason.unwrap_or("document closed")),
        _ => Outgoing::Nothing,
    })
}

/// Why a URL path does not name a document.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("bad percent-encoding in the document name")]
    BadEscape,
    #[error("document name is not UTF-8")]
    NotUtf8,
}

/// The document a y-websocket client names by the path of its upgrade request: the
/// percent-decoded rest of the path after `prefix`. `None` when the path is not under the prefix,
/// or names nothing (the bare prefix, where Hocuspocus providers connect); an empty prefix turns
/// the endpoint off.
pub fn document_from_path(path: &str, prefix: &str) -> Option<Result<String, PathError>> {
    if prefix.is_empty() {
        return None;
    }
    let rest = path.strip_prefix(prefix)?;
    if rest.is_empty() {
        return None;
    }
    Some(percent_decode(rest))
}

/// The percent-decoded value of `key` in a URL query (`a=1&token=x`): how y-websocket clients
/// pass their `params`. `+` is kept as it is (encodeURIComponent never produces it for a space).
pub fn query_param(query: &str, key: &str) -> Option<Result<String, PathError>> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == key).then(|| percent_decode(v))
    })
}

/// Percent-decodes one URL component (a path segment or a query value) into UTF-8 text.
pub fn percent_decode(text: &str) -> Result<String, PathError> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).ok_or(PathError::BadEscape)?;
            let hex = std::str::from_utf8(hex).map_err(|_| PathError::BadEscape)?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| PathError::BadEscape)?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| PathError::NotUtf8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{AuthMessage, encode as encode_hocuspocus};

    #[test]
    fn several_messages_in_one_frame_are_all_decoded() {
        let mut frame = encode(&YMessage::Sync(SyncMessage::Step1(&[0])));
        frame.extend(encode(&YMessage::Awareness(&[1, 2, 3])));
        frame.extend(encode(&YMessage::QueryAwareness));
        frame.extend(encode(&YMessage::Sync(SyncMessage::Update(&[0, 0]))));
        assert_eq!(
            decode_frame(&frame, 8).unwrap(),
            [
                (YMessage::Sync(SyncMessage::Step1(&[0])), 4),
                (YMessage::Awareness(&[1, 2, 3]), 5),
                (YMessage::QueryAwareness, 1),
                (YMessage::Sync(SyncMessage::Update(&[0, 0])), 5),
            ]
        );
        assert_eq!(decode_frame(&frame, 3), Err(FrameError::TooManyMessages(3)));
    }

    #[test]
    fn truncated_unknown_and_empty_frames_are_errors() {
        let frame = encode(&YMessage::Sync(SyncMessage::Update(&[0, 0, 7])));
        for cut in 1..frame.len() {
            assert!(decode_frame(&frame[..cut], 8).is_err(), "cut at {cut}");
        }
        assert_eq!(decode_frame(&[], 8), Err(FrameError::Empty));
        assert_eq!(decode_frame(&[9], 8), Err(FrameError::UnknownType(9)));
        assert_eq!(
            decode_frame(&[0, 5, 0], 8),
            Err(FrameError::UnknownSyncType(5))
        );
        assert_eq!(
            decode_frame(&[2, 1], 8),
            Err(FrameError::UnknownAuthType(1))
        );
    }

    #[test]
    fn permission_denied_is_y_protocols_auth() {
        let frame = permission_denied("read-only");
        assert_eq!(&frame[..3], &[2, 0, 9]);
        assert_eq!(
            decode_frame(&frame, 1).unwrap(),
            [(
                YMessage::Auth {
                    denied_reason: "read-only"
                },
                frame.len()
            )]
        );
        assert_eq!(YMessage::Auth { denied_reason: "" }.as_message(), None);
    }

    #[test]
    fn hocuspocus_frames_translate_by_cutting_the_address() {
        let update = Message::Sync(SyncMessage::Update(&[0, 0]));
        let frame = encode_hocuspocus("notes/a", &update);
        let Ok(Outgoing::Forward { from, step1 }) = translate(&frame) else {
            panic!("sync is forwarded");
        };
        assert!(!step1);
        assert_eq!(
            decode_frame(&frame[from..], 1).unwrap(),
            [(YMessage::Sync(SyncMessage::Update(&[0, 0])), 5)]
        );
        let step1 = encode_hocuspocus("d", &Message::Sync(SyncMessage::Step1(&[0])));
        assert_eq!(
            translate(&step1),
            Ok(Outgoing::Forward {
                from: 2,
                step1: true
            })
        );
        let awareness = encode_hocuspocus("d", &Message::Awareness(&[0]));
        assert_eq!(
            translate(&awareness),
            Ok(Outgoing::Forward {
                from: 2,
                step1: false
            })
        );
        let cases = [
            (Message::SyncStatus(false), Outgoing::Refused),
            (Message::SyncStatus(true), Outgoing::Nothing),
            (
                Message::Auth(AuthMessage::Authenticated { scope: "readonly" }),
                Outgoing::Nothing,
            ),
            (
                Message::Auth(AuthMessage::PermissionDenied { reason: "no" }),
                Outgoing::Denied("no"),
            ),
            (
                Message::Auth(AuthMessage::Token {
                    token: "",
                    provider_version: None,
                }),
                Outgoing::TokenRequested,
            ),
            (Message::Close(Some("gone")), Outgoing::Close("gone")),
            (Message::Stateless("x"), Outgoing::Nothing),
        ];
        for (message, expected) in cases {
            let frame = encode_hocuspocus("d", &message);
            assert_eq!(translate(&frame), Ok(expected), "{message:?}");
        }
    }

    #[test]
    fn the_first_frame_tells_the_protocols_apart() {
        assert!(opens_ywebsocket(&encode(&YMessage::Sync(
            SyncMessage::Step1(&[0])
        ))));
        let auth = encode_hocuspocus(
            "d",
            &Message::Auth(AuthMessage::Token {
                token: "t",
                provider_version: Some("4.8.0"),
            }),
        );
        assert!(!opens_ywebsocket(&auth));
        assert!(!opens_ywebsocket(&[10]));
        assert!(!opens_ywebsocket(&[]));
    }

    #[test]
    fn the_token_comes_from_the_query() {
        assert_eq!(
            query_param("a=1&token=x%2Ey", "token"),
            Some(Ok("x.y".into()))
        );
        assert_eq!(query_param("tokens=1", "token"), None);
        assert_eq!(query_param("token", "token"), Some(Ok(String::new())));
        assert_eq!(query_param("", "token"), None);
    }

    #[test]
    fn paths_name_documents_under_the_prefix() {
        assert_eq!(
            document_from_path("/my-doc", "/"),
            Some(Ok("my-doc".into()))
        );
        assert_eq!(
            document_from_path("/y/notes%2Fa%20b%C3%A9", "/y/"),
            Some(Ok("notes/a bé".into()))
        );
        assert_eq!(document_from_path("/", "/"), None, "the Hocuspocus route");
        assert_eq!(document_from_path("/other/x", "/y/"), None);
        assert_eq!(document_from_path("/x", ""), None, "endpoint off");
        assert_eq!(
            document_from_path("/a%2", "/"),
            Some(Err(PathError::BadEscape))
        );
        assert_eq!(
            document_from_path("/a%zz", "/"),
            Some(Err(PathError::BadEscape))
        );
        assert_eq!(
            document_from_path("/%ff", "/"),
            Some(Err(PathError::NotUtf8))
        );
    }
}
