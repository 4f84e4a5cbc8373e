//! The "waiting for you" lines of `aam status`: running jobs whose agent
//! asks a permission (with the command that answers it) or lingers for a
//! message, those needing a decision first.

use aam_protocol::model::WaitingJob;
use std::fmt::Write as _;

/// Longest part of an agent's last answer shown on its line.
const ANSWER_CHARS: usize = 80;

pub fn waiting_lines(waiting: &[WaitingJob]) -> String {
    if waiting.is_empty() {
        return String::new();
    }
    let mut out = String::from("waiting for you:\n");
    for w in waiting {
        let job = format!("{}/{}", w.session, w.job);
        for r in &w.requests {
            let _ = writeln!(
                out,
                "  {job:<20} needs input [{}] {}  (aam allow|deny {job} {})",
                r.id, r.summary, r.id
            );
        }
        if w.waiting_for_input {
            let answer = w.last_answer.as_deref().map(first_line).unwrap_or_default();
            let _ = writeln!(
                out,
                "  {job:<20} waiting for input: {answer}  (aam say {job} \"TEXT\")"
            );
        }
    }
    out
}

/// The first line of a text, cut to `ANSWER_CHARS` characters.
fn first_line(text: &str) -> String {
    let line = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    let mut short: String = line.chars().take(ANSWER_CHARS).collect();
    if short.len() < text.trim_end().len() {
        short.push('…');
    }
    short
}

#[cfg(test)]
mod tests {
    use super::*;
    use aam_protocol::permission::PermissionRequest;
    use aam_protocol::SessionId;

    #[test]
    fn each_open_request_names_the_command_that_answers_it() {
        let ask = PermissionRequest {
            id: 3,
            attempt: 1,
            ask: 1,
            tool: "Write".into(),
            summary: "Write src/lib.rs".into(),
            asked_at_ms: 0,
            decision: None,
        };
        let waiting = [
            WaitingJob {
                session: SessionId(4),
                job: "fix".into(),
                requests: vec![ask],
                waiting_for_input: false,
                last_answer: None,
            },
            WaitingJob {
                session: SessionId(4),
                job: "chat".into(),
                requests: vec![],
                waiting_for_input: true,
                last_answer: Some("Done: the parser\nand more".into()),
            },
        ];
        let text = waiting_lines(&waiting);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "waiting for you:");
        assert!(
            lines[1].contains("s4/fix") && lines[1].contains("needs input [3] Write src/lib.rs"),
            "{text}"
        );
        assert!(lines[1].ends_with("(aam allow|deny s4/fix 3)"), "{text}");
        assert!(
            lines[2].contains("waiting for input: Done: the parser…"),
            "{text}"
        );
        assert_eq!(waiting_lines(&[]), "");
    }
}
