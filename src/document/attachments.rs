//! The sessions attached to a document: one [`Attachment`] per socket and address, with its
//! access, its awareness bookkeeping, and its outbound share, which keeps a slow reader from
//! piling up memory.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;

use super::{ConnKey, Outbound, SessionHandle};
use crate::awareness::Owner;
use crate::budget::{AbortReason, SocketMeter};
use crate::protocol::{Message, MessageType, encode_body, prepend_address};

/// Distinct client ids one attachment's awareness refusals are logged for; past it, one last
/// line says that further ones are only counted.
const MAX_REFUSALS_LOGGED: usize = 8;

/// Awareness owner numbers, unique in the process (ConnKeys are per socket and address; a
/// number is cheaper to compare and store in the awareness table).
static NEXT_AWARENESS_OWNER: AtomicU64 = AtomicU64::new(1);

/// Whether an awareness refusal is logged (the metric counts every one).
#[derive(Debug, PartialEq, Eq)]
pub(super) enum RefusalLog {
    Quiet,
    Log,
    /// The last one logged for this attachment: say that further ones are only counted.
    LogLast,
}

pub(super) struct Attachment {
    session: SessionHandle,
    read_only: bool,
    /// The socket's meter: what is queued for it, and the switch that closes it at once.
    meter: Arc<SocketMeter>,
    /// This attachment as an awareness owner: [`Owner::Connection`] of this number. The table
    /// knows which client ids it owns, and removes them when it leaves.
    awareness_owner: u64,
    /// Whether a refusal for owning too many awareness client ids was logged (once per
    /// attachment).
    over_limit_logged: bool,
    /// Client ids whose refused entries (owned by another connection) were logged: one warning
    /// per id, not one per frame, and at most [`MAX_REFUSALS_LOGGED`] ids, so a flood cannot
    /// grow it.
    refusals_logged: Vec<u64>,
    /// What this connection's changes carry into the `change` webhook.
    hook: Option<Arc<crate::webhooks::HookContext>>,
    /// Who its updates are recorded as.
    author: Arc<str>,
}

impl Attachment {
    pub(super) fn new(session: SessionHandle, read_only: bool, meter: Arc<SocketMeter>) -> Self {
        Attachment {
            hook: None,
            author: crate::store::anonymous(),
            session,
            read_only,
            meter,
            awareness_owner: NEXT_AWARENESS_OWNER.fetch_add(1, Ordering::Relaxed),
            over_limit_logged: false,
            refusals_logged: Vec::new(),
        }
    }

    pub(super) fn with_hook(mut self, hook: Option<Arc<crate::webhooks::HookContext>>) -> Self {
        self.hook = hook;
        self
    }

    pub(super) fn by(mut self, author: Arc<str>) -> Self {
        self.author = author;
        self
    }

    pub(super) fn author(&self) -> &Arc<str> {
        &self.author
    }

    pub(super) fn hook(&self) -> Option<&Arc<crate::webhooks::HookContext>> {
        self.hook.as_ref()
    }

    pub(super) fn session(&self) -> &SessionHandle {
        &self.session
    }

    pub(super) fn read_only(&self) -> bool {
        self.read_only
    }

    pub(super) fn awareness_owner(&self) -> Owner {
        Owner::Connection(self.awareness_owner)
    }

    /// An awareness entry for `client_id`, owned by another connection, was refused.
    pub(super) fn refused_client(&mut self, client_id: u64) -> RefusalLog {
        let logged = &mut self.refusals_logged;
        if logged.contains(&client_id) || logged.len() > MAX_REFUSALS_LOGGED {
            return RefusalLog::Quiet;
        }
        logged.push(client_id);
        if logged.len() > MAX_REFUSALS_LOGGED {
            RefusalLog::LogLast
        } else {
            RefusalLog::Log
        }
    }

    /// The attachment asked for one awareness client id too many: `true` the first time.
    pub(super) fn first_over_limit(&mut self) -> bool {
        !std::mem::replace(&mut self.over_limit_logged, true)
    }

