//! A distributor's push to one ingester, encoded straight from the request's trace
//! segments: the bytes prost writes for `PushRequest { tenant, traces }`, with no
//! per-trace message, ID buffer or reference count on the way (the span bytes are copied
//! once, into the body).

use prost::encoding::{encode_key, encode_varint, encoded_len_varint, WireType};

const PUSH_TENANT: u32 = 1;
const PUSH_TRACES: u32 = 2;
const SEGMENT_TRACE_ID: u32 = 1;
const SEGMENT_RESOURCE_SPANS: u32 = 2;
const PUSH_UNINDEXED: u32 = 3;

/// A `bytes` or `string` field's encoded length (proto3: an empty one is not written).
fn field_len(len: usize) -> usize {
    if len == 0 {
        0
    } else {
        1 + encoded_len_varint(len as u64) + len
    }
}

fn put_field(buf: &mut Vec<u8>, tag: u32, bytes: &[u8]) {
    if !bytes.is_empty() {
        encode_key(tag, WireType::LengthDelimited, buf);
        encode_varint(bytes.len() as u64, buf);
        buf.extend_from_slice(bytes);
    }
}

/// `PushRequest { tenant, traces }` encoded, each trace given as `(trace ID, its
/// concatenated resource_spans fields)`.
pub fn encode_push<'a, I>(tenant: &str, traces: I) -> Vec<u8>
where
    I: Iterator<Item = (&'a [u8], &'a [u8])> + Clone,
{
    let segment_len = |(id, data): (&[u8], &[u8])| field_len(id.len()) + field_len(data.len());
    let total = field_len(tenant.len())
        + traces
            .clone()
            .map(|t| {
                let len = segment_len(t);
                1 + encoded_len_varint(len as u64) + len
            })
            .sum::<usize>();
    let mut buf = Vec::with_capacity(total);
    put_field(&mut buf, PUSH_TENANT, tenant.as_bytes());
    for (id, data) in traces {
        // A segment is written even when empty (a repeated message field always is).
        encode_key(PUSH_TRACES, WireType::LengthDelimited, &mut buf);
        encode_varint(segment_len((id, data)) as u64, &mut buf);
        put_field(&mut buf, SEGMENT_TRACE_ID, id);
        put_field(&mut buf, SEGMENT_RESOURCE_SPANS, data);
    }
    debug_assert_eq!(buf.len(), total);
    buf
}

/// A push's `unindexed` field (packed), to follow [`encode_push`]'s bytes: the indices
/// of the segments the receiving ingester leaves out of its search sections. Nothing
/// when there are none.
pub fn encode_unindexed(indices: &[u32]) -> Vec<u8> {
    if indices.is_empty() {
        return Vec::new();
    }
    let len: usize = indices
        .iter()
        .map(|&i| encoded_len_varint(u64::from(i)))
        .sum();
    let mut buf = Vec::with_capacity(1 + encoded_len_varint(len as u64) + len);
    encode_key(PUSH_UNINDEXED, WireType::LengthDelimited, &mut buf);
    encode_varint(len as u64, &mut buf);
    for &i in indices {
        encode_varint(u64::from(i), &mut buf);
    }
    buf
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rpc::proto::{PushRequest, TraceSegment};
    use bytes::Bytes;
    use prost::Message;
    use rand::{RngExt, SeedableRng};

    #[test]
    fn the_frame_and_its_unindexed_ending_are_the_bytes_prost_writes_and_decode_back() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(14);
        for round in 0..500 {
            let tenant = if round % 7 == 0 { "" } else { "tenant-a" };
            let traces: Vec<(Vec<u8>, Vec<u8>)> = (0..rng.random_range(0..20))
                .map(|_| {
                    let id: Vec<u8> = (0..16).map(|_| rng.random()).collect();
                    // Sizes across the one- and two-byte length boundaries, and empty.
                    let len = [0, 1, 127, 128, 300, 20_000][rng.random_range(0..6)];
                    (id, (0..len).map(|_| rng.random()).collect())
                })
                .collect();
            let mut frame = encode_push(tenant, traces.iter().map(|(i, d)| (&i[..], &d[..])));
            let unindexed: Vec<u32> = (0..traces.len() as u32)
                .filter(|_| rng.random_range(0..3) == 0)
                .map(|i| i * [1, 200][round % 2])
                .collect();
            frame.extend_from_slice(&encode_unindexed(&unindexed));
            let expected = PushRequest {
                tenant: tenant.to_owned(),
                traces: traces
                    .iter()
                    .map(|(i, d)| TraceSegment {
                        trace_id: Bytes::copy_from_slice(i),
                        resource_spans: Bytes::copy_from_slice(d),
                    })
                    .collect(),
                unindexed,
            };
            assert_eq!(frame, expected.encode_to_vec());
            assert_eq!(PushRequest::decode(&frame[..]).expect("decodes"), expected);
        }
    }
}
