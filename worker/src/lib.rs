//! aam-worker: connects to the manager, registers its slots, runs assigned
//! jobs as child processes and streams their output and exit back.
//!
//! `start` runs the worker actor inside the current actix system, so the
//! `aam-worker` binary and `aam run` (embedded) share one code path.

pub mod agent;
pub mod cgroup;
pub mod child;
pub mod container;
pub mod inputs;
pub mod leader;
pub mod orphans;
pub mod permission_prompt;
pub mod permission_relay;
pub mod ports;
pub mod run_reader;
pub mod scratch;
pub mod secret_env;
pub mod stdin_feed;
pub mod teardown;
pub mod worktree;

pub use agent::{start, WorkerAgent, WorkerConfig};
