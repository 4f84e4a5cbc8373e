//! The framed codec: a 4-byte big-endian length, then a bincode 2 payload.
//!
//! This is the only module that names bincode, so the payload format can be
//! swapped in one place. Frames past the maximum size are refused before their
//! body is read, and a payload decodes under a limit that grows with its own
//! size (`decode_limit`), so a lying length inside a small frame cannot make
//! us allocate more than a few times that frame.

use bytes::{Buf, BytesMut};
use serde::{de::DeserializeOwned, Serialize};
use std::marker::PhantomData;
use tokio_util::codec::{Decoder, Encoder};

/// Default maximum frame size (16 MiB).
pub const DEFAULT_MAX_FRAME: usize = 16 * 1024 * 1024;
/// Hard ceiling for a configured frame size, and the decode limit of a payload.
pub const MAX_FRAME_CEILING: usize = 256 * 1024 * 1024;

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("frame of {size} bytes exceeds the limit of {limit} bytes")]
    FrameTooLarge { size: usize, limit: usize },
    #[error("undecodable frame: {0}")]
    Decode(String),
    #[error("unencodable message: {0}")]
    Encode(String),
    #[error("connection closed in the middle of a frame")]
    Truncated,
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

/// Bytes bincode counts against its limit per payload byte, at most: it
/// counts decoded sizes, and a varint u64 of one byte counts as 8.
const CLAIM_PER_BYTE: usize = 8;

/// The limits a payload may decode under: bincode's limit is a constant of
/// its configuration type, so there are a few, a factor of 16 apart.
const LIMIT_TIERS: [usize; 6] = [
    1 << 12,
    1 << 16,
    1 << 20,
    1 << 24,
    1 << 28,
    MAX_FRAME_CEILING * CLAIM_PER_BYTE,
];

/// The decode limit of a payload of `len` bytes: the smallest tier that a
/// well-formed payload of that size cannot exceed.
pub fn decode_limit(len: usize) -> usize {
    let needed = len.saturating_mul(CLAIM_PER_BYTE);
    LIMIT_TIERS
        .into_iter()
        .find(|&tier| tier >= needed)
        .unwrap_or(LIMIT_TIERS[LIMIT_TIERS.len() - 1])
}

fn config<const LIMIT: usize>() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<LIMIT>()
}

fn decode_under<T: DeserializeOwned, const LIMIT: usize>(
    bytes: &[u8],
) -> Result<(T, usize), bincode::error::DecodeError> {
    bincode::serde::decode_from_slice(bytes, config::<LIMIT>())
}

/// Encodes a message into a payload (without the length prefix).
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    encode_after(value, 0)
}

/// `value`'s encoding after `head` zero bytes, in a buffer allocated once
/// at its final size: sizing first costs a walk of the value, where
/// growing the buffer from empty (bincode's serde `encode_to_vec`) took
/// half a dozen reallocations per message (no change the dispatch bench
/// could tell apart from its noise; BENCHMARKS.md, issue 18).
fn encode_after<T: Serialize>(value: &T, head: usize) -> Result<Vec<u8>, CodecError> {
    let mut bytes = Vec::with_capacity(head + encoded_len(value)?);
    bytes.resize(head, 0);
    bincode::serde::encode_into_std_write(value, &mut bytes, config::<MAX_FRAME_CEILING>())
        .map_err(|e| CodecError::Encode(e.to_string()))?;
    Ok(bytes)
}

/// How many bytes `encode` makes of a value, counted without making them
/// (a client sizing the parts of a big batch measures every job).
pub fn encoded_len<T: Serialize>(value: &T) -> Result<usize, CodecError> {
    let mut counted = bincode::enc::write::SizeWriter::default();
    bincode::serde::encode_into_writer(value, &mut counted, config::<MAX_FRAME_CEILING>())
        .map_err(|e| CodecError::Encode(e.to_string()))?;
    Ok(counted.bytes_written)
}

