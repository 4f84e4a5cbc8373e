//! Workers launched on demand from the user's cluster (issue 17):
//! providers of capacity. `config` checks `[[providers]]`, `plan` decides
//! how many workers to launch, `join` gives each its own token, `podman`
//! runs them, and `run` is the loop that drives them.

pub mod config;
pub mod join;
pub mod plan;
pub mod podman;
pub mod run;
