//! A small, bounded MessagePack reader: just what the hub message envelope needs, plus a
//! value skipper that finds where an application value ends without decoding it.

use std::fmt;

/// Why a MessagePack item could not be read.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ReadError {
    /// The data ends in the middle of an item.
    UnexpectedEnd,
    /// An item of another kind was found.
    Unexpected {
        /// What the envelope needed here.
        expected: &'static str,
        /// The marker byte found instead.
        found: u8,
    },
    /// An integer does not fit the range the envelope allows.
    OutOfRange,
    /// A string is not valid UTF-8.
    InvalidUtf8,
    /// The byte 0xC1, which MessagePack never uses.
    ReservedMarker,
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadError::UnexpectedEnd => f.write_str("unexpected end of message"),
            ReadError::Unexpected { expected, found } => {
                write!(f, "expected {expected}, found {}", describe(*found))
            }
            ReadError::OutOfRange => f.write_str("integer out of range"),
            ReadError::InvalidUtf8 => f.write_str("string is not valid UTF-8"),
            ReadError::ReservedMarker => f.write_str("reserved marker byte 0xc1"),
        }
    }
}

/// Names the kind of item a marker byte starts, for error messages.
pub(crate) fn describe(marker: u8) -> &'static str {
    match marker {
        0x00..=0x7F | 0xCC..=0xD3 | 0xE0..=0xFF => "an integer",
        0x80..=0x8F | 0xDE | 0xDF => "a map",
        0x90..=0x9F | 0xDC | 0xDD => "an array",
        0xA0..=0xBF | 0xD9..=0xDB => "a string",
        0xC0 => "nil",
        0xC1 => "the reserved marker 0xc1",
        0xC2 | 0xC3 => "a boolean",
        0xC4..=0xC6 => "binary data",
        0xC7..=0xC9 | 0xD4..=0xD8 => "an extension value",
        0xCA | 0xCB => "a float",
    }
}

/// A cursor over one message body. Positions are offsets into that body.
#[derive(Debug)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

