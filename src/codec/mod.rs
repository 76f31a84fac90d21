//! The gRPC codec of the generated client and server (`build.rs` names it): prost messages,
//! encoded as `tonic_prost` encodes them and decoded straight from the message's contiguous bytes.
//!
//! `tonic_prost::ProstCodec` decodes through tonic's `DecodeBuf`, a length-limited view of the
//! receive buffer: every string field (a 15-contact CreateSession has about 140) pays several
//! bounds-checked `chunk`/`advance` calls through it. Tonic has already gathered the whole
//! message into one buffer when it calls the decoder, so decoding from that buffer as a plain
//! slice gives the same result for less work (BENCHMARKS.md has the figures).
//! Undecodable bytes fail exactly as with `ProstCodec` (INTERNAL, prost's message), which the
//! middleware turns into `MALFORMED_REQUEST_MESSAGE`. Every RPC of `tests/api` goes through
//! it, `fault_matrix` sends undecodable bytes to every method, and
//! `middleware::refusal::tests` runs it inside tonic's own server code.
//!
//! `CreateSessionRequest`, by far the largest request, is decoded by [`create_session`] when it
//! has the usual shape (prost's result, for less work), by prost otherwise.

mod create_session;

use std::{any::Any, marker::PhantomData};

use bytes::Buf;
use prost::Message;
use tonic::{
    Status,
    codec::{BufferSettings, Codec, DecodeBuf, Decoder},
};
use tonic_prost::ProstEncoder;

/// The first allocation of a response body's buffer (tonic's default is 8 KiB). A response body
/// keeps its buffer until the last byte is on the wire, so every call in flight holds one: most
/// answers are a hundred bytes, and a larger message (a streamed script batch) grows the buffer
/// as needed.
pub const ENCODE_BUFFER_BYTES: usize = 1024;
/// A streamed response is flushed once this much is encoded (tonic's default).
const ENCODE_YIELD_BYTES: usize = 32 * 1024;

/// Encodes `T` like `tonic_prost::ProstCodec` (with a smaller first buffer); decodes `U` from a
/// slice.
#[derive(Debug, Clone)]
pub struct SliceCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for SliceCodec<T, U> {
    fn default() -> Self {
        SliceCodec(PhantomData)
    }
}

impl<T, U> Codec for SliceCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = SliceDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(BufferSettings::new(ENCODE_BUFFER_BYTES, ENCODE_YIELD_BYTES))
    }

    fn decoder(&mut self) -> Self::Decoder {
        SliceDecoder(PhantomData)
    }
}

/// Decodes one `U` from the message's bytes.
#[derive(Debug, Clone, Default)]
pub struct SliceDecoder<U>(PhantomData<U>);

impl<U: Message + Default + 'static> Decoder for SliceDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        let len = buf.remaining();
        let decoded = if buf.chunk().len() == len {
            // The usual case: the message is one contiguous run of the receive buffer.
            let mut direct: Option<U> = None;
            if let Some(slot) = (&mut direct as &mut dyn Any).downcast_mut::<Option<crate::pb::CreateSessionRequest>>()
            {
                *slot = create_session::decode(buf.chunk());
            }
            let decoded = direct.map_or_else(|| U::decode(buf.chunk()), Ok);
            buf.advance(len);
            decoded
        } else {
            U::decode(buf.copy_to_bytes(len))
        };
        decoded.map(Some).map_err(|e| Status::internal(e.to_string()))
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::default()
    }
}
