//! The update generator: a model of the structs written so far, so that later updates mostly
//! refer to real ones (the module doc of `update_sequence.rs` lists what it writes).

mod content;

use std::collections::BTreeMap;

use self::content::{content_body, key};
use super::input::Src;
use super::lib0::W;

/// A struct the generator wrote earlier (whatever yrs made of it).
#[derive(Clone, Copy)]
pub(crate) struct Written {
    client: u64,
    clock: u32,
    len: u32,
    is_type: bool,
}

pub(crate) struct World {
    clients: Vec<u64>,
    /// Per client, the clock after the highest struct written.
    next: BTreeMap<u64, u32>,
    written: Vec<Written>,
}

const ROOTS: [&str; 6] = ["default", "text", "map", "jsonroot", "prosemirror", ""];

impl World {
    pub(crate) fn new(src: &mut Src) -> World {
        let n = 1 + src.below(4);
        let mut clients = Vec::with_capacity(n);
        for _ in 0..n {
            let b = src.u8();
            clients.push(match b {
                0..=199 => u64::from(b % 8),
                200..=219 => 1000 + u64::from(src.u32()),
                220..=229 => 1 << 32,
                230..=234 => (1 << 53) - 1,
                235..=239 => (1 << 53) + u64::from(src.u8()),
                240..=244 => u64::MAX,
                245..=249 => 1 << 63,
                _ => src.u64(),
            });
        }
        World {
            clients,
            next: BTreeMap::new(),
            written: Vec::new(),
        }
    }

    fn next_clock(&self, client: u64) -> u32 {
        self.next.get(&client).copied().unwrap_or(0)
    }

    /// The first clock of `client` that no struct written so far covers: where a gap starts
    /// when an earlier update skipped ahead (and so stays pending).
    fn first_hole(&self, client: u64) -> u32 {
        let mut ranges: Vec<(u32, u32)> = self
            .written
            .iter()
            .filter(|w| w.client == client && w.len > 0)
            .map(|w| (w.clock, w.clock.saturating_add(w.len)))
            .collect();
        ranges.sort_unstable();
        let mut covered = 0;
        for (start, end) in ranges {
            if start > covered {
                break;
            }
            covered = covered.max(end);
        }
        covered
    }

    fn client(&self, src: &mut Src) -> u64 {
        if src.rare(16) {
            100 + src.below(4) as u64
        } else {
            self.clients[src.below(self.clients.len())]
        }
    }

    /// An ID for an origin, right origin or parent of the struct at `me` = (client, clock, len).
    fn id(&self, src: &mut Src, this: &[Written], me: (u64, u32, u32)) -> (u64, u32) {
        let into = |src: &mut Src, w: &Written| {
            let offset = match src.pick(&[6, 3, 2, 1]) {
                0 => w.len.saturating_sub(1),
                1 => src.below(w.len.max(1) as usize) as u32,
                2 => 0,
                _ => w.len,
            };
            (w.client, w.clock.saturating_add(offset))
        };
        match src.pick(&[100, 60, 20, 20, 20, 12]) {
            0 if !self.written.is_empty() => {
                let i = src.below(self.written.len());
                into(src, &self.written[i])
            }
            1 if !this.is_empty() => {
                let i = src.below(this.len());
                into(src, &this[i])
            }
            // Itself: its first unit, or one inside it.
            2 => (
                me.0,
                me.1.saturating_add(src.below(me.2.max(1) as usize) as u32),
            ),
            // Forward: the next struct of this client or the one after.
            3 => (
                me.0,
                me.1.saturating_add(me.2.max(1))
                    .saturating_add(src.below(2) as u32),
            ),
            5 => (u64::from(src.u8() % 8), u32::from(src.u8())),
            _ => {
                if src.rare(128) {
                    (12345, 0)
                } else {
                    let c = self.client(src);
                    (c, self.next_clock(c).saturating_add(5))
                }
            }
        }
    }

    pub(crate) fn update(&mut self, src: &mut Src) -> Vec<u8> {
        let mut w = W::default();
        let sections = [1, 2, 3, 0][src.pick(&[150, 60, 30, 16])];
        w.uint(declared(src, sections));
        let mut this: Vec<Written> = Vec::new();
        for _ in 0..sections {
            let client = self.client(src);
            let next = self.next_clock(client);
            let clock = match src.pick(&[150, 40, 30, 25, 40, 6]) {
                0 => next,
                1 => next.saturating_add(1 + src.below(4) as u32),
                2 => 0,
                3 => next.saturating_sub(1 + src.below(3) as u32),
                // Fill the first gap (the pending update waiting for it may then integrate);
                // with a long enough struct this also overlaps what waits after the gap.
                4 => self.first_hole(client),
                _ => u32::MAX - src.below(4) as u32,
            };
            let structs = 1 + src.pick(&[100, 60, 30, 20]);
            w.uint(declared(src, structs));
            w.uint(client);
            w.uint(u64::from(clock));
            let mut at = clock;
            for _ in 0..structs {
                let (len, is_type) = self.block(src, &mut w, &this, (client, at));
                this.push(Written {
                    client,
                    clock: at,
                    len,
                    is_type,
                });
                at = at.saturating_add(len);
            }
            let end = self.next.entry(client).or_insert(0);
            *end = (*end).max(at);
        }
        self.delete_set(src, &mut w, &this);
        self.written.extend(this);
        w.0
    }

