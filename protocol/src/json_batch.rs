//! A JSON batch read job by job: each job is handed on as soon as it is
//! parsed, so a client can send a big batch file's jobs while it reads the
//! rest, and never holds them all (a million parsed jobs are 736 MB; the
//! file itself is a sixteenth of that).
//!
//! The batch's own fields are typed as they are read, by `BatchSpec`'s
//! rules (required name, unknown fields refused); each job by
//! `JobSpec`'s. Errors are located as `parse_batch` locates them (line,
//! job, field); the job is named by a second read that skips the jobs
//! before it.

use crate::spec::{json_error, BatchSpec, JobSpec, SpecError};
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use std::fmt;

/// Parses a JSON batch, handing each job to `each` in order instead of
/// gathering them; returns the batch's own fields (its `jobs` empty).
/// `each` returning false stops the reading: `Ok(None)`.
pub fn parse_json_batch_each(
    text: &str,
    mut each: impl FnMut(JobSpec) -> bool,
) -> Result<Option<BatchSpec>, SpecError> {
    let mut stopped = false;
    let mut track = serde_path_to_error::Track::new();
    let mut json = serde_json::Deserializer::from_str(text);
    let seed = BatchSeed {
        each: &mut each,
        stopped: &mut stopped,
    };
    let parsed = seed
        .deserialize(serde_path_to_error::Deserializer::new(
            &mut json, &mut track,
        ))
        .and_then(|head| json.end().map(|()| head));
    match parsed {
        _ if stopped => Ok(None),
        Ok(head) => Ok(Some(head)),
        Err(e) => Err(json_error(&track.path().to_string(), e, |i| {
            job_name_at(text, i)
        })),
    }
}

/// The name of the job at `index` of a JSON batch, for an error message:
/// the jobs before it are skipped, not kept.
pub fn job_name_at(text: &str, index: usize) -> Option<String> {
    let mut name = None;
    let seed = NameSeed {
        index,
        name: &mut name,
    };
    // Read until the job is found (then stopped by an error), or not.
    let _ = seed.deserialize(&mut serde_json::Deserializer::from_str(text));
    name
}

/// The batch object: `jobs` streamed to `each`, the other fields kept.
struct BatchSeed<'a, F> {
    each: &'a mut F,
    stopped: &'a mut bool,
}

impl<'de, F: FnMut(JobSpec) -> bool> DeserializeSeed<'de> for BatchSeed<'_, F> {
    type Value = BatchSpec;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<BatchSpec, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de, F: FnMut(JobSpec) -> bool> Visitor<'de> for BatchSeed<'_, F> {
    type Value = BatchSpec;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        // As the derived `Deserialize` says it, so that a big file and a
        // small one are refused alike.
        f.write_str("struct BatchSpec")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<BatchSpec, A::Error> {
        // Each field typed as it is read, so that an error in one is
        // located at it and named by it, as `parse_batch` does.
        let mut name = None;
        let mut max_parallel = None;
        let mut max_cost_usd = None;
        let mut jobs_seen = false;
        while let Some(field) = map.next_key::<BatchField>()? {
            match field {
                BatchField::Name => {
                    not_yet(&name, "name")?;
                    name = Some(map.next_value()?);
                }
                BatchField::MaxParallel => {
                    not_yet(&max_parallel, "max_parallel")?;
                    max_parallel = Some(map.next_value()?);
                }
                BatchField::MaxCostUsd => {
                    not_yet(&max_cost_usd, "max_cost_usd")?;
                    max_cost_usd = Some(map.next_value()?);
                }
                BatchField::Jobs => {
                    not_yet(&jobs_seen.then_some(()), "jobs")?;
                    jobs_seen = true;
                    map.next_value_seed(JobsSeed {
                        each: &mut *self.each,
                        stopped: &mut *self.stopped,
                    })?;
                }
            }
        }
        Ok(BatchSpec {
            name: name.ok_or_else(|| de::Error::missing_field("name"))?,
            max_parallel: max_parallel.flatten(),
            max_cost_usd: max_cost_usd.flatten(),
            jobs: Vec::new(),
        })
    }
}

/// The batch's own fields, as `BatchSpec` names them (any other is
/// refused as unknown, naming these).
#[derive(serde::Deserialize)]
#[serde(field_identifier, rename_all = "snake_case")]
enum BatchField {
    Name,
    MaxParallel,
    MaxCostUsd,
    Jobs,
}

/// A field met a second time is an error, found at its key (before its
/// value is read), as the derived `Deserialize` finds it.
fn not_yet<T, E: de::Error>(slot: &Option<T>, field: &'static str) -> Result<(), E> {
    match slot {
        None => Ok(()),
        Some(_) => Err(E::duplicate_field(field)),
    }
}

/// The `jobs` array, each element typed and handed to `each`.
struct JobsSeed<'a, F> {
    each: &'a mut F,
    stopped: &'a mut bool,
}

impl<'de, F: FnMut(JobSpec) -> bool> DeserializeSeed<'de> for JobsSeed<'_, F> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de, F: FnMut(JobSpec) -> bool> Visitor<'de> for JobsSeed<'_, F> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        // As serde's `Vec` says it, so that errors read as `parse_batch`'s.
        f.write_str("a sequence")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(job) = seq.next_element::<JobSpec>()? {
            if !(self.each)(job) {
                *self.stopped = true;
                return Err(de::Error::custom("stopped"));
            }
        }
        Ok(())
    }
}

