//! `[[notify]]` entries as written in the config file, and the targets
//! they become once checked: which events, where to (a URL to POST to, or
//! a command's argv), and how hard to try (timeout, attempts, backoff,
//! queue). Every mistake is refused at load, naming the entry and field.

use crate::state::EventKind;
use aam_protocol::spec::parse_duration_ms;
use serde::Deserialize;
use std::collections::BTreeSet;
use std::time::Duration;

/// One `[[notify]]` entry as written.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NotifyEntry {
    /// Events to send: any of `session_finished`, `gate_waiting`,
    /// `job_failed`, `limit_paused`.
    #[serde(default)]
    pub on: Vec<String>,
    /// POST each event as JSON to this `http://` URL.
    pub url: Option<String>,
    /// Or run this argv (no shell) with the event as JSON on its stdin.
    pub command: Option<Vec<String>>,
    /// Longest one attempt may take (default 10s).
    pub timeout: Option<String>,
    /// Attempts before an event is given up (default 10).
    pub max_attempts: Option<u32>,
    /// First wait before a retry (default 1s); it doubles each time.
    pub retry_backoff: Option<String>,
    /// Longest wait between retries (default 5m).
    pub retry_backoff_max: Option<String>,
    /// Events waiting for this entry; past it the oldest is dropped (default 1000).
    pub queue: Option<usize>,
}

/// Most events one entry may hold waiting.
pub const MAX_QUEUE: usize = 100_000;

/// Where an entry's events go.
#[derive(Clone, Debug, PartialEq)]
pub enum Sink {
    Url(String),
    Command(Vec<String>),
}

/// A checked `[[notify]]` entry.
#[derive(Clone, Debug, PartialEq)]
pub struct Target {
    pub on: BTreeSet<EventKind>,
    pub sink: Sink,
    pub timeout: Duration,
    pub max_attempts: u32,
    pub backoff: Duration,
    pub backoff_max: Duration,
    pub queue: usize,
}

fn duration(
    entry: usize,
    field: &str,
    text: Option<&str>,
    default: &str,
) -> Result<Duration, String> {
    let text = text.unwrap_or(default);
    match parse_duration_ms(text) {
        Ok(0) => Err(format!(
            "[[notify]] #{entry}: {field}: must be longer than 0"
        )),
        Ok(ms) => Ok(Duration::from_millis(ms)),
        Err(e) => Err(format!("[[notify]] #{entry}: {field}: {e}")),
    }
}

/// Refuses anything but `http://HOST[:PORT]/...`. https needs TLS, which
/// aam does not have yet; saying so beats failing at the first event.
fn check_url(entry: usize, url: &str) -> Result<(), String> {
    let bad = |why: String| Err(format!("[[notify]] #{entry}: url: {why}"));
    let uri: awc::http::Uri = match url.parse() {
        Ok(uri) => uri,
        Err(e) => return bad(format!("'{url}' is not a URL ({e})")),
    };
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return bad(
                "https:// is not supported yet (aam has no TLS client); use http:// on a \
                 trusted network, or a command"
                    .into(),
            )
        }
        _ => return bad(format!("'{url}' is not an http:// URL")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return bad(format!("'{url}' names no host"));
    }
    Ok(())
}

