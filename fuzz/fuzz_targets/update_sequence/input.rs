//! The fuzz input read as a stream of decisions.

/// The fuzz input as a stream of decisions. Past its end every read is 0, and 0 always selects
/// the first (most ordinary) option, so a short input still makes a sensible sequence.
pub(crate) struct Src<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Src<'a> {
    pub(crate) fn new(data: &'a [u8]) -> Src<'a> {
        Src { data, pos: 0 }
    }

    pub(crate) fn exhausted(&self) -> bool {
        self.pos >= self.data.len()
    }

    pub(crate) fn u8(&mut self) -> u8 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos = self.pos.saturating_add(1);
        b
    }

    pub(crate) fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    pub(crate) fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    pub(crate) fn u64(&mut self) -> u64 {
        u64::from(self.u32()) | (u64::from(self.u32()) << 32)
    }

    /// 0..n (0 when n <= 1).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        match n {
            0 | 1 => 0,
            2..=256 => usize::from(self.u8()) % n,
            _ => usize::from(self.u16()) % n,
        }
    }

    /// An index into `weights`, chosen with those weights; byte 0 gives index 0.
    pub(crate) fn pick(&mut self, weights: &[u32]) -> usize {
        let total: u32 = weights.iter().sum();
        let mut roll = u32::from(self.u8()) * total / 256;
        for (i, &w) in weights.iter().enumerate() {
            if roll < w {
                return i;
            }
            roll -= w;
        }
        weights.len() - 1
    }

    /// True with probability about `p`/256; false for byte 0.
    pub(crate) fn rare(&mut self, p: u16) -> bool {
        u16::from(self.u8()) + p > 255
    }

    pub(crate) fn bytes(&mut self, n: usize) -> &'a [u8] {
        let start = self.pos.min(self.data.len());
        let end = start.saturating_add(n).min(self.data.len());
        self.pos = self.pos.saturating_add(n);
        &self.data[start..end]
    }
}