/// Encodes a message as a whole frame (length prefix and payload), refused
/// past `max_frame` payload bytes.
pub fn encode_frame<T: Serialize>(value: &T, max_frame: usize) -> Result<Vec<u8>, CodecError> {
    let mut frame = encode_after(value, 4)?;
    let size = frame.len() - 4;
    if size > max_frame {
        return Err(CodecError::FrameTooLarge {
            size,
            limit: max_frame,
        });
    }
    frame[..4].copy_from_slice(&(size as u32).to_be_bytes());
    Ok(frame)
}

/// Decodes a whole payload under the limit its size allows
/// (`decode_limit`); trailing bytes are an error.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    const T0: usize = LIMIT_TIERS[0];
    const T1: usize = LIMIT_TIERS[1];
    const T2: usize = LIMIT_TIERS[2];
    const T3: usize = LIMIT_TIERS[3];
    const T4: usize = LIMIT_TIERS[4];
    const T5: usize = LIMIT_TIERS[5];
    let decoded = match decode_limit(bytes.len()) {
        T0 => decode_under::<T, T0>(bytes),
        T1 => decode_under::<T, T1>(bytes),
        T2 => decode_under::<T, T2>(bytes),
        T3 => decode_under::<T, T3>(bytes),
        T4 => decode_under::<T, T4>(bytes),
        _ => decode_under::<T, T5>(bytes),
    };
    let (value, used) = decoded.map_err(|e| CodecError::Decode(e.to_string()))?;
    if used != bytes.len() {
        return Err(CodecError::Decode(format!(
            "{} trailing bytes after the message",
            bytes.len() - used
        )));
    }
    Ok(value)
}

/// A tokio-util codec reading frames of `In` and writing frames of `Out`.
pub struct FrameCodec<In, Out> {
    max_frame: usize,
    _types: PhantomData<fn(Out) -> In>,
}

impl<In, Out> FrameCodec<In, Out> {
    pub fn new(max_frame: usize) -> Self {
        let max_frame = max_frame.clamp(1024, MAX_FRAME_CEILING);
        FrameCodec {
            max_frame,
            _types: PhantomData,
        }
    }

    pub fn max_frame(&self) -> usize {
        self.max_frame
    }
}

impl<In, Out> Default for FrameCodec<In, Out> {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_FRAME)
    }
}

/// Splits one whole frame body off the front of `src`, if it has arrived.
/// Pure: no I/O, so it is tested on byte slices.
pub fn split_frame(src: &mut BytesMut, max_frame: usize) -> Result<Option<BytesMut>, CodecError> {
    if src.len() < 4 {
        return Ok(None);
    }
    let size = u32::from_be_bytes([src[0], src[1], src[2], src[3]]) as usize;
    if size > max_frame {
        return Err(CodecError::FrameTooLarge {
            size,
            limit: max_frame,
        });
    }
    if src.len() < 4 + size {
        src.reserve(4 + size - src.len());
        return Ok(None);
    }
    src.advance(4);
    Ok(Some(src.split_to(size)))
}

impl<In: DeserializeOwned, Out> Decoder for FrameCodec<In, Out> {
    type Item = In;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<In>, CodecError> {
        match split_frame(src, self.max_frame)? {
            Some(frame) => decode(&frame).map(Some),
            None => Ok(None),
        }
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<In>, CodecError> {
        match self.decode(src)? {
            Some(item) => Ok(Some(item)),
            None if src.is_empty() => Ok(None),
            None => Err(CodecError::Truncated),
        }
    }
}

impl<In, Out: Serialize> Encoder<Out> for FrameCodec<In, Out> {
    type Error = CodecError;

