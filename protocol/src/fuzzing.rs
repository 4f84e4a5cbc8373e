//! The bodies of the fuzz targets (`fuzz/`), shared with the ordinary test
//! that replays their corpus and random inputs without libFuzzer
//! (`tests/fuzz_corpus.rs`), so CI checks what the fuzzers check. Each
//! body takes any bytes and must not panic; the asserts are properties
//! every input must keep (a decoded message encodes again, a stream read
//! in chunks reads as it does whole). Only built with the `fuzzing`
//! feature.

use crate::agent_output::{self, Transcriber};
use crate::agent_run::AgentFormat;
use crate::codec::{self, split_frame, FrameCodec, DEFAULT_MAX_FRAME};
use crate::messages::{
    ClientRequest, ClientResponse, Handshake, HandshakeReply, ManagerToWorker, Role,
    WorkerToManager,
};
use crate::spec::{parse_batch, Format, Limits};
use crate::validate::{check_batch, validate};
use bytes::BytesMut;
use serde::{de::DeserializeOwned, Serialize};
use std::path::{Path, PathBuf};
use tokio_util::codec::Decoder;

/// The manager's limit on a handshake frame (`HANDSHAKE_MAX_FRAME` in
/// the manager's listener): nobody unauthenticated makes it buffer more.
pub const HANDSHAKE_MAX_FRAME: usize = 64 * 1024;

/// The message types of the wire, chosen by a fuzz input's first byte.
pub const MESSAGE_TYPES: u8 = 6;

/// Frames as a connection reads them: a selector byte (which message
/// type, `selector % MESSAGE_TYPES`), then length-prefixed frames, each
/// split off with `split_frame` and decoded. The bytes after the selector
/// are also decoded as one bare payload, so the decoder is reached without
/// a well-formed length prefix.
pub fn frames(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let mut buf = BytesMut::from(rest);
    while let Ok(Some(payload)) = split_frame(&mut buf, DEFAULT_MAX_FRAME) {
        decode_as(selector, &payload);
    }
    decode_as(selector, rest);
}

/// Decodes `payload` as the message type `selector` names.
pub fn decode_as(selector: u8, payload: &[u8]) {
    match selector % MESSAGE_TYPES {
        0 => round_trip::<Handshake>(payload),
        1 => round_trip::<HandshakeReply>(payload),
        2 => round_trip::<ClientRequest>(payload),
        3 => round_trip::<ClientResponse>(payload),
        4 => round_trip::<WorkerToManager>(payload),
        _ => round_trip::<ManagerToWorker>(payload),
    }
}

/// A payload that decodes must encode again, to the same bytes after a
/// second decode (bytes are compared, not values: a float may be NaN).
fn round_trip<T: Serialize + DeserializeOwned>(payload: &[u8]) {
    let Ok(value) = codec::decode::<T>(payload) else {
        return;
    };
    let encoded = codec::encode(&value).expect("a decoded message encodes");
    let again: T = codec::decode(&encoded).expect("an encoded message decodes");
    let twice = codec::encode(&again).expect("a decoded message encodes");
    assert_eq!(encoded, twice, "a message changed on a second round trip");
}

/// A connection as the manager reads it: the handshake frame (under the
/// handshake's frame limit), then, if it decoded, the frames of the role it
/// named (a worker's or a client's), all fed in chunks cut where the input's
/// hash says, as TCP may cut them. The client's side reads the reply.
pub fn handshake(data: &[u8]) {
    let mut rng = XorShift::new(fnv1a(data));
    let mut codec = FrameCodec::<Handshake, HandshakeReply>::new(HANDSHAKE_MAX_FRAME);
    let mut buf = BytesMut::new();
    let mut rest = data;
    let mut handshake = None;
    while handshake.is_none() && !rest.is_empty() {
        let (chunk, tail) = rest.split_at(chunk_len(&mut rng, rest.len()));
        rest = tail;
        buf.extend_from_slice(chunk);
        match codec.decode(&mut buf) {
            Ok(Some(h)) => handshake = Some(h),
            Ok(None) => {}
            Err(_) => return,
        }
    }
    let Some(handshake) = handshake else {
        let _ = codec.decode_eof(&mut buf);
        return;
    };
    // The bytes that arrived behind the handshake start the next reader.
    buf.extend_from_slice(rest);
    match handshake.role {
        Role::Worker => read_stream::<WorkerToManager>(&mut rng, buf),
        Role::Client => read_stream::<ClientRequest>(&mut rng, buf),
    }
    let mut reply = FrameCodec::<HandshakeReply, Handshake>::new(DEFAULT_MAX_FRAME);
    let _ = reply.decode_eof(&mut BytesMut::from(data));
}

