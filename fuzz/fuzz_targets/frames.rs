//! Frames of every message type (a selector byte, then length-prefixed
//! frames): `split_frame` and `decode`, and a decoded message's round trip.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| aam_protocol::fuzzing::frames(data));
