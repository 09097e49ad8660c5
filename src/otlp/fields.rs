//! A borrowed walk over one protobuf message's fields, for readers outside this module
//! that decode stored OTLP without materialising it (search reads spans this way).

use super::{Reader, WireError, WIRE_FIXED32, WIRE_FIXED64, WIRE_LEN, WIRE_VARINT};

/// A field's value as the wire holds it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum WireValue<'a> {
    Varint(u64),
    Fixed64(u64),
    Fixed32(u32),
    Len(&'a [u8]),
}

/// The fields of the message in `buf`, in order: `(number, value)`. A framing error ends
/// the walk (it is the last item).
pub fn fields(buf: &[u8]) -> Fields<'_> {
    Fields {
        reader: Reader::new(buf, 0..buf.len()),
        failed: false,
    }
}

pub struct Fields<'a> {
    reader: Reader<'a>,
    failed: bool,
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<(u32, WireValue<'a>), WireError>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.reader.pos >= self.reader.end {
            return None;
        }
        let item = self.read();
        self.failed = item.is_err();
        Some(item)
    }
}

impl<'a> Fields<'a> {
    /// Most fields have a one-byte key, and most strings and messages a one-byte length:
    /// those are read here without the general path's checks one by one (the result is
    /// the same; anything else, and every error, takes [`Self::read_general`]). The same
    /// path as `Reader::next`'s, on purpose: `Fields` built on `Reader::next` (its ranges
    /// turned into values) made a search section 36% slower to build (`cargo bench
    /// --bench block`, 21.4 against 15.9 ms).
    #[inline(always)]
    fn read(&mut self) -> Result<(u32, WireValue<'a>), WireError> {
        let r = &mut self.reader;
        if let Some(&[key, next]) = r.buf.get(r.pos..r.pos + 2) {
            if (8..0x80).contains(&key) && r.pos + 2 <= r.end {
                let number = u32::from(key >> 3);
                match key & 7 {
                    WIRE_LEN if next < 0x80 => {
                        let (start, end) = (r.pos + 2, r.pos + 2 + usize::from(next));
                        if end <= r.end {
                            r.pos = end;
                            return Ok((number, WireValue::Len(&r.buf[start..end])));
                        }
                    }
                    WIRE_VARINT if next < 0x80 => {
                        r.pos += 2;
                        return Ok((number, WireValue::Varint(u64::from(next))));
                    }
                    WIRE_FIXED64 => {
                        if let Some(b) = r
                            .buf
                            .get(r.pos + 1..r.pos + 9)
                            .filter(|_| r.pos + 9 <= r.end)
                        {
                            let v = u64::from_le_bytes(b.try_into().unwrap_or_default());
                            r.pos += 9;
                            return Ok((number, WireValue::Fixed64(v)));
                        }
                    }
                    _ => {}
                }
            }
        }
        self.read_general()
    }

    fn read_general(&mut self) -> Result<(u32, WireValue<'a>), WireError> {
        let r = &mut self.reader;
        let key = r.varint()?;
        let number = u32::try_from(key >> 3).map_err(|_| r.err("field number too large"))?;
        if number == 0 {
            return Err(r.err("field number 0"));
        }
        let at = r.pos;
        let value = match (key & 7) as u8 {
            WIRE_VARINT => WireValue::Varint(r.varint()?),
            WIRE_FIXED64 => {
                r.skip(8)?;
                WireValue::Fixed64(u64::from_le_bytes(
                    r.buf[at..at + 8].try_into().unwrap_or_default(),
                ))
            }
            WIRE_FIXED32 => {
                r.skip(4)?;
                WireValue::Fixed32(u32::from_le_bytes(
                    r.buf[at..at + 4].try_into().unwrap_or_default(),
                ))
            }
            WIRE_LEN => {
                let len = usize::try_from(r.varint()?).map_err(|_| r.err("length too large"))?;
                let start = r.pos;
                r.skip(len)?;
                WireValue::Len(&r.buf[start..start + len])
            }
            _ => return Err(r.err("unsupported wire type (groups are not used by OTLP)")),
        };
        Ok((number, value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::trace::v1::Span;
    use prost::Message;

    #[test]
    fn every_wire_type_is_read_back_and_truncation_is_an_error() {
        let span = Span {
            trace_id: vec![1; 16],
            name: "GET /".into(),
            kind: 300,
            start_time_unix_nano: 7,
            ..Default::default()
        };
        let bytes = span.encode_to_vec();
        let got: Vec<_> = fields(&bytes).collect::<Result<_, _>>().expect("walks");
        assert_eq!(
            got,
            vec![
                (1, WireValue::Len(&[1; 16])),
                (5, WireValue::Len(b"GET /")),
                (6, WireValue::Varint(300)),
                (7, WireValue::Fixed64(7)),
            ]
        );
        let cut = &bytes[..bytes.len() - 3];
        let last = fields(cut).last().expect("an item");
        assert!(last.is_err());
        assert_eq!(fields(cut).filter(|f| f.is_err()).count(), 1);
    }

    /// The inline read (one-byte keys and lengths) gives what the general one gives, on
    /// random bytes made mostly of short keys and lengths, errors included.
    #[test]
    fn the_inline_read_agrees_with_the_general_one() {
        use rand::{RngExt, SeedableRng};
        type Read<'a> = Result<(u32, WireValue<'a>), (usize, &'static str)>;
        fn walk(bytes: &[u8], inline: bool) -> Vec<Read<'_>> {
            let mut f = fields(bytes);
            let mut out = Vec::new();
            while f.reader.pos < f.reader.end {
                let item = if inline { f.read() } else { f.read_general() };
                let stop = item.is_err();
                out.push(item.map_err(|e| (e.offset, e.what)));
                if stop {
                    break;
                }
            }
            out
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(14);
        let mut read = 0;
        for _ in 0..3000 {
            let len = rng.random_range(0..24);
            let bytes: Vec<u8> = (0..len)
                .map(|_| match rng.random_range(0..4) {
                    0 => rng.random_range(8..0x80u8),
                    1 => rng.random_range(0..12u8),
                    _ => rng.random(),
                })
                .collect();
            let inline = walk(&bytes, true);
            assert_eq!(inline, walk(&bytes, false), "{bytes:?}");
            read += inline.iter().filter(|r| r.is_ok()).count();
        }
        assert!(read > 1000, "{read}");
    }
}
