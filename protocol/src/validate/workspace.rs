//! A job's workspace keys (issue 15): `ports`, the TCP ports its worker
//! reserves for it.

use crate::spec::{JobSpec, SpecError};

/// Most ports one job may reserve.
pub const MAX_PORTS: u8 = 16;

/// `ports`: 0 to `MAX_PORTS` (none given: 0).
pub(super) fn check_ports(job: &JobSpec, label: &str, errors: &mut Vec<SpecError>) -> u8 {
    match job.ports {
        None => 0,
        Some(n) if n <= MAX_PORTS as u32 => n as u8,
        Some(n) => {
            errors.push(SpecError::job(
                label,
                "ports",
                format!("{n} ports asked; a job may reserve 0 to {MAX_PORTS}"),
            ));
            0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{batch, errors, job};
    use crate::spec::{JobSpec, Limits};

    fn with_ports(n: u32) -> JobSpec {
        JobSpec {
            ports: Some(n),
            ..job("web", &[])
        }
    }

    #[test]
    fn ports_from_0_to_16_are_taken_as_given() {
        for n in [0, 1, 16] {
            let valid = super::super::validate(batch(vec![with_ports(n)]), &Limits::default());
            assert_eq!(valid.unwrap().jobs[0].ports, n as u8);
        }
        let none = super::super::validate(batch(vec![job("web", &[])]), &Limits::default());
        assert_eq!(none.unwrap().jobs[0].ports, 0);
    }

    #[test]
    fn more_than_16_ports_are_refused_naming_the_job_and_field() {
        let shown = errors(&batch(vec![with_ports(17)]));
        assert!(
            shown.contains("job 'web': field 'ports': 17 ports asked; a job may reserve 0 to 16"),
            "{shown}"
        );
    }
}
