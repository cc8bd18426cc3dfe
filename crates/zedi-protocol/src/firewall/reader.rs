//! A strict lib0 reader for untrusted Yjs bytes.
//!
//! Stricter than `protocol::lib0::Reader` on purpose: a value must be in the one form lib0's
//! encoder writes (no over-long varints), every count must be coverable by the bytes that are
//! left (so nothing is ever reserved on the strength of a length prefix), and integers must be
//! ones a JavaScript peer can hold. Anything else is refused: when the server accepts only
//! canonical input, re-encoding what it accepted gives back the same bytes, so what it stores
//! and relays is exactly what the sender's own Yjs holds.

use super::Refusal;

/// Largest integer a JavaScript number holds exactly (2^53 - 1): Yjs client ids, and every
/// other number that goes back to browsers, must stay below it.
pub const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

/// Whether 7 more bits `low` placed at `shift` leave the value above `MAX_SAFE_INTEGER`. Also
/// ends runaway continuation bytes: past 53 bits any further group is refused, so `shift`
/// never reaches 64.
fn exceeds_safe_integer(low: u64, shift: u32) -> bool {
    let allowed_bits = 53u32.saturating_sub(shift);
    allowed_bits < 7 && low >> allowed_bits != 0 || shift >= 53 && low == 0
}

