//! Shared resources (issue 15): counted things the manager's config
//! declares (`[resources] db = 1`), what a job uses of them (`uses`), and
//! what `aam resources` shows.

use crate::spec::SpecError;
use serde::{Deserialize, Serialize};

/// One entry of a job's `uses`: written as a name (one unit) or
/// `{ name = "emulator", count = 2 }` (count 1 when left out).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct UseSpec {
    pub name: String,
    pub count: u32,
}

impl UseSpec {
    /// One unit of `name`.
    pub fn one(name: &str) -> UseSpec {
        UseSpec {
            name: name.into(),
            count: 1,
        }
    }
}

impl<'de> Deserialize<'de> for UseSpec {
    /// Batch files (TOML, JSON) take both forms; bincode, which cannot
    /// tell them apart (no `deserialize_any`), carries the struct.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<UseSpec, D::Error> {
        #[derive(Deserialize)]
        struct Plain {
            name: String,
            count: u32,
        }
        #[derive(Deserialize)]
        #[serde(untagged, expecting = "a resource name or { name, count }")]
        enum Written {
            Name(String),
            Counted {
                name: String,
                #[serde(default = "one_unit")]
                count: u32,
            },
        }
        if !d.is_human_readable() {
            let Plain { name, count } = Plain::deserialize(d)?;
            return Ok(UseSpec { name, count });
        }
        Ok(match Written::deserialize(d)? {
            Written::Name(name) => UseSpec { name, count: 1 },
            Written::Counted { name, count } => UseSpec { name, count },
        })
    }
}

fn one_unit() -> u32 {
    1
}

/// What a job holds of one resource while it runs.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ResourceUse {
    pub name: String,
    pub count: u32,
}

/// Who holds some of a resource.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceHolder {
    /// `s7/tests`.
    pub job: String,
    pub count: u32,
    /// The worker it runs on (none while its worker is away).
    pub worker: Option<String>,
}

/// One resource as `aam resources` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceView {
    pub name: String,
    pub capacity: u32,
    pub in_use: u32,
    pub holders: Vec<ResourceHolder>,
}

/// A job's `uses`, typed: one entry per resource (a name listed twice
/// counts twice), in the order first listed. Counts below 1 and empty names
/// are errors naming the job.
pub fn check_uses(
    list: Vec<UseSpec>,
    label: &str,
    errors: &mut Vec<SpecError>,
) -> Vec<ResourceUse> {
    let mut out: Vec<ResourceUse> = Vec::new();
    for UseSpec { name, count } in list {
        if name.is_empty() {
            errors.push(SpecError::job(label, "uses", "a resource name is empty"));
            continue;
        }
        if count == 0 {
            errors.push(SpecError::job(
                label,
                "uses",
                format!("count of resource {name} must be at least 1"),
            ));
            continue;
        }
        match out.iter_mut().find(|u| u.name == name) {
            Some(u) => u.count = u.count.saturating_add(count),
            None => out.push(ResourceUse { name, count }),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_forms_parse_from_toml_and_json() {
        use crate::spec::{parse_batch, Format};
        let toml = "name = \"b\"\n[[jobs]]\nname = \"t\"\ncommand = [\"true\"]\nuses = [\"db\", { name = \"emulator\", count = 2 }]\n";
        let json = r#"{"name":"b","jobs":[{"name":"t","command":["true"],"uses":["db",{"name":"emulator","count":2}]}]}"#;
        for (text, format) in [(toml, Format::Toml), (json, Format::Json)] {
            let batch = parse_batch(text, format).unwrap();
            assert_eq!(
                batch.jobs[0].uses,
                vec![
                    UseSpec::one("db"),
                    UseSpec {
                        name: "emulator".into(),
                        count: 2
                    }
                ]
            );
            let wire = crate::codec::encode(&batch).unwrap();
            let back: crate::spec::BatchSpec = crate::codec::decode(&wire).unwrap();
            assert_eq!(back.jobs[0].uses, batch.jobs[0].uses, "bincode carries it");
        }
    }

    #[test]
    fn names_and_counts_merge_and_bad_counts_name_the_job() {
        let mut errors = Vec::new();
        let uses = check_uses(
            vec![
                UseSpec::one("db"),
                UseSpec {
                    name: "emulator".into(),
                    count: 2,
                },
                UseSpec::one("db"),
            ],
            "tests",
            &mut errors,
        );
        assert!(errors.is_empty());
        assert_eq!(
            uses,
            vec![
                ResourceUse {
                    name: "db".into(),
                    count: 2
                },
                ResourceUse {
                    name: "emulator".into(),
                    count: 2
                }
            ]
        );
        let bad = UseSpec {
            name: "db".into(),
            count: 0,
        };
        check_uses(vec![bad], "tests", &mut errors);
        let text = errors[0].to_string();
        assert!(text.contains("tests") && text.contains("db"), "{text}");
    }
}
