//! Integration tests: the real aam-manager, aam-worker and aam binaries as
//! separate processes over TCP, with a sled store on disk.

mod accounts;
mod agents;
mod agents_e2e;
mod agents_model;
mod audit_quotas;
mod bad_input;
mod big_batches;
mod chaos;
mod claude_code;
mod completions;
mod compose;
mod containers;
mod control;
mod dashboard;
mod dependencies;
mod deploy;
mod disk;
mod durability;
mod gates;
mod hosts;
mod http_api;
mod idle;
mod kube_lease;
mod kubernetes_provider;
mod mcp;
mod metrics;
mod notify;
mod orphans;
mod peers;
mod permissions;
mod permissions_everywhere;
mod placement;
mod prefetch;
mod providers;
mod quickstart;
mod resources;
mod roles;
mod say;
mod secrets;
mod session;
mod slow_peers;
mod slurm_provider;
mod tls;
mod workspaces;
mod worktrees_e2e;
mod worktrees_model;

use serde_json::Value;

/// A job of a `status --json` or `results --json` document, by name.
pub fn job<'a>(doc: &'a Value, name: &str) -> &'a Value {
    doc["jobs"]
        .as_array()
        .expect("jobs array")
        .iter()
        .find(|j| j["name"] == name)
        .unwrap_or_else(|| panic!("no job {name} in {doc}"))
}
