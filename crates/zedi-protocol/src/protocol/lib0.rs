//! lib0 primitives: the variable-length integers, strings and byte arrays that every Yjs and
//! Hocuspocus message is built from.
//!
//! A reader never allocates on behalf of the peer: lengths are checked against what is left in
//! the buffer before anything is sliced, so a hostile length prefix costs nothing.

use thiserror::Error;

/// Why a byte sequence is not valid lib0.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Lib0Error {
    #[error("unexpected end of input")]
    UnexpectedEnd,
    #[error("variable-length integer is longer than 64 bits")]
    VarIntOverflow,
    #[error("length prefix {0} is larger than the remaining {1} bytes")]
    LengthTooLarge(u64, usize),
    #[error("string is not valid UTF-8")]
    InvalidUtf8,
}

/// A cursor over a borrowed buffer. Values it returns borrow from the buffer, so decoding a
/// frame copies nothing.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    /// What is left, without consuming it.
    pub fn rest(&self) -> &'a [u8] {
        &self.buf[self.pos..]
    }

    pub fn read_u8(&mut self) -> Result<u8, Lib0Error> {
        let b = *self.buf.get(self.pos).ok_or(Lib0Error::UnexpectedEnd)?;
        self.pos += 1;
        Ok(b)
    }

    /// lib0 `varUint`: 7 bits per byte, least significant group first.
    pub fn read_var_uint(&mut self) -> Result<u64, Lib0Error> {
        let mut value: u64 = 0;
        let mut shift = 0u32;
        loop {
            let byte = self.read_u8()?;
            let low = u64::from(byte & 0x7f);
            if shift >= 64 || (shift == 63 && low > 1) {
                return Err(Lib0Error::VarIntOverflow);
            }
            value |= low << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
            shift += 7;
        }
    }

    /// lib0 `varUint8Array`: a length, then that many bytes.
    pub fn read_var_bytes(&mut self) -> Result<&'a [u8], Lib0Error> {
        let len = self.read_var_uint()?;
        let remaining = self.remaining();
        if len > remaining as u64 {
            return Err(Lib0Error::LengthTooLarge(len, remaining));
        }
        let start = self.pos;
        self.pos += len as usize;
        Ok(&self.buf[start..self.pos])
    }

    /// lib0 `varString`: `varBytes` holding UTF-8. Invalid UTF-8 is an error rather than being
    /// replaced, because a document name must map to exactly one stored document.
    pub fn read_var_string(&mut self) -> Result<&'a str, Lib0Error> {
        let bytes = self.read_var_bytes()?;
        std::str::from_utf8(bytes).map_err(|_| Lib0Error::InvalidUtf8)
    }
}

/// Appends lib0 values to a growable buffer.
#[derive(Debug, Default, Clone)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    pub fn new() -> Self {
        Writer { buf: Vec::new() }
    }

    pub fn with_capacity(capacity: usize) -> Self {
        Writer {
            buf: Vec::with_capacity(capacity),
        }
    }

    pub fn write_u8(&mut self, b: u8) -> &mut Self {
        self.buf.push(b);
        self
    }

    pub fn write_var_uint(&mut self, mut value: u64) -> &mut Self {
        while value >= 0x80 {
            self.buf.push((value as u8 & 0x7f) | 0x80);
            value >>= 7;
        }
        self.buf.push(value as u8);
        self
    }

    pub fn write_var_bytes(&mut self, bytes: &[u8]) -> &mut Self {
        self.write_var_uint(bytes.len() as u64);
        self.buf.extend_from_slice(bytes);
        self
    }

    pub fn write_var_string(&mut self, s: &str) -> &mut Self {
        self.write_var_bytes(s.as_bytes())
    }

    /// Raw bytes with no length prefix.
    pub fn write_raw(&mut self, bytes: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(bytes);
        self
    }

    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub fn into_vec(self) -> Vec<u8> {
        self.buf
    }
}

/// How many bytes `value` takes as a `varUint`; lets encoders size buffers exactly.
pub fn var_uint_len(mut value: u64) -> usize {
    let mut n = 1;
    while value >= 0x80 {
        value >>= 7;
        n += 1;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn var_uint_round_trips_across_byte_boundaries() {
        for v in [
            0u64,
            1,
            127,
            128,
            255,
            16_383,
            16_384,
            3_846_846_611,
            u32::MAX as u64,
            1 << 53,
            u64::MAX,
        ] {
            let mut w = Writer::new();
            w.write_var_uint(v);
            assert_eq!(w.len(), var_uint_len(v), "length of {v}");
            let bytes = w.into_vec();
            let mut r = Reader::new(&bytes);
            assert_eq!(r.read_var_uint().unwrap(), v);
            assert!(r.is_empty());
        }
    }

    #[test]
    fn var_uint_matches_lib0_bytes() {
        // 3846846611 is a Yjs client id from the captured fixtures: 93 f1 a8 aa 0e.
        let mut w = Writer::new();
        w.write_var_uint(3_846_846_611);
        assert_eq!(w.into_vec(), vec![0x93, 0xf1, 0xa8, 0xaa, 0x0e]);
    }

    #[test]
    fn overlong_var_uint_is_rejected() {
        let bytes = [0xffu8; 11];
        assert_eq!(
            Reader::new(&bytes).read_var_uint(),
            Err(Lib0Error::VarIntOverflow)
        );
        let mut max = vec![0xffu8; 9];
        max.push(0x02); // bit 64 set
        assert_eq!(
            Reader::new(&max).read_var_uint(),
            Err(Lib0Error::VarIntOverflow)
        );
    }

    #[test]
    fn truncated_input_is_an_error_not_a_panic() {
        assert_eq!(
            Reader::new(&[0x80]).read_var_uint(),
            Err(Lib0Error::UnexpectedEnd)
        );
        assert_eq!(Reader::new(&[]).read_u8(), Err(Lib0Error::UnexpectedEnd));
        // Length prefix claims 5 bytes, only 2 follow.
        assert_eq!(
            Reader::new(&[5, b'a', b'b']).read_var_bytes(),
            Err(Lib0Error::LengthTooLarge(5, 2))
        );
        // A huge length prefix must not allocate.
        let mut w = Writer::new();
        w.write_var_uint(u64::MAX >> 1);
        let bytes = w.into_vec();
        assert!(matches!(
            Reader::new(&bytes).read_var_bytes(),
            Err(Lib0Error::LengthTooLarge(_, 0))
        ));
    }

    #[test]
    fn strings_must_be_utf8() {
        assert_eq!(
            Reader::new(&[2, 0xc3, 0x28]).read_var_string(),
            Err(Lib0Error::InvalidUtf8)
        );
        let mut w = Writer::new();
        w.write_var_string("héllo");
        let bytes = w.into_vec();
        assert_eq!(Reader::new(&bytes).read_var_string().unwrap(), "héllo");
    }
}
