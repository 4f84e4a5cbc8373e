//! `aam wait SESSION`: blocks until the session ends; exit 0 if every job
//! succeeded, 1 if not (or if `--timeout` passes first).

use super::session_arg;
use crate::args::ManagerFlags;
use crate::exit::{bad_input, verdict};
use crate::{endpoint, progress};
use std::time::Duration;

pub async fn run(flags: &ManagerFlags, session: &str, timeout: Option<f64>) -> anyhow::Result<i32> {
    let mut client = endpoint::connect(flags).await?;
    let session = session_arg(session)?;
    let timeout = match timeout {
        Some(t) if t.is_finite() && t >= 0.0 => Some(Duration::from_secs_f64(t)),
        Some(t) => {
            return Err(bad_input(format!(
                "--timeout {t} is not a number of seconds"
            )))
        }
        None => None,
    };
    let summary = progress::wait(&mut client, session, timeout).await?;
    Ok(verdict(&summary))
}
