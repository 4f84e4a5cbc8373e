//! What the manager takes from its peers, checked for size and shape at
//! the connection, before it reaches the scheduler: a worker's
//! registration (name, slots, prefetch, labels, the attempts it reports),
//! the free text of its reports, and a client's gate comment. Text that
//! only informs is cut to its limit (a progress message, a spawn error);
//! what configures a worker or is recorded as someone's word is refused,
//! naming the field and the limit.

use aam_protocol::messages::{AttemptRef, ClientRequest, WorkerToManager};
use aam_protocol::spec::is_valid_name;
use std::collections::BTreeMap;

/// Most slots one worker may offer (and most assignments it may prefetch).
pub const MAX_SLOTS: u32 = 4096;
/// Longest worker name.
pub const MAX_WORKER_NAME_BYTES: usize = 128;
/// Most labels one worker may carry, and their sizes.
pub const MAX_LABELS: usize = 64;
pub const MAX_LABEL_KEY_BYTES: usize = 128;
pub const MAX_LABEL_VALUE_BYTES: usize = 1024;
/// Most attempts a registering worker may report holding. A worker holds
/// at most its slots and prefetch (each at most `MAX_SLOTS`) and the ends
/// not yet acknowledged; this is far past that.
pub const MAX_REPORTED_ATTEMPTS: usize = 100_000;
/// A progress message is cut to this.
pub const MAX_PROGRESS_MESSAGE_BYTES: usize = 1024;
/// Why a job could not start is cut to this.
pub const MAX_SPAWN_ERROR_BYTES: usize = 4096;
/// A gate decision's comment longer than this is refused.
pub const MAX_GATE_COMMENT_BYTES: usize = 4096;

/// Checks a `Register`; the reason it is refused otherwise.
pub fn check_register(
    name: &str,
    slots: u32,
    prefetch: u32,
    labels: &BTreeMap<String, String>,
    assigned: &[AttemptRef],
) -> Result<(), String> {
    if name.len() > MAX_WORKER_NAME_BYTES || !is_valid_name(name) {
        let shown: String = name.chars().take(MAX_WORKER_NAME_BYTES).collect();
        return Err(format!(
            "'{shown}' is not a valid worker name (letters, digits, '-', '_', '.'; at most {MAX_WORKER_NAME_BYTES} bytes)"
        ));
    }
    if slots == 0 || slots > MAX_SLOTS {
        return Err(format!("slots must be 1-{MAX_SLOTS}, not {slots}"));
    }
    if prefetch > MAX_SLOTS {
        return Err(format!("prefetch must be 0-{MAX_SLOTS}, not {prefetch}"));
    }
    if labels.len() > MAX_LABELS {
        return Err(format!(
            "labels: {} labels, more than the {MAX_LABELS} allowed",
            labels.len()
        ));
    }
    for (key, value) in labels {
        if key.len() > MAX_LABEL_KEY_BYTES || value.len() > MAX_LABEL_VALUE_BYTES {
            let shown: String = key.chars().take(32).collect();
            return Err(format!(
                "label '{shown}': keys may have {MAX_LABEL_KEY_BYTES} bytes and values {MAX_LABEL_VALUE_BYTES}, not {} and {}",
                key.len(),
                value.len()
            ));
        }
    }
    if assigned.len() > MAX_REPORTED_ATTEMPTS {
        return Err(format!(
            "assigned: {} attempts reported, more than the {MAX_REPORTED_ATTEMPTS} allowed",
            assigned.len()
        ));
    }
    Ok(())
}

/// Cuts the free text of a report to its limit.
pub fn trim_report(report: &mut WorkerToManager) {
    match report {
        WorkerToManager::Progress {
            message: Some(message),
            ..
        } => truncate(message, MAX_PROGRESS_MESSAGE_BYTES),
        WorkerToManager::SpawnFailed { error, .. } => truncate(error, MAX_SPAWN_ERROR_BYTES),
        _ => {}
    }
}

/// Checks a client's request; the reason it is refused otherwise.
pub fn check_request(request: &ClientRequest) -> Result<(), String> {
    match request {
        ClientRequest::Decide {
            comment: Some(comment),
            ..
        } if comment.len() > MAX_GATE_COMMENT_BYTES => Err(format!(
            "comment: {} bytes, more than the {MAX_GATE_COMMENT_BYTES} allowed",
            comment.len()
        )),
        _ => Ok(()),
    }
}

/// Cuts `text` to at most `max` bytes, at a character boundary.
fn truncate(text: &mut String, max: usize) {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aam_protocol::{JobKey, SessionId};

    fn attempt(index: u32) -> AttemptRef {
        AttemptRef {
            job: JobKey {
                session: SessionId(1),
                index,
            },
            attempt: 1,
        }
    }

    #[test]
    fn a_registration_within_the_limits_passes() {
        let labels = BTreeMap::from([("gpu".to_string(), "a100".to_string())]);
        let assigned: Vec<AttemptRef> = (0..10).map(attempt).collect();
        assert_eq!(check_register("w-1", 4, 8, &labels, &assigned), Ok(()));
    }

    #[test]
    fn an_oversized_registration_is_refused_naming_the_field() {
        let none = BTreeMap::new();
        let refused = |name: &str, labels: &BTreeMap<String, String>, assigned: &[AttemptRef]| {
            check_register(name, 1, 0, labels, assigned).unwrap_err()
        };
        assert!(refused(&"w".repeat(129), &none, &[]).contains("worker name"));
        let many: BTreeMap<String, String> = (0..65)
            .map(|i| (format!("k{i}"), "v".to_string()))
            .collect();
        assert!(refused("w", &many, &[]).starts_with("labels:"));
        let huge = BTreeMap::from([("k".to_string(), "v".repeat(1 << 20))]);
        assert!(refused("w", &huge, &[]).starts_with("label 'k'"));
        let assigned = vec![attempt(0); MAX_REPORTED_ATTEMPTS + 1];
        assert!(refused("w", &none, &assigned).starts_with("assigned:"));
        assert!(check_register("w", 0, 0, &none, &[]).is_err());
        assert!(check_register("w", 1, MAX_SLOTS + 1, &none, &[]).is_err());
    }

    #[test]
    fn long_report_texts_are_cut_at_a_character_boundary() {
        let mut progress = WorkerToManager::Progress {
            attempt: attempt(0),
            percent: 5,
            message: Some(format!("a{}", "é".repeat(1000))),
        };
        trim_report(&mut progress);
        let WorkerToManager::Progress {
            message: Some(m), ..
        } = progress
        else {
            unreachable!()
        };
        // 1024 bytes would split an 'é' in two.
        assert_eq!(m.len(), MAX_PROGRESS_MESSAGE_BYTES - 1);
        let mut failed = WorkerToManager::SpawnFailed {
            attempt: attempt(0),
            error: "x".repeat(10_000),
        };
        trim_report(&mut failed);
        let WorkerToManager::SpawnFailed { error, .. } = failed else {
            unreachable!()
        };
        assert_eq!(error.len(), MAX_SPAWN_ERROR_BYTES);
    }

    #[test]
    fn a_long_gate_comment_is_refused() {
        let decide = |comment: String| ClientRequest::Decide {
            session: SessionId(1),
            job: "gate".into(),
            approve: true,
            comment: Some(comment),
        };
        assert_eq!(check_request(&decide("ok".into())), Ok(()));
        let e = check_request(&decide("x".repeat(5000))).unwrap_err();
        assert!(e.starts_with("comment: 5000 bytes"), "{e}");
    }
}
