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
//! Backpressure: while the socket does not take our bytes, the context (and so the session
//! actor) is not polled; document actors bound what they queue for it through its
//! [`SocketMeter`]. Because an unpolled actor cannot close itself, the write task ([`Pump`])
//! enforces the write deadline and carries out closes decided elsewhere ([`SocketMeter::abort`]):
//! it drops the session and the connection at once, freeing what they held. In the other
//! direction, a sender over its rate is slowed by not reading its socket for a while
//! ([`Throttle`]), which TCP turns into back-pressure on the sender.

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

use crate::budget::{AbortReason, Holder, Pressure, SocketMeter};
use crate::http::AppState;
use crate::limits::{ConnectionSlot, Refused, client_ip};
use crate::protocol::CloseCode;
use crate::session::SessionActor;

mod path_document;

/// Bytes read from the socket per system call, into a buffer of the worker thread's (one per
/// thread, zeroed once: a fresh stack array per read would be zero-filled on every read).
const READ_CHUNK: usize = 8 * 1024;

thread_local! {
    static READ_BUFFER: std::cell::RefCell<Box<[u8]>> =
        std::cell::RefCell::new(vec![0; READ_CHUNK].into_boxed_slice());
}

/// How long a socket with a large partial frame waits before it looks at the budget again.
const INBOUND_PRESSURE_PAUSE: Duration = Duration::from_millis(100);

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
    // Memory first: the ALB retries a 503 on another task, and /health stays 200 so this one
    // is not replaced for being busy.
    let budget = &state.sessions.budget;
    if budget.pressure() >= Pressure::RefuseConnections {
        budget.count_shed(crate::budget::ShedReason::ConnectionRefused);
        tracing::warn!(
            used = budget.used(),
            limit = budget.limit(),
            "WebSocket upgrade refused: memory budget nearly full"
        );
        return Err(Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "server memory nearly full\n",
        ));
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
    // The y-websocket token is decided before the handshake: refused means HTTP 401/403.
    let path = match path_document::examine(req.head(), &state).await {
        Ok(path) => path,
        Err(refusal) => return refuse(&mut framed, refusal.status, refusal.body).await,
    };
    let accept = match ws::handshake(req.head()) {
        Ok(mut builder) => {
            if let Some(protocol) = path
                .protocol
                .as_deref()
                .and_then(|p| HeaderValue::from_str(p).ok())
            {
                builder.insert_header((actix_http::header::SEC_WEBSOCKET_PROTOCOL, protocol));
            }
            builder.finish().drop_body()
        }
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
    let meter = SocketMeter::new(crate::session::next_session_id(), &state.sessions.budget);
    let throttle = Rc::new(Throttle::default());
    let session = SessionActor::new(
        Arc::clone(&state.sessions),
        slot,
        Arc::clone(&meter),
        Rc::clone(&throttle),
        path.document,
        request_info(req.head(), &state),
    );
    let codec = ws::Codec::new().max_size(state.max_frame_bytes);
    // A task of its own: the HTTP dispatcher (and its buffers) ends when this returns.
    let io = Rc::new(parts.io);
    if !early.is_empty() {
        meter.add(Holder::Inbound, early.len());
    }
    let input = SocketInput {
        io: Rc::clone(&io),
        early: Some(early).filter(|b| !b.is_empty()),
        meter: Arc::clone(&meter),
        throttle,
        sleep: None,
    };
    let output = WebsocketContext::with_codec(session, input, codec);
    actix_rt::spawn(Pump {
        io: Some(io),
        output: Some(Box::pin(output)),
        pending: Bytes::new(),
        started_writing: false,
        meter,
        write_stall: state.sessions.write_stall,
        stall: None,
    });
    Ok(())
}

