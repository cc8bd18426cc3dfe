//! Documents typed by several people: the content of the `docmem` and `joinstorm` scenarios.
//!
//! [`typists_content`] simulates T typists on one document, each a yrs `Doc` with its own client
//! id, kept in sync with the others as a server would relay them: keystrokes are single
//! characters inserted at the typist's cursor, one in fifteen a backspace; a typing session
//! continues at the cursor or (one in three) starts somewhere else; each update carries 20–60
//! keystrokes, as a provider batching its transactions sends them. Deterministic (seeded).
//! [`fill`] sends the updates of one document over one connection per typist, in order, each
//! typist's updates acknowledged before the next typist's go out (so none arrives before what
//! it builds on), and drains the broadcasts the other typists receive meanwhile.

use std::time::Instant;

use yrs::updates::decoder::Decode;
use yrs::{Doc, GetString, ReadTxn, StateVector, Text, Transact, Update};
use zedi_protocol::protocol::{Message, PONG_FRAME, Packet, SyncMessage, decode, encode};

use crate::aconn::Conn;
use crate::scenarios::Target;

/// One document's worth of typing.
pub struct Content {
    /// Every update in the order it was made, with the index of the typist that made it.
    pub updates: Vec<(usize, Vec<u8>)>,
    pub typists: usize,
    pub keystrokes: usize,
    /// `encode_state_as_update_v1` of the final document, bytes.
    pub encoded: usize,
    /// The final text of Y.Text `default`.
    pub text: String,
}

impl Content {
    /// The bytes of every update: what a server that only adds applied updates to its last
    /// measurement of a document thinks it holds.
    pub fn update_bytes(&self) -> usize {
        self.updates.iter().map(|(_, u)| u.len()).sum()
    }
}

/// xorshift64*: the same documents on every run (also churn's, in memory.rs).
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

const WORDS: &[&str] = &[
    "the", "sync", "daemon", "keeps", "every", "document", "in", "memory", "while", "editors",
    "type", "notes", "and", "cursors", "move", "across", "a", "shared", "page", "of", "text",
    "meeting", "agenda", "draft", "review", "later", "today", "we", "should", "check",
];

/// The characters a typist types: words, spaces, now and then a full stop and a new line.
struct Words {
    rng: Rng,
    word: &'static [u8],
    at: usize,
}

impl Words {
    fn next_char(&mut self) -> char {
        if self.at >= self.word.len() {
            self.word = WORDS[self.rng.below(WORDS.len() as u64) as usize].as_bytes();
            self.at = 0;
            return match self.rng.below(24) {
                0 => '.',
                1 => '\n',
                _ => ' ',
            };
        }
        self.at += 1;
        self.word[self.at - 1] as char
    }
}

fn state_len(doc: &Doc) -> usize {
    doc.transact()
        .encode_state_as_update_v1(&StateVector::default())
        .len()
}

/// T typists typing until the document's encoded state reaches `target` bytes (bounded:
/// at most 4 million keystrokes). Every typist's `Doc` sees every update, so each inserts at
/// the index its cursor has in the shared text.
pub fn typists_content(seed: u64, typists: usize, target: usize) -> Content {
    let typists = typists.max(1);
    let docs: Vec<Doc> = (0..typists)
        .map(|i| Doc::with_client_id(seed.wrapping_mul(1000) + i as u64 + 1))
        .collect();
    let texts: Vec<_> = docs
        .iter()
        .map(|d| d.get_or_insert_text("default"))
        .collect();
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut words = Words {
        rng: Rng((seed ^ 0x5DEE_CE66) | 1),
        word: b"",
        at: 0,
    };
    let mut cursors = vec![0u32; typists];
    let (mut updates, mut keystrokes, mut encoded, mut len) = (Vec::new(), 0usize, 0usize, 0u32);
    while encoded < target && keystrokes < 4_000_000 {
        // A session: one typist, 1-6 updates of 20-60 keystrokes.
        let t = rng.below(typists as u64) as usize;
        if len > 0 && rng.below(3) == 0 {
            cursors[t] = rng.below(u64::from(len) + 1) as u32;
        }
        for _ in 0..1 + rng.below(6) {
            let update = {
                let mut txn = docs[t].transact_mut();
                for _ in 0..20 + rng.below(41) {
                    let at = cursors[t].min(len);
                    if at > 0 && rng.below(15) == 0 {
                        texts[t].remove_range(&mut txn, at - 1, 1);
                        len -= 1;
                        for c in cursors.iter_mut() {
                            if *c >= at {
                                *c -= 1;
                            }
                        }
                    } else {
                        let mut buf = [0u8; 4];
                        texts[t].insert(&mut txn, at, words.next_char().encode_utf8(&mut buf));
                        len += 1;
                        for (i, c) in cursors.iter_mut().enumerate() {
                            if i == t || *c > at {
                                *c += 1;
                            }
                        }
                    }
                    keystrokes += 1;
                }
                txn.encode_update_v1()
            };
            for (i, d) in docs.iter().enumerate() {
                if i != t {
                    let u = Update::decode_v1(&update).expect("own update decodes");
                    d.transact_mut()
                        .apply_update(u)
                        .expect("own update applies");
                }
            }
            updates.push((t, update));
            if updates.len() % 16 == 0 || encoded * 10 >= target * 9 {
                encoded = state_len(&docs[0]);
            }
        }
    }
    let encoded = state_len(&docs[0]);
    let text = texts[0].get_string(&docs[0].transact());
    Content {
        updates,
        typists,
        keystrokes,
        encoded,
        text,
    }
}

