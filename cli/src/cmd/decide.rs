//! `aam approve` and `aam reject`: the decision on a gate (SESSION/JOB).

use super::job_arg;
use crate::args::ManagerFlags;
use crate::endpoint;

pub async fn run(
    flags: &ManagerFlags,
    job: &str,
    approve: bool,
    comment: Option<String>,
) -> anyhow::Result<i32> {
    let mut client = endpoint::connect(flags).await?;
    let (session, name) = job_arg(job)?;
    client.decide(session, name, approve, comment).await?;
    println!("{job}: {}", if approve { "approved" } else { "rejected" });
    Ok(0)
}