impl Target {
    /// Checks entry number `entry` (counted from 1, as people read the file).
    pub fn from_entry(entry: usize, e: &NotifyEntry) -> Result<Target, String> {
        let at = |field: &str, why: &str| Err(format!("[[notify]] #{entry}: {field}: {why}"));
        let mut on = BTreeSet::new();
        for name in &e.on {
            match EventKind::parse(name) {
                Some(kind) => on.insert(kind),
                None => {
                    let why = format!("unknown event '{name}' (known: {})", known_events());
                    return at("on", &why);
                }
            };
        }
        if on.is_empty() {
            return at("on", &format!("names no event (known: {})", known_events()));
        }
        let one = |why: &str| Err(format!("[[notify]] #{entry}: {why}"));
        let sink = match (&e.url, &e.command) {
            (Some(_), Some(_)) => {
                return one("both url and command are set; an entry is one or the other")
            }
            (None, None) => {
                return one("set url (an http:// address to POST to) or command (an argv)")
            }
            (Some(url), None) => {
                check_url(entry, url)?;
                Sink::Url(url.clone())
            }
            (None, Some(argv)) => {
                if argv.first().is_none_or(|p| p.is_empty()) {
                    return at(
                        "command",
                        "is empty (it is an argv: [\"program\", \"arg\", ...])",
                    );
                }
                Sink::Command(argv.clone())
            }
        };
        let max_attempts = e.max_attempts.unwrap_or(10);
        if max_attempts == 0 {
            return at("max_attempts", "must be at least 1");
        }
        let queue = e.queue.unwrap_or(1000);
        if !(1..=MAX_QUEUE).contains(&queue) {
            return at("queue", &format!("must be between 1 and {MAX_QUEUE}"));
        }
        Ok(Target {
            on,
            sink,
            timeout: duration(entry, "timeout", e.timeout.as_deref(), "10s")?,
            max_attempts,
            backoff: duration(entry, "retry_backoff", e.retry_backoff.as_deref(), "1s")?,
            backoff_max: duration(
                entry,
                "retry_backoff_max",
                e.retry_backoff_max.as_deref(),
                "5m",
            )?,
            queue,
        })
    }

    /// Which target a stored notification is for: FNV-1a of where it goes
    /// (not of `on` or the retry settings, which may change without
    /// orphaning what waits). A hash, so no URL or command, which may
    /// hold a secret, lands in the store.
    pub fn fingerprint(&self) -> u64 {
        let text = match &self.sink {
            Sink::Url(url) => format!("url\0{url}"),
            Sink::Command(argv) => format!("command\0{}", argv.join("\0")),
        };
        text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
            (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
        })
    }

    /// The target as logs show it: scheme, host and port of a URL (its
    /// path or user part may be a secret), a command's program.
    pub fn describe(&self) -> String {
        match &self.sink {
            Sink::Url(url) => match url.parse::<awc::http::Uri>() {
                Ok(uri) => {
                    let host = uri.host().unwrap_or("?");
                    match uri.port_u16() {
                        Some(port) => format!("http://{host}:{port}"),
                        None => format!("http://{host}"),
                    }
                }
                Err(_) => "a URL".into(),
            },
            Sink::Command(argv) => format!("command {}", argv[0]),
        }
    }
}

fn known_events() -> String {
    let known: Vec<&str> = EventKind::ALL.iter().map(|k| k.as_str()).collect();
    known.join(", ")
}

