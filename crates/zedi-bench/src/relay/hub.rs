//! The relay's shared state and its answer to each frame: documents (rooms) by name, each with
//! the queues of the sockets subscribed to it. No document content is kept anywhere.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{Notify, mpsc};
use tungstenite::Bytes;
use zedi_protocol::protocol::lib0::var_uint_len;
use zedi_protocol::protocol::{
    AuthMessage, FrameError, Message, PONG_FRAME, Packet, SCOPE_READ_WRITE, SyncMessage, decode,
    document_name, encode, prepend_address,
};

/// A socket whose queue holds more than this is a reader too slow for the benchmark's load:
/// it is dropped rather than let the relay's memory grow without end.
pub const MAX_QUEUED_BYTES: usize = 32 << 20;

/// A Yjs v1 update with no structs and no deletes: what an empty document's SyncStep2 carries.
const EMPTY_UPDATE: [u8; 2] = [0, 0];
/// A state vector with no clients: the relay never holds anything.
const EMPTY_STATE_VECTOR: [u8; 1] = [0];

/// Poisoning only says another socket's task panicked mid-update; the map is still usable.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The frames waiting for one socket, written by other sockets' tasks, drained by its own.
pub struct Outbox {
    tx: mpsc::UnboundedSender<Bytes>,
    queued: AtomicUsize,
    overflowed: AtomicBool,
    /// Wakes the owner when it overflowed, even while it waits for its socket to drain.
    pub overflow: Notify,
}

impl Outbox {
    pub fn new() -> (Arc<Outbox>, mpsc::UnboundedReceiver<Bytes>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let outbox = Outbox {
            tx,
            queued: AtomicUsize::new(0),
            overflowed: AtomicBool::new(false),
            overflow: Notify::new(),
        };
        (Arc::new(outbox), rx)
    }

    fn push(&self, frame: Bytes) {
        if self.overflowed.load(Ordering::Relaxed) {
            return;
        }
        let len = frame.len();
        if self.queued.fetch_add(len, Ordering::Relaxed) + len > MAX_QUEUED_BYTES {
            self.overflowed.store(true, Ordering::Relaxed);
            self.overflow.notify_one();
            return;
        }
        let _ = self.tx.send(frame);
    }

    /// The owner took `len` bytes off the queue into its socket's write buffer.
    pub fn taken(&self, len: usize) {
        self.queued.fetch_sub(len, Ordering::Relaxed);
    }

    pub fn overflowed(&self) -> bool {
        self.overflowed.load(Ordering::Relaxed)
    }
}

/// One socket's subscription to one document, under the address it used.
struct Member {
    socket: u64,
    address: Arc<str>,
    outbox: Arc<Outbox>,
}

/// The sockets of one document.
#[derive(Default)]
struct Room {
    members: Mutex<Vec<Member>>,
}

impl Room {
    /// `frame` to every member but the sender (unless `echo`): the same bytes where the member
    /// uses the sender's address, which is every case but the provider's session addresses.
    fn forward(&self, from: (u64, &str), frame: &Bytes, echo: bool) {
        let (socket, address) = from;
        let body = &frame[var_uint_len(address.len() as u64) + address.len()..];
        for m in lock(&self.members).iter() {
            if m.socket == socket && *m.address == *address {
                if echo {
                    m.outbox.push(frame.clone());
                }
            } else if *m.address == *address {
                m.outbox.push(frame.clone());
            } else {
                m.outbox
                    .push(Bytes::from(prepend_address(&m.address, body)));
            }
        }
    }
}

/// Every document with at least one socket.
#[derive(Default)]
pub struct Hub {
    // Lock order: `rooms`, then a room's `members`.
    rooms: Mutex<HashMap<String, Arc<Room>>>,
    next_socket: AtomicU64,
}

/// What one socket subscribed to, by the address it used.
struct Subscription {
    room: Arc<Room>,
    /// `SyncStatus(1)` under that address, encoded once.
    ack: Bytes,
}

/// One socket's side of the hub.
pub struct Socket {
    id: u64,
    hub: Arc<Hub>,
    outbox: Arc<Outbox>,
    subscriptions: HashMap<String, Subscription>,
}

impl Socket {
    pub fn new(hub: Arc<Hub>, outbox: Arc<Outbox>) -> Socket {
        let id = hub.next_socket.fetch_add(1, Ordering::Relaxed);
        Socket {
            id,
            hub,
            outbox,
            subscriptions: HashMap::new(),
        }
    }

    /// The subscription for `address`, joining its document on the first frame that names it.
    fn subscription(&mut self, address: &str) -> &Subscription {
        if !self.subscriptions.contains_key(address) {
            let member = Member {
                socket: self.id,
                address: Arc::from(address),
                outbox: self.outbox.clone(),
            };
            let room = {
                let mut rooms = lock(&self.hub.rooms);
                let room = rooms.entry(document_name(address).to_string()).or_default();
                lock(&room.members).push(member);
                room.clone()
            };
            let ack = Bytes::from(encode(address, &Message::SyncStatus(true)));
            self.subscriptions
                .insert(address.to_string(), Subscription { room, ack });
        }
        &self.subscriptions[address]
    }

