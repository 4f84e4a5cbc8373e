//! `aam apply SESSION/JOB`: a worktree job's patch applied in the
//! repository of the current directory as a new local branch named like
//! the job's branch (see `git_apply.rs` for the git steps and refusals).

use super::{job_arg, print_json};
use crate::args::ManagerFlags;
use crate::client::Patch;
use crate::endpoint;
use crate::git_apply::{apply_patch, short};
use crate::render::diffstat;

pub async fn run(flags: &ManagerFlags, job: &str, json: bool) -> anyhow::Result<i32> {
    let mut client = endpoint::connect(flags).await?;
    let (session, name) = job_arg(job)?;
    let Patch { change, patch } = client.patch(session, name).await?;
    let here = std::env::current_dir()?;
    let applied = apply_patch(&here, &change, &patch)?;
    if json {
        print_json(&serde_json::json!({
            "branch": applied.branch,
            "commit": applied.commit,
            "start": applied.start,
            "on_base": applied.on_base,
            "repo": applied.repo.display().to_string(),
        }));
        return Ok(0);
    }
    if !applied.on_base {
        stderr_line!(
            "aam: the job's base {} is not in this repository: applied on HEAD ({}) instead",
            short(&change.base),
            short(&applied.start)
        );
    }
    let on = if applied.on_base { "base" } else { "HEAD" };
    println!(
        "{session}/{name}: branch {}, {}: commit {} on {on} {}; checked out (`git checkout -` goes back)",
        applied.branch,
        diffstat(&change.stat),
        short(&applied.commit),
        short(&applied.start)
    );
    Ok(0)
}