/// The request's headers and parameters for the connection's webhooks; `None` (nothing kept)
/// when no webhook is configured.
fn request_info(head: &RequestHead, state: &AppState) -> Option<Arc<crate::webhooks::RequestInfo>> {
    state.sessions.webhooks.as_ref()?;
    let headers = head
        .headers()
        .iter()
        .map(|(name, value)| (name.as_str(), value.to_str().unwrap_or_default()));
    Some(Arc::new(crate::webhooks::RequestInfo::new(
        headers,
        head.uri.query(),
    )))
}

/// What the session's context encodes for the client.
type Output = Pin<Box<dyn Stream<Item = Result<Bytes, actix_web::Error>>>>;

/// Writes what the session produces until it ends, or until the socket is aborted (its
/// meter says so, or it accepted nothing for `write_stall`). A hand-written future rather than
/// an `async fn` because its state lives in every idle connection's task: the `async` version
/// with its readiness futures was several times larger.
struct Pump {
    /// Both `None` once finished.
    io: Option<Rc<TcpStream>>,
    output: Option<Output>,
    /// Encoded bytes the socket has not taken yet (charged to the meter as outbound).
    pending: Bytes,
    /// Part of `pending` was written: it no longer starts at a frame boundary.
    started_writing: bool,
    meter: Arc<SocketMeter>,
    write_stall: Duration,
    /// Armed while output waits for a socket that takes nothing.
    stall: Option<Pin<Box<tokio::time::Sleep>>>,
}

/// How the pump ended.
enum End {
    /// The session finished or the peer went away: close politely.
    Done,
    /// Closed from outside or for not reading: drop everything now.
    Aborted(AbortReason),
}

impl Pump {
    fn run(&mut self, cx: &mut Context<'_>) -> Poll<End> {
        let (Some(io), Some(output)) = (self.io.as_ref(), self.output.as_mut()) else {
            return Poll::Ready(End::Done);
        };
        // Registered before looking, so an abort that lands in between still wakes us.
        self.meter.register_waker(cx.waker());
        loop {
            if let Some(reason) = self.meter.aborted() {
                return Poll::Ready(End::Aborted(reason));
            }
            if !self.pending.is_empty() {
                match io.poll_write_ready(cx) {
                    Poll::Pending => {
                        let stall = self
                            .stall
                            .get_or_insert_with(|| Box::pin(tokio::time::sleep(self.write_stall)));
                        if stall.as_mut().poll(cx).is_ready() {
                            self.meter.abort(AbortReason::WriteStall);
                            continue;
                        }
                        return Poll::Pending;
                    }
                    Poll::Ready(Err(_)) => return Poll::Ready(End::Done),
                    Poll::Ready(Ok(())) => {}
                }
                match io.try_write(&self.pending) {
                    Ok(0) => return Poll::Ready(End::Done),
                    Ok(n) => {
                        let _ = self.pending.split_to(n);
                        self.meter.sub(Holder::Outbound, n);
                        self.started_writing = true;
                        // Progress: the deadline starts again from the next stall.
                        self.stall = None;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    // The peer is gone; the actor stops when its input ends.
                    Err(_) => return Poll::Ready(End::Done),
                }
                continue;
            }
            match output.as_mut().poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(bytes))) => {
                    self.meter.add(Holder::Outbound, bytes.len());
                    self.pending = bytes;
                    self.started_writing = false;
                }
                Poll::Ready(Some(Err(error))) => {
                    tracing::debug!(%error, "WebSocket encoder failed");
                    return Poll::Ready(End::Done);
                }
                Poll::Ready(None) => return Poll::Ready(End::Done),
            }
        }
    }
}

