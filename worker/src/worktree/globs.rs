//! `copy` globs of a workspace file (`config/*.local.json`, `**/.env`)
//! matched against the worker's checkout. The walk goes only into the
//! directories a pattern can reach (`config/*.json` reads `config/` alone),
//! never into `.git` nor through a link, and a directory that matches is
//! one path, copied whole. `*`, `?` and `[...]` stay within one name, `**`
//! is any number of directories (none included); `glob::Pattern` does the
//! matching, the walk is here so that it can be bounded so.

use glob::{MatchOptions, Pattern};
use std::path::{Path, PathBuf};

const OPTIONS: MatchOptions = MatchOptions {
    case_sensitive: true,
    require_literal_separator: true,
    // `config/*` takes `config/.secret` too: copies are for ignored files,
    // which are often hidden.
    require_literal_leading_dot: false,
};

/// Whether a `copy` entry is a glob rather than a path.
pub fn is_glob(entry: &str) -> bool {
    entry.contains(['*', '?', '['])
}

/// Why a glob entry cannot be matched (a path is always fine here).
pub fn check(entry: &str) -> Result<(), String> {
    if !is_glob(entry) {
        return Ok(());
    }
    Pattern::new(entry)
        .map(drop)
        .map_err(|e| format!("'{entry}' is not a valid glob: {}", e.msg))
}

/// One `/`-separated part of a pattern.
enum Part {
    /// `**`: any number of directories.
    Any,
    Name(Pattern),
}

/// The paths under `top` that `pattern` matches, relative to it and
/// sorted; `.git` is never one. Blocking.
pub fn matches(top: &Path, pattern: &str) -> Result<Vec<String>, String> {
    let pattern: Vec<&str> = pattern
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    let whole =
        Pattern::new(&pattern.join("/")).map_err(|e| format!("not a valid glob: {}", e.msg))?;
    let parts = pattern
        .iter()
        .map(|p| match *p {
            "**" => Ok(Part::Any),
            p => Pattern::new(p).map(Part::Name),
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not a valid glob: {}", e.msg))?;
    let mut found = Vec::new();
    // Directories to read: where, and their path relative to `top`.
    let mut todo: Vec<(PathBuf, Vec<String>)> = vec![(top.to_path_buf(), Vec::new())];
    while let Some((dir, names)) = todo.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            // The top itself must be readable; a directory under it that
            // is not is passed over, like one git cannot read.
            Err(e) if names.is_empty() => return Err(format!("{}: {e}", top.display())),
            Err(_) => continue,
        };
        for entry in entries.flatten() {
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if name == ".git" {
                continue;
            }
            let mut path = names.clone();
            path.push(name);
            let relative = path.join("/");
            if whole.matches_with(&relative, OPTIONS) {
                found.push(relative);
                continue;
            }
            let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
            if is_dir && may_reach(&parts, &path) {
                todo.push((entry.path(), path));
            }
        }
    }
    found.sort();
    Ok(found)
}

/// Whether a path under the directory `names` can match `parts`.
fn may_reach(parts: &[Part], names: &[String]) -> bool {
    match (parts.split_first(), names.split_first()) {
        (None, _) => false,
        (Some((Part::Any, _)), _) => true,
        // The pattern has parts left for what is under the directory.
        (Some(_), None) => true,
        (Some((Part::Name(part), rest)), Some((name, names))) => {
            part.matches_with(name, OPTIONS) && may_reach(rest, names)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(files: &[&str]) -> tempfile::TempDir {
        let top = tempfile::tempdir().unwrap();
        for file in files {
            let path = top.path().join(file);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, "x").unwrap();
        }
        top
    }

    #[test]
    fn stars_stay_in_a_name_and_double_stars_cross_directories() {
        let top = tree(&[
            ".env",
            "app/.env",
            "app/deep/.env",
            ".git/.env",
            "config/a.local.json",
            "config/b.json",
            "config/sub/c.local.json",
        ]);
        let found = |pattern| matches(top.path(), pattern).unwrap();
        assert_eq!(found("config/*.local.json"), ["config/a.local.json"]);
        assert_eq!(found("**/.env"), [".env", "app/.env", "app/deep/.env"]);
        assert_eq!(
            found("config/**/*.local.json"),
            ["config/a.local.json", "config/sub/c.local.json"]
        );
        assert_eq!(found("./config/?.json"), ["config/b.json"]);
        // A directory that matches is one path: it is copied whole.
        assert_eq!(found("conf[i]g"), ["config"]);
        assert!(found("*.toml").is_empty());
    }

    #[test]
    fn the_walk_goes_only_where_the_pattern_can_reach() {
        let parts = |p: &str| {
            p.split('/')
                .map(|p| match p {
                    "**" => Part::Any,
                    p => Part::Name(Pattern::new(p).unwrap()),
                })
                .collect::<Vec<_>>()
        };
        let names = |n: &str| n.split('/').map(str::to_string).collect::<Vec<_>>();
        assert!(may_reach(&parts("config/*.json"), &names("config")));
        assert!(!may_reach(&parts("config/*.json"), &names("node_modules")));
        assert!(!may_reach(&parts("config/*.json"), &names("config/sub")));
        assert!(may_reach(&parts("a/**/x"), &names("a/b/c/d")));
        assert!(!may_reach(&parts("a/**/x"), &names("b/c")));
    }

    #[test]
    fn bad_globs_are_refused_and_paths_pass() {
        assert!(check("config/[a.json")
            .unwrap_err()
            .contains("not a valid glob"));
        assert!(check("plain/path.txt").is_ok());
        assert!(is_glob("**/.env") && !is_glob(".env"));
    }
}
