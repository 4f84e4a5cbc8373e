//! `aam diff SESSION/JOB`: a worktree job's patch (`git format-patch` of
//! its commit; for a job of variants, its winner's) printed as it is, from
//! any machine; `--json` wraps it with the branch, commits and diffstat.

use super::{job_arg, print_json};
use crate::args::ManagerFlags;
use crate::client::Patch;
use crate::endpoint;
use std::io::Write as _;

pub async fn run(flags: &ManagerFlags, job: &str, json: bool) -> anyhow::Result<i32> {
    let mut client = endpoint::connect(flags).await?;
    let (session, name) = job_arg(job)?;
    // A job without a change (not a worktree job, or not ended) is refused
    // by the manager: exit 2 with its message.
    let Patch { change, patch } = client.patch(session, name).await?;
    if change.commit.is_none() {
        stderr_line!("aam: {session}/{name} changed nothing: no commit, no patch");
    } else if change.patch_cut {
        stderr_line!(
            "aam: the patch of {session}/{name} is cut ({} bytes in all, past the worker's patch limit): `git am` cannot take it; the whole change is on branch {} in {} on the worker that ran the job",
            change.patch_bytes, change.branch, change.repo
        );
    }
    if json {
        if std::str::from_utf8(&patch).is_err() {
            stderr_line!("aam: the patch is not UTF-8: invalid bytes are replaced in the JSON (`aam diff` without --json prints it as it is)");
        }
        print_json(&serde_json::json!({
            "change": aam_protocol::json::change_json(&change),
            "patch": String::from_utf8_lossy(&patch),
        }));
        return Ok(0);
    }
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(&patch).and_then(|()| stdout.flush()) {
        // Read in part (`aam diff s1/fix | head`): not an error.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(0),
        other => other.map(|()| 0).map_err(Into::into),
    }
}