    /// Hands a frame to the socket unless that would exceed its outbound share. The frame
    /// carries its charge: if the session is gone, dropping the undelivered message releases it.
    fn deliver(&self, frame: Bytes, ty: MessageType, limit: usize) -> bool {
        let Some(charge) = self.meter.try_queue_outbound(frame.len(), limit) else {
            return false;
        };
        self.session.send(Outbound { frame, ty, charge });
        true
    }
}

pub(super) struct Attachments {
    by_key: HashMap<ConnKey, Attachment>,
    /// Per-socket bound of unread outbound bytes.
    max_outbound_bytes: usize,
}

impl Attachments {
    pub(super) fn new(max_outbound_bytes: usize) -> Self {
        Attachments {
            by_key: HashMap::new(),
            max_outbound_bytes,
        }
    }

    pub(super) fn attach(&mut self, key: ConnKey, attachment: Attachment) {
        self.by_key.insert(key, attachment);
    }

    pub(super) fn detach(&mut self, key: &ConnKey) -> Option<Attachment> {
        self.by_key.remove(key)
    }

    /// Every attachment, removed.
    pub(super) fn detach_all(&mut self) -> impl Iterator<Item = Attachment> + '_ {
        self.by_key.drain().map(|(_, attachment)| attachment)
    }

    pub(super) fn get(&self, key: &ConnKey) -> Option<&Attachment> {
        self.by_key.get(key)
    }

    pub(super) fn get_mut(&mut self, key: &ConnKey) -> Option<&mut Attachment> {
        self.by_key.get_mut(key)
    }

    pub(super) fn keys(&self) -> impl Iterator<Item = &ConnKey> {
        self.by_key.keys()
    }

    pub(super) fn contains(&self, key: &ConnKey) -> bool {
        self.by_key.contains_key(key)
    }

    pub(super) fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    pub(super) fn set_read_only(&mut self, key: &ConnKey, read_only: bool) {
        if let Some(attachment) = self.by_key.get_mut(key) {
            attachment.read_only = read_only;
        }
    }

    /// Sends one message to one attachment. `false` when that socket does not read what it is
    /// sent (over its outbound share): the caller drops it with [`Self::abort_slow_reader`].
    pub(super) fn send(&self, key: &ConnKey, message: &Message<'_>) -> bool {
        let Some(attachment) = self.by_key.get(key) else {
            return true;
        };
        let frame = Bytes::from(prepend_address(&key.address, &encode_body(message)));
        attachment.deliver(frame, message.message_type(), self.max_outbound_bytes)
    }

    /// Sends one message to every attachment (optionally but one) and returns those too slow
    /// to take it. The body is encoded once; only the address differs between attachments, and
    /// nearly all share the plain name.
    pub(super) fn broadcast(
        &self,
        message: &Message<'_>,
        except: Option<&ConnKey>,
    ) -> Vec<ConnKey> {
        let body = encode_body(message);
        let ty = message.message_type();
        let mut framed: HashMap<&str, Bytes> = HashMap::new();
        let mut too_slow = Vec::new();
        for (key, attachment) in &self.by_key {
            if except == Some(key) {
                continue;
            }
            let frame = framed
                .entry(&key.address)
                .or_insert_with(|| Bytes::from(prepend_address(&key.address, &body)))
                .clone();
            if !attachment.deliver(frame, ty, self.max_outbound_bytes) {
                too_slow.push(key.clone());
            }
        }
        too_slow
    }

    /// Closes a socket that does not read. Not a message to the session: a socket that does not
    /// read is not polled, so the session would not see it until the client reads again. The
    /// socket's write task drops it (and what it holds) at once.
    pub(super) fn abort_slow_reader(&self, key: &ConnKey) {
        if let Some(attachment) = self.by_key.get(key) {
            attachment.meter.abort(AbortReason::SlowReader);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::budget::MemoryBudget;
    use crate::document::{CloseSocket, SessionLink, UpdateRefused};

    /// A session that records the frames it is sent.
    #[derive(Clone, Default)]
    struct Recorder(Arc<Mutex<Vec<Bytes>>>);

    impl SessionLink for Recorder {
        fn outbound(&self, message: Outbound) {
            self.0.lock().unwrap().push(message.frame);
        }
        fn close_socket(&self, _: CloseSocket) {}
        fn update_refused(&self, _: UpdateRefused) {}
    }

    fn key(session: u64, address: &str) -> ConnKey {
        ConnKey {
            session,
            address: Arc::from(address),
        }
    }

    fn attach(
        attachments: &mut Attachments,
        budget: &Arc<MemoryBudget>,
        key: &ConnKey,
    ) -> (Recorder, Arc<SocketMeter>) {
        let recorder = Recorder::default();
        let meter = SocketMeter::new(key.session, budget);
        let attachment = Attachment::new(
            SessionHandle::new(recorder.clone()),
            false,
            Arc::clone(&meter),
        );
        attachments.attach(key.clone(), attachment);
        (recorder, meter)
    }

    #[test]
    fn broadcast_frames_each_address_and_skips_the_sender() {
        let budget = MemoryBudget::unmetered(1 << 30);
        let mut attachments = Attachments::new(1 << 20);
        let (plain, sender, aware) = (key(1, "doc"), key(2, "doc"), key(3, "doc#aware"));
        let (to_plain, _m1) = attach(&mut attachments, &budget, &plain);
        let (to_sender, _m2) = attach(&mut attachments, &budget, &sender);
        let (to_aware, _m3) = attach(&mut attachments, &budget, &aware);
        let message = Message::Stateless("hi");
        assert!(attachments.broadcast(&message, Some(&sender)).is_empty());
        let body = encode_body(&message);
        let frames = |r: &Recorder| r.0.lock().unwrap().clone();
        assert_eq!(
            frames(&to_plain),
            [Bytes::from(prepend_address("doc", &body))]
        );
        assert_eq!(
            frames(&to_aware),
            [Bytes::from(prepend_address("doc#aware", &body))]
        );
        assert!(frames(&to_sender).is_empty());
        assert!(attachments.send(&sender, &message));
        assert_eq!(frames(&to_sender).len(), 1);
    }

    #[test]
    fn a_socket_over_its_outbound_share_is_reported_and_aborted() {
        let budget = MemoryBudget::unmetered(1 << 30);
        let mut attachments = Attachments::new(16);
        let slow = key(1, "doc");
        let (recorder, meter) = attach(&mut attachments, &budget, &slow);
        let big = "x".repeat(32);
        let too_slow = attachments.broadcast(&Message::Stateless(&big), None);
        assert_eq!(too_slow, std::slice::from_ref(&slow));
        assert!(!attachments.send(&slow, &Message::Stateless(&big)));
        assert!(recorder.0.lock().unwrap().is_empty(), "nothing was queued");
        attachments.abort_slow_reader(&slow);
        assert_eq!(meter.aborted(), Some(AbortReason::SlowReader));
        assert!(
            attachments.send(&key(9, "doc"), &Message::Stateless(&big)),
            "gone"
        );
    }

    #[test]
    fn access_and_awareness_bookkeeping_are_per_attachment() {
        let budget = MemoryBudget::unmetered(1 << 30);
        let mut attachments = Attachments::new(1 << 20);
        let (a, b) = (key(1, "doc"), key(2, "doc"));
        let _ra = attach(&mut attachments, &budget, &a);
        let _rb = attach(&mut attachments, &budget, &b);
        attachments.set_read_only(&a, true);
        assert!(attachments.get(&a).unwrap().read_only());
        assert!(!attachments.get(&b).unwrap().read_only());
        assert_ne!(
            attachments.get(&a).unwrap().awareness_owner(),
            attachments.get(&b).unwrap().awareness_owner()
        );

        let attachment = attachments.get_mut(&a).unwrap();
        assert_eq!(attachment.refused_client(5), RefusalLog::Log);
        assert_eq!(
            attachment.refused_client(5),
            RefusalLog::Quiet,
            "once per id"
        );
        for id in 6..13 {
            assert_eq!(attachment.refused_client(id), RefusalLog::Log);
        }
        assert_eq!(attachment.refused_client(13), RefusalLog::LogLast);
        assert_eq!(attachment.refused_client(14), RefusalLog::Quiet);
        assert!(attachment.first_over_limit());
        assert!(!attachment.first_over_limit());

        assert!(attachments.detach(&a).is_some());
        assert!(!attachments.contains(&a));
        assert_eq!(attachments.detach_all().count(), 1);
        assert!(attachments.is_empty());
    }
}
