//! The updates handed to persistence and not yet acknowledged. This is the one place that
//! decides what a `SyncStatus` after an update says: `true` only once the writer's completion
//! for that update arrived, and in the order the updates were handed over. It also holds what
//! goes to the other nodes once durable: nothing reaches another node (and its editors, who may
//! speak y-websocket and never see an acknowledgement) that this node's store does not have.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::sync::oneshot;

use super::ConnKey;

/// An update whose fate is known: the sender is told `SyncStatus(durable)`.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Ack {
    pub(super) key: ConnKey,
    pub(super) durable: bool,
    /// The update, for the cluster relay, when it was stored and is durable.
    pub(super) relay: Option<Bytes>,
}

/// Updates handed to persistence, oldest first, with the completion that says durable. One
/// waiter watches the oldest (the group committer completes them in order), so the queue also
/// knows whether that waiter is running.
#[derive(Default)]
pub(super) struct AckQueue {
    waiting: VecDeque<(ConnKey, oneshot::Receiver<()>, Option<Bytes>)>,
    waiter_running: bool,
}

impl AckQueue {
    /// Queues the acknowledgement of an update handed to persistence, with the update to relay
    /// once it is durable (`None`: nothing new was stored). Returns `true` when no waiter is
    /// watching the queue yet: the caller starts one (it is counted as running now).
    #[must_use]
    pub(super) fn push(
        &mut self,
        key: ConnKey,
        durable: oneshot::Receiver<()>,
        relay: Option<Bytes>,
    ) -> bool {
        self.waiting.push_back((key, durable, relay));
        !std::mem::replace(&mut self.waiter_running, true)
    }

    /// Updates handed to persistence and not yet durable (or known lost).
    pub(super) fn in_flight(&self) -> usize {
        self.waiting.len()
    }

    /// The oldest update if its completion has arrived, `None` while it is still being written
    /// (`task` is then woken when it is). A completion dropped without being sent means the
    /// writer is gone (shutdown; it never gives up otherwise): not known durable.
    pub(super) fn poll_next(&mut self, task: &mut Context<'_>) -> Option<Ack> {
        let (_, durable, _) = self.waiting.front_mut()?;
        let result = match Pin::new(durable).poll(task) {
            Poll::Ready(result) => result,
            Poll::Pending => return None,
        };
        let (key, _, relay) = self.waiting.pop_front()?;
        let durable = result.is_ok();
        Some(Ack {
            key,
            durable,
            relay: relay.filter(|_| durable),
        })
    }

    /// Called by the waiter after [`Self::poll_next`] ran dry: `true` when nothing is left, and
    /// the waiter stops (the next [`Self::push`] starts another).
    pub(super) fn waiter_may_stop(&mut self) -> bool {
        if self.waiting.is_empty() {
            self.waiter_running = false;
        }
        !self.waiter_running
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::task::Waker;

    use super::*;

    fn key(session: u64) -> ConnKey {
        ConnKey {
            session,
            address: Arc::from("doc"),
        }
    }

    fn next(queue: &mut AckQueue) -> Option<Ack> {
        queue.poll_next(&mut Context::from_waker(Waker::noop()))
    }

    #[test]
    fn acknowledges_in_order_and_only_once_durable() {
        let mut queue = AckQueue::default();
        let (first, first_rx) = oneshot::channel();
        let (second, second_rx) = oneshot::channel::<()>();
        let (third, third_rx) = oneshot::channel::<()>();
        assert!(
            queue.push(key(1), first_rx, Some(Bytes::from_static(b"u1"))),
            "the first update starts a waiter"
        );
        assert!(
            !queue.push(key(2), second_rx, None),
            "one waiter for the whole queue"
        );
        assert!(!queue.push(key(3), third_rx, Some(Bytes::from_static(b"u3"))));
        assert_eq!(queue.in_flight(), 3);

        // The second is durable, but the first is not yet: nothing is acknowledged.
        second.send(()).unwrap();
        assert_eq!(next(&mut queue), None);
        assert!(!queue.waiter_may_stop());

        first.send(()).unwrap();
        let durable = |session, relay: Option<&'static [u8]>| {
            Some(Ack {
                key: key(session),
                durable: true,
                relay: relay.map(Bytes::from_static),
            })
        };
        assert_eq!(
            next(&mut queue),
            durable(1, Some(b"u1")),
            "relayed once durable"
        );
        assert_eq!(next(&mut queue), durable(2, None));
        assert_eq!(next(&mut queue), None);

        // A writer that went away never said durable.
        drop(third);
        let lost = Some(Ack {
            key: key(3),
            durable: false,
            relay: None,
        });
        assert_eq!(next(&mut queue), lost);
        assert_eq!(queue.in_flight(), 0);
        assert!(queue.waiter_may_stop());

        let (_later, later_rx) = oneshot::channel::<()>();
        assert!(
            queue.push(key(4), later_rx, None),
            "a stopped waiter is started again"
        );
    }
}
