//! The gRPC codec of every rollstore service and client: tonic-prost's, except that a message
//! is decoded from one contiguous slice of bytes instead of through tonic's `DecodeBuf`.
//!
//! ```text
//!   tonic's frame   [5-byte header][message bytes ……………………………]   one BytesMut, contiguous
//!   tonic-prost     prost ──▶ DecodeBuf ──▶ BytesMut                  every varint and field
//!                                                                     advances both, checked
//!   this codec      prost ──▶ &[u8]                                   a slice: advancing is
//!                                                                     moving a pointer
//! ```
//!
//! prost reads a message a field at a time, advancing its buffer after each tag, length and
//! varint: through `DecodeBuf` (a length-limited view of a `BytesMut`) each advance is two
//! checked calls. In batches of 1,000 mixed commands, `bytes::BytesMut::advance_unchecked`
//! alone was 1.9% of the server's instructions, and decoding from a slice took 6.5% off them
//! (SHA-256 apart, `benches/instructions.sh`). tonic 0.14 hands a decoder the whole message in
//! one `BytesMut`, so its bytes are one slice; were they ever in pieces, they would be decoded
//! through the buffer as before. Encoding is tonic-prost's.
//!
//! Named in `build.rs` (`codec_path`), so the generated servers and clients use it. It knows
//! prost's messages and nothing of the register.

use std::marker::PhantomData;

use prost::bytes::Buf;
use prost::Message;
use tonic::codec::{Codec, DecodeBuf, Decoder};
use tonic::Status;
use tonic_prost::{ProstCodec, ProstEncoder};

/// tonic-prost's codec with [`SliceDecoder`] for decoding.
#[derive(Debug, Clone, Default)]
pub struct SliceCodec<T, U>(PhantomData<(T, U)>);

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
        ProstCodec::<T, U>::new().encoder()
    }

    fn decoder(&mut self) -> Self::Decoder {
        SliceDecoder(PhantomData)
    }
}

/// Decodes a `U` from the message's bytes as one slice, when they are one.
#[derive(Debug, Clone, Default)]
pub struct SliceDecoder<U>(PhantomData<U>);

impl<U: Message + Default> Decoder for SliceDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        decode_from(buf).map(Some)
    }
}

/// Decodes a `U` from all of `buf`: from one slice when its bytes are one.
fn decode_from<U: Message + Default>(buf: &mut impl Buf) -> Result<U, Status> {
    let len = buf.remaining();
    let decoded = if buf.chunk().len() == len {
        let decoded = U::decode(buf.chunk());
        buf.advance(len);
        decoded
    } else {
        U::decode(buf)
    };
    // As tonic-prost maps it (gRPC's status codes say INTERNAL for a parse error); the services
    // see only messages that decoded.
    decoded.map_err(|e| Status::internal(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb;

    /// A message decodes as prost decodes it, and bytes that are not one are refused with
    /// prost's reason, whether they come as one slice or in two pieces.
    #[test]
    fn decodes_what_prost_decodes_and_refuses_what_it_refuses() {
        let request = pb::GetHouseholdRequest {
            household_id: "610602000001".into(),
            ..Default::default()
        };
        let good = request.encode_to_vec();
        // (bytes, whether they are a message): a length that runs past the end; field 0.
        let cases: [(&[u8], bool); 4] = [
            (&good, true),
            (&[], true),
            (&[0x0a, 0x20, b'6'], false),
            (&[0x00, 0x01], false),
        ];
        for (bytes, decodes) in cases {
            let prost = pb::GetHouseholdRequest::decode(bytes).map_err(|e| e.to_string());
            assert_eq!(prost.is_ok(), decodes, "{bytes:?}");
            let mut whole = prost::bytes::BytesMut::from(bytes);
            let (first, second) = bytes.split_at(bytes.len() / 2);
            let mut pieces = first.chain(second);
            for (ours, buf) in [
                (decode_from(&mut whole), "one slice"),
                (decode_from(&mut pieces), "two pieces"),
            ] {
                let ours: Result<pb::GetHouseholdRequest, String> =
                    ours.map_err(|status| status.message().to_owned());
                assert_eq!(ours, prost, "{bytes:?} as {buf}");
            }
            assert_eq!(whole.remaining(), 0, "a decoded message is consumed");
        }
    }
}
