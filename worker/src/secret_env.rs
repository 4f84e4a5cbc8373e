//! An agent's `secret_env`: variables the worker passes its jobs from its
//! own environment, so API keys never travel over the wire or land in the
//! manager's store (DESIGN.md invariant 9). The assignment names them; the
//! values are read here, at spawn time, and go nowhere but the child. An
//! entry `NAME=SOURCE` (an account's `secret_env`) sets the job's `NAME`
//! from the worker's `SOURCE`.

use std::ffi::OsString;

/// The values of `names` as `lookup` (the process environment) has them,
/// or why the job cannot run: the first name unset (or empty: an empty
/// API key fails later and more obscurely), naming this worker so the
/// user knows which host to fix.
pub fn values(
    names: &[String],
    worker: &str,
    lookup: impl Fn(&str) -> Option<OsString>,
) -> Result<Vec<(String, OsString)>, String> {
    names
        .iter()
        .map(|entry| {
            let (name, source) = entry.split_once('=').unwrap_or((entry, entry));
            match lookup(source) {
                Some(value) if !value.is_empty() => Ok((name.to_string(), value)),
                _ if name != source => Err(format!(
                    "secret_env: {source} (for {name}) is not set on worker {worker}"
                )),
                _ => Err(format!("secret_env: {name} is not set on worker {worker}")),
            }
        })
        .collect()
}

/// `values` from this process's environment.
pub fn from_process(names: &[String], worker: &str) -> Result<Vec<(String, OsString)>, String> {
    values(names, worker, |name| std::env::var_os(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn present_names_give_values_and_a_missing_one_names_itself_and_the_worker() {
        let lookup = |name: &str| match name {
            "A_KEY" => Some(OsString::from("v1")),
            "EMPTY_KEY" => Some(OsString::new()),
            _ => None,
        };
        let names = |n: &[&str]| n.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            values(&names(&["A_KEY"]), "w1", lookup).unwrap(),
            [("A_KEY".to_string(), OsString::from("v1"))]
        );
        assert_eq!(
            values(&names(&["A_KEY", "ANTHROPIC_API_KEY"]), "w1", lookup).unwrap_err(),
            "secret_env: ANTHROPIC_API_KEY is not set on worker w1"
        );
        assert!(values(&names(&["EMPTY_KEY"]), "w1", lookup).is_err());
        // An account's entry: the job's name from another of the worker's.
        assert_eq!(
            values(&names(&["ANTHROPIC_API_KEY=A_KEY"]), "w1", lookup).unwrap(),
            [("ANTHROPIC_API_KEY".to_string(), OsString::from("v1"))]
        );
        assert_eq!(
            values(&names(&["ANTHROPIC_API_KEY=WORK_KEY"]), "w1", lookup).unwrap_err(),
            "secret_env: WORK_KEY (for ANTHROPIC_API_KEY) is not set on worker w1"
        );
        assert!(values(&[], "w1", lookup).unwrap().is_empty());
    }
}
