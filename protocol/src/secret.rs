//! What counts as a secret, and how it is hidden wherever aam shows or logs
//! configured values (DESIGN.md invariant 9): variables whose names look
//! secret, argv elements that follow a secret-looking flag, and `Debug`
//! output of the types that carry tokens or environments.

use serde::Serialize;
use serde_json::Value;
use std::fmt;

/// What a hidden value is shown as.
pub const REDACTED: &str = "***";

/// Whether a variable (or flag, or config key) named `name` holds a secret:
/// `*_KEY`, `*_TOKEN`, `*_SECRET`, `*_PASSWORD`, `TOKEN`, `SECRET`,
/// `PASSWORD`, or anything containing `API_KEY`/`APIKEY`, case-insensitive.
/// Dashes count as underscores, so `--api-key` and `x-auth-token` match.
/// `MAX_TOKENS` does not: a false negative there would be a leak, but a
/// false positive only hides a harmless value, so the rule errs wide on
/// the suffixes and exact on nothing else.
pub fn looks_secret(name: &str) -> bool {
    let name = name
        .trim_start_matches('-')
        .replace('-', "_")
        .to_ascii_uppercase();
    const SUFFIXES: [&str; 4] = ["_KEY", "_TOKEN", "_SECRET", "_PASSWORD"];
    const EXACT: [&str; 4] = ["TOKEN", "SECRET", "PASSWORD", "APIKEY"];
    SUFFIXES.iter().any(|s| name.ends_with(s))
        || EXACT.contains(&name.as_str())
        || name.contains("API_KEY")
        || name.contains("APIKEY")
}

/// A variable's value as shown: `***` when its name looks secret.
pub fn shown_value<'a>(name: &str, value: &'a str) -> &'a str {
    if looks_secret(name) {
        REDACTED
    } else {
        value
    }
}

/// An environment as shown: every secret-looking variable's value is `***`.
pub fn redact_env<'a>(
    env: impl IntoIterator<Item = (&'a String, &'a String)>,
) -> Vec<(String, String)> {
    env.into_iter()
        .map(|(k, v)| (k.clone(), shown_value(k, v).to_string()))
        .collect()
}

/// An argv as shown: the element after a secret-looking flag (`--api-key
/// X`, `--token X`) and the value of `--api-key=X` or `OPENAI_API_KEY=X`
/// (as given to `env`) are `***`. Anything else, the prompt included, is
/// left as written: only the flag names say where a secret is.
pub fn redact_argv(argv: &[String]) -> Vec<String> {
    let mut shown = Vec::with_capacity(argv.len());
    let mut hide_next = false;
    for element in argv {
        if hide_next {
            shown.push(REDACTED.to_string());
            hide_next = false;
            continue;
        }
        match element.split_once('=') {
            Some((name, _)) if looks_secret(name) && !name.is_empty() => {
                shown.push(format!("{name}={REDACTED}"));
            }
            Some(_) => shown.push(element.clone()),
            None => {
                hide_next = element.starts_with('-') && looks_secret(element);
                shown.push(element.clone());
            }
        }
    }
    shown
}

/// Writes `value` for `Debug` as its JSON with secrets hidden: every
/// object member whose key looks secret, every `env` (a map or a list of
/// pairs) by the variable rule, and every `argv`/`command` by the argv
/// rule. Used by the types that carry tokens, environments or argvs, so
/// that no `{:?}` of them, in a log or a panic, shows a secret.
pub fn debug_redacted<T: Serialize>(
    type_name: &str,
    value: &T,
    f: &mut fmt::Formatter<'_>,
) -> fmt::Result {
    match serde_json::to_value(value) {
        Ok(mut v) => {
            redact_value(&mut v);
            write!(f, "{type_name} {v}")
        }
        Err(_) => write!(f, "{type_name} {{ .. }}"),
    }
}

