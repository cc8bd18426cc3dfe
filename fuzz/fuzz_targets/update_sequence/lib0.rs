//! The lib0 (Yjs v1) writer the generator encodes updates with.

/// A lib0 (Yjs v1) encoder.
#[derive(Default)]
pub(crate) struct W(pub(crate) Vec<u8>);

impl W {
    pub(crate) fn u8(&mut self, b: u8) {
        self.0.push(b);
    }

    pub(crate) fn uint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push((v as u8 & 0x7f) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }

    /// lib0 writeVarInt: sign in bit 6 of the first byte, 6 value bits there, then 7 per byte.
    pub(crate) fn int(&mut self, v: i64) {
        let negative = v < 0;
        let mut n = v.unsigned_abs();
        self.0.push(
            if n > 0x3f { 0x80 } else { 0 } | if negative { 0x40 } else { 0 } | (n as u8 & 0x3f),
        );
        n >>= 6;
        while n > 0 {
            self.0
                .push(if n > 0x7f { 0x80 } else { 0 } | (n as u8 & 0x7f));
            n >>= 7;
        }
    }

    pub(crate) fn bytes(&mut self, b: &[u8]) {
        self.uint(b.len() as u64);
        self.0.extend_from_slice(b);
    }

    pub(crate) fn id(&mut self, (client, clock): (u64, u32)) {
        self.uint(client);
        self.uint(u64::from(clock));
    }
}