/// Reads frames of `In` from `data` fed in random chunks, to the end or
/// the first error, as a connection actor does.
fn read_stream<In: DeserializeOwned>(rng: &mut XorShift, data: BytesMut) {
    let mut codec = FrameCodec::<In, ()>::new(DEFAULT_MAX_FRAME);
    let mut buf = BytesMut::new();
    let mut rest = &data[..];
    while !rest.is_empty() {
        let (chunk, tail) = rest.split_at(chunk_len(rng, rest.len()));
        rest = tail;
        buf.extend_from_slice(chunk);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
    while let Ok(Some(_)) = codec.decode_eof(&mut buf) {}
}

/// A JSON batch read job by job (as `aam submit` streams a big file) is
/// the batch `parse_batch` reads, or refused as it refuses it. (Only an
/// object is streamed: serde also reads a batch written as an array.)
fn same_when_streamed(text: &str, whole: &Result<crate::spec::BatchSpec, crate::spec::SpecError>) {
    let mut jobs = Vec::new();
    let streamed = crate::json_batch::parse_json_batch_each(text, |job| {
        jobs.push(job);
        true
    });
    match (whole, streamed) {
        (Ok(whole), Ok(Some(mut head))) => {
            head.jobs = jobs;
            assert_eq!(&head, whole, "a batch read job by job is the same batch");
        }
        // Only an object is compared: serde reads a batch written as an
        // array too, and fails on a broken one elsewhere.
        (_, _) if !text.trim_start().starts_with('{') => {}
        (Err(whole), Err(streamed)) => assert_eq!(
            streamed.to_string(),
            whole.to_string(),
            "a batch read job by job is refused as it is read whole"
        ),
        (whole, streamed) => panic!("read whole: {whole:?}; read job by job: {streamed:?}"),
    }
}

/// A batch file as `aam submit` reads it: parsed, then validated under the
/// manager's default limits and under the client's structural ones. A
/// parsed batch must cross the wire (bincode) unchanged; a JSON one read
/// job by job must be the same batch, or refused alike.
pub fn batch(data: &[u8], format: Format) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let parsed = parse_batch(text, format);
    if format == Format::Json {
        same_when_streamed(text, &parsed);
    }
    let batch = match parsed {
        Ok(batch) => batch,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    let wire = codec::encode(&batch).expect("a parsed batch encodes");
    let back: crate::spec::BatchSpec = codec::decode(&wire).expect("an encoded batch decodes");
    assert_eq!(
        codec::encode(&back).expect("a decoded batch encodes"),
        wire,
        "a batch changed crossing the wire"
    );
    let validated = validate(batch.clone(), &Limits::default());
    if let Err(errors) = &validated {
        assert!(!errors.0.is_empty(), "a refused batch names its problems");
        let _ = errors.to_string();
    }
    let mut lent = batch.clone();
    let checked = check_batch(&mut lent, &Limits::default());
    assert_eq!(
        checked.map_err(|e| e.to_string()),
        validated.map(drop).map_err(|e| e.to_string()),
        "checking a batch finds what validating it finds"
    );
    assert_eq!(
        codec::encode(&lent).expect("a checked batch encodes"),
        wire,
        "checking a batch leaves it as written"
    );
    if let Ok(valid) = validate(batch, &Limits::structural()) {
        let budgets = std::iter::once(valid.head.max_cost_usd)
            .chain(valid.jobs.iter().map(|j| j.max_cost_usd))
            .flatten();
        for usd in budgets {
            assert!(usd.is_finite() && usd > 0.0, "a valid budget is positive");
        }
    }
}

/// An agent's output as the worker reads it: fed in chunks cut where the
/// input's hash says, to a stream-json reader and to a live transcript.
/// Read in chunks it must read as it does whole, and the live transcript
/// must be the transcript of the whole output. The text reader reads the
/// same bytes.
pub fn stream_json(data: &[u8]) {
    const NOW_MS: u64 = 1_767_225_600_000; // 2026-01-01
    let format = AgentFormat::ClaudeStreamJson;
    let mut rng = XorShift::new(fnv1a(data));
    let now_ms = match rng.next_u64() % 4 {
        0 => 0,
        1 => u64::MAX,
        _ => NOW_MS,
    };
    let mut whole = agent_output::reader(format);
    whole.feed(data, now_ms);
    whole.finish(now_ms);

    let mut chunked = agent_output::reader(format);
    let mut text = agent_output::reader(AgentFormat::Text);
    let mut live = Transcriber::new(format);
    let mut followed = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let (chunk, tail) = rest.split_at(chunk_len(&mut rng, rest.len()));
        rest = tail;
        chunked.feed(chunk, now_ms);
        text.feed(chunk, now_ms);
        followed.extend(live.feed(chunk));
    }
    chunked.finish(now_ms);
    text.finish(now_ms);
    followed.extend(live.finish());
    assert_eq!(
        whole.run(),
        chunked.run(),
        "the run read in chunks differs from the run read whole"
    );
    let transcript = agent_output::transcript(format, data);
    assert_eq!(
        String::from_utf8_lossy(&followed),
        transcript,
        "the live transcript differs from the transcript of the whole output"
    );
}

