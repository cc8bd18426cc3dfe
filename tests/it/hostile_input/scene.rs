//! A scene: an honest editor and watcher, an attacker, and the checks every finding shares.

use super::*;

/// Whether the update under test must be refused, or may also be accepted (findings 1 and 6,
/// where survival and convergence are what counts).
#[derive(Clone, Copy, PartialEq)]
pub(super) enum Expect {
    Refused,
    RefusedOrAccepted,
}

pub(super) struct Scene {
    pub(super) daemon: Daemon,
    pub(super) doc: &'static str,
    pub(super) editor: Peer,
    pub(super) watcher: Peer,
    pub(super) attacker: Client,
    pub(super) invalid_before: f64,
    pub(super) _dir: tempfile::TempDir,
}

impl Scene {
    /// A daemon, an editor and a watcher on `doc` with the editor's first text in it, and an
    /// attacker with `doc` and a second document open.
    pub(super) fn start(doc: &'static str, env: &[(&str, &str)]) -> Scene {
        Self::start_with(doc, env, |editor| {
            editor.edit("honest text before the attack.")
        })
    }

    pub(super) fn start_with(
        doc: &'static str,
        env: &[(&str, &str)],
        first_edit: impl FnOnce(&mut Peer) -> Result<(), String>,
    ) -> Scene {
        let dir = tempfile::tempdir().unwrap();
        let daemon = Daemon::start(dir.path(), env);
        let mut editor = Peer::join(&daemon, doc, EDITOR_ID, "honest editor").unwrap();
        let mut watcher = Peer::join(&daemon, doc, WATCHER_ID, "watcher").unwrap();
        first_edit(&mut editor).unwrap();
        editor.await_ack().unwrap();
        watcher.await_text(&editor.text()).unwrap();
        let mut attacker = daemon.ws();
        try_open(&mut attacker, doc, &[0]).unwrap();
        try_open(&mut attacker, SIDE_DOC, &[0]).unwrap();
        let invalid_before = invalid_updates(&daemon);
        Scene {
            daemon,
            doc,
            editor,
            watcher,
            attacker,
            invalid_before,
            _dir: dir,
        }
    }

    /// Sends `updates` back to back on the attacker's socket and records the answers until
    /// every one is acknowledged, the document is CLOSEd, or the socket ends.
    pub(super) fn attack(&mut self, updates: &[Vec<u8>]) -> Vec<Event> {
        let mut events = Vec::new();
        for u in updates {
            if let Err(e) = self
                .attacker
                .try_send(self.doc, Message::Sync(SyncMessage::Update(u)))
            {
                events.push(Event::Broken(e));
                return events;
            }
        }
        let deadline = Instant::now() + WAIT;
        let mut acked = 0;
        while Instant::now() < deadline && acked < updates.len() {
            match self.attacker.try_recv(Duration::from_millis(500)) {
                Ok(Received::Frame(frame)) => match protocol::decode(&frame) {
                    Ok(Packet::Message { address, message }) if address == self.doc => {
                        match message {
                            Message::SyncStatus(ok) => {
                                acked += usize::from(ok);
                                events.push(Event::Status(ok));
                            }
                            Message::Close(reason) => {
                                events.push(Event::DocClosed(reason.map(str::to_string)));
                                return events;
                            }
                            _ => {}
                        }
                    }
                    _ => {}
                },
                Ok(Received::Closed(c)) => {
                    events.push(Event::SocketClosed(c));
                    return events;
                }
                Ok(Received::TimedOut) => {}
                Err(e) => {
                    events.push(Event::Broken(e));
                    return events;
                }
            }
        }
        events
    }

