//! A gRPC codec that lets a method take its request as raw bytes.
//!
//! Hot methods (OTLP `Export`, ingester `Push`) receive [`RawBytes`] or [`PushBody`]: an
//! `Export` is the request buffer as tonic read it, without a copy; a `Push`, which the
//! ingester keeps, is copied once into a buffer of its own size. Everything else is a
//! prost message.

use std::marker::PhantomData;

use bytes::{Buf, BufMut, Bytes};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::Status;

/// A protobuf message kept as its encoded bytes.
#[derive(Clone, Debug, Default)]
pub struct RawBytes(pub Bytes);

/// An ingester push as sent: a body that several calls share (the same traces, encoded
/// once) and this call's own ending (its `unindexed` field), written one after the other
/// into the call's frame; a protobuf message may be split anywhere between fields. A
/// received push has it all in `shared`.
#[derive(Clone, Debug, Default)]
pub struct PushBody {
    pub shared: Bytes,
    pub own: Bytes,
    /// The traces are in `compressed_traces` (sent with `PushCompressed`). Not read from
    /// the wire: a received push says so in its bytes.
    pub compressed: bool,
}

impl PushBody {
    /// The whole push in one buffer (copied when it has two parts).
    pub fn into_bytes(self) -> Bytes {
        if self.own.is_empty() {
            return self.shared;
        }
        let mut all = Vec::with_capacity(self.shared.len() + self.own.len());
        all.extend_from_slice(&self.shared);
        all.extend_from_slice(&self.own);
        all.into()
    }
}

impl WireEncode for PushBody {
    fn encode_to(&self, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        // tonic's buffer starts at 8 KiB; grown by `put_slice` it would be reallocated
        // (and copied) a few times per push on the way to ~100 KiB.
        buf.reserve(self.shared.len() + self.own.len());
        buf.put_slice(&self.shared);
        buf.put_slice(&self.own);
        Ok(())
    }
}

impl WireDecode for PushBody {
    /// Copies the push into a buffer of its own size. A push outlives its call (it is the
    /// WAL record and the live traces' storage until they are cut), and tonic's receive
    /// buffer is larger than the message: once the first frame is in, tonic reserves the
    /// message's whole length again, so the buffer is the message plus its first frame,
    /// twice the message when one frame carries it all (the internal server's frames are
    /// 128 KiB, see `node::servers`). Keeping a slice of it kept that allocation.
    fn decode_from(buf: &mut DecodeBuf<'_>) -> Result<Self, Status> {
        let mut push = Vec::with_capacity(buf.remaining());
        while buf.has_remaining() {
            let chunk = buf.chunk();
            let n = chunk.len();
            push.extend_from_slice(chunk);
            buf.advance(n);
        }
        Ok(PushBody {
            shared: Bytes::from(push),
            own: Bytes::new(),
            compressed: false,
        })
    }
}

/// Something the codec can write to the wire.
pub trait WireEncode {
    fn encode_to(&self, buf: &mut EncodeBuf<'_>) -> Result<(), Status>;
}

/// Something the codec can read from the wire.
pub trait WireDecode: Sized {
    fn decode_from(buf: &mut DecodeBuf<'_>) -> Result<Self, Status>;
}

impl WireEncode for RawBytes {
    fn encode_to(&self, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        buf.reserve(self.0.len());
        buf.put_slice(&self.0);
        Ok(())
    }
}

impl WireDecode for RawBytes {
    fn decode_from(buf: &mut DecodeBuf<'_>) -> Result<Self, Status> {
        let len = buf.remaining();
        Ok(RawBytes(buf.copy_to_bytes(len)))
    }
}

impl<M: prost::Message> WireEncode for M {
    fn encode_to(&self, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        self.encode(buf)
            .map_err(|e| Status::internal(format!("encoding a response failed: {e}")))
    }
}

impl<M: prost::Message + Default> WireDecode for M {
    fn decode_from(buf: &mut DecodeBuf<'_>) -> Result<Self, Status> {
        M::decode(buf).map_err(|e| Status::invalid_argument(format!("malformed protobuf: {e}")))
    }
}

/// Codec for any pair of [`WireEncode`] / [`WireDecode`] types.
pub struct WireCodec<E, D>(PhantomData<fn(E) -> D>);

impl<E, D> Default for WireCodec<E, D> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<E, D> Codec for WireCodec<E, D>
where
    E: WireEncode + Send + 'static,
    D: WireDecode + Send + 'static,
{
    type Encode = E;
    type Decode = D;
    type Encoder = WireEncoder<E>;
    type Decoder = WireDecoder<D>;

    fn encoder(&mut self) -> Self::Encoder {
        WireEncoder(PhantomData)
    }

    fn decoder(&mut self) -> Self::Decoder {
        WireDecoder(PhantomData)
    }
}

pub struct WireEncoder<E>(PhantomData<fn(E)>);

impl<E: WireEncode> Encoder for WireEncoder<E> {
    type Item = E;
    type Error = Status;

    fn encode(&mut self, item: E, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode_to(buf)
    }
}

pub struct WireDecoder<D>(PhantomData<fn() -> D>);

impl<D: WireDecode> Decoder for WireDecoder<D> {
    type Item = D;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<D>, Status> {
        D::decode_from(buf).map(Some)
    }
}
