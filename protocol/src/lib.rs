//! aam-protocol: every type that crosses a process boundary or lands on disk.
//!
//! Messages between cli, manager and worker, the batch-file spec and its
//! validation, ids, the stored records, and the framed bincode codec. This is
//! the only crate whose types are serializable, and `codec` is the only module
//! that knows bincode.

pub mod account;
pub mod agent;
pub mod agent_output;
pub mod agent_run;
pub mod audit;
pub mod codec;
pub mod dial;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod ids;
pub mod json;
pub mod json_batch;
pub mod messages;
pub mod model;
pub mod output;
pub mod permission;
pub mod resource;
pub mod say;
pub mod secret;
pub mod spec;
pub mod tls;
pub mod validate;
pub mod workspace;
pub mod worktree;

pub use ids::{JobKey, SessionId};

/// Version of the wire protocol; a peer speaking another one is refused at the handshake.
pub const PROTOCOL_VERSION: u32 = 18;

/// Default TCP address of the manager.
pub const DEFAULT_MANAGER_ADDR: &str = "127.0.0.1:7410";

/// Milliseconds since the Unix epoch, the one clock every record uses.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
