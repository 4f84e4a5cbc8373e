//! An agent definition file (Markdown with YAML front matter), parsed by
//! the manager's own parser.
#![no_main]

// The manager's file itself, compiled here: depending on aam-manager would
// build actix-web, sled and the rest under the fuzzer's instrumentation for
// one pure function. definitions.rs needs only aam-protocol and yaml-rust2.
#[allow(dead_code)]
#[path = "../../manager/src/definitions.rs"]
mod definitions;

use std::path::Path;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(def) = definitions::parse(text, Path::new("agent.md")) {
        assert!(aam_protocol::spec::is_valid_name(&def.name));
        assert!(!def.system_prompt.is_empty());
        let _ = def.agent(&definitions::default_runner());
    }
});
