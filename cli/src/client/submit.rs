//! A batch to the manager: in one `Submit`, or, too big for one frame, as
//! `SubmitPart`s of its jobs and then the `Submit`, each part sent one
//! ahead (the next is made while the manager decodes this one, whose
//! answer is read before the next goes). A big JSON file is read job by
//! job as its parts go out (`submit_streamed`): its jobs are never all
//! held.

use super::{Client, Submitted};
use crate::batch::{self, ToSubmit};
use crate::exit::{bad_input, is_lost, Lost};
use aam_protocol::codec::{self, DEFAULT_MAX_FRAME};
use aam_protocol::json_batch::parse_json_batch_each;
use aam_protocol::messages::{ClientRequest, ClientResponse};
use aam_protocol::spec::{
    check_job_alone, BatchSpec, JobSpec, Limits, SpecError, SpecErrors, MAX_LISTED_ERRORS,
};
use std::path::Path;
use tokio::sync::mpsc;

/// The most encoded bytes of jobs one `SubmitPart` (or the `Submit` after
/// parts) carries: well inside the manager's default frame limit.
pub const PART_BYTES: usize = DEFAULT_MAX_FRAME / 4;

impl Client {
    /// Submits a batch read from `file`; a batch the manager finds invalid
    /// is bad input, described with the file's name.
    ///
    /// A batch bigger than a part (`PART_BYTES` encoded) goes as parts of
    /// its jobs and then its `Submit`, each part dropped once sent; the
    /// connection must hold for all of them (a lost one is an error that
    /// says to submit again), since the parts live in it.
    pub async fn submit(
        &mut self,
        file: &Path,
        mut batch: BatchSpec,
        idempotency_key: Option<String>,
    ) -> anyhow::Result<Submitted> {
        let mut sent = Sent::of(batch.jobs.len());
        let mut parts = Parts::default();
        for job in std::mem::take(&mut batch.jobs) {
            if let Some(full) = parts.add(file, job)? {
                self.send_part(full, &mut sent).await?;
            }
        }
        // The last part's jobs go in the `Submit` itself.
        batch.jobs = parts.part;
        self.finish(file, batch, idempotency_key, sent).await
    }

    /// Submits a batch file as `batch::load_to_submit` left it (whole, or
    /// to be streamed); returns the batch's name with what was stored.
    pub async fn submit_loaded(
        &mut self,
        file: &Path,
        loaded: ToSubmit,
        idempotency_key: Option<String>,
    ) -> anyhow::Result<(Submitted, String)> {
        match loaded {
            ToSubmit::Whole(batch) => {
                let name = batch.name.clone();
                Ok((self.submit(file, batch, idempotency_key).await?, name))
            }
            ToSubmit::Streamed(text) => self.submit_streamed(file, text, idempotency_key).await,
        }
    }

    /// `submit` of a JSON batch file's text, read job by job on a thread
    /// of its own while its parts go out: a million jobs are never held
    /// whole (parsed, they are 736 MB). Each job's own fields are checked
    /// here as it is read, the batch across its jobs by the manager; a part of the file that is not a batch's
    /// JSON stops the reading with its line, and what went before is
    /// dropped by the manager with the connection. Returns the batch's
    /// name with what was stored.
    pub async fn submit_streamed(
        &mut self,
        file: &Path,
        text: String,
        idempotency_key: Option<String>,
    ) -> anyhow::Result<(Submitted, String)> {
        // One part waits here while the next is read.
        let (parts, mut read) = mpsc::channel(1);
        let label = file.to_path_buf();
        let reader = tokio::task::spawn_blocking(move || read_parts(&label, &text, parts));
        let mut sent = Sent::default();
        let mut sending = Ok(());
        while let Some(part) = read.recv().await {
            sending = self.send_part(part, &mut sent).await;
            if sending.is_err() {
                break;
            }
        }
        // A failed send stops the reader.
        drop(read);
        let head = reader
            .await
            .map_err(|e| anyhow::anyhow!("reading {}: {e}", file.display()))??;
        sending?;
        let head = head.expect("the reader stops early only when the parts are no longer read");
        let name = head.name.clone();
        let submitted = self.finish(file, head, idempotency_key, sent).await?;
        Ok((submitted, name))
    }

    /// Sends a part, having read the answer to the part before it.
    async fn send_part(&mut self, jobs: Vec<JobSpec>, sent: &mut Sent) -> anyhow::Result<()> {
        if sent.unanswered {
            self.part_received(sent).await?;
        }
        sent.jobs += jobs.len();
        let request = ClientRequest::SubmitPart { jobs };
        self.send(request)
            .await
            .map_err(|e| parts_lost(e, sent.jobs, sent.total))?;
        sent.unanswered = true;
        Ok(())
    }

    /// The `Submit` after the parts (if any), with its own jobs.
    async fn finish(
        &mut self,
        file: &Path,
        batch: BatchSpec,
        idempotency_key: Option<String>,
        mut sent: Sent,
    ) -> anyhow::Result<Submitted> {
        if sent.unanswered {
            self.part_received(&sent).await?;
        }
        let parts = sent.jobs;
        sent.jobs += batch.jobs.len();
        let request = ClientRequest::Submit {
            batch,
            idempotency_key,
        };
        let answer = if parts == 0 {
            self.call(request).await?
        } else {
            self.exchange(request)
                .await
                .map_err(|e| parts_lost(e, sent.jobs, sent.total))?
        };
        expect!(Submitted::from_answer(answer),
            Ok(submitted) => Ok(submitted),
            Err(ClientResponse::Invalid(errors)) => Err(bad_input(batch::describe(file, &errors))),
        )
    }