    fn encode(&mut self, item: Out, dst: &mut BytesMut) -> Result<(), CodecError> {
        dst.extend_from_slice(&encode_frame(&item, self.max_frame)?);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Msg {
        n: u32,
        text: String,
    }

    type Codec = FrameCodec<Msg, Msg>;

    #[test]
    fn encoded_len_counts_what_encode_makes() {
        for text in ["", "hello", &"x".repeat(300)] {
            let msg = Msg {
                n: 70_000,
                text: text.into(),
            };
            assert_eq!(encoded_len(&msg).unwrap(), encode(&msg).unwrap().len());
        }
    }

    #[test]
    fn encodings_are_bincodes_in_one_allocation_of_their_size() {
        for text in ["", "hello", &"x".repeat(300), &"y".repeat(70_000)] {
            let msg = Msg {
                n: 70_000,
                text: text.into(),
            };
            let bincodes =
                bincode::serde::encode_to_vec(&msg, config::<MAX_FRAME_CEILING>()).unwrap();
            let payload = encode(&msg).unwrap();
            assert_eq!(payload, bincodes);
            assert_eq!(payload.capacity(), payload.len(), "never grown");
            let frame = encode_frame(&msg, DEFAULT_MAX_FRAME).unwrap();
            assert_eq!(frame[4..], bincodes[..]);
            assert_eq!(frame[..4], (bincodes.len() as u32).to_be_bytes());
            assert_eq!(frame.capacity(), frame.len(), "never grown");
        }
    }

    #[test]
    fn round_trips_and_waits_for_whole_frames() {
        let mut codec = Codec::default();
        let mut buf = BytesMut::new();
        let msg = Msg {
            n: 7,
            text: "hello".into(),
        };
        codec
            .encode(
                Msg {
                    n: 7,
                    text: "hello".into(),
                },
                &mut buf,
            )
            .unwrap();
        let mut partial = buf.split_to(buf.len() - 1);
        assert!(codec.decode(&mut partial).unwrap().is_none());
        partial.unsplit(buf);
        assert_eq!(codec.decode(&mut partial).unwrap(), Some(msg));
    }

    #[test]
    fn refuses_a_huge_length_prefix_before_reading_the_body() {
        let mut codec = Codec::default();
        let mut buf = BytesMut::from(&[0xff, 0xff, 0xff, 0xff, 1, 2][..]);
        match codec.decode(&mut buf) {
            Err(CodecError::FrameTooLarge { size, .. }) => assert_eq!(size, u32::MAX as usize),
            other => panic!("expected FrameTooLarge, got {other:?}"),
        }
    }

    #[test]
    fn garbage_payload_is_a_decode_error() {
        let mut codec = Codec::default();
        let mut buf = BytesMut::from(&[0, 0, 0, 3, 0xff, 0xff, 0xff][..]);
        assert!(matches!(codec.decode(&mut buf), Err(CodecError::Decode(_))));
    }

    #[test]
    fn a_small_payload_cannot_claim_a_large_string() {
        // A message whose text claims 100 MiB, in a 10-byte payload.
        let mut payload = vec![7u8];
        payload.push(252); // varint: a u32 follows
        payload.extend_from_slice(&(100u32 << 20).to_le_bytes());
        payload.extend_from_slice(b"abc");
        assert_eq!(decode_limit(payload.len()), 4096);
        match decode::<Msg>(&payload) {
            Err(CodecError::Decode(e)) => assert!(e.to_lowercase().contains("limit"), "{e}"),
            other => panic!("expected the limit to refuse it, got {other:?}"),
        }
    }

    #[test]
    fn payloads_of_small_integers_stay_within_their_limit() {
        // Each u64 of value 0 is one byte on the wire but counts as 8.
        let zeros = vec![0u64; 100_000];
        let payload = encode(&zeros).unwrap();
        assert_eq!(decode::<Vec<u64>>(&payload).unwrap(), zeros);
        assert_eq!(decode_limit(0), 4096);
        assert_eq!(decode_limit(usize::MAX), MAX_FRAME_CEILING * 8);
    }

    #[test]
    fn eof_inside_a_frame_is_truncated() {
        let mut codec = Codec::default();
        let mut buf = BytesMut::from(&[0, 0, 0, 10, 1, 2][..]);
        assert!(matches!(
            codec.decode_eof(&mut buf),
            Err(CodecError::Truncated)
        ));
    }

    #[test]
    fn refuses_to_encode_past_the_limit() {
        let mut codec = Codec::new(1024);
        let mut buf = BytesMut::new();
        let big = Msg {
            n: 1,
            text: "x".repeat(4096),
        };
        assert!(matches!(
            codec.encode(big, &mut buf),
            Err(CodecError::FrameTooLarge { .. })
        ));
    }
}
