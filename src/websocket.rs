//! The WebSocket upgrade and the socket loop under each session actor.
//!
//! Why not actix-web's usual `ws::start` inside a handler: that keeps actix-http's HTTP/1
//! dispatcher alive for the whole life of the socket, and with it an 8 KiB read buffer and an
//! 8 KiB write buffer per connection: 16 KiB of an idle editor's ~20 KiB, on a server whose job is
//! to hold tens of thousands of idle editors. Instead the HTTP service hands every upgrade request
//! here (actix-http's upgrade hook), we answer the handshake, take the bare TCP stream and run the
//! session actor in actix-web-actors' `WebsocketContext` over it, reading into a stack buffer and
//! writing what the context encodes. An idle socket then owns no buffer at all.
//!
//! Backpressure is the same as before: while the socket does not take our bytes, the context
//! (and so the session actor) is not polled; document actors bound what they queue for it.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use actix_codec::Framed;
use actix_http::body::BodySize;
use actix_http::error::PayloadError;
use actix_http::header::{CONTENT_TYPE, HeaderValue, ORIGIN, UPGRADE};
use actix_http::{Request, RequestHead, Response, StatusCode, h1, ws};
use actix_web_actors::ws::WebsocketContext;
use bytes::Bytes;
use futures_util::{SinkExt, Stream};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::http::AppState;
use crate::limits::{ConnectionSlot, Refused, client_ip};
use crate::session::SessionActor;

/// Bytes read from the socket per system call, into a buffer of the worker thread's (one per
/// thread, zeroed once: a fresh stack array per read would be zero-filled on every read).
const READ_CHUNK: usize = 8 * 1024;

thread_local! {
    static READ_BUFFER: std::cell::RefCell<Box<[u8]>> =
        std::cell::RefCell::new(vec![0; READ_CHUNK].into_boxed_slice());
}

/// How long a closed session waits for the client to close its side before the socket is
/// dropped (dropping it with unread input would reset the connection and could discard our
/// Close frame before the client reads it).
const LINGER: Duration = Duration::from_secs(1);

/// Why an upgrade request gets an HTTP answer instead of a WebSocket.
struct Refusal {
    status: StatusCode,
    body: &'static str,
}

impl Refusal {
    fn new(status: StatusCode, body: &'static str) -> Self {
        Refusal { status, body }
    }
}

/// The upgrade hook's failure: the connection is dropped (logged by actix-http).
#[derive(Debug, thiserror::Error)]
#[error("WebSocket upgrade failed: {0}")]
pub struct UpgradeError(#[from] io::Error);

/// Required by actix-http's service bounds; never sent, since the socket itself failed.
impl From<UpgradeError> for Response<actix_http::body::BoxBody> {
    fn from(_: UpgradeError) -> Self {
        Response::internal_server_error()
    }
}

/// Decides whether this upgrade may become a session, and takes its connection slot.
fn admit(head: &RequestHead, state: &AppState) -> Result<ConnectionSlot, Refusal> {
    let is_websocket = head
        .headers()
        .get(UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    if !is_websocket {
        return Err(Refusal::new(
            StatusCode::NOT_FOUND,
            "zedi-sync: connect with a WebSocket\n",
        ));
    }
    if state.drain.is_draining() {
        return Err(Refusal::new(StatusCode::SERVICE_UNAVAILABLE, "draining\n"));
    }
    // Browsers always send Origin; a client without one is not a browser page, so the
    // cross-site concern the allow-list addresses does not apply to it.
    if !state.allowed_origins.is_empty()
        && let Some(origin) = head.headers().get(ORIGIN)
    {
        let origin = origin.to_str().unwrap_or_default().trim_end_matches('/');
        if !state.allowed_origins.iter().any(|o| o == origin) {
            state.metrics.origin_rejections_total.inc();
            tracing::info!(%origin, "WebSocket upgrade refused: origin not allowed");
            return Err(Refusal::new(StatusCode::FORBIDDEN, "origin not allowed\n"));
        }
    }
    let peer = head
        .peer_addr
        .map_or(std::net::IpAddr::from([127, 0, 0, 1]), |a| a.ip());
    let forwarded = head
        .headers()
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok());
    let ip = client_ip(peer, forwarded, &state.trusted_proxies);
    state.limiter.try_acquire(ip).map_err(|refused| {
        let (label, refusal) = match refused {
            Refused::NodeFull => (
                "node_full",
                Refusal::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "too many connections on this node\n",
                ),
            ),
            Refused::AddressFull => (
                "address_full",
                Refusal::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "too many connections from this address\n",
                ),
            ),
        };
        state
            .metrics
            .connections_refused_total
            .with_label_values(&[label])
            .inc();
        tracing::info!(%ip, reason = label, "WebSocket upgrade refused: connection limit");
        refusal
    })
}

/// Writes a plain-text HTTP answer and lets the connection close.
async fn refuse(
    framed: &mut Framed<TcpStream, h1::Codec>,
    status: StatusCode,
    body: &'static str,
) -> Result<(), UpgradeError> {
    let mut head = Response::with_body(status, ());
    head.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    framed
        .send(h1::Message::Item((
            head,
            BodySize::Sized(body.len() as u64),
        )))
        .await?;
    framed
        .send(h1::Message::Chunk(Some(Bytes::from_static(
            body.as_bytes(),
        ))))
        .await?;
    framed.send(h1::Message::Chunk(None)).await?;
    Ok(())
}

