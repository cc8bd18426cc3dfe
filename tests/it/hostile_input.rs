//! Hostile Yjs updates from one ordinary, authenticated client (findings 1–7 of the hostile-input
//! review), end to end against the real daemon binary.
//!
//! Every test has an honest editor and a watcher on the document before the attack; the editor
//! writes, then an attacker on its own socket sends the crafted bytes. The contract the update
//! firewall keeps, asserted here: a refused update is answered on the attacker's connection with
//! `SyncStatus(0)` and then a CLOSE frame for that document; the attacker's socket stays open
//! (its other documents keep working); `zedi_protocol_errors_total{kind="invalid_update"}` grows;
//! nothing reaches the other connections and nothing is stored. Whatever the update's fate, the
//! daemon lives, the editor is never disconnected, its next edit is acknowledged and reaches the
//! watcher, `/health` is ok, and a late joiner's SyncStep2 renders to the editor's text.
//!
//! Each test gathers every deviation before failing, so one run shows all that is wrong.

use crate::common;

use std::os::unix::process::ExitStatusExt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

use common::{Client, Daemon, Received, http_get, text_update};
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{GetString, ReadTxn, Text, TextRef, Transact, Update};
use zedi_sync::protocol::{self, AuthMessage, Message, Packet, SyncMessage};

/// Client ids of the honest editors. Anything else in a broadcast or in the stored document
/// came from an attacker.
const EDITOR_ID: u64 = 1001;
const WATCHER_ID: u64 = 1002;
const CALM_ID: u64 = 1003;
const HONEST: [u64; 3] = [EDITOR_ID, WATCHER_ID, CALM_ID];
/// A second document the attacker has open on the same socket: it must keep working.
const SIDE_DOC: &str = "attackers-other-document";
/// Bounded wait for anything the daemon should answer; generous so slow machines pass.
const WAIT: Duration = Duration::from_secs(30);
const INVALID_UPDATE: (&str, &[(&str, &str)]) =
    ("zedi_protocol_errors_total", &[("kind", "invalid_update")]);

// ---------------------------------------------------------------------------------------------
// Crafting updates (lib0 encoding, Yjs update v1)
// ---------------------------------------------------------------------------------------------

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex digit"))
        .collect()
}