/// The text a SyncStep2 (an update against the empty state vector) yields in a fresh `Doc`.
pub fn step2_text(payload: &[u8]) -> Result<String, String> {
    let update = Update::decode_v1(payload).map_err(|e| format!("SyncStep2 decode: {e}"))?;
    let doc = Doc::new();
    let text = doc.get_or_insert_text("default");
    doc.transact_mut()
        .apply_update(update)
        .map_err(|e| format!("SyncStep2 apply: {e}"))?;
    let s = text.get_string(&doc.transact());
    Ok(s)
}

/// Most updates a typist has sent and not yet seen acknowledged.
const IN_FLIGHT: usize = 32;

/// One received frame of a typist: answers a ping, counts an acknowledgement.
async fn handle(
    conn: &mut Conn,
    f: &[u8],
    acked: &mut usize,
    deadline: Instant,
) -> Result<(), String> {
    match decode(f) {
        Ok(Packet::Ping) => conn.send(PONG_FRAME.to_vec(), deadline).await?,
        Ok(Packet::Message {
            message: Message::SyncStatus(ok),
            ..
        }) => {
            if !ok {
                return Err("update refused (SyncStatus 0)".into());
            }
            *acked += 1;
        }
        Ok(Packet::Message {
            message: Message::Close(reason),
            ..
        }) => return Err(format!("document closed: {reason:?}")),
        _ => {}
    }
    Ok(())
}

/// Reads what is ready on `conn` without waiting.
async fn drain(conn: &mut Conn, acked: &mut usize, deadline: Instant) -> Result<(), String> {
    while let Some(f) = conn.try_frame()? {
        handle(conn, &f, acked, deadline).await?;
    }
    Ok(())
}

/// Opens one connection per typist on `doc`, sends every update of `content` on its typist's
/// connection until all are acknowledged, and returns the connections (still open).
pub async fn fill(
    t: &Target,
    doc: &str,
    content: &Content,
    deadline: Instant,
) -> Result<Vec<Conn>, String> {
    let mut conns = Vec::with_capacity(content.typists);
    for _ in 0..content.typists {
        conns.push(Conn::open(t.addr, &t.url, doc.to_string(), deadline).await?);
    }
    // Per typist: updates sent, acknowledgements seen.
    let mut sent = vec![0usize; content.typists];
    let mut acked = vec![0usize; content.typists];
    let mut current = 0usize;
    for (typist, update) in content
        .updates
        .iter()
        .map(|(i, u)| (*i, u))
        .chain(std::iter::once((usize::MAX, &Vec::new())))
    {
        // Switching typist (or done): the previous one's updates acknowledged first; at most
        // IN_FLIGHT outstanding for the same typist.
        let limit = if typist == current { IN_FLIGHT - 1 } else { 0 };
        while sent[current] - acked[current] > limit {
            for (i, c) in conns.iter_mut().enumerate() {
                if i != current {
                    drain(c, &mut acked[i], deadline).await?;
                }
            }
            let c = &mut conns[current];
            let Some(f) = c.frame(deadline).await? else {
                return Err(format!(
                    "{} of {} updates acknowledged",
                    acked.iter().sum::<usize>(),
                    content.updates.len()
                ));
            };
            handle(c, &f, &mut acked[current], deadline).await?;
        }
        if typist == usize::MAX {
            break;
        }
        current = typist;
        let frame = encode(doc, &Message::Sync(SyncMessage::Update(update)));
        conns[typist].send(frame, deadline).await?;
        sent[typist] += 1;
    }
    Ok(conns)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typists_reach_the_target_size_and_a_step2_yields_the_text() {
        let c = typists_content(7, 5, 30 * 1024);
        assert!(c.encoded >= 30 * 1024, "encoded {}", c.encoded);
        assert!(c.encoded < 30 * 1024 + 4096, "overshoot: {}", c.encoded);
        let typists: std::collections::BTreeSet<_> = c.updates.iter().map(|(t, _)| *t).collect();
        assert_eq!(typists.len(), 5, "every typist typed");
        assert!(c.keystrokes > c.updates.len() * 19);
        // What a joiner gets: the whole state against an empty state vector.
        let doc = Doc::new();
        let text = doc.get_or_insert_text("default");
        for (_, u) in &c.updates {
            doc.transact_mut()
                .apply_update(Update::decode_v1(u).unwrap())
                .unwrap();
        }
        let step2 = doc
            .transact()
            .encode_state_as_update_v1(&StateVector::default());
        assert_eq!(step2.len(), c.encoded);
        assert_eq!(step2_text(&step2).unwrap(), c.text);
        assert_eq!(text.get_string(&doc.transact()), c.text);
        assert!(step2_text(&step2[..step2.len() / 2]).is_err());
    }
}
