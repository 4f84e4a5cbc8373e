//! An agent's Claude Code stream-json output, read whole and in chunks cut
//! anywhere, and rendered as a transcript live and whole.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| aam_protocol::fuzzing::stream_json(data));