fn var_uint(out: &mut Vec<u8>, mut value: u64) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn var_string(out: &mut Vec<u8>, s: &str) {
    var_uint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

/// `depth` Y.Maps each nested in the previous one (the first under root `root`), all from
/// `client`, with the outermost deleted in the same update's delete set: deleting it recurses
/// through every level.
fn nested_maps_update(client: u64, depth: u64, root: &str) -> Vec<u8> {
    let mut u = Vec::new();
    var_uint(&mut u, 1); // clients
    var_uint(&mut u, depth); // structs of that client
    var_uint(&mut u, client);
    var_uint(&mut u, 0); // first clock
    for clock in 0..depth {
        // ContentType (7) with a parentSub key (0x20): a map entry; no origins, so the parent
        // is written out.
        u.push(0x07 | 0x20);
        if clock == 0 {
            var_uint(&mut u, 1); // parent is a root type, by name
            var_string(&mut u, root);
        } else {
            var_uint(&mut u, 0); // parent is the type held by the item with this ID
            var_uint(&mut u, client);
            var_uint(&mut u, clock - 1);
        }
        var_string(&mut u, "k"); // parentSub
        var_uint(&mut u, 1); // type ref YMap
    }
    // Delete set: client, one range, the outermost map (clock 0, length 1).
    var_uint(&mut u, 1);
    var_uint(&mut u, client);
    var_uint(&mut u, 1);
    var_uint(&mut u, 0);
    var_uint(&mut u, 1);
    u
}

/// An ordinary insert of `text` into Y.Text "default" by `client`, written by hand because yrs
/// itself refuses (debug-asserts on) client ids of 2^53 and more.
fn text_insert_by(client: u64, text: &str) -> Vec<u8> {
    let mut u = Vec::new();
    var_uint(&mut u, 1);
    var_uint(&mut u, 1);
    var_uint(&mut u, client);
    var_uint(&mut u, 0);
    u.push(0x04); // ContentString, no origins
    var_uint(&mut u, 1);
    var_string(&mut u, "default");
    var_string(&mut u, text);
    var_uint(&mut u, 0); // empty delete set
    u
}

// ---------------------------------------------------------------------------------------------
// Reading updates without trusting them
// ---------------------------------------------------------------------------------------------

/// Client ids an update carries structs or deletions of. yrs may panic on hostile bytes (it
/// does on ids ≥ 2^53 in debug builds), which counts as undecodable.
fn client_ids(update: &[u8]) -> Result<Vec<u64>, String> {
    let decoded = catch_unwind(|| Update::decode_v1(update))
        .map_err(|_| "yrs panicked decoding it".to_string())?
        .map_err(|e| e.to_string())?;
    let mut ids: Vec<u64> = decoded
        .state_vector()
        .iter()
        .map(|(client, _)| client.get())
        .chain(decoded.delete_set().client_ids().map(|c| c.get()))
        .collect();
    ids.sort_unstable();
    ids.dedup();
    Ok(ids)
}

/// The Y.Text "default" of a document made from `update`, or why it could not be made.
fn try_render(update: &[u8]) -> Result<String, String> {
    catch_unwind(AssertUnwindSafe(|| {
        let doc = yrs::Doc::new();
        let text = doc.get_or_insert_text("default");
        let mut txn = doc.transact_mut();
        let decoded = Update::decode_v1(update).map_err(|e| format!("undecodable: {e}"))?;
        txn.apply_update(decoded)
            .map_err(|e| format!("does not apply: {e}"))?;
        Ok(text.get_string(&txn))
    }))
    .unwrap_or_else(|_| Err("yrs panicked applying it".into()))
}

/// A text for messages: long documents are cut.
fn short(s: &str) -> String {
    if s.len() <= 80 {
        return format!("{s:?}");
    }
    let head: String = s.chars().take(60).collect();
    format!("{head:?}… ({} bytes)", s.len())
}

/// Refused updates so far. The daemon creates this series at the first refusal, so until then
/// it is absent and reads 0.
fn invalid_updates(daemon: &Daemon) -> f64 {
    let (name, labels) = INVALID_UPDATE;
    daemon.metrics().get(name, labels).unwrap_or(0.0)
}

// ---------------------------------------------------------------------------------------------
// Connections
// ---------------------------------------------------------------------------------------------

/// Auth + SyncStep1 (with `state_vector`), as the provider sends them back to back; returns
/// the server's SyncStep2.
fn try_open(client: &mut Client, address: &str, state_vector: &[u8]) -> Result<Vec<u8>, String> {
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
struct Peer {
    label: &'static str,
    client: Client,
    address: String,
    doc: yrs::Doc,
    text: TextRef,
    foreign: Vec<String>,
}

impl Peer {
    fn join(daemon: &Daemon, address: &str, id: u64, label: &'static str) -> Result<Peer, String> {
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

    fn absorb(&mut self, update: &[u8], what: &str) {
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

    fn text(&self) -> String {
        self.text.get_string(&self.doc.transact())
    }

    fn state_vector(&self) -> Vec<u8> {
        self.doc.transact().state_vector().encode_v1()
    }

    /// Appends `s` to the text and sends the update.
    fn edit(&mut self, s: &str) -> Result<(), String> {
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
    fn edit_many(&mut self, chunk: &str, count: usize) -> Result<(), String> {
        let update = {
            let mut txn = self.doc.transact_mut();
            for _ in 0..count {
                self.text.insert(&mut txn, 0, chunk);
            }
            txn.encode_update_v1()
        };
        self.send(&update)
    }

    fn send(&mut self, update: &[u8]) -> Result<(), String> {
        let address = self.address.clone();
        self.client
            .try_send(&address, Message::Sync(SyncMessage::Update(update)))
            .map_err(|e| format!("{}: send failed: {e}", self.label))
    }

    /// One step of reading: applies updates, returns a SyncStatus; errors when the server
    /// detached this editor in any way.
    fn step(&mut self) -> Result<Option<bool>, String> {
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

    fn await_ack(&mut self) -> Result<(), String> {
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

    fn await_text(&mut self, expected: &str) -> Result<(), String> {
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
enum Event {
    Status(bool),
    DocClosed(Option<String>),
    SocketClosed(Option<(u16, String)>),
    Broken(String),
}

/// Every deviation from the contract, reported together at the end of a test.
#[derive(Default)]
struct Problems(Vec<String>);

impl Problems {
    fn check(&mut self, ok: bool, what: impl FnOnce() -> String) {
        if !ok {
            self.0.push(what());
        }
    }

    fn result<T>(&mut self, r: Result<T, String>) -> Option<T> {
        r.map_err(|e| self.0.push(e)).ok()
    }

    fn finish(self) {
        assert!(
            self.0.is_empty(),
            "{} problem(s):\n  - {}",
            self.0.len(),
            self.0.join("\n  - ")
        );
    }
}

/// Whether the update under test must be refused, or may also be accepted (findings 1 and 6,
/// where survival and convergence are what counts).
#[derive(Clone, Copy, PartialEq)]
enum Expect {
    Refused,
    RefusedOrAccepted,
}

struct Scene {
    daemon: Daemon,
    doc: &'static str,
    editor: Peer,
    watcher: Peer,
    attacker: Client,
    invalid_before: f64,
    _dir: tempfile::TempDir,
}

impl Scene {
    /// A daemon, an editor and a watcher on `doc` with the editor's first text in it, and an
    /// attacker with `doc` and a second document open.
    fn start(doc: &'static str, env: &[(&str, &str)]) -> Scene {
        Self::start_with(doc, env, |editor| {
            editor.edit("honest text before the attack.")
        })
    }

    fn start_with(
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
    fn attack(&mut self, updates: &[Vec<u8>]) -> Vec<Event> {
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
    fn assert_alive(&mut self, answer: &[Event]) {
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
    fn honest_editing_goes_on(&mut self, p: &mut Problems, expect: Expect) {
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
    fn late_joiner_sees_the_editors_text(&self, p: &mut Problems, expect: Expect, when: &str) {
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
    fn refused(&mut self, p: &mut Problems, answer: &[Event]) {
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

// ---------------------------------------------------------------------------------------------
// Findings
// ---------------------------------------------------------------------------------------------

/// Finding 1: two small updates on one socket made yrs dereference freed memory (SIGSEGV).
#[test]
fn crafted_update_pair_does_not_crash_the_node() {
    let mut s = Scene::start("pair", &[]);
    let answer = s.attack(&[
        hex("020200000001000103030100020a02000200"),
        hex("01020300840301030000004100000000"),
    ]);
    s.assert_alive(&answer);
    let mut p = Problems::default();
    s.honest_editing_goes_on(&mut p, Expect::RefusedOrAccepted);
    p.finish();
}

/// Finding 2: 10,000 nested Y.Maps and a delete of the outermost one overflowed the document
/// thread's stack (the process aborts).
#[test]
fn deeply_nested_maps_do_not_crash_the_node() {
    let mut s = Scene::start("nested", &[]);
    let update = nested_maps_update(4242, 10_000, "default");
    let answer = s.attack(&[update]);
    s.assert_alive(&answer);
    let mut p = Problems::default();
    s.honest_editing_goes_on(&mut p, Expect::Refused);
    s.refused(&mut p, &answer);
    p.finish();
}

/// Finding 3: an update that makes yrs panic inside a transaction made the document actor
/// close every connection of the document (4205) and reload it.
#[test]
fn update_that_panics_yrs_does_not_disconnect_every_editor() {
    let mut s = Scene::start("kick", &[]);
    let answer = s.attack(&[hex("01020000420000000100010000000000")]);
    s.assert_alive(&answer);
    let mut p = Problems::default();
    s.honest_editing_goes_on(&mut p, Expect::Refused);
    s.refused(&mut p, &answer);
    p.finish();
}

/// Finding 4: a ContentJSON item whose declared count disagrees with its strings was
/// acknowledged; every later joiner got a SyncStep2 it could not apply, i.e. an empty document.
#[test]
fn malformed_json_item_does_not_blank_the_document_for_late_joiners() {
    let mut s = Scene::start("blank", &[]);
    let answer = s.attack(&[hex("0101a1c439000201086a736f6e726f6f7400017800")]);
    s.assert_alive(&answer);
    let mut p = Problems::default();
    s.honest_editing_goes_on(&mut p, Expect::Refused);
    s.refused(&mut p, &answer);
    s.daemon.restart();
    s.late_joiner_sees_the_editors_text(&mut p, Expect::Refused, " after a restart");
    p.finish();
}

/// Finding 5: the same kind of item with valid JSON ("1") went into the snapshot at compaction;
/// the snapshot then did not decode, so after a restart the honest content was gone.
#[test]
fn malformed_json_item_does_not_lose_the_document_after_compaction_and_restart() {
    let mut s = Scene::start(
        "compacted",
        &[
            ("ZEDI__STORE__COMPACT_AFTER_UPDATES", "3"),
            ("ZEDI__STORE__COMPACT_MIN_INTERVAL_MS", "0"),
        ],
    );
    let answer = s.attack(&[hex("0101a1c439000201086a736f6e726f6f7400013100")]);
    s.assert_alive(&answer);
    let mut p = Problems::default();
    // Ordinary edits after the attack, enough to trigger compaction (the log of the document
    // then holds the first edit, maybe the hostile update, and these).
    for i in 0..6 {
        s.editor.edit(&format!(" Edit {i}.")).unwrap();
        s.editor.await_ack().unwrap();
    }
    s.daemon.wait_metrics("a compaction", |m| {
        m.value("zedi_store_seconds_count", &[("op", "compact")]) >= 1.0
    });
    s.honest_editing_goes_on(&mut p, Expect::Refused);
    s.refused(&mut p, &answer);
    s.daemon.restart();
    s.late_joiner_sees_the_editors_text(&mut p, Expect::Refused, " after compaction and a restart");
    p.finish();
}

/// Finding 6: small updates that leave the document pending (a delete of an unknown client's
/// clock), sent a few hundred times to a large document, each re-encoded the whole document
/// and stalled the other documents of that thread. Functional guard: each is answered exactly
/// once and the unrelated document's editor keeps being acknowledged (the cost itself is a unit
/// test of the firewall).
#[test]
fn pending_updates_against_a_large_document_leave_other_editors_working() {
    const SENDS: usize = 300;
    let pending = hex("0001a8b62f010501");
    // One document thread: the unrelated document shares it with the attacked one.
    let mut s = Scene::start_with("large", &[("ZEDI__SERVER__DOCUMENT_THREADS", "1")], |e| {
        // About 800 KB in 2,000 items: large for a debug build, cheap to make.
        e.edit_many(&"x".repeat(400), 2_000)
    });
    let mut calm = Peer::join(&s.daemon, "unrelated", CALM_ID, "unrelated editor").unwrap();
    let mut p = Problems::default();
    let (mut acked, mut refused, mut reconnects) = (0usize, 0usize, 0usize);
    let mut must_reopen = false;
    // The attacker's handshake after a refusal asks only for what it lacks: not 800 KB again.
    let state_vector = s.editor.state_vector();
    for i in 0..SENDS {
        if must_reopen {
            if let Err(e) = try_open(&mut s.attacker, s.doc, &state_vector) {
                // After three refusals the socket is closed (4205): a new one goes on.
                reconnects += 1;
                s.attacker = s.daemon.ws();
                try_open(&mut s.attacker, s.doc, &state_vector)
                    .unwrap_or_else(|e2| panic!("send {i}: reopen failed ({e}, then {e2})"));
            }
            must_reopen = false;
        }
        let answer = s.attack(std::slice::from_ref(&pending));
        match answer.as_slice() {
            [Event::Status(true)] => acked += 1,
            [Event::Status(false), Event::DocClosed(_)] => {
                refused += 1;
                must_reopen = true;
            }
            [Event::Status(false), Event::SocketClosed(Some((4205, _)))] => {
                refused += 1;
                reconnects += 1;
                s.attacker = s.daemon.ws();
                must_reopen = true;
            }
            other => {
                s.assert_alive(other);
                p.0.push(format!(
                    "pending update {i} was not answered once: {other:?}"
                ));
                break;
            }
        }
        if i % 25 == 0 {
            let edited = calm.edit("c").and_then(|()| calm.await_ack());
            p.check(edited.is_ok(), || {
                format!(
                    "the unrelated document's editor was not acknowledged during the flood (after {i} sends): {}",
                    edited.unwrap_err()
                )
            });
        }
    }
    // Nothing answered twice: no SyncStatus arrives beyond one per update.
    let settle = Instant::now() + Duration::from_secs(1);
    while Instant::now() < settle {
        if let Ok(Received::Frame(frame)) = s.attacker.try_recv(Duration::from_millis(200))
            && let Ok(Packet::Message {
                message: Message::SyncStatus(ok),
                ..
            }) = protocol::decode(&frame)
        {
            p.0.push(format!("an extra SyncStatus({ok}) after the last answer"));
        }
    }
    eprintln!("pending updates: {acked} acknowledged, {refused} refused, {reconnects} reconnects");
    let calm_text = calm.text();
    let mut calm_late = s.daemon.ws();
    match try_open(&mut calm_late, "unrelated", &[0]).and_then(|u| try_render(&u)) {
        Ok(text) => p.check(text == calm_text, || {
            format!(
                "the unrelated document's late joiner sees {} instead of {}",
                short(&text),
                short(&calm_text)
            )
        }),
        Err(e) => {
            p.0.push(format!("the unrelated document does not load: {e}"))
        }
    }
    s.honest_editing_goes_on(&mut p, Expect::RefusedOrAccepted);
    p.finish();
}

/// Finding 7: an ordinary insert by client 2^53 + 1 was acknowledged and re-broadcast with a
/// different (truncated) id; JavaScript cannot even represent such an id.
#[test]
fn client_ids_beyond_2_pow_53_are_refused_not_truncated() {
    let mut s = Scene::start("big-client-id", &[]);
    let answer = s.attack(&[text_insert_by((1 << 53) + 1, "evil")]);
    s.assert_alive(&answer);
    let mut p = Problems::default();
    s.honest_editing_goes_on(&mut p, Expect::Refused);
    s.refused(&mut p, &answer);
    p.finish();
}
