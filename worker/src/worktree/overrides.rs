//! A job's own workspace keys (and its agent's, merged by the manager)
//! over its repository's `.aam/workspace.toml`: each key given replaces
//! the file's; a job with keys and no file has a workspace all the same.

use super::workspace::{Workspace, SETUP_TIME, TEARDOWN_TIME};
use aam_protocol::workspace::JobWorkspace;
use std::time::Duration;

/// The workspace a job runs with: the file's, with the job's keys over it.
pub fn apply(file: Option<Workspace>, job: Option<&JobWorkspace>) -> Option<Workspace> {
    let Some(job) = job.filter(|j| has_steps(j)) else {
        return file;
    };
    let file = file.unwrap_or(Workspace {
        setup_timeout: SETUP_TIME,
        teardown_timeout: TEARDOWN_TIME,
        ..Workspace::default()
    });
    Some(Workspace {
        setup: job.setup.clone().or(file.setup),
        setup_timeout: job
            .setup_timeout_ms
            .map_or(file.setup_timeout, Duration::from_millis),
        teardown: job.teardown.clone().or(file.teardown),
        teardown_timeout: job
            .teardown_timeout_ms
            .map_or(file.teardown_timeout, Duration::from_millis),
        copy: job.copy.clone().unwrap_or(file.copy),
        // Caches are the repository's: keyed by its own files.
        cache: file.cache,
    })
}

/// Whether the job gives any key of the file's (a container alone does not).
fn has_steps(job: &JobWorkspace) -> bool {
    job.setup.is_some()
        || job.setup_timeout_ms.is_some()
        || job.teardown.is_some()
        || job.teardown_timeout_ms.is_some()
        || job.copy.is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_jobs_keys_replace_the_files_one_by_one() {
        let file = Workspace {
            setup: Some(vec!["npm".into(), "ci".into()]),
            setup_timeout: Duration::from_secs(60),
            teardown: Some(vec!["make".into(), "stop".into()]),
            teardown_timeout: TEARDOWN_TIME,
            copy: vec![".env".into()],
            cache: Vec::new(),
        };
        let job = JobWorkspace {
            setup: Some(vec!["make".into(), "deps".into()]),
            copy: Some(vec![]),
            ..JobWorkspace::default()
        };
        let ws = apply(Some(file.clone()), Some(&job)).unwrap();
        assert_eq!(ws.setup, Some(vec!["make".to_string(), "deps".into()]));
        assert_eq!(ws.setup_timeout, Duration::from_secs(60));
        assert_eq!(ws.teardown, file.teardown);
        assert!(ws.copy.is_empty());
        assert_eq!(apply(Some(file.clone()), None), Some(file));
        let alone = apply(None, Some(&job)).unwrap();
        assert_eq!(alone.setup_timeout, SETUP_TIME);
        assert_eq!(apply(None, Some(&JobWorkspace::default())), None);
    }
}
