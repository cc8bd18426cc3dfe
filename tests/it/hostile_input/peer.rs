//! Connections of the scenes: opening a document, an honest peer, the problems a test gathers.

use super::*;

/// Auth + SyncStep1 (with `state_vector`), as the provider sends them back to back; returns
/// the server's SyncStep2.
pub(super) fn try_open(
    client: &mut Client,
    address: &str,
    state_vector: &[u8],
) -> Result<Vec<u8>, String> {
    client.try_send(
        address,
        Message::Auth(AuthMessage::Token {
            token: "any",
            provider_version: Some("4.8.0"),
        }),
    )?;
    client.try_send(address, Message::Sync(SyncMessage::Step1(state_vector)))?;
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        match client.try_recv(Duration::from_millis(500))? {
            Received::Frame(frame) => match protocol::decode(&frame) {
                Ok(Packet::Message {
                    address: a,
                    message,
                }) if a == address => match message {
                    Message::Sync(SyncMessage::Step2(update)) => return Ok(update.to_vec()),
                    Message::Auth(AuthMessage::PermissionDenied { reason }) => {
                        return Err(format!("permission denied: {reason}"));
                    }
                    Message::Close(reason) => return Err(format!("CLOSE {reason:?}")),
                    _ => {}
                },
                _ => {}
            },
            Received::Closed(c) => return Err(format!("socket closed {c:?}")),
            Received::TimedOut => {}
        }
    }
    Err(format!("no SyncStep2 for {address} within {WAIT:?}"))
}

/// An honest editor: a connection plus the document it sees, made of its own edits and of the
/// honest updates the server sends it. Updates from anyone else are not applied (they could
/// crash this test process too) but recorded in `foreign`.
pub(super) struct Peer {
    pub(super) label: &'static str,
    pub(super) client: Client,
    pub(super) address: String,
    pub(super) doc: yrs::Doc,
    pub(super) text: TextRef,
    pub(super) foreign: Vec<String>,
}

impl Peer {
    pub(super) fn join(
        daemon: &Daemon,
        address: &str,
        id: u64,
        label: &'static str,
    ) -> Result<Peer, String> {
        let mut client = daemon.ws();
        let step2 = try_open(&mut client, address, &[0])?;
        let doc = yrs::Doc::with_client_id(id);
        let text = doc.get_or_insert_text("default");
        let mut peer = Peer {
            label,
            client,
            address: address.to_string(),
            doc,
            text,
            foreign: Vec::new(),
        };
        peer.absorb(&step2, "handshake SyncStep2");
        Ok(peer)
    }

    pub(super) fn absorb(&mut self, update: &[u8], what: &str) {
        match client_ids(update) {
            Ok(ids) if ids.iter().all(|id| HONEST.contains(id)) => {
                let applied = Update::decode_v1(update)
                    .map_err(|e| e.to_string())
                    .and_then(|u| {
                        self.doc
                            .transact_mut()
                            .apply_update(u)
                            .map_err(|e| e.to_string())
                    });
                if let Err(e) = applied {
                    self.foreign
                        .push(format!("{what} that does not apply: {e}"));
                }
            }
            Ok(ids) => self
                .foreign
                .push(format!("{what} carrying client id(s) {ids:?}")),
            Err(e) => self
                .foreign
                .push(format!("{what} that does not decode: {e}")),
        }
    }

    pub(super) fn text(&self) -> String {
        self.text.get_string(&self.doc.transact())
    }

    pub(super) fn state_vector(&self) -> Vec<u8> {
        self.doc.transact().state_vector().encode_v1()
    }

    /// Appends `s` to the text and sends the update.
    pub(super) fn edit(&mut self, s: &str) -> Result<(), String> {
        let update = {
            let mut txn = self.doc.transact_mut();
            let end = self.text.len(&txn);
            self.text.insert(&mut txn, end, s);
            txn.encode_update_v1()
        };
        self.send(&update)
    }

    /// `count` chunks in one update, each inserted at the start so that every chunk stays an
    /// item of its own: a document that is large in items, not just in bytes.
    pub(super) fn edit_many(&mut self, chunk: &str, count: usize) -> Result<(), String> {
        let update = {
            let mut txn = self.doc.transact_mut();
            for _ in 0..count {
                self.text.insert(&mut txn, 0, chunk);
            }
            txn.encode_update_v1()
        };
        self.send(&update)
    }

    pub(super) fn send(&mut self, update: &[u8]) -> Result<(), String> {
        let address = self.address.clone();
        self.client
            .try_send(&address, Message::Sync(SyncMessage::Update(update)))
            .map_err(|e| format!("{}: send failed: {e}", self.label))
    }

    /// One step of reading: applies updates, returns a SyncStatus; errors when the server
    /// detached this editor in any way.
    pub(super) fn step(&mut self) -> Result<Option<bool>, String> {
        let received = self
            .client
            .try_recv(Duration::from_millis(500))
            .map_err(|e| format!("{}: connection broke: {e}", self.label))?;
        match received {
            Received::Frame(frame) => match protocol::decode(&frame) {
                Ok(Packet::Message { address, message }) if address == self.address => {
                    match message {
                        Message::Sync(SyncMessage::Update(u) | SyncMessage::Step2(u)) => {
                            let u = u.to_vec();
                            self.absorb(&u, "a broadcast update");
                            Ok(None)
                        }
                        Message::SyncStatus(ok) => Ok(Some(ok)),
                        Message::Close(reason) => Err(format!(
                            "{}: the server CLOSEd its document ({reason:?})",
                            self.label
                        )),
                        _ => Ok(None),
                    }
                }
                _ => Ok(None),
            },
            Received::Closed(c) => Err(format!("{}: its socket was closed {c:?}", self.label)),
            Received::TimedOut => Ok(None),
        }
    }

    pub(super) fn await_ack(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            match self.step()? {
                Some(true) => return Ok(()),
                Some(false) => return Err(format!("{}: edit refused (SyncStatus 0)", self.label)),
                None => {}
            }
        }
        Err(format!(
            "{}: edit not acknowledged within {WAIT:?}",
            self.label
        ))
    }

    pub(super) fn await_text(&mut self, expected: &str) -> Result<(), String> {
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            if self.text() == expected {
                return Ok(());
            }
            self.step()?;
        }
        Err(format!(
            "{}: has {}, expected {}",
            self.label,
            short(&self.text()),
            short(expected)
        ))
    }
}

/// What the attacker's connection got after sending its updates.
#[derive(Debug, PartialEq)]
pub(super) enum Event {
    Status(bool),
    DocClosed(Option<String>),
    SocketClosed(Option<(u16, String)>),
    Broken(String),
}

/// Every deviation from the contract, reported together at the end of a test.
#[derive(Default)]
pub(super) struct Problems(pub(super) Vec<String>);

impl Problems {
    pub(super) fn check(&mut self, ok: bool, what: impl FnOnce() -> String) {
        if !ok {
            self.0.push(what());
        }
    }

    pub(super) fn result<T>(&mut self, r: Result<T, String>) -> Option<T> {
        r.map_err(|e| self.0.push(e)).ok()
    }

    pub(super) fn finish(self) {
        assert!(
            self.0.is_empty(),
            "{} problem(s):\n  - {}",
            self.0.len(),
            self.0.join("\n  - ")
        );
    }
}
