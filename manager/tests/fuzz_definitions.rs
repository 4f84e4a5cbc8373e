//! The `agent_definition` fuzz target without libFuzzer, as an ordinary
//! test: every seed of `fuzz/corpus/agent_definition/`, mutations of each
//! and random inputs from a fixed seed, fed to the definition parser with
//! the target's checks. Deterministic and quick.

use aam_manager::definitions::{default_runner, parse};
use aam_protocol::fuzzing::replay;
use std::path::Path;

/// What fuzz/fuzz_targets/agent_definition.rs does with one input.
fn body(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(def) = parse(text, Path::new("agent.md")) {
        assert!(aam_protocol::spec::is_valid_name(&def.name));
        assert!(!def.system_prompt.is_empty());
        let _ = def.agent(&default_runner());
    }
}

#[test]
fn agent_definition() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    replay(&root, "agent_definition", body);
}