/// Checks every entry; the targets, in the file's order.
pub fn targets(entries: &[NotifyEntry]) -> Result<Vec<Target>, String> {
    let targets: Vec<Target> = entries
        .iter()
        .enumerate()
        .map(|(i, e)| Target::from_entry(i + 1, e))
        .collect::<Result<_, _>>()?;
    for (i, t) in targets.iter().enumerate() {
        if let Some(j) = targets[..i].iter().position(|o| o.sink == t.sink) {
            return Err(format!(
                "[[notify]] #{}: goes where #{} goes; merge their `on` lists",
                i + 1,
                j + 1
            ));
        }
    }
    Ok(targets)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(on: &[&str]) -> NotifyEntry {
        NotifyEntry {
            on: on.iter().map(|s| s.to_string()).collect(),
            url: Some("http://127.0.0.1:9/hook".into()),
            ..NotifyEntry::default()
        }
    }

    fn refused(e: NotifyEntry) -> String {
        targets(&[entry(&["job_failed"]), e]).unwrap_err()
    }

    #[test]
    fn a_good_entry_gets_its_defaults() {
        let t = &targets(&[entry(&["job_failed", "gate_waiting"])]).unwrap()[0];
        assert_eq!(t.on, [EventKind::GateWaiting, EventKind::JobFailed].into());
        assert_eq!(t.timeout, Duration::from_secs(10));
        assert_eq!((t.max_attempts, t.queue), (10, 1000));
        assert_eq!(t.describe(), "http://127.0.0.1:9");
    }

    #[test]
    fn mistakes_are_refused_naming_the_entry_and_field() {
        let e = refused(entry(&["job_done"]));
        assert!(
            e.starts_with("[[notify]] #2: on: unknown event 'job_done'"),
            "{e}"
        );
        assert!(
            e.contains("session_finished, gate_waiting, job_failed, limit_paused"),
            "{e}"
        );
        assert!(refused(entry(&[])).contains("#2: on: names no event"));
        let both = NotifyEntry {
            command: Some(vec!["cat".into()]),
            ..entry(&["job_failed"])
        };
        assert!(refused(both).contains("#2: both url and command"));
        let neither = NotifyEntry {
            url: None,
            ..entry(&["job_failed"])
        };
        assert!(refused(neither).contains("#2: set url"));
        for argv in [vec![], vec![String::new()]] {
            let empty = NotifyEntry {
                url: None,
                command: Some(argv),
                ..entry(&["job_failed"])
            };
            assert!(refused(empty).contains("#2: command: is empty"));
        }
        for (url, why) in [
            ("not a url", "is not a URL"),
            ("https://example.com/", "https:// is not supported yet"),
            ("ftp://example.com/", "is not an http:// URL"),
            ("/just/a/path", "is not an http:// URL"),
        ] {
            let bad = NotifyEntry {
                url: Some(url.into()),
                ..entry(&["job_failed"])
            };
            let e = refused(bad);
            assert!(
                e.starts_with("[[notify]] #2: url: ") && e.contains(why),
                "{url}: {e}"
            );
        }
        let zero = NotifyEntry {
            max_attempts: Some(0),
            ..entry(&["job_failed"])
        };
        assert!(refused(zero).contains("#2: max_attempts"));
        let huge = NotifyEntry {
            queue: Some(MAX_QUEUE + 1),
            ..entry(&["job_failed"])
        };
        assert!(refused(huge).contains("#2: queue"));
        let slow = NotifyEntry {
            timeout: Some("soon".into()),
            ..entry(&["job_failed"])
        };
        assert!(refused(slow).contains("#2: timeout"));
        assert!(refused(entry(&["gate_waiting"])).contains("#2: goes where #1 goes"));
    }

    #[test]
    fn the_fingerprint_follows_where_events_go_and_logs_hide_the_path() {
        let a = Target::from_entry(1, &entry(&["job_failed"])).unwrap();
        let b = Target::from_entry(1, &entry(&["gate_waiting"])).unwrap();
        assert_eq!(a.fingerprint(), b.fingerprint(), "`on` is not where");
        let secret = NotifyEntry {
            url: Some("http://u:pw@hooks.local/T0/secret".into()),
            ..entry(&["job_failed"])
        };
        let c = Target::from_entry(1, &secret).unwrap();
        assert_ne!(a.fingerprint(), c.fingerprint());
        assert_eq!(c.describe(), "http://hooks.local");
    }

    #[test]
    fn entries_load_from_the_config_file_and_bad_ones_are_named() {
        use crate::config::ManagerConfig;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("aam.toml");
        std::fs::write(
            &path,
            concat!(
                "[[notify]]\non = [\"session_finished\", \"job_failed\"]\n",
                "url = \"http://127.0.0.1:8080/Hooks/AAM\"\nmax_attempts = 3\n",
                "[[notify]]\non = [\"gate_waiting\"]\n",
                "command = [\"notify-send\", \"Gate\"]\ntimeout = \"5s\"\n",
            ),
        )
        .unwrap();
        let cfg = ManagerConfig::load(Some(&path), vec![], &[]).unwrap();
        let t = targets(&cfg.notify).unwrap();
        assert_eq!(
            t[0].sink,
            Sink::Url("http://127.0.0.1:8080/Hooks/AAM".into())
        );
        assert_eq!(t[0].max_attempts, 3);
        let argv = vec!["notify-send".to_string(), "Gate".to_string()];
        assert_eq!(t[1].sink, Sink::Command(argv));
        assert_eq!(t[1].timeout, Duration::from_secs(5));
        std::fs::write(
            &path,
            "[[notify]]\non = [\"job_failed\"]\nurl = \"http://x/\"\nurll = \"y\"\n",
        )
        .unwrap();
        let e = ManagerConfig::load(Some(&path), vec![], &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("urll"), "{e}");
        std::fs::write(&path, "[[notify]]\non = [\"job_failed\"]\n").unwrap();
        let e = ManagerConfig::load(Some(&path), vec![], &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("[[notify]] #1: set url"), "{e}");
    }
}
