//! `aam submit FILE`: the batch is checked here, then stored by the
//! manager; prints the session id (and with `--wait`, follows it).

use super::print_json;
use crate::args::ManagerFlags;
use crate::exit::verdict;
use crate::{batch, endpoint, progress, render};
use std::path::Path;

pub async fn run(
    flags: &ManagerFlags,
    file: &Path,
    json: bool,
    wait: bool,
    idempotency_key: Option<String>,
) -> anyhow::Result<i32> {
    // Check what can be checked locally before dialing.
    let batch = batch::load(file)?;
    let mut client = endpoint::connect(flags).await?;
    let name = batch.name.clone();
    let submitted = client.submit(file, batch, idempotency_key).await?;
    let session = submitted.session;
    if json {
        print_json(&aam_protocol::json::submitted_json(
            session,
            &name,
            submitted.jobs,
            submitted.existing,
            &submitted.estimate,
        ));
    } else {
        println!("{session}");
        // The id alone on stdout (for scripts); the estimate aside.
        eprintln!("{session}: {}", render::estimate_line(&submitted.estimate));
    }
    if wait {
        let summary = progress::wait(&mut client, session, None).await?;
        return Ok(verdict(&summary));
    }
    Ok(0)
}
