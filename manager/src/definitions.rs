//! Claude Code agent definitions: Markdown files with YAML front matter
//! (`name`, `description`, `tools`, `model`; other keys ignored) whose body
//! is the system prompt. Each becomes an agent run with the configured
//! `runner` template. A malformed file is reported with its path and
//! skipped; it never stops the manager.

use aam_protocol::agent::AgentDef;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use yaml_rust2::{Yaml, YamlLoader};

/// The default `runner`: Claude Code in print mode with the definition's
/// system prompt appended, its events streamed as JSON so aam reads its
/// answer, turns, cost and usage limits (`--` keeps a prompt that starts
/// with '-' a prompt).
pub fn default_runner() -> Vec<String> {
    [
        "claude",
        "-p",
        "--output-format",
        "stream-json",
        "--verbose",
        "--append-system-prompt",
        "{system_prompt}",
        "--",
        "{prompt}",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// An agent loaded from a definition file.
#[derive(Clone, Debug, PartialEq)]
pub struct Definition {
    pub name: String,
    pub description: Option<String>,
    pub tools: Option<String>,
    pub model: Option<String>,
    pub system_prompt: String,
    pub path: PathBuf,
}

impl Definition {
    /// The agent this definition runs as, with `runner` as its command.
    pub fn agent(&self, runner: &[String]) -> AgentDef {
        AgentDef {
            command: runner.to_vec(),
            model: self.model.clone(),
            description: self.description.clone(),
            system_prompt: Some(self.system_prompt.clone()),
            tools: self.tools.clone(),
            ..Default::default()
        }
    }
}

/// Parses one definition file's text.
pub fn parse(text: &str, path: &Path) -> Result<Definition, String> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let rest = text
        .strip_prefix("---\n")
        .or_else(|| text.strip_prefix("---\r\n"))
        .ok_or("no YAML front matter (the file must start with a '---' line)")?;
    let end = rest
        .find("\n---")
        .ok_or("the front matter is not closed by a '---' line")?;
    let (front, body) = (&rest[..end], &rest[end + 4..]);
    let body = body.split_once('\n').map(|(_, b)| b).unwrap_or("");
    let docs = YamlLoader::load_from_str(front).map_err(|e| format!("front matter: {e}"))?;
    let doc = docs.first().ok_or("the front matter is empty")?;
    if !matches!(doc, Yaml::Hash(_)) {
        return Err("the front matter is not a set of keys".into());
    }
    let text_of = |key: &str| -> Result<Option<String>, String> {
        match &doc[key] {
            Yaml::BadValue | Yaml::Null => Ok(None),
            Yaml::String(s) => Ok(Some(s.trim().to_string())),
            Yaml::Integer(i) => Ok(Some(i.to_string())),
            Yaml::Real(r) => Ok(Some(r.clone())),
            Yaml::Boolean(b) => Ok(Some(b.to_string())),
            _ => Err(format!("'{key}' must be text")),
        }
    };
    let name = text_of("name")?.ok_or("'name' is missing")?;
    if !aam_protocol::spec::is_valid_name(&name) {
        return Err(format!(
            "'{name}' is not a valid agent name (letters, digits, '-', '_', '.')"
        ));
    }
    // `tools` is "Read, Grep" or a YAML list; both become "Read,Grep".
    let tools = match &doc["tools"] {
        Yaml::Array(items) => {
            let names: Result<Vec<&str>, String> = items
                .iter()
                .map(|t| {
                    t.as_str()
                        .ok_or_else(|| "'tools' must list names".to_string())
                })
                .collect();
            Some(names?.join(","))
        }
        _ => text_of("tools")?.map(|t| {
            t.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join(",")
        }),
    };
    let model = text_of("model")?.filter(|m| m != "inherit");
    let system_prompt = body.trim().to_string();
    if system_prompt.is_empty() {
        return Err("the body (the system prompt) is empty".into());
    }
    Ok(Definition {
        name,
        description: text_of("description")?,
        tools,
        model,
        system_prompt,
        path: path.to_path_buf(),
    })
}

/// What loading the directories found.
#[derive(Debug, Default)]
pub struct Loaded {
    pub definitions: Vec<Definition>,
    /// (path, what is wrong with it)
    pub problems: Vec<(PathBuf, String)>,
}

/// Loads every `*.md` of the directories (missing ones are skipped). A name
/// defined twice keeps its first definition; the second is a problem.
pub fn load(dirs: &[PathBuf]) -> Loaded {
    let mut out = Loaded::default();
    let mut seen: BTreeMap<String, PathBuf> = BTreeMap::new();
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        let mut files: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "md"))
            .collect();
        files.sort();
        for path in files {
            let parsed = std::fs::read_to_string(&path)
                .map_err(|e| e.to_string())
                .and_then(|text| parse(&text, &path));
            match parsed {
                Ok(def) => {
                    if let Some(first) = seen.get(&def.name) {
                        let problem =
                            format!("'{}' is already defined by {}", def.name, first.display());
                        out.problems.push((path, problem));
                    } else {
                        seen.insert(def.name.clone(), path);
                        out.definitions.push(def);
                    }
                }
                Err(problem) => out.problems.push((path, problem)),
            }
        }
    }
    out
}

/// `~` at the start of a configured directory is the home directory.
pub fn expand_home(dir: &str) -> PathBuf {
    match (dir.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => PathBuf::from(dir),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(text: &str) -> Result<Definition, String> {
        parse(text, Path::new("x.md"))
    }

    #[test]
    fn reads_front_matter_and_body() {
        let d = parse_str(
            "---\nname: code-reviewer\ndescription: Reviews code\ntools: Read, Grep,Glob\nmodel: sonnet\ncolor: blue\nextra: ignored\n---\nYou review code.\n\nBe brief.\n",
        )
        .unwrap();
        assert_eq!(d.name, "code-reviewer");
        assert_eq!(d.description.as_deref(), Some("Reviews code"));
        assert_eq!(d.tools.as_deref(), Some("Read,Grep,Glob"));
        assert_eq!(d.model.as_deref(), Some("sonnet"));
        assert_eq!(d.system_prompt, "You review code.\n\nBe brief.");
        let listed =
            parse_str("---\nname: a\ntools:\n  - Read\n  - Bash\nmodel: inherit\n---\nbody\n")
                .unwrap();
        assert_eq!(listed.tools.as_deref(), Some("Read,Bash"));
        assert_eq!(listed.model, None, "'inherit' means the runner's default");
    }

    #[test]
    fn malformed_files_say_what_is_wrong() {
        assert!(parse_str("name: a\n")
            .unwrap_err()
            .contains("no YAML front matter"));
        assert!(parse_str("---\nname: a\n")
            .unwrap_err()
            .contains("not closed"));
        assert!(parse_str("---\ndescription: x\n---\nbody\n")
            .unwrap_err()
            .contains("'name' is missing"));
        assert!(parse_str("---\nname: [a\n---\nbody\n")
            .unwrap_err()
            .contains("front matter"));
        assert!(parse_str("---\nname: a\n---\n\n")
            .unwrap_err()
            .contains("empty"));
        assert!(parse_str("---\nname: has space\n---\nx\n")
            .unwrap_err()
            .contains("not a valid agent name"));
    }
}