/// The `jobs` array of a `NameSeed`.
struct JobsName<'a>(NameSeed<'a>);

impl<'de> DeserializeSeed<'de> for JobsName<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_seq(self.0)
    }
}

/// A batch read only as far as its job at `index`, for that job's name.
struct NameSeed<'a> {
    index: usize,
    name: &'a mut Option<String>,
}

impl<'de> DeserializeSeed<'de> for NameSeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for NameSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a batch")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<String>()? {
            if key == "jobs" {
                return map.next_value_seed(JobsName(self));
            }
            map.next_value::<de::IgnoredAny>()?;
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        for _ in 0..self.index {
            if seq.next_element::<de::IgnoredAny>()?.is_none() {
                return Ok(());
            }
        }
        if let Some(job) = seq.next_element::<serde_json::Value>()? {
            *self.name = job.get("name").and_then(|n| n.as_str()).map(str::to_string);
        }
        Err(de::Error::custom("found"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{parse_batch, Format};

    fn names(text: &str) -> (Result<Option<BatchSpec>, SpecError>, Vec<String>) {
        let mut seen = Vec::new();
        let head = parse_json_batch_each(text, |job| {
            seen.push(job.name);
            true
        });
        (head, seen)
    }

    #[test]
    fn jobs_are_handed_on_in_order_and_the_batch_s_fields_kept() {
        let text = r#"{"name": "b", "jobs": [{"name": "x", "command": ["true"]},
            {"name": "y", "command": ["true"]}], "max_parallel": 3}"#;
        let (head, seen) = names(text);
        let head = head.unwrap().unwrap();
        assert_eq!(seen, ["x", "y"]);
        assert_eq!((head.name.as_str(), head.max_parallel), ("b", Some(3)));
        assert!(head.jobs.is_empty());
        let mut whole = parse_batch(text, Format::Json).unwrap();
        whole.jobs.clear();
        assert_eq!(head, whole, "the same batch as parse_batch reads");
    }

    #[test]
    fn a_bad_job_is_located_by_line_place_and_field() {
        let text = "{\"name\": \"b\", \"jobs\": [\n{\"name\": \"x\", \"command\": [\"true\"]},\n{\"name\": \"y\", \"command\": \"true\"}]}";
        let (head, seen) = names(text);
        let e = head.unwrap_err();
        assert_eq!(seen, ["x"], "the jobs before it were handed on");
        assert_eq!(e.line, Some(3));
        assert_eq!(e.job.as_deref(), Some("y"), "named as parse_batch names it");
        assert_eq!(e.field.as_deref(), Some("command"));
        assert!(e.message.contains("invalid type"), "{}", e.message);
    }

    #[test]
    fn a_job_is_named_by_its_place() {
        let text = r#"{"max_parallel": 2, "jobs": [{"name": "x"}, {"command": ["a"], "name": "y"}], "name": "b"}"#;
        assert_eq!(job_name_at(text, 1).as_deref(), Some("y"));
        assert_eq!(job_name_at(text, 0).as_deref(), Some("x"));
        assert_eq!(job_name_at(text, 2), None);
        assert_eq!(job_name_at("{\"jobs\": [{}]}", 0), None);
    }

    #[test]
    fn the_batch_s_own_rules_hold() {
        let (head, _) = names(r#"{"jobs": []}"#);
        assert!(head.unwrap_err().message.contains("missing field `name`"));
        let (head, _) = names(r#"{"name": "b", "colour": 1, "jobs": []}"#);
        assert!(head.unwrap_err().message.contains("unknown field `colour`"));
        let (head, _) = names(r#"{"name": "b", "jobs": [], "jobs": []}"#);
        assert!(head.unwrap_err().message.contains("duplicate field `jobs`"));
        let (head, _) = names(r#"{"name": "b", "jobs": []} trailing"#);
        assert!(head.unwrap_err().line.is_some());
    }

    #[test]
    fn a_bad_batch_field_is_located_and_named_as_parse_batch_does() {
        for text in [
            "{\"name\": \"b\",\n\"max_parallel\": \"4\",\n\"jobs\": [\n{\"name\": \"x\", \"command\": [\"true\"]}]}",
            "{\"name\": 5,\n\"jobs\": []}",
            "{\"name\": \"b\",\n\"max_paralel\": 4,\n\"jobs\": [{\"name\": \"x\", \"command\": [\"true\"]}]}",
            "{\"name\": \"b\", \"colour\": 1, \"colour\": 2, \"jobs\": []}",
            "{\"name\": \"b\", \"max_cost_usd\": 1, \"max_cost_usd\": 2}",
        ] {
            let (streamed, seen) = names(text);
            let streamed = streamed.unwrap_err();
            let whole = parse_batch(text, Format::Json).unwrap_err();
            assert_eq!(streamed.to_string(), whole.to_string(), "{text}");
            assert!(seen.is_empty(), "no job is handed on after a bad field: {text}");
        }
    }

    #[test]
    fn a_refusal_stops_the_reading() {
        let text = r#"{"name": "b", "jobs": [{"name": "x"}, {"name": "y"}, {"name": "z"}]}"#;
        let mut seen = 0;
        let head = parse_json_batch_each(text, |_| {
            seen += 1;
            seen < 2
        });
        assert_eq!(head.unwrap(), None);
        assert_eq!(seen, 2);
    }
}