    /// Panics at once when the daemon is gone: nothing else can be checked then.
    pub(super) fn assert_alive(&mut self, answer: &[Event]) {
        if matches!(http_get(self.daemon.port, "/health"), Some((200, _))) {
            return;
        }
        // The process may take a moment to be reaped (or to write a core dump).
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            if let Some(status) = self.daemon.exit_status() {
                let how = match status.signal() {
                    Some(6) => "SIGABRT (abort, e.g. stack overflow)".to_string(),
                    Some(11) => "SIGSEGV".to_string(),
                    Some(s) => format!("signal {s}"),
                    None => format!("exit code {:?}", status.code()),
                };
                panic!(
                    "the daemon died from the hostile update: {how}; the attacker saw {answer:?}"
                );
            }
            if matches!(http_get(self.daemon.port, "/health"), Some((200, _))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the daemon stopped answering /health; the attacker saw {answer:?}");
    }

    /// After the attack: the editor's next edit is acknowledged and reaches the watcher,
    /// `/health` is ok, and a late joiner gets the editor's text.
    pub(super) fn honest_editing_goes_on(&mut self, p: &mut Problems, expect: Expect) {
        if p.result(self.editor.edit(" Honest edit after the attack."))
            .is_some()
        {
            let acked = self.editor.await_ack();
            p.check(acked.is_ok(), || {
                format!(
                    "the honest editor's edit after the attack was not acknowledged: {}",
                    acked.unwrap_err()
                )
            });
        }
        let expected = self.editor.text();
        let seen = self.watcher.await_text(&expected);
        p.check(seen.is_ok(), || {
            format!(
                "the editor's edit was not broadcast to the watcher: {}",
                seen.unwrap_err()
            )
        });
        match http_get(self.daemon.port, "/health") {
            Some((200, body)) => p.check(body.contains("\"status\":\"ok\""), || {
                format!("/health is not ok: {body}")
            }),
            other => p.0.push(format!("/health does not answer 200: {other:?}")),
        }
        self.late_joiner_sees_the_editors_text(p, expect, "");
        if expect == Expect::Refused {
            for peer in [&self.editor, &self.watcher] {
                p.check(peer.foreign.is_empty(), || {
                    format!(
                        "hostile bytes reached the {}: {:?}",
                        peer.label, peer.foreign
                    )
                });
            }
        }
    }

    /// A fresh connection's SyncStep2 renders to the editor's text; with `Expect::Refused` it
    /// also holds nothing of anyone but the honest editors (nothing was applied or stored).
    pub(super) fn late_joiner_sees_the_editors_text(
        &self,
        p: &mut Problems,
        expect: Expect,
        when: &str,
    ) {
        let expected = self.editor.text();
        let mut late = self.daemon.ws();
        let Some(step2) = p.result(
            try_open(&mut late, self.doc, &[0])
                .map_err(|e| format!("a late joiner{when} could not open the document: {e}")),
        ) else {
            return;
        };
        let text = match try_render(&step2) {
            Ok(text) => text,
            Err(e) => {
                p.0.push(format!(
                    "a late joiner{when} cannot load the document: its SyncStep2 {e}"
                ));
                return;
            }
        };
        p.check(text == expected, || {
            format!(
                "a late joiner{when} sees {} instead of the editor's {}",
                short(&text),
                short(&expected)
            )
        });
        if expect == Expect::Refused {
            // It rendered, so it decodes.
            let ids = client_ids(&step2).unwrap_or_default();
            p.check(ids.iter().all(|id| HONEST.contains(id)), || {
                format!(
                    "the document{when} holds content of client(s) {:?}: the hostile update was applied",
                    ids.iter().filter(|id| !HONEST.contains(id)).collect::<Vec<_>>()
                )
            });
        }
    }

    /// The refusal contract, on the attacker's side.
    pub(super) fn refused(&mut self, p: &mut Problems, answer: &[Event]) {
        p.check(
            matches!(
                answer,
                [Event::Status(false), Event::DocClosed(Some(_))]
            ),
            || {
                format!(
                    "the attacker should get SyncStatus(0) then a CLOSE for the document, and keep its socket; it got {answer:?}"
                )
            },
        );
        let invalid = invalid_updates(&self.daemon);
        p.check(invalid > self.invalid_before, || {
            format!(
                "{INVALID_UPDATE:?} did not grow ({} → {invalid})",
                self.invalid_before
            )
        });
        // The attacker's other document keeps working on the same socket.
        let sent = self.attacker.try_send(
            SIDE_DOC,
            Message::Sync(SyncMessage::Update(&text_update(3003, "side"))),
        );
        let acked = sent.and_then(|()| {
            let deadline = Instant::now() + WAIT;
            while Instant::now() < deadline {
                match self.attacker.try_recv(Duration::from_millis(500))? {
                    Received::Frame(frame) => {
                        if let Ok(Packet::Message {
                            address: SIDE_DOC,
                            message: Message::SyncStatus(ok),
                        }) = protocol::decode(&frame)
                        {
                            return if ok { Ok(()) } else { Err("refused".into()) };
                        }
                    }
                    Received::Closed(c) => return Err(format!("socket closed {c:?}")),
                    Received::TimedOut => {}
                }
            }
            Err("no acknowledgement".into())
        });
        p.check(acked.is_ok(), || {
            format!(
                "the attacker's other document stopped working after one refused update: {}",
                acked.unwrap_err()
            )
        });
    }
}
