//! `zedi-bench relay --port P`: the physical-limit baseline of `ops/bench/compare.sh`. A bare
//! WebSocket relay speaking just enough of the Hocuspocus protocol for zedi-bench's scenarios and
//! the real provider: Auth is answered Authenticated (read-write), a SyncStep1 with an empty
//! SyncStep1 and an empty SyncStep2, an Update is forwarded as received to the other sockets of
//! its document and acknowledged (`SyncStatus(1)`) at once; awareness and stateless frames are
//! forwarded too. No CRDT, no store, no auth checks, nothing kept for a late joiner: what is
//! left is the cost of moving frames between sockets.
//!
//! One tokio task per socket; the other sockets of a document reach it through its queue
//! ([`hub::Outbox`]), bounded in bytes.

mod hub;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tungstenite::handshake::HandshakeError;
use tungstenite::protocol::WebSocket;
use tungstenite::protocol::frame::CloseFrame;
use tungstenite::protocol::frame::coding::CloseCode as WsCloseCode;
use tungstenite::{Bytes, Message as WsMessage};
use zedi_protocol::protocol::CloseCode;

use crate::aconn::{Io, small_read_buffer};
use crate::args::RelayArgs;
use hub::{Hub, Outbox, Socket};

/// A client that has not finished its WebSocket upgrade by then is dropped.
const UPGRADE_TIMEOUT: Duration = Duration::from_secs(10);
/// Queued frames moved into the socket's write buffer per wake-up: one write for many frames,
/// and a bound on how long one busy socket keeps its worker thread.
const BATCH_FRAMES: usize = 256;
/// Frames read from the socket per wake-up, for the same reason.
const READ_FRAMES: usize = 256;

