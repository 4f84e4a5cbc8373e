//! The worktree keys of a job: `isolation`, `base`, `variants` and
//! `verify`.

use super::limits::check_value;
use super::{Base, MAX_VARIANTS};
use crate::spec::{JobSpec, Limits, SpecError};
use crate::worktree::Isolation;

/// A job's isolation and what goes with it, checked.
pub(super) struct Isolated {
    pub(super) isolation: Option<Isolation>,
    pub(super) base: Option<Base>,
}

/// `isolation`, `base`, `variants` and `verify`: known values, and a
/// worktree wherever the others are given.
pub(super) fn check_isolation(
    job: &JobSpec,
    label: &str,
    limits: &Limits,
    errors: &mut Vec<SpecError>,
) -> Isolated {
    let mut isolation = match job.isolation.as_deref().map(Isolation::parse) {
        None => None,
        Some(Ok(isolation)) => Some(isolation),
        Some(Err(message)) => {
            errors.push(SpecError::job(label, "isolation", message));
            None
        }
    };
    let needs_worktree = [
        ("base", job.base.is_some()),
        ("variants", job.variants.is_some()),
        ("verify", job.verify.is_some()),
    ];
    let keys = super::job_workspace::WorkspaceKeys::from(job);
    let workspace_key = keys.worktree_key().map(|key| (key, true));
    for (field, given) in needs_worktree.into_iter().chain(workspace_key) {
        if !given {
            continue;
        }
        match isolation {
            Some(Isolation::None) => errors.push(SpecError::job(
                label,
                field,
                format!("'{field}' needs isolation = \"worktree\""),
            )),
            Some(Isolation::Container) => {}
            _ => isolation = Some(Isolation::Worktree),
        }
    }
    // A container key asks for a container; a worktree alone will not do.
    if let Some(field) = keys.container_key() {
        match isolation {
            Some(Isolation::None | Isolation::Worktree) if job.isolation.is_some() => {
                errors.push(SpecError::job(
                    label,
                    field,
                    format!("'{field}' needs isolation = \"container\""),
                ))
            }
            _ => isolation = Some(Isolation::Container),
        }
    }
    if job.gate && isolation.is_some_and(Isolation::has_worktree) {
        errors.push(SpecError::job(
            label,
            "isolation",
            "a gate runs nothing: it needs no worktree",
        ));
    }
    if let Some(n) = job.variants {
        if !(2..=MAX_VARIANTS).contains(&n) {
            let message = format!("{n} variants: give 2 to {MAX_VARIANTS}");
            errors.push(SpecError::job(label, "variants", message));
        }
    }
    if let Some(verify) = &job.verify {
        if verify.first().is_none_or(|program| program.is_empty()) {
            errors.push(SpecError::job(
                label,
                "verify",
                "the argv list is empty; the first element is the program",
            ));
        }
        for arg in verify {
            check_value(errors, label, limits, "verify", arg);
        }
    }
    let base = job
        .base
        .as_deref()
        .and_then(|base| check_base(job, label, limits, base, errors));
    Isolated { isolation, base }
}

/// `base`: `job:NAME` naming one of the job's dependencies, or a ref that
/// git cannot take for an option.
fn check_base(
    job: &JobSpec,
    label: &str,
    limits: &Limits,
    base: &str,
    errors: &mut Vec<SpecError>,
) -> Option<Base> {
    check_value(errors, label, limits, "base", base);
    if let Some(name) = base.strip_prefix("job:") {
        if !job.depends_on.iter().any(|d| d.job == name) {
            let message =
                format!("'{name}' is not among the job's depends_on: a base job must be one");
            errors.push(SpecError::job(label, "base", message));
            return None;
        }
        return Some(Base::Job(name.to_string()));
    }
    if base.is_empty() || base.starts_with('-') || base.chars().any(char::is_whitespace) {
        let message = format!("'{base}' is not a ref or commit (nor job:NAME)");
        errors.push(SpecError::job(label, "base", message));
        return None;
    }
    Some(Base::Ref(base.to_string()))
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{batch, errors, job};
    use super::super::{validate, Base};
    use crate::spec::Limits;
    use crate::worktree::Isolation;

    #[test]
    fn worktree_keys_are_checked_and_imply_a_worktree() {
        let mut fix = job("fix", &["scan"]);
        fix.variants = Some(3);
        fix.verify = Some(vec!["cargo".into(), "test".into()]);
        fix.base = Some("job:scan".into());
        let valid = validate(batch(vec![job("scan", &[]), fix]), &Limits::default()).unwrap();
        let fix = &valid.jobs[1];
        assert_eq!(fix.isolation, Some(Isolation::Worktree));
        assert_eq!(fix.base, Some(Base::Job("scan".into())));
        assert_eq!(fix.variants, Some(3));

        let mut bad = job("bad", &[]);
        bad.isolation = Some("none".into());
        bad.base = Some("job:elsewhere".into());
        bad.variants = Some(11);
        bad.verify = Some(vec![]);
        let mut opt = job("opt", &[]);
        opt.base = Some("--upload-pack=x".into());
        let mut clash = job("clash", &[]);
        clash.variants = Some(2);
        let e = errors(&batch(vec![bad, opt, clash, job("clash.2", &[])]));
        for expected in [
            "job 'bad': field 'base': 'base' needs isolation = \"worktree\"",
            "job 'bad': field 'variants': 11 variants: give 2 to 10",
            "job 'bad': field 'verify': the argv list is empty",
            "job 'bad': field 'base': 'elsewhere' is not among the job's depends_on",
            "job 'opt': field 'base': '--upload-pack=x' is not a ref or commit",
            "job 'clash': field 'variants': its variant clash.2 has the name of another job",
        ] {
            assert!(e.contains(expected), "missing {expected:?} in:\n{e}");
        }
    }
}