/// actix-http's upgrade hook: every request that asks for a protocol upgrade comes here
/// instead of the App, on the worker thread that accepted it.
pub async fn upgrade(
    req: Request,
    mut framed: Framed<TcpStream, h1::Codec>,
    state: Arc<AppState>,
) -> Result<(), UpgradeError> {
    let slot = match admit(req.head(), &state) {
        Ok(slot) => slot,
        Err(refusal) => return refuse(&mut framed, refusal.status, refusal.body).await,
    };
    let accept = match ws::handshake(req.head()) {
        Ok(mut builder) => builder.finish().drop_body(),
        Err(error) => {
            tracing::debug!(%error, "bad WebSocket handshake");
            let status = Response::from(&error).status();
            return refuse(&mut framed, status, "bad WebSocket handshake\n").await;
        }
    };
    framed
        .send(h1::Message::Item((accept, BodySize::None)))
        .await?;
    let parts = framed.into_parts();
    // Frames the client sent right behind its request are already in the HTTP read buffer;
    // copy them out so the 8 KiB buffer itself is freed now.
    let early = Bytes::copy_from_slice(&parts.read_buf);
    let session = SessionActor::new(Arc::clone(&state.sessions), slot);
    let codec = ws::Codec::new().max_size(state.max_frame_bytes);
    // A task of its own: the HTTP dispatcher (and its buffers) ends when this returns.
    let io = Rc::new(parts.io);
    let input = SocketInput {
        io: Rc::clone(&io),
        early: Some(early).filter(|b| !b.is_empty()),
    };
    let output = WebsocketContext::with_codec(session, input, codec);
    actix_rt::spawn(Pump {
        io: Some(io),
        output: Some(Box::pin(output)),
        pending: Bytes::new(),
    });
    Ok(())
}

/// What the session's context encodes for the client.
type Output = Pin<Box<dyn Stream<Item = Result<Bytes, actix_web::Error>>>>;

/// Writes what the session produces until it ends. A hand-written future rather than an
/// `async fn` because its state lives in every idle connection's task: this is ~60 bytes, the
/// `async` version with its readiness futures was ~350.
struct Pump {
    /// Both `None` once finished.
    io: Option<Rc<TcpStream>>,
    output: Option<Output>,
    /// Encoded bytes the socket has not taken yet.
    pending: Bytes,
}

impl Future for Pump {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        let (Some(io), Some(output)) = (this.io.as_ref(), this.output.as_mut()) else {
            return Poll::Ready(());
        };
        loop {
            if !this.pending.is_empty() {
                match io.poll_write_ready(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Err(_)) => break,
                    Poll::Ready(Ok(())) => {}
                }
                match io.try_write(&this.pending) {
                    Ok(0) => break,
                    Ok(n) => {
                        let _ = this.pending.split_to(n);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => break, // the peer is gone; the actor stops when its input ends
                }
                continue;
            }
            match output.as_mut().poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(bytes))) => this.pending = bytes,
                Poll::Ready(Some(Err(error))) => {
                    tracing::debug!(%error, "WebSocket encoder failed");
                    break;
                }
                Poll::Ready(None) => break,
            }
        }
        // Done: drop the session (and its handle on the socket), then close politely in a task
        // of its own so this one's memory goes now.
        this.output = None;
        this.pending = Bytes::new();
        if let Some(io) = this.io.take()
            && let Ok(io) = Rc::try_unwrap(io)
        {
            actix_rt::spawn(linger(io));
        }
        Poll::Ready(())
    }
}

/// Half-closes our side, then waits (bounded) for the client's end of the stream.
async fn linger(mut io: TcpStream) {
    let _ = tokio::time::timeout(LINGER, async {
        io.shutdown().await?;
        let mut sink = [0u8; 1024];
        loop {
            io.readable().await?;
            match io.try_read(&mut sink) {
                Ok(0) => return Ok::<(), io::Error>(()),
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
    })
    .await;
}

/// The socket's bytes as the stream `WebsocketContext` decodes frames from.
struct SocketInput {
    io: Rc<TcpStream>,
    /// Bytes that arrived with the handshake request.
    early: Option<Bytes>,
}

impl Stream for SocketInput {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Some(early) = self.early.take() {
            return Poll::Ready(Some(Ok(early)));
        }
        loop {
            if let Err(e) = ready!(self.io.poll_read_ready(cx)) {
                return Poll::Ready(Some(Err(PayloadError::Io(e))));
            }
            let read = READ_BUFFER.with(|buf| {
                let mut buf = buf.borrow_mut();
                self.io
                    .try_read(&mut buf)
                    .map(|n| Bytes::copy_from_slice(&buf[..n]))
            });
            match read {
                Ok(chunk) if chunk.is_empty() => return Poll::Ready(None),
                Ok(chunk) => return Poll::Ready(Some(Ok(chunk))),
                // Readiness was stale; try_read cleared it, so the next poll registers again.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Some(Err(PayloadError::Io(e)))),
            }
        }
    }
}
