//! Names and dependencies: each job's name valid and unique (its
//! variants' names too), each dependency a known job, and no cycle.

use super::JobParts;
use super::{label_of, MAX_VARIANTS};
use crate::spec::{is_valid_name, Limits, SpecError, When};
use std::collections::HashMap;

/// Each job's name checked (with the index of the job it is about), each
/// job's dependencies as batch indices, and what is wrong with them.
#[allow(clippy::type_complexity)]
pub(super) fn check_names_and_dependencies(
    jobs: &JobParts,
    limits: &Limits,
) -> (
    Vec<(usize, SpecError)>,
    Vec<Vec<(u32, When)>>,
    Vec<SpecError>,
) {
    let mut name_errors = Vec::new();
    let mut index_of: HashMap<&str, usize> = HashMap::with_capacity(jobs.len());
    for (i, job) in jobs.iter().enumerate() {
        let label = label_of(job, i);
        if job.name.len() > limits.max_name_len || !is_valid_name(&job.name) {
            let message = format!(
                "'{}' is not a valid job name (1-{} letters, digits, '-', '_' or '.')",
                job.name, limits.max_name_len
            );
            name_errors.push((i, SpecError::job(&label, "name", message)));
        } else if index_of.insert(&job.name, i).is_some() {
            name_errors.push((i, SpecError::job(&label, "name", "duplicate job name")));
        }
    }
    // A job of N variants runs them as jobs NAME.1 ... NAME.N.
    for (i, job) in jobs.iter().enumerate() {
        for k in 1..=job.variants.unwrap_or(0).min(MAX_VARIANTS) {
            let variant = format!("{}.{k}", job.name);
            if index_of.contains_key(variant.as_str()) {
                let message = format!("its variant {variant} has the name of another job");
                name_errors.push((i, SpecError::job(&label_of(job, i), "variants", message)));
            }
        }
    }
    let mut dependency_errors = Vec::new();
    let deps = resolve_dependencies(jobs, &index_of, &mut dependency_errors);
    (name_errors, deps, dependency_errors)
}

/// Each job's dependencies as batch indices: known, not itself, not
/// repeated, and no cycle among them.
fn resolve_dependencies(
    jobs: &JobParts,
    index_of: &HashMap<&str, usize>,
    errors: &mut Vec<SpecError>,
) -> Vec<Vec<(u32, When)>> {
    let mut all = vec![Vec::new(); jobs.len()];
    for (i, job) in jobs.iter().enumerate() {
        let deps: &mut Vec<(u32, When)> = &mut all[i];
        for dep in &job.depends_on {
            let name = &dep.job;
            match index_of.get(name.as_str()) {
                None => errors.push(SpecError::job(
                    &job.name,
                    "depends_on",
                    format!("unknown job '{name}'"),
                )),
                Some(&j) if j == i => errors.push(SpecError::job(
                    &job.name,
                    "depends_on",
                    "a job cannot depend on itself",
                )),
                Some(&j) if deps.iter().any(|&(d, _)| d as usize == j) => errors.push(
                    SpecError::job(&job.name, "depends_on", format!("'{name}' is listed twice")),
                ),
                Some(&j) => deps.push((j as u32, dep.when)),
            }
        }
    }
    if let Some(cycle) = find_cycle(&all) {
        let name = |&i: &usize| jobs.get(i).map_or("", |j| j.name.as_str());
        let names: Vec<&str> = cycle.iter().map(name).collect();
        errors.push(SpecError::job(
            names[0],
            "depends_on",
            format!("dependency cycle: {}", names.join(" -> ")),
        ));
    }
    all
}

/// Returns one dependency cycle (as job indices, first repeated at the end), if any.
fn find_cycle(deps: &[Vec<(u32, When)>]) -> Option<Vec<usize>> {
    // Iterative three-colour DFS, so a 100,000-long chain cannot overflow the stack.
    const WHITE: u8 = 0;
    const GREY: u8 = 1;
    const BLACK: u8 = 2;
    let mut colour = vec![WHITE; deps.len()];
    let mut parent = vec![usize::MAX; deps.len()];
    for root in 0..deps.len() {
        if colour[root] != WHITE {
            continue;
        }
        let mut stack: Vec<(usize, usize)> = vec![(root, 0)];
        colour[root] = GREY;
        while let Some(&mut (node, ref mut next)) = stack.last_mut() {
            if let Some(&(dep, _)) = deps[node].get(*next) {
                let dep = dep as usize;
                *next += 1;
                match colour[dep] {
                    WHITE => {
                        colour[dep] = GREY;
                        parent[dep] = node;
                        stack.push((dep, 0));
                    }
                    GREY => {
                        let mut cycle = vec![dep];
                        let mut at = node;
                        while at != dep {
                            cycle.push(at);
                            at = parent[at];
                        }
                        cycle.push(dep);
                        cycle.reverse();
                        return Some(cycle);
                    }
                    _ => {}
                }
            } else {
                colour[node] = BLACK;
                stack.pop();
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{batch, errors, job};
    use super::super::validate;
    use crate::spec::Limits;

    #[test]
    fn accepts_a_diamond() {
        let b = batch(vec![
            job("a", &[]),
            job("b", &["a"]),
            job("c", &["a"]),
            job("d", &["b", "c"]),
        ]);
        validate(b, &Limits::default()).unwrap();
    }

    #[test]
    fn names_a_cycle() {
        let b = batch(vec![job("a", &["c"]), job("b", &["a"]), job("c", &["b"])]);
        let e = errors(&b);
        assert!(e.contains("dependency cycle: a -> c -> b -> a"), "{e}");
    }

    #[test]
    fn rejects_duplicates_unknown_deps_and_bad_names() {
        let b = batch(vec![job("a", &[]), job("a", &[]), job("x y", &["zz"])]);
        let e = errors(&b);
        assert!(
            e.contains("job 'a': field 'name': duplicate job name"),
            "{e}"
        );
        assert!(e.contains("job 'x y': field 'name'"), "{e}");
        assert!(
            e.contains("job 'x y': field 'depends_on': unknown job 'zz'"),
            "{e}"
        );
    }

    #[test]
    fn long_chains_do_not_overflow() {
        let mut jobs = vec![job("j0", &[])];
        for i in 1..100_000 {
            jobs.push(job(&format!("j{i}"), &[&format!("j{}", i - 1)]));
        }
        validate(batch(jobs), &Limits::default()).unwrap();
    }
}