type Result<T> = std::result::Result<T, ReadError>;

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    /// Bytes not read yet.
    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn peek(&self) -> Result<u8> {
        self.buf
            .get(self.pos)
            .copied()
            .ok_or(ReadError::UnexpectedEnd)
    }

    fn byte(&mut self) -> Result<u8> {
        let byte = self.peek()?;
        self.pos += 1;
        Ok(byte)
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8]> {
        if len > self.remaining() {
            return Err(ReadError::UnexpectedEnd);
        }
        let bytes = &self.buf[self.pos..self.pos + len];
        self.pos += len;
        Ok(bytes)
    }

    fn skip_bytes(&mut self, len: u64) -> Result<()> {
        if len > self.remaining() as u64 {
            return Err(ReadError::UnexpectedEnd);
        }
        // Lossless: len <= remaining, a usize.
        self.pos += len as usize;
        Ok(())
    }

    fn be<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u64> {
        self.byte().map(u64::from)
    }

    fn u16(&mut self) -> Result<u64> {
        self.be().map(|bytes| u64::from(u16::from_be_bytes(bytes)))
    }

    fn u32(&mut self) -> Result<u64> {
        self.be().map(|bytes| u64::from(u32::from_be_bytes(bytes)))
    }

    /// Reads an array header and returns the element count.
    pub(crate) fn array_len(&mut self) -> Result<u64> {
        match self.byte()? {
            marker @ 0x90..=0x9F => Ok(u64::from(marker & 0x0F)),
            0xDC => self.u16(),
            0xDD => self.u32(),
            found => Err(ReadError::Unexpected {
                expected: "an array",
                found,
            }),
        }
    }

    /// Reads a map header and returns the entry count.
    pub(crate) fn map_len(&mut self) -> Result<u64> {
        match self.byte()? {
            marker @ 0x80..=0x8F => Ok(u64::from(marker & 0x0F)),
            0xDE => self.u16(),
            0xDF => self.u32(),
            found => Err(ReadError::Unexpected {
                expected: "a map",
                found,
            }),
        }
    }

    /// Reads an integer of any encoding that fits an `i64`.
    pub(crate) fn int(&mut self) -> Result<i64> {
        let marker = self.byte()?;
        let value = match marker {
            0x00..=0x7F => i64::from(marker),
            0xE0..=0xFF => i64::from(marker as i8),
            0xCC => self.u8()? as i64,
            0xCD => self.u16()? as i64,
            0xCE => self.u32()? as i64,
            0xCF => {
                i64::try_from(u64::from_be_bytes(self.be()?)).map_err(|_| ReadError::OutOfRange)?
            }
            0xD0 => i64::from(i8::from_be_bytes(self.be()?)),
            0xD1 => i64::from(i16::from_be_bytes(self.be()?)),
            0xD2 => i64::from(i32::from_be_bytes(self.be()?)),
            0xD3 => i64::from_be_bytes(self.be()?),
            found => {
                return Err(ReadError::Unexpected {
                    expected: "an integer",
                    found,
                });
            }
        };
        Ok(value)
    }

    /// Reads a non-negative integer of any encoding.
    pub(crate) fn uint(&mut self) -> Result<u64> {
        let start = self.pos;
        if self.peek()? == 0xCF {
            self.pos += 1;
            return Ok(u64::from_be_bytes(self.be()?));
        }
        let value = self.int()?;
        u64::try_from(value).map_err(|_| {
            self.pos = start;
            ReadError::OutOfRange
        })
    }

    /// Reads a string.
    pub(crate) fn str(&mut self) -> Result<&'a str> {
        let len = match self.byte()? {
            marker @ 0xA0..=0xBF => u64::from(marker & 0x1F),
            0xD9 => self.u8()?,
            0xDA => self.u16()?,
            0xDB => self.u32()?,
            found => {
                return Err(ReadError::Unexpected {
                    expected: "a string",
                    found,
                });
            }
        };
        let len = usize::try_from(len).map_err(|_| ReadError::UnexpectedEnd)?;
        std::str::from_utf8(self.take(len)?).map_err(|_| ReadError::InvalidUtf8)
    }

    /// Reads a string or nil.
    pub(crate) fn str_or_nil(&mut self) -> Result<Option<&'a str>> {
        if self.peek()? == super::NIL {
            self.pos += 1;
            return Ok(None);
        }
        self.str().map(Some)
    }

    /// Reads a boolean.
    pub(crate) fn bool(&mut self) -> Result<bool> {
        match self.byte()? {
            0xC2 => Ok(false),
            0xC3 => Ok(true),
            found => Err(ReadError::Unexpected {
                expected: "a boolean",
                found,
            }),
        }
    }

    /// Skips one complete value of any kind and returns where it started and ended.
    ///
    /// Iterative, so hostile nesting cannot exhaust the stack, and it never allocates: it
    /// only counts the items still owed by the containers opened so far. Each item takes at
    /// least one byte, so a count larger than the bytes left is rejected at once, which keeps
    /// the count bounded by the body length.
    pub(crate) fn value_span(&mut self) -> Result<(usize, usize)> {
        let start = self.pos;
        let mut pending: u64 = 1;
        while pending > 0 {
            pending -= 1;
            let marker = self.byte()?;
            match marker {
                0x00..=0x7F | 0xC0 | 0xC2 | 0xC3 | 0xE0..=0xFF => {}
                0x80..=0x8F => pending += 2 * u64::from(marker & 0x0F),
                0x90..=0x9F => pending += u64::from(marker & 0x0F),
                0xA0..=0xBF => self.skip_bytes(u64::from(marker & 0x1F))?,
                0xC1 => return Err(ReadError::ReservedMarker),
                // bin 8/16/32 and str 8/16/32: length, then data.
                0xC4 | 0xD9 => {
                    let len = self.u8()?;
                    self.skip_bytes(len)?;
                }
                0xC5 | 0xDA => {
                    let len = self.u16()?;
                    self.skip_bytes(len)?;
                }
                0xC6 | 0xDB => {
                    let len = self.u32()?;
                    self.skip_bytes(len)?;
                }
                // ext 8/16/32: length, type byte, data.
                0xC7 => {
                    let len = self.u8()?;
                    self.skip_bytes(len + 1)?;
                }
                0xC8 => {
                    let len = self.u16()?;
                    self.skip_bytes(len + 1)?;
                }
                0xC9 => {
                    let len = self.u32()?;
                    self.skip_bytes(len + 1)?;
                }
                0xCA => self.skip_bytes(4)?,
                0xCB => self.skip_bytes(8)?,
                0xCC | 0xD0 => self.skip_bytes(1)?,
                0xCD | 0xD1 => self.skip_bytes(2)?,
                0xCE | 0xD2 => self.skip_bytes(4)?,
                0xCF | 0xD3 => self.skip_bytes(8)?,
                // fixext 1/2/4/8/16: type byte, then data.
                0xD4 => self.skip_bytes(2)?,
                0xD5 => self.skip_bytes(3)?,
                0xD6 => self.skip_bytes(5)?,
                0xD7 => self.skip_bytes(9)?,
                0xD8 => self.skip_bytes(17)?,
                0xDC => pending += self.u16()?,
                0xDD => pending += self.u32()?,
                0xDE => pending += 2 * self.u16()?,
                0xDF => pending += 2 * self.u32()?,
            }
            if pending > self.remaining() as u64 {
                return Err(ReadError::UnexpectedEnd);
            }
        }
        Ok((start, self.pos))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(bytes: &[u8]) -> Result<(usize, usize)> {
        Reader::new(bytes).value_span()
    }

    #[test]
    fn skips_every_kind_of_value() {
        let cases: &[&[u8]] = &[
            &[0x2A],
            &[0xFF],
            &[0xC0],
            &[0xC3],
            &[0xCC, 0xFF],
            &[0xCD, 0x01, 0x02],
            &[0xD3, 0, 0, 0, 0, 0, 0, 0, 1],
            &[0xCA, 0, 0, 0, 0],
            &[0xCB, 0, 0, 0, 0, 0, 0, 0, 0],
            &[0xA3, b'a', b'b', b'c'],
            &[0xD9, 0x01, b'x'],
            &[0xC4, 0x02, 0x00, 0x01],
            &[0xD4, 0x01, 0x00],
            &[0xC7, 0x01, 0x05, 0x00],
            &[0x92, 0x01, 0x92, 0x02, 0x03],
            &[0x81, 0xA1, b'k', 0x90],
            &[0xDC, 0x00, 0x02, 0x01, 0x02],
            &[0xDE, 0x00, 0x01, 0x01, 0x02],
        ];
        for case in cases {
            let mut with_trailer = case.to_vec();
            with_trailer.push(0x00);
            assert_eq!(span(&with_trailer), Ok((0, case.len())), "{case:02x?}");
        }
    }

    #[test]
    fn hostile_lengths_fail_fast_without_allocating() {
        assert_eq!(
            span(&[0xDD, 0xFF, 0xFF, 0xFF, 0xFF]),
            Err(ReadError::UnexpectedEnd)
        );
        assert_eq!(
            span(&[0xDF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]),
            Err(ReadError::UnexpectedEnd)
        );
        assert_eq!(
            span(&[0xDB, 0xFF, 0xFF, 0xFF, 0xFF]),
            Err(ReadError::UnexpectedEnd)
        );
        assert_eq!(
            span(&[0xC9, 0xFF, 0xFF, 0xFF, 0xFF]),
            Err(ReadError::UnexpectedEnd)
        );
        assert_eq!(span(&[0xC1]), Err(ReadError::ReservedMarker));
        assert_eq!(span(&[0x92, 0x01]), Err(ReadError::UnexpectedEnd));
    }

    #[test]
    fn deep_nesting_does_not_recurse() {
        let mut bytes = vec![0x91; 1_000_000];
        bytes.push(0x01);
        assert_eq!(span(&bytes), Ok((0, bytes.len())));
    }

    #[test]
    fn integers_of_every_width() {
        let cases: &[(&[u8], i64)] = &[
            (&[0x05], 5),
            (&[0xFF], -1),
            (&[0xCC, 0xFF], 255),
            (&[0xCD, 0x01, 0x00], 256),
            (&[0xCE, 0xFF, 0xFF, 0xFF, 0xFF], 4_294_967_295),
            (&[0xD0, 0x80], -128),
            (&[0xD1, 0xFF, 0x00], -256),
            (&[0xD2, 0x80, 0, 0, 0], i64::from(i32::MIN)),
            (&[0xD3, 0x80, 0, 0, 0, 0, 0, 0, 0], i64::MIN),
        ];
        for (bytes, value) in cases {
            assert_eq!(Reader::new(bytes).int(), Ok(*value));
        }
        let too_big = [0xCF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF];
        assert_eq!(Reader::new(&too_big).int(), Err(ReadError::OutOfRange));
        assert_eq!(Reader::new(&too_big).uint(), Ok(u64::MAX));
        assert_eq!(Reader::new(&[0xFF]).uint(), Err(ReadError::OutOfRange));
    }
}
