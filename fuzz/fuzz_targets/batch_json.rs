//! A JSON batch file: parsed, sent over the wire, validated.
#![no_main]
use aam_protocol::spec::Format;
libfuzzer_sys::fuzz_target!(|data: &[u8]| aam_protocol::fuzzing::batch(data, Format::Json));