impl Future for Pump {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        let end = ready!(this.run(cx));
        // Drop the session (and its handle on the socket) first: its context, mailbox and
        // queued frames go now, whatever happens to the connection.
        this.output = None;
        this.meter.sub(Holder::Outbound, this.pending.len());
        let unsent = std::mem::take(&mut this.pending);
        this.stall = None;
        let Some(io) = this.io.take().and_then(|io| Rc::try_unwrap(io).ok()) else {
            return Poll::Ready(());
        };
        match end {
            End::Done => {
                actix_rt::spawn(linger(io));
            }
            End::Aborted(reason) => {
                tracing::warn!(
                    session = this.meter.id(),
                    reason = reason.close_reason(),
                    unsent = unsent.len(),
                    "socket closed and its memory released"
                );
                this.meter.budget().count_shed(reason.shed_reason());
                // Best effort: a Close frame if the socket takes it at once and we are at a
                // frame boundary (a client that reads will reconnect on 4205). Then the
                // connection is dropped, unread input and all.
                if unsent.is_empty() || !this.started_writing {
                    let _ = io.try_write(&close_frame(
                        CloseCode::ResetConnection,
                        reason.close_reason(),
                    ));
                }
                drop(io);
            }
        }
        Poll::Ready(())
    }
}

/// A server-to-client (unmasked) WebSocket Close frame.
fn close_frame(code: CloseCode, reason: &str) -> Vec<u8> {
    let reason = &reason.as_bytes()[..reason.len().min(123)];
    let mut frame = Vec::with_capacity(4 + reason.len());
    frame.push(0x88);
    frame.push((2 + reason.len()) as u8);
    frame.extend_from_slice(&code.code().to_be_bytes());
    frame.extend_from_slice(reason);
    frame
}

/// Pauses reading one socket: set by its session when the sender is over its rate, read by
/// its [`SocketInput`]. Same thread, so a `Cell`.
#[derive(Debug, Default)]
pub struct Throttle {
    until: std::cell::Cell<Option<tokio::time::Instant>>,
}

impl Throttle {
    /// Reads nothing more before `until` (a later pause extends an earlier one).
    pub fn pause_until(&self, until: std::time::Instant) {
        let until = tokio::time::Instant::from_std(until);
        if self.until.get().is_none_or(|now| until > now) {
            self.until.set(Some(until));
        }
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
    /// Every byte read is charged as inbound until the session has it as part of a frame.
    meter: Arc<SocketMeter>,
    throttle: Rc<Throttle>,
    /// The timer of the current pause.
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Stream for SocketInput {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Some(early) = self.early.take() {
            return Poll::Ready(Some(Ok(early)));
        }
        // A socket in the middle of a large frame reads no further while the node's budget is
        // over its limit, or while all partly received frames together hold their share of it:
        // its partial frame cannot grow while the shedder makes room (it may be the socket
        // shed). A socket holding frames before Auth stops from 90 %, or when all pre-auth
        // queues hold their share: its queue drains by itself when Auth is decided. Pausing, not
        // closing: a closed attacker reconnects at once and sends again, which costs the node
        // CPU its honest editors need; a paused one just waits (and is closed by the idle
        // timeout, since its pongs are not read either). Small frames, what editors send, are
        // never held up by this.
        let budget = self.meter.budget();
        let pressure = budget.pressure();
        let floor = crate::budget::SHED_FLOOR_BYTES;
        if (self.meter.holding(Holder::Inbound) >= floor
            && (pressure >= Pressure::Shed || budget.share_full(Holder::Inbound)))
            || (self.meter.holding(Holder::Preauth) >= floor
                && (pressure >= Pressure::RefuseDocuments || budget.share_full(Holder::Preauth)))
        {
            self.throttle
                .pause_until(std::time::Instant::now() + INBOUND_PRESSURE_PAUSE);
        }
        if let Some(until) = self.throttle.until.get() {
            let this = &mut *self;
            let sleep = this
                .sleep
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(until)));
            if sleep.deadline() != until {
                sleep.as_mut().reset(until);
            }
            ready!(sleep.as_mut().poll(cx));
            this.sleep = None;
            this.throttle.until.set(None);
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
                Ok(chunk) => {
                    self.meter.add(Holder::Inbound, chunk.len());
                    return Poll::Ready(Some(Ok(chunk)));
                }
                // Readiness was stale; try_read cleared it, so the next poll registers again.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Some(Err(PayloadError::Io(e)))),
            }
        }
    }
}
