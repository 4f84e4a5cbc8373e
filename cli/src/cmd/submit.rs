//! `aam submit FILE`: the batch is checked here (a big JSON file job by
//! job as it is streamed, and across its jobs by the manager), then stored
//! by the manager; prints the session id (and with `--wait`, follows it).

use super::print_json;
use crate::args::ManagerFlags;
use crate::batch;
use crate::exit::verdict;
use crate::{endpoint, progress, render};
use std::path::Path;

pub async fn run(
    flags: &ManagerFlags,
    file: &Path,
    json: bool,
    wait: bool,
    idempotency_key: Option<String>,
) -> anyhow::Result<i32> {
    // Check what can be checked locally before dialing (a big JSON file
    // is read, and its jobs checked, as it is sent).
    let to_submit = batch::load_to_submit(file)?;
    let mut client = endpoint::connect(flags).await?;
    let (submitted, name) = client
        .submit_loaded(file, to_submit, idempotency_key)
        .await?;
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
        stderr_line!("{session}: {}", render::estimate_line(&submitted.estimate));
    }
    if wait {
        let summary = progress::wait(&mut client, session, None).await?;
        return Ok(verdict(&summary));
    }
    Ok(0)
}