    /// The answer to the last `SubmitPart` sent.
    async fn part_received(&mut self, sent: &Sent) -> anyhow::Result<()> {
        let answer = self
            .next()
            .await
            .map_err(|e| parts_lost(e, sent.jobs, sent.total))?;
        expect!(answer, ClientResponse::PartReceived { .. } => Ok(()))
    }
}

/// How far a batch in parts has gone.
#[derive(Default)]
struct Sent {
    /// Jobs sent so far.
    jobs: usize,
    /// The batch's jobs, when known before it is read to its end.
    total: Option<usize>,
    /// A part's answer is still to be read.
    unanswered: bool,
}

impl Sent {
    fn of(total: usize) -> Sent {
        Sent {
            total: Some(total),
            ..Sent::default()
        }
    }
}

/// Jobs gathered into parts of at most `PART_BYTES` encoded.
#[derive(Default)]
struct Parts {
    part: Vec<JobSpec>,
    bytes: usize,
}

impl Parts {
    /// Adds a job; returns the part it did not fit in, to be sent first.
    fn add(&mut self, file: &Path, job: JobSpec) -> anyhow::Result<Option<Vec<JobSpec>>> {
        // Counted, not encoded: a million jobs are measured.
        let size = codec::encoded_len(&job)
            .map_err(|e| bad_input(format!("{}: job {}: {e}", file.display(), job.name)))?;
        if size > PART_BYTES {
            return Err(bad_input(format!(
                "{}: job {} encodes to {size} bytes, more than the {PART_BYTES} bytes one job may take",
                file.display(),
                job.name
            )));
        }
        let full = (self.bytes + size > PART_BYTES).then(|| {
            self.bytes = 0;
            std::mem::take(&mut self.part)
        });
        self.part.push(job);
        self.bytes += size;
        Ok(full)
    }
}

/// Reads a JSON batch's jobs into parts, each sent on as it fills (the
/// last one too); returns the batch's own fields, or None when the parts
/// stopped being read. Each job's own fields are checked as it is read
/// (`check_job_alone`): from the first bad one, nothing more is sent, and
/// the rest of the file is read only for its problems.
fn read_parts(
    file: &Path,
    text: &str,
    out: mpsc::Sender<Vec<JobSpec>>,
) -> anyhow::Result<Option<BatchSpec>> {
    let limits = Limits::structural();
    let mut parts = Parts::default();
    let mut failed = None;
    let mut problems = Problems::default();
    let mut index = 0;
    let head = parse_json_batch_each(text, |job| {
        problems.add(check_job_alone(&job, index, &limits));
        index += 1;
        if problems.found() {
            return true;
        }
        match parts.add(file, job) {
            Ok(None) => true,
            Ok(Some(full)) => out.blocking_send(full).is_ok(),
            Err(e) => {
                failed = Some(e);
                false
            }
        }
    });
    if let Some(e) = failed {
        return Err(e);
    }
    let head = head.map_err(|e| bad_input(format!("{}: {e}", file.display())))?;
    if problems.found() {
        return Err(bad_input(batch::describe(file, &problems.into_errors())));
    }
    let last = std::mem::take(&mut parts.part);
    if last.is_empty() || out.blocking_send(last).is_ok() {
        return Ok(head);
    }
    Ok(None)
}

/// The problems of a streamed batch's jobs, as many kept as are listed.
#[derive(Default)]
struct Problems {
    listed: Vec<SpecError>,
    more: usize,
}

impl Problems {
    fn add(&mut self, errors: Vec<SpecError>) {
        for e in errors {
            match self.listed.len() < MAX_LISTED_ERRORS {
                true => self.listed.push(e),
                false => self.more += 1,
            }
        }
    }

    fn found(&self) -> bool {
        !self.listed.is_empty()
    }

    fn into_errors(self) -> SpecErrors {
        SpecErrors::listed_with(self.listed, self.more)
    }
}

/// The connection was lost while a batch went in parts: they were lost
/// with it, so nothing was stored unless the `Submit` itself arrived.
fn parts_lost(e: anyhow::Error, sent: usize, total: Option<usize>) -> anyhow::Error {
    if !is_lost(&e) {
        return e;
    }
    let of = total.map_or(String::new(), |total| format!(" of the batch's {total}"));
    Lost(format!(
        "{e}, with {sent}{of} jobs sent; the manager drops a batch it did not \
         get whole, so submit it again (with --idempotency-key, a batch it did get is not stored twice)"
    ))
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_streamed_batch_keeps_the_problems_it_lists_and_counts_the_rest() {
        let mut problems = Problems::default();
        assert!(!problems.found());
        for i in 0..150 {
            problems.add(vec![SpecError::job(&format!("j{i}"), "timeout", "bad")]);
        }
        assert!(problems.found());
        assert_eq!(problems.listed.len(), MAX_LISTED_ERRORS);
        let errors = problems.into_errors();
        assert_eq!(errors.0.len(), MAX_LISTED_ERRORS + 1);
        assert!(errors.0[0].to_string().contains("j0"));
        let last = errors.0.last().unwrap().to_string();
        assert!(last.contains("and 50 more problems"), "{last}");
    }
}
