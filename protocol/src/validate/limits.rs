//! The limits and values every field shares: sizes, NUL bytes, a job's
//! environment and budgets.

use crate::spec::{JobSpec, Limits, SpecError};

pub(super) fn check_value(
    errors: &mut Vec<SpecError>,
    label: &str,
    limits: &Limits,
    field: &str,
    value: &str,
) {
    if value.len() > limits.max_field_bytes {
        errors.push(SpecError::job(
            label,
            field,
            format!(
                "{} bytes exceed the limit of {} bytes",
                value.len(),
                limits.max_field_bytes
            ),
        ));
    } else if value.contains('\0') {
        errors.push(SpecError::job(label, field, "contains a NUL byte"));
    }
}

pub(super) fn check_env(job: &JobSpec, label: &str, limits: &Limits, errors: &mut Vec<SpecError>) {
    if job.env.len() > limits.max_env_vars {
        errors.push(SpecError::job(
            label,
            "env",
            format!(
                "{} variables exceed the limit of {}",
                job.env.len(),
                limits.max_env_vars
            ),
        ));
    }
    for (key, value) in &job.env {
        if key.is_empty() || key.contains('=') || key.contains('\0') {
            errors.push(SpecError::job(
                label,
                "env",
                format!("'{key}' is not a valid variable name"),
            ));
        }
        check_value(errors, label, limits, "env", value);
    }
}

/// What is wrong with a budget in USD, if anything.
pub(super) fn bad_budget(usd: f64) -> Option<String> {
    (!usd.is_finite() || usd <= 0.0)
        .then(|| format!("{usd} is not a budget (a positive number of USD)"))
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{batch, job};
    use super::super::validate;
    use crate::spec::Limits;

    #[test]
    fn enforces_limits() {
        let limits = Limits {
            max_jobs: 2,
            max_field_bytes: 8,
            ..Limits::default()
        };
        let b = batch(vec![job("a", &[]), job("b", &[]), job("c", &[])]);
        assert!(validate(b, &limits)
            .unwrap_err()
            .to_string()
            .contains("3 jobs exceed"));
        let mut long = job("a", &[]);
        long.command = Some(vec!["x".repeat(9)]);
        let e = validate(batch(vec![long]), &limits)
            .unwrap_err()
            .to_string();
        assert!(e.contains("field 'command': 9 bytes exceed"), "{e}");
    }
}
