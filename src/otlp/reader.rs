//! The protobuf walk under the split, the schema check and the ingester's segment check:
//! one field at a time, by ranges into the buffer, nothing decoded that is not asked for.

use std::ops::Range;

use super::{WireError, WIRE_FIXED32, WIRE_FIXED64, WIRE_LEN, WIRE_VARINT};

/// One protobuf field as the walk sees it.
pub(super) struct Field {
    pub(super) number: u32,
    pub(super) wire: u8,
    /// The whole field, tag included.
    pub(super) raw: Range<usize>,
    /// The payload of a LEN field.
    pub(super) payload: Range<usize>,
}

pub(super) struct Reader<'a> {
    pub(super) buf: &'a [u8],
    pub(super) pos: usize,
    pub(super) end: usize,
}

impl<'a> Reader<'a> {
    #[inline]
    pub(super) fn new(buf: &'a [u8], range: Range<usize>) -> Self {
        Self {
            buf,
            pos: range.start,
            end: range.end,
        }
    }

    pub(super) fn err(&self, what: &'static str) -> WireError {
        WireError {
            offset: self.pos,
            what,
        }
    }

    /// A varint; tags and lengths below 128 (most of them) take the first branch.
    #[inline]
    pub(super) fn varint(&mut self) -> Result<u64, WireError> {
        if self.pos < self.end && self.buf[self.pos] < 0x80 {
            self.pos += 1;
            return Ok(u64::from(self.buf[self.pos - 1]));
        }
        self.varint_slow()
    }

    #[cold]
    fn varint_slow(&mut self) -> Result<u64, WireError> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            if self.pos >= self.end {
                return Err(self.err("truncated varint"));
            }
            let b = self.buf[self.pos];
            self.pos += 1;
            if shift == 63 && b > 1 {
                // The tenth byte holds only bit 63: decoders refuse anything more.
                return Err(self.err("varint overflows 64 bits"));
            }
            value |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(value);
            }
        }
        Err(self.err("varint longer than 10 bytes"))
    }

    #[inline]
    pub(super) fn skip(&mut self, n: usize) -> Result<(), WireError> {
        if self.end - self.pos < n {
            return Err(self.err("field runs past the end of its message"));
        }
        self.pos += n;
        Ok(())
    }

    /// The next field. One-byte keys with a one-byte length or varint, and fixed64
    /// fields (most of OTLP's) are read inline; the rest, and every error, take
    /// [`Self::next_general`], which gives the same answer for those too. Always inlined:
    /// `check_segment` is 10% faster for it (`cargo bench --bench split`).
    #[inline(always)]
    pub(super) fn next(&mut self) -> Result<Option<Field>, WireError> {
        let start = self.pos;
        if let Some(&[key, next]) = self.buf.get(start..start + 2) {
            if (8..0x80).contains(&key) && start + 2 <= self.end {
                let (number, wire) = (u32::from(key >> 3), key & 7);
                let end = match wire {
                    WIRE_LEN if next < 0x80 => start + 2 + usize::from(next),
                    WIRE_VARINT if next < 0x80 => start + 2,
                    WIRE_FIXED64 => start + 9,
                    _ => usize::MAX,
                };
                if end <= self.end {
                    self.pos = end;
                    // As the general path: a varint's payload is empty, at its end.
                    let payload = match wire {
                        WIRE_LEN => start + 2,
                        WIRE_VARINT => end,
                        _ => start + 1,
                    };
                    return Ok(Some(Field {
                        number,
                        wire,
                        raw: start..end,
                        payload: payload..end,
                    }));
                }
            }
        }
        self.next_general()
    }

    pub(super) fn next_general(&mut self) -> Result<Option<Field>, WireError> {
        if self.pos >= self.end {
            return Ok(None);
        }
        let start = self.pos;
        let key = self.varint()?;
        let number = u32::try_from(key >> 3).map_err(|_| self.err("field number too large"))?;
        if number == 0 {
            return Err(self.err("field number 0"));
        }
        let wire = (key & 7) as u8;
        let payload_start;
        match wire {
            WIRE_VARINT => {
                self.varint()?;
                payload_start = self.pos;
            }
            WIRE_FIXED64 => {
                payload_start = self.pos;
                self.skip(8)?;
            }
            WIRE_FIXED32 => {
                payload_start = self.pos;
                self.skip(4)?;
            }
            WIRE_LEN => {
                let len = self.varint()?;
                payload_start = self.pos;
                let len = usize::try_from(len).map_err(|_| self.err("length too large"))?;
                self.skip(len)?;
            }
            _ => return Err(self.err("unsupported wire type (groups are not used by OTLP)")),
        }
        Ok(Some(Field {
            number,
            wire,
            raw: start..self.pos,
            payload: payload_start..self.pos,
        }))
    }

    /// Next field, requiring LEN wire type for `len_fields`.
    #[inline(always)]
    pub(super) fn next_expect_len(
        &mut self,
        len_fields: &[u32],
    ) -> Result<Option<Field>, WireError> {
        let f = self.next()?;
        if let Some(f) = &f {
            if len_fields.contains(&f.number) && f.wire != WIRE_LEN {
                return Err(WireError {
                    offset: f.raw.start,
                    what: "message field with a non-length-delimited wire type",
                });
            }
        }
        Ok(f)
    }
}
