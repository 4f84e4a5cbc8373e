//! The fuzz targets without libFuzzer, as an ordinary test: every seed of
//! `fuzz/corpus/<target>/`, mutations of each (bit flips, cuts, repeats),
//! and random inputs from a fixed seed, fed to the same bodies the targets
//! run (`aam_protocol::fuzzing`). Deterministic and a few seconds long, so
//! CI catches a panic the fuzzers would find, on the inputs they start from.
//! (The agent-definition target's replay is in the manager's tests.)

use aam_protocol::fuzzing::{self, replay};
use aam_protocol::spec::Format;
use std::path::{Path, PathBuf};

fn corpus_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus")
}

#[test]
fn frames() {
    replay(&corpus_root(), "frames", fuzzing::frames);
}

#[test]
fn handshake() {
    replay(&corpus_root(), "handshake", fuzzing::handshake);
}

#[test]
fn batch_toml() {
    replay(&corpus_root(), "batch_toml", |data| {
        fuzzing::batch(data, Format::Toml)
    });
}

#[test]
fn batch_json() {
    replay(&corpus_root(), "batch_json", |data| {
        fuzzing::batch(data, Format::Json)
    });
}

#[test]
fn stream_json() {
    replay(&corpus_root(), "stream_json", fuzzing::stream_json);
}
