//! A batch's jobs as they arrived: a big batch is streamed in parts, and
//! each part is validated where it lies rather than first copied into one
//! array (a million specs are 736 MB, and the copy was a tenth of a
//! million-job submission).

use crate::spec::JobSpec;

/// The jobs of a batch, part after part, in batch order.
#[derive(Debug, Default)]
pub struct JobParts {
    parts: Vec<Vec<JobSpec>>,
    len: usize,
}

impl JobParts {
    /// `parts` in order; empty ones are dropped.
    pub fn new(parts: Vec<Vec<JobSpec>>) -> JobParts {
        let parts: Vec<Vec<JobSpec>> = parts.into_iter().filter(|p| !p.is_empty()).collect();
        let len = parts.iter().map(Vec::len).sum();
        JobParts { parts, len }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn iter(&self) -> impl Iterator<Item = &JobSpec> {
        self.parts.iter().flatten()
    }

    /// The job at batch index `index` (a walk over the parts: for error
    /// messages, not for loops).
    pub fn get(&self, mut index: usize) -> Option<&JobSpec> {
        for part in &self.parts {
            match part.get(index) {
                Some(job) => return Some(job),
                None => index -= part.len(),
            }
        }
        None
    }

    /// The jobs as one array: a single part as it is, else joined.
    pub fn into_vec(mut self) -> Vec<JobSpec> {
        match self.parts.len() {
            0 => Vec::new(),
            1 => self.parts.pop().expect("one part"),
            _ => self.into_jobs().collect(),
        }
    }

    /// The jobs by value, in order; each part is freed once it is read.
    pub fn into_jobs(self) -> impl Iterator<Item = JobSpec> {
        self.parts.into_iter().flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::JobParts;
    use crate::spec::JobSpec;

    fn named(names: &[&str]) -> Vec<JobSpec> {
        let job = |n: &&str| JobSpec {
            name: n.to_string(),
            ..Default::default()
        };
        names.iter().map(job).collect()
    }

    #[test]
    fn parts_read_as_one_batch_in_order() {
        let parts = JobParts::new(vec![named(&["a", "b"]), named(&[]), named(&["c"])]);
        assert_eq!(parts.len(), 3);
        let names: Vec<&str> = parts.iter().map(|j| j.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "c"]);
        assert_eq!(parts.get(2).map(|j| j.name.as_str()), Some("c"));
        assert_eq!(parts.get(1).map(|j| j.name.as_str()), Some("b"));
        assert!(parts.get(3).is_none());
        let owned: Vec<String> = parts.into_jobs().map(|j| j.name).collect();
        assert_eq!(owned, ["a", "b", "c"]);
        let one = named(&["x", "y"]);
        let at = one.as_ptr();
        let back = JobParts::new(vec![Vec::new(), one]).into_vec();
        assert_eq!(
            back.as_ptr(),
            at,
            "a single part is handed back, not copied"
        );
        let joined = JobParts::new(vec![named(&["a"]), named(&["b"])]).into_vec();
        assert_eq!(joined.len(), 2);
    }
}