fn redact_value(v: &mut Value) {
    match v {
        Value::Object(members) => {
            for (key, member) in members.iter_mut() {
                match key.as_str() {
                    _ if looks_secret(key) && !member.is_null() => {
                        *member = Value::String(REDACTED.into())
                    }
                    "env" => redact_env_value(member),
                    "argv" | "command" => redact_argv_value(member),
                    _ => redact_value(member),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact_value),
        _ => {}
    }
}

fn redact_env_value(env: &mut Value) {
    match env {
        Value::Object(vars) => {
            for (name, value) in vars.iter_mut() {
                if looks_secret(name) {
                    *value = Value::String(REDACTED.into());
                }
            }
        }
        Value::Array(pairs) => {
            for pair in pairs.iter_mut() {
                if let Some([Value::String(name), value]) = pair.as_array_mut().map(|p| &mut p[..])
                {
                    if looks_secret(name) {
                        *value = Value::String(REDACTED.into());
                    }
                }
            }
        }
        _ => {}
    }
}

fn redact_argv_value(argv: &mut Value) {
    let Some(items) = argv.as_array() else {
        return;
    };
    let strings: Option<Vec<String>> = items
        .iter()
        .map(|i| i.as_str().map(str::to_string))
        .collect();
    if let Some(strings) = strings {
        *argv = Value::from(redact_argv(&strings));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_looking_names() {
        for name in [
            "OPENAI_API_KEY",
            "anthropic_api_key",
            "GITHUB_TOKEN",
            "Client_Secret",
            "PASSWORD",
            "db_password",
            "token",
            "MY_APIKEY_X",
            "X_API_KEY_2",
            "--api-key",
            "--auth-token",
            "-password",
        ] {
            assert!(looks_secret(name), "{name} should look secret");
        }
        for name in [
            "PATH",
            "RUST_LOG",
            "MAX_TOKENS",
            "--max-tokens",
            "KEYBOARD",
            "HOME",
            "--model",
            "",
        ] {
            assert!(!looks_secret(name), "{name} should not look secret");
        }
    }

    #[test]
    fn env_values_under_secret_names_are_hidden() {
        let env: Vec<(String, String)> = vec![
            ("OPENAI_API_KEY".into(), "sk-live-123".into()),
            ("RUST_LOG".into(), "info".into()),
        ];
        let shown = redact_env(env.iter().map(|(k, v)| (k, v)));
        assert_eq!(shown[0].1, "***");
        assert_eq!(shown[1].1, "info");
    }

    #[test]
    fn argv_values_after_secret_flags_are_hidden() {
        let argv: Vec<String> = [
            "agent",
            "--api-key",
            "sk-1",
            "--token=tok-2",
            "OPENAI_API_KEY=sk-3",
            "--model",
            "opus",
            "--max-tokens",
            "100",
            "a prompt with --token inside",
            "--password",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            redact_argv(&argv),
            [
                "agent",
                "--api-key",
                "***",
                "--token=***",
                "OPENAI_API_KEY=***",
                "--model",
                "opus",
                "--max-tokens",
                "100",
                "a prompt with --token inside",
                "--password",
            ]
        );
    }

    #[derive(Serialize)]
    struct Carrier {
        token: String,
        name: String,
        env: Vec<(String, String)>,
        vars: std::collections::BTreeMap<String, String>,
        argv: Vec<String>,
        nested: Vec<Inner>,
    }

    #[derive(Serialize)]
    struct Inner {
        env: std::collections::BTreeMap<String, String>,
    }

    struct Shown(Carrier);
    impl fmt::Debug for Shown {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            debug_redacted("Carrier", &self.0, f)
        }
    }

    #[test]
    fn debug_output_hides_tokens_envs_and_argv_secrets() {
        let c = Carrier {
            token: "tok-abcdef".into(),
            name: "visible".into(),
            env: vec![
                ("GITHUB_TOKEN".into(), "ghp-1".into()),
                ("A".into(), "b".into()),
            ],
            vars: [("DB_PASSWORD".into(), "hunter2".into())].into(),
            argv: ["x", "--api-key", "sk-9"].map(String::from).to_vec(),
            nested: vec![Inner {
                env: [("ANTHROPIC_API_KEY".into(), "sk-ant".into())].into(),
            }],
        };
        let text = format!("{:?}", Shown(c));
        for secret in ["tok-abcdef", "ghp-1", "hunter2", "sk-9", "sk-ant"] {
            assert!(!text.contains(secret), "{secret} leaked: {text}");
        }
        assert!(text.starts_with("Carrier {"), "{text}");
        assert!(text.contains("visible") && text.contains("\"b\""), "{text}");
    }

    #[test]
    fn protocol_types_debug_without_their_secrets() {
        let hello = crate::messages::Handshake::new(crate::messages::Role::Client, "tok-abcdef");
        let text = format!("{hello:?}");
        assert!(
            !text.contains("tok-abcdef") && text.contains("***"),
            "{text}"
        );
        let agent = crate::agent::AgentDef {
            command: ["a", "--api-key", "sk-1"].map(String::from).to_vec(),
            env: [("OPENAI_API_KEY".into(), "sk-2".into())].into(),
            secret_env: vec!["ANTHROPIC_API_KEY".into()],
            ..Default::default()
        };
        let text = format!("{agent:?}");
        assert!(!text.contains("sk-1") && !text.contains("sk-2"), "{text}");
        assert!(text.contains("ANTHROPIC_API_KEY"), "names stay: {text}");
        let mut job = crate::model::JobRecord::new(
            crate::JobKey {
                session: crate::SessionId(1),
                index: 0,
            },
            "j".into(),
            vec!["x".into()],
        );
        job.env = vec![("GITHUB_TOKEN".into(), "ghp-1".into())];
        assert!(!format!("{job:?}").contains("ghp-1"));
        let spec = crate::spec::JobSpec {
            env: [("DB_PASSWORD".into(), "hunter2".into())].into(),
            ..Default::default()
        };
        assert!(!format!("{spec:?}").contains("hunter2"));
    }
}