    /// One struct at `me`; returns its length (in clock units, as yrs counts it) and whether it
    /// is a Type item.
    fn block(&self, src: &mut Src, w: &mut W, this: &[Written], at: (u64, u32)) -> (u32, bool) {
        match src.pick(&[220, 24, 12]) {
            0 => {}
            kind => {
                w.u8(if kind == 1 { 0 } else { 10 });
                let len = small_len(src);
                w.uint(u64::from(len));
                return (len, false);
            }
        }
        // String, Any, JSON, Type, Deleted, Format, Embed, Binary, Doc, unknown.
        let content = src.pick(&[50, 25, 20, 20, 15, 10, 8, 8, 5, 6]);
        let content_ref: u8 = [4, 8, 2, 7, 1, 6, 5, 3, 9, 0][content];
        let content_ref = if content == 9 {
            src.u8() & 0x1f
        } else {
            content_ref
        };
        // The content first, so that references can point into this very struct.
        let mut body = W::default();
        let (len, is_type) = content_body(src, &mut body, content_ref & 0x0f);
        let me = (at.0, at.1, len);
        let origin = src.pick(&[140, 116]) == 1;
        let right_origin = src.pick(&[190, 66]) == 1;
        let parent_sub = if origin || right_origin {
            src.rare(12)
        } else {
            src.rare(40)
        };
        let info = content_ref
            | if origin { 0x80 } else { 0 }
            | if right_origin { 0x40 } else { 0 }
            | if parent_sub { 0x20 } else { 0 };
        w.u8(info);
        if origin {
            w.id(self.id(src, this, me));
        }
        if right_origin {
            w.id(self.id(src, this, me));
        }
        if !origin && !right_origin {
            match src.pick(&[150, 60, 20, 6]) {
                0 => {
                    w.uint(1);
                    if src.rare(10) {
                        let n = src.below(6);
                        w.bytes(src.bytes(n));
                    } else {
                        w.bytes(ROOTS[src.below(ROOTS.len())].as_bytes());
                    }
                }
                1 => {
                    w.uint(0);
                    let types: Vec<&Written> = self
                        .written
                        .iter()
                        .chain(this)
                        .filter(|x| x.is_type)
                        .collect();
                    if types.is_empty() {
                        w.id(self.id(src, this, me));
                    } else {
                        let t = types[src.below(types.len())];
                        w.id((t.client, t.clock));
                    }
                }
                2 => {
                    w.uint(0);
                    w.id(self.id(src, this, me));
                }
                _ => {
                    w.uint(2 + src.below(3) as u64);
                    w.id(self.id(src, this, me));
                }
            }
            if parent_sub {
                key(src, w);
            }
        }
        w.0.extend_from_slice(&body.0);
        (len, is_type)
    }

    fn delete_set(&self, src: &mut Src, w: &mut W, this: &[Written]) {
        let clients = src.pick(&[120, 100, 30]);
        w.uint(declared(src, clients));
        for _ in 0..clients {
            let known: Vec<&Written> = self.written.iter().chain(this).collect();
            let client = if !known.is_empty() && src.pick(&[2, 1]) == 0 {
                known[src.below(known.len())].client
            } else {
                self.client(src)
            };
            let of_client: Vec<&Written> =
                known.into_iter().filter(|x| x.client == client).collect();
            let ranges = 1 + src.pick(&[100, 40, 20]);
            w.uint(client);
            w.uint(declared(src, ranges));
            for _ in 0..ranges {
                let (clock, len) = match src.pick(&[100, 50, 10, 8]) {
                    0 if !of_client.is_empty() => {
                        let x = of_client[src.below(of_client.len())];
                        let off = src.below(x.len.max(1) as usize) as u32;
                        let len = match src.pick(&[4, 2, 1]) {
                            0 => x.len - off.min(x.len),
                            1 => 1,
                            _ => x.len.saturating_add(3),
                        };
                        (x.clock.saturating_add(off), len)
                    }
                    2 => (src.below(8) as u32, 0),
                    3 => {
                        if src.rare(128) {
                            (u32::MAX - 1, 7)
                        } else {
                            (src.below(4) as u32, u32::MAX)
                        }
                    }
                    _ => (src.below(16) as u32, 1 + src.below(4) as u32),
                };
                w.uint(u64::from(clock));
                w.uint(u64::from(len));
            }
        }
    }
}

/// Usually `n`, now and then one more or one less.
fn declared(src: &mut Src, n: usize) -> u64 {
    match src.pick(&[250, 3, 3]) {
        0 => n as u64,
        1 => n as u64 + 1,
        _ => (n as u64).saturating_sub(1),
    }
}

pub(crate) fn small_len(src: &mut Src) -> u32 {
    match src.pick(&[100, 50, 10, 3]) {
        0 => 1,
        1 => 2 + src.below(3) as u32,
        2 => 0,
        _ => u32::MAX - src.below(2) as u32,
    }
}