/// Binds `--host:--port` (loopback only) and serves until the process is stopped.
pub fn run(args: &RelayArgs) -> anyhow::Result<()> {
    let ip: IpAddr = args
        .host
        .parse()
        .with_context(|| format!("--host must be an IP address (got {})", args.host))?;
    if !ip.is_loopback() {
        bail!("refusing non-loopback --host {ip}");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let addr = SocketAddr::new(ip, args.port);
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        eprintln!("zedi-bench relay listening on {}", listener.local_addr()?);
        let hub = Arc::new(Hub::default());
        loop {
            match listener.accept().await {
                Ok((tcp, _)) => {
                    tokio::spawn(serve_socket(tcp, hub.clone()));
                }
                // Out of descriptors, most likely: the benchmark asked for more sockets than
                // the limit; the ones already open keep working.
                Err(e) => {
                    eprintln!("relay: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    })
}

fn would_block(e: &tungstenite::Error) -> bool {
    matches!(e, tungstenite::Error::Io(io) if io.kind() == std::io::ErrorKind::WouldBlock)
}

async fn upgrade(tcp: &Arc<TcpStream>) -> Result<WebSocket<Io>, String> {
    let deadline = Instant::now() + UPGRADE_TIMEOUT;
    let mut attempt = tungstenite::accept_with_config(Io(tcp.clone()), Some(small_read_buffer()));
    loop {
        match attempt {
            Ok(ws) => return Ok(ws),
            Err(HandshakeError::Interrupted(mid)) => {
                tokio::time::timeout_at(deadline.into(), tcp.readable())
                    .await
                    .map_err(|_| "upgrade timed out".to_string())?
                    .map_err(|e| format!("upgrade: {e}"))?;
                attempt = mid.handshake();
            }
            Err(HandshakeError::Failure(e)) => return Err(format!("upgrade: {e}")),
        }
    }
}

async fn serve_socket(tcp: TcpStream, hub: Arc<Hub>) {
    tcp.set_nodelay(true).ok();
    let tcp = Arc::new(tcp);
    // Not a WebSocket (zedi-bench's /health probe, a port check): nothing to serve.
    let Ok(mut ws) = upgrade(&tcp).await else {
        return;
    };
    let (outbox, mut queue) = Outbox::new();
    let mut socket = Socket::new(hub, outbox.clone());
    let end = pump(&mut ws, &tcp, &mut socket, &outbox, &mut queue).await;
    socket.leave_all();
    if let Err(End::Overflow) = end {
        let frame = CloseFrame {
            code: WsCloseCode::from(CloseCode::ResetConnection.code()),
            reason: "relay queue full".into(),
        };
        let _ = ws.close(Some(frame));
    } else {
        let _ = ws.close(None);
    }
    let _ = ws.flush();
}

/// Why a socket's pump stopped.
enum End {
    /// Its queue went over [`hub::MAX_QUEUED_BYTES`].
    Overflow,
    /// Closed, reset, or sent something that is not a Hocuspocus frame.
    Gone,
}

/// `Ok(true)` when the socket would block: what was written stays in tungstenite's buffer.
fn blocked(r: tungstenite::Result<()>) -> Result<bool, End> {
    match r {
        Ok(()) => Ok(false),
        Err(e) if would_block(&e) => Ok(true),
        Err(_) => Err(End::Gone),
    }
}

/// The socket's loop: frames in from the client, queued frames out to it. While the socket
/// cannot take more, neither is read, so its write buffer stays bounded and its queue is the
/// only thing that grows (up to the bound).
async fn pump(
    ws: &mut WebSocket<Io>,
    tcp: &TcpStream,
    socket: &mut Socket,
    outbox: &Outbox,
    queue: &mut mpsc::UnboundedReceiver<Bytes>,
) -> Result<(), End> {
    let mut replies = Vec::new();
    let mut full = false;
    loop {
        if outbox.overflowed() {
            return Err(End::Overflow);
        }
        tokio::select! {
            _ = outbox.overflow.notified() => continue,
            r = tcp.writable(), if full => r.map_err(|_| End::Gone)?,
            r = tcp.readable(), if !full => {
                r.map_err(|_| End::Gone)?;
                read_frames(ws, socket, &mut replies)?;
            }
            f = queue.recv(), if !full => {
                // The socket's own outbox holds the sender: the queue never closes.
                let Some(f) = f else { return Ok(()) };
                write_queued(ws, f, queue, outbox)?;
            }
        }
        // Whatever the branch wrote, the flush says whether the socket took it all.
        full = blocked(ws.flush())?;
    }
}

/// Every frame the client sent that is ready (at most [`READ_FRAMES`]), each answered; stops
/// early when the socket stops taking the replies.
fn read_frames(
    ws: &mut WebSocket<Io>,
    socket: &mut Socket,
    replies: &mut Vec<Bytes>,
) -> Result<(), End> {
    for _ in 0..READ_FRAMES {
        let frame = match ws.read() {
            Ok(WsMessage::Binary(b)) => b,
            // WebSocket pings are answered by tungstenite, a close by its reply and then
            // ConnectionClosed on the next read.
            Ok(_) => continue,
            Err(e) if would_block(&e) => return Ok(()),
            Err(_) => return Err(End::Gone),
        };
        socket.on_frame(&frame, replies).map_err(|_| End::Gone)?;
        let mut full = false;
        for r in replies.drain(..) {
            full = blocked(ws.write(WsMessage::Binary(r)))? || full;
        }
        if full {
            return Ok(());
        }
    }
    Ok(())
}

/// `first` and what else is queued (at most [`BATCH_FRAMES`]) into the write buffer; stops
/// early when the socket stops taking them.
fn write_queued(
    ws: &mut WebSocket<Io>,
    first: Bytes,
    queue: &mut mpsc::UnboundedReceiver<Bytes>,
    outbox: &Outbox,
) -> Result<(), End> {
    let mut next = Some(first);
    for _ in 0..BATCH_FRAMES {
        let Some(f) = next.take().or_else(|| queue.try_recv().ok()) else {
            break;
        };
        outbox.taken(f.len());
        if blocked(ws.write(WsMessage::Binary(f)))? {
            return Ok(());
        }
    }
    Ok(())
}
