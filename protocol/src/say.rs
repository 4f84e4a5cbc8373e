//! Messages said to a running agent (issue 16, `aam say`): an agent whose
//! command reads stream-json input gets its prompt as the first line on
//! its stdin, and each message said to it as one more, in order, at most
//! once; the job keeps them, with who said them and whether its agent got
//! them, so a restart loses none and sends none twice.

use serde::{Deserialize, Serialize};

/// Most messages one job keeps.
pub const MAX_SAID: usize = 1000;
/// Largest message, in bytes.
pub const MAX_SAY_BYTES: usize = 64 * 1024;

/// What a job that takes input carries: its prompt, its linger, and what
/// was said to it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AgentInput {
    /// The first message on the agent's stdin.
    pub prompt: String,
    /// How long the agent's stdin stays open after it answered with
    /// nothing more to say (0: closed at once, and the agent ends).
    pub linger_ms: u64,
    /// Every message said to it, in order (`seq` 1, 2, ...).
    pub said: Vec<SaidMessage>,
    /// The highest `seq` its agent was given (a message past it is still
    /// to be delivered).
    pub delivered: u32,
    /// Since when its agent has answered and waits for input (lingers).
    pub waiting_since_ms: Option<u64>,
}

impl AgentInput {
    /// Messages not yet given to the agent, oldest first.
    pub fn undelivered(&self) -> impl Iterator<Item = &SaidMessage> {
        let delivered = self.delivered;
        self.said.iter().filter(move |m| m.seq > delivered)
    }
}

/// One message said to a running agent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SaidMessage {
    pub seq: u32,
    /// The token's name that said it.
    pub from: String,
    pub text: String,
    pub at_ms: u64,
}

/// The stream-json line that gives `text` to a Claude Code agent as a
/// user message (newline included).
pub fn input_line(text: &str) -> String {
    let line = serde_json::json!({
        "type": "user",
        "message": { "role": "user", "content": text },
    });
    format!("{line}\n")
}

/// Whether an agent's command reads stream-json on its stdin
/// (`--input-format stream-json` or `--input-format=stream-json`).
pub fn reads_stream_json(argv: &[String]) -> bool {
    argv.windows(2)
        .any(|w| w[0] == "--input-format" && w[1] == "stream-json")
        || argv.iter().any(|a| a == "--input-format=stream-json")
}

/// How an agent takes input: its `input` key (`stream-json`, `none`), or
/// what its command says. Why a key is wrong otherwise.
pub fn takes_input(key: Option<&str>, argv: &[String]) -> Result<bool, String> {
    match key {
        None | Some("auto") => Ok(reads_stream_json(argv)),
        Some("stream-json") => Ok(true),
        Some("none") => Ok(false),
        Some(other) => Err(format!(
            "unknown input '{other}' (use stream-json, none or auto)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_said_line_is_a_user_message_of_stream_json() {
        let line = input_line("fix \"it\"\nplease");
        assert!(line.ends_with('\n') && line.matches('\n').count() == 1);
        let value: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
        assert_eq!(value["type"], "user");
        assert_eq!(value["message"]["content"], "fix \"it\"\nplease");
    }

    #[test]
    fn input_is_told_by_the_key_or_the_command() {
        let argv = |s: &str| s.split(' ').map(String::from).collect::<Vec<_>>();
        let reads = argv("claude -p --input-format stream-json --output-format stream-json");
        assert_eq!(takes_input(None, &reads), Ok(true));
        assert_eq!(takes_input(Some("none"), &reads), Ok(false));
        assert_eq!(takes_input(None, &argv("claude -p x")), Ok(false));
        assert_eq!(
            takes_input(None, &argv("c --input-format=stream-json")),
            Ok(true)
        );
        assert!(takes_input(Some("json"), &reads).is_err());
        let input = AgentInput {
            said: (1..=3)
                .map(|seq| SaidMessage {
                    seq,
                    from: "admin".into(),
                    text: format!("m{seq}"),
                    at_ms: 0,
                })
                .collect(),
            delivered: 1,
            ..AgentInput::default()
        };
        let left: Vec<u32> = input.undelivered().map(|m| m.seq).collect();
        assert_eq!(left, [2, 3]);
    }
}