/// The length of the next chunk of a stream of which `left` bytes are
/// left: mostly small (a byte, a few), sometimes anything.
fn chunk_len(rng: &mut XorShift, left: usize) -> usize {
    let len = match rng.next_u64() % 4 {
        0 => 1,
        1 => 1 + (rng.next_u64() % 8) as usize,
        2 => 1 + (rng.next_u64() % 256) as usize,
        _ => left,
    };
    len.min(left)
}

/// FNV-1a: a seed drawn from the input, so a fuzz input replays exactly.
pub fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// xorshift64*: a tiny deterministic generator for chunk cuts and the
/// random inputs of the corpus test (no dependency, same runs everywhere).
#[derive(Clone, Debug)]
pub struct XorShift(u64);

impl XorShift {
    pub fn new(seed: u64) -> XorShift {
        // Zero is xorshift's one fixed point.
        XorShift(seed | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number below `n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// `len` random bytes.
    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next_u64() as u8).collect()
    }
}

/// A mutation of `seed` as libFuzzer makes them, cheaply: bit flips,
/// bytes set to edge values, a cut, a slice repeated or removed, bytes
/// inserted.
pub fn mutate(rng: &mut XorShift, seed: &[u8]) -> Vec<u8> {
    let mut out = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        if out.is_empty() {
            let len = 1 + rng.below(16);
            out = rng.bytes(len);
            continue;
        }
        let at = rng.below(out.len());
        match rng.below(6) {
            0 => out[at] ^= 1 << rng.below(8),
            1 => out[at] = [0, 0x7f, 0x80, 0xff, b'\n', b'{', b'"'][rng.below(7)],
            2 => out.truncate(at),
            3 => {
                let end = (at + 1 + rng.below(64)).min(out.len());
                let piece = out[at..end].to_vec();
                out.splice(at..at, piece);
            }
            4 => {
                let end = (at + 1 + rng.below(64)).min(out.len());
                out.drain(at..end);
            }
            _ => {
                let len = 1 + rng.below(8);
                let bytes = rng.bytes(len);
                out.splice(at..at, bytes);
            }
        }
    }
    out
}

/// Mutations the corpus test tries per seed.
pub const MUTATIONS: usize = 200;
/// Random inputs the corpus test tries per target.
pub const RANDOM_INPUTS: usize = 2_000;

/// The seeds of `fuzz/corpus/<target>/` (`corpus_root` is `fuzz/corpus`),
/// in name order.
pub fn corpus(corpus_root: &Path, target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = corpus_root.join(target);
    let mut seeds: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading the corpus {}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.expect("a corpus entry").path();
            let bytes = std::fs::read(&path).expect("a corpus file");
            (path, bytes)
        })
        .collect();
    seeds.sort();
    assert!(!seeds.is_empty(), "the corpus {} is empty", dir.display());
    seeds
}

/// The fuzz target `target` without libFuzzer: `body` on each seed of its
/// corpus, `MUTATIONS` mutations of each and `RANDOM_INPUTS` random inputs,
/// all from a fixed seed. A panic names the input that caused it
/// (hex-dumped, its first 512 bytes).
pub fn replay(corpus_root: &Path, target: &str, body: impl Fn(&[u8]) + std::panic::RefUnwindSafe) {
    let mut rng = XorShift::new(fnv1a(target.as_bytes()));
    let run = |what: &str, input: &[u8]| {
        if std::panic::catch_unwind(|| body(input)).is_err() {
            panic!(
                "fuzz target {target} panicked on {what} ({} bytes): {:02x?}",
                input.len(),
                &input[..input.len().min(512)]
            );
        }
    };
    for (path, seed) in corpus(corpus_root, target) {
        run(&path.display().to_string(), &seed);
        for i in 0..MUTATIONS {
            let input = mutate(&mut rng, &seed);
            run(&format!("mutation {i} of {}", path.display()), &input);
        }
    }
    for i in 0..RANDOM_INPUTS {
        let len = rng.below(512);
        run(&format!("random input {i}"), &rng.bytes(len));
    }
}
