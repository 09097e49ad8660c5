//! A distributor's push to one ingester, encoded straight from the request's trace
//! segments: the bytes prost writes for `PushRequest { tenant, traces }`, with no
//! per-trace message, ID buffer or reference count on the way (the span bytes are copied
//! once, into the body). For `PushCompressed`, the same `traces` bytes go into one zstd
//! frame (`compressed_traces`), which the ingester decompresses once.

use prost::encoding::{encode_key, encode_varint, encoded_len_varint, WireType};
use prost::Message;

use crate::rpc::proto::PushRequest;

const PUSH_TENANT: u32 = 1;
const PUSH_TRACES: u32 = 2;
const SEGMENT_TRACE_ID: u32 = 1;
const SEGMENT_RESOURCE_SPANS: u32 = 2;
const PUSH_UNINDEXED: u32 = 3;
const PUSH_COMPRESSED_TRACES: u32 = 4;

/// The zstd level of a push's traces: the fastest of the block writer's (`storage::block`'s
/// level-0 data). A 500-span push of SDK-shaped spans shrinks about tenfold.
const PUSH_ZSTD_LEVEL: i32 = -1;

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

fn segment_len((id, data): (&[u8], &[u8])) -> usize {
    field_len(id.len()) + field_len(data.len())
}

/// The length of [`encode_push`]'s bytes.
pub fn push_len<'a>(tenant: &str, traces: impl Iterator<Item = (&'a [u8], &'a [u8])>) -> usize {
    field_len(tenant.len())
        + traces
            .map(|t| {
                let len = segment_len(t);
                1 + encoded_len_varint(len as u64) + len
            })
            .sum::<usize>()
}

/// `PushRequest { tenant, traces }` encoded, each trace given as `(trace ID, its
/// concatenated resource_spans fields)`.
pub fn encode_push<'a, I>(tenant: &str, traces: I) -> Vec<u8>
where
    I: Iterator<Item = (&'a [u8], &'a [u8])> + Clone,
{
    let total = push_len(tenant, traces.clone());
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

/// [`encode_push`]'s push with its traces in one zstd frame (`compressed_traces`), for
/// the `PushCompressed` method: the distributor compresses a request's traces once, and
/// each of their replicas is sent a tenth of the bytes (the ingester keeps the push as it
/// came as its WAL record, so its WAL writes shrink as much). `None` if compression
/// fails, and the push goes plain.
pub fn encode_push_compressed<'a, I>(tenant: &str, traces: I) -> Option<Vec<u8>>
where
    I: Iterator<Item = (&'a [u8], &'a [u8])> + Clone,
{
    thread_local! {
        /// One compression context per thread, made on first use (a context is
        /// hundreds of KiB and costs more to make than a push to compress).
        static ZSTD: std::cell::RefCell<Option<zstd::bulk::Compressor<'static>>> =
            const { std::cell::RefCell::new(None) };
    }
    let plain = encode_push("", traces);
    let packed = ZSTD.with(|z| {
        let mut z = z.try_borrow_mut().ok()?;
        let z = match z.as_mut() {
            Some(z) => z,
            None => z.insert(zstd::bulk::Compressor::new(PUSH_ZSTD_LEVEL).ok()?),
        };
        z.compress(&plain).ok()
    })?;
    let mut buf = Vec::with_capacity(field_len(tenant.len()) + field_len(packed.len()));
    put_field(&mut buf, PUSH_TENANT, tenant.as_bytes());
    put_field(&mut buf, PUSH_COMPRESSED_TRACES, &packed);
    Some(buf)
}

/// Why a push's `compressed_traces` were not read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecompressError {
    #[error("compressed traces do not say how large they are")]
    NoSize,
    #[error("compressed traces are {size} bytes, above the limit of {limit}")]
    TooLarge { size: u64, limit: usize },
    #[error("compressed traces do not decompress")]
    Damaged,
}

/// The `traces` fields of a push's `compressed_traces`, at most `limit` bytes (a frame
/// that claims more is refused before anything is allocated).
pub fn decompress_traces(packed: &[u8], limit: usize) -> Result<Vec<u8>, DecompressError> {
    thread_local! {
        static ZSTD: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
            const { std::cell::RefCell::new(None) };
    }
    let size = match zstd::zstd_safe::get_frame_content_size(packed) {
        Ok(Some(size)) => size,
        Ok(None) => return Err(DecompressError::NoSize),
        Err(_) => return Err(DecompressError::Damaged),
    };
    if size > limit as u64 {
        return Err(DecompressError::TooLarge { size, limit });
    }
    let mut out = Vec::with_capacity(size as usize);
    let n = ZSTD.with(|z| {
        let mut z = z.try_borrow_mut().ok()?;
        let z = match z.as_mut() {
            Some(z) => z,
            None => z.insert(zstd::bulk::Decompressor::new().ok()?),
        };
        z.decompress_to_buffer(packed, &mut out).ok()
    });
    match n {
        Some(n) if n as u64 == size => Ok(out),
        _ => Err(DecompressError::Damaged),
    }
}

/// Appends a decoded push's `compressed_traces` (at most `limit` bytes decompressed) to its
/// `traces`, after any plain ones; the segments share the decompressed buffer. The field
/// is left as it came, so a caller can still tell how the push was sent.
pub fn expand_traces(push: &mut PushRequest, limit: usize) -> Result<(), DecompressError> {
    if push.compressed_traces.is_empty() {
        return Ok(());
    }
    let traces = decompress_traces(&push.compressed_traces, limit)?;
    let inner =
        PushRequest::decode(bytes::Bytes::from(traces)).map_err(|_| DecompressError::Damaged)?;
    push.traces.extend(inner.traces);
    Ok(())
}

/// A push as `Push` takes it, from one made for `PushCompressed` (for an ingester of an
/// earlier version): the tenant, every trace plain, and the unindexed ones.
pub fn plain_of(push: &[u8], limit: usize) -> Result<Vec<u8>, DecompressError> {
    let mut decoded = PushRequest::decode(push).map_err(|_| DecompressError::Damaged)?;
    if decoded.compressed_traces.is_empty() {
        return Ok(push.to_vec());
    }
    expand_traces(&mut decoded, limit)?;
    let mut buf = encode_push(
        &decoded.tenant,
        decoded
            .traces
            .iter()
            .map(|t| (&t.trace_id[..], &t.resource_spans[..])),
    );
    buf.extend_from_slice(&encode_unindexed(&decoded.unindexed));
    Ok(buf)
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
                compressed_traces: Bytes::new(),
            };
            assert_eq!(frame, expected.encode_to_vec());
            assert_eq!(PushRequest::decode(&frame[..]).expect("decodes"), expected);
        }
    }
}
