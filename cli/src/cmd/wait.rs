//! `aam wait SESSION`: blocks until the session ends; exit 0 if every job
//! succeeded, 1 if not (or if `--timeout` passes first).

use super::session_arg;
use crate::args::ManagerFlags;
use crate::exit::{bad_input, verdict};
use crate::{endpoint, progress};
use aam_protocol::spec::parse_duration_ms;
use std::time::Duration;

pub async fn run(
    flags: &ManagerFlags,
    session: &str,
    timeout: Option<String>,
) -> anyhow::Result<i32> {
    let session = session_arg(session)?;
    let timeout = timeout.as_deref().map(timeout_flag).transpose()?;
    let mut client = endpoint::connect(flags).await?;
    let summary = progress::wait(&mut client, session, timeout).await?;
    Ok(verdict(&summary))
}

/// `--timeout`: seconds, as a number, or a duration with its unit.
fn timeout_flag(text: &str) -> anyhow::Result<Duration> {
    if let Ok(seconds) = text.trim().parse::<f64>() {
        return Duration::try_from_secs_f64(seconds).map_err(|_| {
            bad_input(format!(
                "--timeout {text}: not a length of time (seconds, or a duration such as 90s)"
            ))
        });
    }
    parse_duration_ms(text)
        .map(Duration::from_millis)
        .map_err(|e| bad_input(format!("--timeout: {e}, or a number of seconds")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timeout_is_seconds_or_a_duration() {
        let ok = |text| timeout_flag(text).unwrap();
        assert_eq!(ok("60"), Duration::from_secs(60));
        assert_eq!(ok("2.5"), Duration::from_millis(2500));
        assert_eq!(ok("90s"), Duration::from_secs(90));
        assert_eq!(ok("1m30s"), Duration::from_secs(90));
        assert_eq!(ok("500ms"), Duration::from_millis(500));
        for bad in ["-1", "NaN", "inf", "soon", "5 parsecs"] {
            let error = timeout_flag(bad).unwrap_err().to_string();
            assert!(error.starts_with("--timeout"), "{bad}: {error}");
        }
    }
}
