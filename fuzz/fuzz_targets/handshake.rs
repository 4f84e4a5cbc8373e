//! A connection as the manager reads it: the handshake frame, then the
//! frames of the role it names, fed in chunks cut anywhere.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| aam_protocol::fuzzing::handshake(data));