pub struct StrictReader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> StrictReader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        StrictReader { buf, pos: 0 }
    }

    pub fn position(&self) -> usize {
        self.pos
    }

    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    fn truncated(&self) -> Refusal {
        Refusal::Truncated { at: self.pos }
    }

    pub fn read_u8(&mut self) -> Result<u8, Refusal> {
        let byte = *self.buf.get(self.pos).ok_or_else(|| self.truncated())?;
        self.pos += 1;
        Ok(byte)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], Refusal> {
        if n > self.remaining() {
            return Err(self.truncated());
        }
        let bytes = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(bytes)
    }

    /// lib0 `varUint`, at most `MAX_SAFE_INTEGER`, in its shortest form.
    pub fn read_var_uint(&mut self) -> Result<u64, Refusal> {
        let start = self.pos;
        let mut value: u64 = 0;
        let mut shift = 0u32;
        loop {
            let byte = self.read_u8()?;
            let low = u64::from(byte & 0x7f);
            if exceeds_safe_integer(low, shift) {
                return Err(Refusal::IntegerTooLarge { at: start });
            }
            value |= low << shift;
            if byte & 0x80 == 0 {
                // lib0 stops as soon as the rest is zero: a last group of 0 after others is an
                // over-long encoding that re-encodes shorter.
                if byte == 0 && shift > 0 {
                    return Err(Refusal::NonCanonical {
                        at: start,
                        what: "over-long varUint",
                    });
                }
                return Ok(value);
            }
            shift += 7;
        }
    }

    /// lib0 `varInt` (sign in bit 6 of the first byte), magnitude at most `MAX_SAFE_INTEGER`.
    pub fn read_var_int(&mut self) -> Result<i64, Refusal> {
        let start = self.pos;
        let first = self.read_u8()?;
        let negative = first & 0x40 != 0;
        let mut value = u64::from(first & 0x3f);
        let mut shift = 6u32;
        let mut more = first & 0x80 != 0;
        while more {
            let byte = self.read_u8()?;
            let low = u64::from(byte & 0x7f);
            if exceeds_safe_integer(low, shift) {
                return Err(Refusal::IntegerTooLarge { at: start });
            }
            value |= low << shift;
            more = byte & 0x80 != 0;
            if !more && byte == 0 {
                return Err(Refusal::NonCanonical {
                    at: start,
                    what: "over-long varInt",
                });
            }
            shift += 7;
        }
        // `value` < 2^53 here, so the conversion and negation cannot overflow.
        let magnitude = i64::try_from(value).map_err(|_| Refusal::IntegerTooLarge { at: start })?;
        Ok(if negative { -magnitude } else { magnitude })
    }

    /// A count of things that each take at least `min_bytes` more bytes: refused when the rest
    /// of the buffer could not hold that many, so a count never buys memory or time.
    pub fn read_count(&mut self, min_bytes: usize) -> Result<usize, Refusal> {
        let start = self.pos;
        let count = self.read_var_uint()?;
        let fits = usize::try_from(count)
            .ok()
            .filter(|&n| n.saturating_mul(min_bytes) <= self.remaining());
        fits.ok_or(Refusal::CountTooLarge {
            at: start,
            count,
            remaining: self.remaining(),
        })
    }

    /// A Yjs client id: below 2^53, as every Yjs implementation can represent it.
    pub fn read_client(&mut self) -> Result<u64, Refusal> {
        let start = self.pos;
        self.read_var_uint().map_err(|e| match e {
            Refusal::IntegerTooLarge { .. } => Refusal::ClientIdTooLarge { at: start },
            other => other,
        })
    }

    /// A clock or length: yrs keeps them as `u32`.
    pub fn read_u32(&mut self) -> Result<u32, Refusal> {
        let start = self.pos;
        let value = self.read_var_uint()?;
        u32::try_from(value).map_err(|_| Refusal::ClockOverflow { at: start })
    }

    pub fn read_var_bytes(&mut self) -> Result<&'a [u8], Refusal> {
        let len = self.read_count(1)?;
        self.take(len)
    }

    pub fn read_string(&mut self) -> Result<&'a str, Refusal> {
        let start = self.pos;
        let bytes = self.read_var_bytes()?;
        std::str::from_utf8(bytes).map_err(|_| Refusal::InvalidUtf8 { at: start })
    }

    pub fn read_f32(&mut self) -> Result<f32, Refusal> {
        let bytes = self.take(4)?;
        Ok(f32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }

    pub fn read_f64(&mut self) -> Result<f64, Refusal> {
        let bytes = self.take(8)?;
        let mut raw = [0u8; 8];
        raw.copy_from_slice(bytes);
        Ok(f64::from_be_bytes(raw))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varuint_must_be_shortest_and_js_safe() {
        assert_eq!(StrictReader::new(&[0x00]).read_var_uint(), Ok(0));
        assert_eq!(StrictReader::new(&[0x80, 0x01]).read_var_uint(), Ok(128));
        assert!(matches!(
            StrictReader::new(&[0x81, 0x00]).read_var_uint(),
            Err(Refusal::NonCanonical { .. })
        ));
        // 2^53 - 1 is the largest accepted value; 2^53 is refused.
        let max = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x0f];
        assert_eq!(
            StrictReader::new(&max).read_var_uint(),
            Ok(MAX_SAFE_INTEGER)
        );
        let over = [0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x10];
        assert!(matches!(
            StrictReader::new(&over).read_var_uint(),
            Err(Refusal::IntegerTooLarge { .. })
        ));
        assert!(matches!(
            StrictReader::new(&over).read_client(),
            Err(Refusal::ClientIdTooLarge { .. })
        ));
        assert!(matches!(
            StrictReader::new(&[0xff; 12]).read_var_uint(),
            Err(Refusal::IntegerTooLarge { .. })
        ));
    }

    #[test]
    fn varint_sign_and_canonical_form() {
        assert_eq!(StrictReader::new(&[0x41]).read_var_int(), Ok(-1));
        assert_eq!(StrictReader::new(&[0x01]).read_var_int(), Ok(1));
        assert_eq!(StrictReader::new(&[0x80, 0x01]).read_var_int(), Ok(64));
        assert!(StrictReader::new(&[0x81, 0x00]).read_var_int().is_err());
    }

    #[test]
    fn counts_cannot_exceed_what_is_there() {
        let mut r = StrictReader::new(&[0x03, 1, 2, 3]);
        assert_eq!(r.read_count(1), Ok(3));
        let mut r = StrictReader::new(&[0x03, 1, 2, 3]);
        assert!(matches!(
            r.read_count(2),
            Err(Refusal::CountTooLarge { .. })
        ));
        let mut r = StrictReader::new(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
        assert!(r.read_count(1).is_err());
    }

    #[test]
    fn clocks_fit_u32_and_strings_are_utf8() {
        let mut r = StrictReader::new(&[0x80, 0x80, 0x80, 0x80, 0x10]);
        assert!(matches!(r.read_u32(), Err(Refusal::ClockOverflow { .. })));
        assert!(matches!(
            StrictReader::new(&[0x02, 0xc3, 0x28]).read_string(),
            Err(Refusal::InvalidUtf8 { .. })
        ));
        assert_eq!(
            StrictReader::new(&[0x02, b'h', b'i']).read_string(),
            Ok("hi")
        );
    }
}
