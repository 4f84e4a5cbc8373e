//! `aam logs SESSION/JOB [--follow] [--raw]`: a job's captured output; for
//! an agent job, a readable transcript of it (`--raw`: the bytes as
//! captured). It polls the manager (cheap, and it rides over a manager
//! restart by reconnecting and asking again).

use super::job_arg;
use crate::args::ManagerFlags;
use crate::client::Client;
use crate::endpoint;
use aam_protocol::agent_output::Transcriber;
use aam_protocol::agent_run::AgentFormat;
use aam_protocol::SessionId;
use std::io::Write;
use std::time::Duration;

const POLL: Duration = Duration::from_millis(200);

pub async fn run(flags: &ManagerFlags, job: &str, follow: bool, raw: bool) -> anyhow::Result<i32> {
    let mut client = endpoint::connect(flags).await?.reconnect_when_lost();
    let (session, name) = job_arg(job)?;
    print_logs(&mut client, session, name, follow, raw).await?;
    Ok(0)
}

/// Prints a job's output; with `follow`, keeps printing what it prints
/// until it ends.
async fn print_logs(
    client: &mut Client,
    session: SessionId,
    job: &str,
    follow: bool,
    raw: bool,
) -> anyhow::Result<()> {
    let mut from = 0u64;
    let mut attempt = None;
    let mut printer = Printer::new(raw);
    let mut stdout = std::io::stdout();
    loop {
        let chunk = client.logs(session, job, from).await?;
        if attempt.is_some_and(|a| a != chunk.attempt) {
            // A new attempt: its output starts over.
            stdout.write_all(&printer.finish())?;
            stdout.flush()?;
            stderr_line!("[aam: attempt {} of {job}]", chunk.attempt);
            from = 0;
            attempt = Some(chunk.attempt);
            continue;
        }
        if chunk.output_bytes < from {
            // The manager has not caught up yet (a restart, before the
            // worker resent the output): ask again from where we are.
            tokio::time::sleep(POLL).await;
            continue;
        }
        attempt = Some(chunk.attempt);
        stdout.write_all(&printer.feed(&chunk.output, chunk.format))?;
        from = chunk.output_bytes;
        let done = !follow || chunk.status.is_terminal();
        if done {
            stdout.write_all(&printer.finish())?;
        }
        stdout.flush()?;
        if done {
            return Ok(());
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Turns the output as it arrives, in chunks cut anywhere, into what
/// `aam logs` prints: the bytes themselves (a command job, or `--raw`), or
/// an agent job's transcript, rendered line by line as lines complete (a
/// stream-json event split across two chunks waits for the rest of its
/// line), with what earlier lines told.
struct Printer {
    raw: bool,
    transcriber: Option<Transcriber>,
}

impl Printer {
    fn new(raw: bool) -> Printer {
        Printer {
            raw,
            transcriber: None,
        }
    }

    /// What to print of the next bytes of output.
    fn feed(&mut self, bytes: &[u8], format: Option<AgentFormat>) -> Vec<u8> {
        let Some(format) = format.filter(|_| !self.raw) else {
            return bytes.to_vec();
        };
        self.transcriber
            .get_or_insert_with(|| Transcriber::new(format))
            .feed(bytes)
    }

    /// The output ended (or an attempt did): what is left of a last line
    /// without a newline. The next attempt's transcript starts afresh.
    fn finish(&mut self) -> Vec<u8> {
        self.transcriber
            .take()
            .map(|mut t| t.finish())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aam_protocol::agent_output::transcript;

    const INIT: &str =
        r#"{"type":"system","subtype":"init","session_id":"abc","model":"claude-sonnet-4-5"}"#;

    /// What the printer prints of `chunks`, whole.
    fn printed(printer: &mut Printer, chunks: &[&[u8]], format: Option<AgentFormat>) -> Vec<u8> {
        let mut out = Vec::new();
        for chunk in chunks {
            out.extend(printer.feed(chunk, format));
        }
        out.extend(printer.finish());
        out
    }

    #[test]
    fn a_command_job_prints_its_bytes_as_they_come() {
        let mut printer = Printer::new(false);
        assert_eq!(printer.feed(b"first\nhal", None), b"first\nhal");
        assert_eq!(printer.feed(b"f\n", None), b"f\n");
        assert_eq!(printer.finish(), b"");
    }

    #[test]
    fn an_event_split_across_chunks_is_rendered_once_whole() {
        let stream = format!("{INIT}\n{INIT}\n");
        let (a, b) = stream.as_bytes().split_at(INIT.len() + 10);
        let format = Some(AgentFormat::ClaudeStreamJson);
        let mut printer = Printer::new(false);
        // The first chunk ends inside the second event: only the first is
        // rendered; the rest waits for its newline.
        let first = printer.feed(a, format);
        assert_eq!(
            first,
            transcript(
                AgentFormat::ClaudeStreamJson,
                format!("{INIT}\n").as_bytes()
            )
            .into_bytes()
        );
        let second = printer.feed(b, format);
        assert_eq!(
            second,
            transcript(
                AgentFormat::ClaudeStreamJson,
                format!("{INIT}\n").as_bytes()
            )
            .into_bytes()
        );
        assert_eq!(printer.finish(), b"");
    }

    #[test]
    fn a_last_line_without_newline_is_rendered_at_the_end() {
        let format = Some(AgentFormat::Text);
        let mut printer = Printer::new(false);
        let out = printed(&mut printer, &[b"one\ntw", b"o"], format);
        assert_eq!(out, b"one\ntwo");
    }

    #[test]
    fn raw_prints_an_agent_job_s_bytes_as_they_come() {
        let format = Some(AgentFormat::ClaudeStreamJson);
        let mut printer = Printer::new(true);
        assert_eq!(printer.feed(b"{\"type\":", format), b"{\"type\":");
        assert_eq!(printer.finish(), b"");
    }
}
