//! Workers launched on demand from the user's cluster (issue 17):
//! providers of capacity (Slurm, Kubernetes, podman). So far the decision
//! of how many to launch (`plan`); the engines and the loop that drives
//! them come next.

pub mod plan;