    fn leave(&mut self, address: &str) {
        let Some(sub) = self.subscriptions.remove(address) else {
            return;
        };
        let mut rooms = lock(&self.hub.rooms);
        let mut members = lock(&sub.room.members);
        members.retain(|m| !(m.socket == self.id && *m.address == *address));
        if members.is_empty() {
            rooms.remove(document_name(address));
        }
    }

    pub fn leave_all(&mut self) {
        let addresses: Vec<String> = self.subscriptions.keys().cloned().collect();
        for a in addresses {
            self.leave(&a);
        }
    }

    /// Answers one frame from the client: replies for this socket go to `replies`, frames for
    /// the other sockets of the document into their queues.
    pub fn on_frame(&mut self, frame: &Bytes, replies: &mut Vec<Bytes>) -> Result<(), FrameError> {
        let (address, message) = match decode(frame)? {
            Packet::Ping => {
                replies.push(Bytes::from_static(&PONG_FRAME));
                return Ok(());
            }
            Packet::Pong => return Ok(()),
            Packet::Message { address, message } => (address, message),
        };
        if let Message::Close(_) = message {
            self.leave(address);
            return Ok(());
        }
        let me = (self.id, address);
        let sub = self.subscription(address);
        match message {
            Message::Auth(_) => {
                let ok = AuthMessage::Authenticated {
                    scope: SCOPE_READ_WRITE,
                };
                replies.push(encode(address, &Message::Auth(ok)).into());
            }
            Message::Sync(SyncMessage::Step1(_)) => {
                // Hocuspocus's order: its own state vector, then the diff (nothing, here).
                let step1 = SyncMessage::Step1(&EMPTY_STATE_VECTOR);
                replies.push(encode(address, &Message::Sync(step1)).into());
                let step2 = SyncMessage::Step2(&EMPTY_UPDATE);
                replies.push(encode(address, &Message::Sync(step2)).into());
            }
            Message::Sync(SyncMessage::Update(_)) => {
                sub.room.forward(me, frame, false);
                replies.push(sub.ack.clone());
            }
            Message::Sync(SyncMessage::Step2(update)) => {
                // Hocuspocus broadcasts what a SyncStep2 adds as an Update, and an empty one
                // adds nothing: once per handshake, so re-encoding it costs nothing measurable.
                if update != EMPTY_UPDATE {
                    let as_update = encode(address, &Message::Sync(SyncMessage::Update(update)));
                    sub.room.forward(me, &Bytes::from(as_update), false);
                }
                replies.push(sub.ack.clone());
            }
            // Echoed to the sender too, as Hocuspocus does: it keeps the provider's watchdog
            // fed on a document nobody else writes to.
            Message::Awareness(_) => sub.room.forward(me, frame, true),
            Message::Stateless(_) => sub.room.forward(me, frame, false),
            // No awareness states are kept to answer a query; the rest is server-to-client or
            // server-internal.
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn socket(hub: &Arc<Hub>) -> (Socket, mpsc::UnboundedReceiver<Bytes>) {
        let (outbox, rx) = Outbox::new();
        (Socket::new(hub.clone(), outbox), rx)
    }

    fn update(address: &str, payload: &[u8]) -> Bytes {
        encode(address, &Message::Sync(SyncMessage::Update(payload))).into()
    }

    #[test]
    fn an_update_reaches_the_other_sockets_under_their_own_address_and_is_acked() {
        let hub = Arc::new(Hub::default());
        let (mut writer, mut writer_rx) = socket(&hub);
        let (mut same, mut same_rx) = socket(&hub);
        let (mut session, mut session_rx) = socket(&hub);
        let mut replies = Vec::new();
        for (s, address) in [(&mut same, "doc"), (&mut session, "doc\0s1")] {
            let auth = Message::Auth(AuthMessage::Token {
                token: "",
                provider_version: None,
            });
            s.on_frame(&encode(address, &auth).into(), &mut replies)
                .unwrap();
        }
        replies.clear();
        let frame = update("doc", &[1, 2, 3]);
        writer.on_frame(&frame, &mut replies).unwrap();
        assert_eq!(
            replies,
            vec![Bytes::from(encode("doc", &Message::SyncStatus(true)))]
        );
        assert_eq!(same_rx.try_recv().unwrap(), frame);
        assert_eq!(
            session_rx.try_recv().unwrap(),
            update("doc\0s1", &[1, 2, 3])
        );
        assert!(
            writer_rx.try_recv().is_err(),
            "the sender does not get its own update"
        );
        same.leave_all();
        session.leave_all();
        writer.leave_all();
        assert!(lock(&hub.rooms).is_empty());
    }

    #[test]
    fn a_queue_over_the_bound_stops_taking_frames_and_says_so() {
        let (outbox, mut rx) = Outbox::new();
        let chunk = Bytes::from(vec![0u8; 1 << 20]);
        for _ in 0..(MAX_QUEUED_BYTES >> 20) {
            outbox.push(chunk.clone());
        }
        assert!(!outbox.overflowed());
        outbox.push(chunk.clone());
        assert!(outbox.overflowed());
        let mut queued = 0;
        while rx.try_recv().is_ok() {
            queued += 1;
        }
        assert_eq!(queued, MAX_QUEUED_BYTES >> 20);
    }
}
