//! A worktree job's workspace file: `.aam/workspace.toml` of its
//! repository as committed at the job's base (read with git from that
//! commit, so a job gets the file of the code it runs on). `setup` runs in
//! the new worktree before the job, `teardown` when the job ends, however
//! it ends, before the commit; `copy` names files of the worker's checkout
//! (ignored ones such as `.env`), or globs of them (`globs.rs`), copied
//! into the worktree first; `cache` names paths of the worktree kept
//! between jobs whose key files are the same (`cache.rs`).

use super::git;
// One rule for the file's paths and a job's `copy` key (checked at submit).
use aam_protocol::workspace::check_copy_path;
use serde::Deserialize;
use std::path::{Component, Path};
use std::time::Duration;

/// Where the file is, relative to the repository's top.
pub const FILE: &str = ".aam/workspace.toml";
/// A setup's time when the file gives none.
pub const SETUP_TIME: Duration = Duration::from_secs(600);
/// A teardown's time when the file gives none.
pub const TEARDOWN_TIME: Duration = Duration::from_secs(300);

/// The file, checked.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Workspace {
    pub setup: Option<Vec<String>>,
    pub setup_timeout: Duration,
    pub teardown: Option<Vec<String>>,
    pub teardown_timeout: Duration,
    pub copy: Vec<String>,
    pub cache: Vec<CachePath>,
}

/// A `cache` entry: a path of the worktree (`node_modules`) saved after a
/// setup that passed and placed in later worktrees whose `key` files
/// (`package-lock.json`) are the same. Both relative to the repository's
/// top, as plain paths (`.` parts dropped, no trailing `/`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CachePath {
    pub path: String,
    pub key: Vec<String>,
}

/// The file as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWorkspace {
    #[serde(default)]
    setup: Option<Vec<String>>,
    #[serde(default)]
    setup_timeout: Option<String>,
    #[serde(default)]
    teardown: Option<Vec<String>>,
    #[serde(default)]
    teardown_timeout: Option<String>,
    #[serde(default)]
    copy: Vec<String>,
    #[serde(default)]
    cache: Vec<CachePath>,
}

/// Reads the file from `base` of the repository at `top`: None when that
/// commit has none; why it cannot be used otherwise (naming the file and
/// the key at fault).
pub fn read(top: &Path, base: &str) -> Result<Option<Workspace>, String> {
    let mut listed = git::git(top);
    listed.args(["ls-tree", "--name-only", base, "--", FILE]);
    let listed = git::run(&mut listed).map_err(|e| format!("{FILE}: {e}"))?;
    if listed.trim().is_empty() {
        return Ok(None);
    }
    let mut show = git::git(top);
    show.arg("show").arg(format!("{base}:{FILE}"));
    let text = git::run(&mut show).map_err(|e| format!("{FILE}: {e}"))?;
    parse(&text).map(Some)
}

/// Parses and checks the file's text.
pub fn parse(text: &str) -> Result<Workspace, String> {
    let deserializer = toml::Deserializer::new(text);
    let raw: RawWorkspace = serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let key = e.path().to_string();
        let message: Vec<&str> = e.inner().message().lines().map(str::trim).collect();
        let message = message.join(": ");
        let line = e.inner().span().map(|span| {
            let before = text.get(..span.start).unwrap_or(text);
            before.matches('\n').count() + 1
        });
        match (key.as_str(), line) {
            ("." | "", Some(line)) => format!("{FILE}: line {line}: {message}"),
            ("." | "", None) => format!("{FILE}: {message}"),
            _ => format!("{FILE}: key '{key}': {message}"),
        }
    })?;
    let argv = |key: &str, argv: Option<Vec<String>>| match argv {
        Some(argv) if argv.first().is_none_or(|p| p.is_empty()) => {
            Err(format!("{FILE}: key '{key}': the argv list is empty"))
        }
        argv => Ok(argv),
    };
    let time = |key: &str, text: Option<String>, default: Duration| match text {
        None => Ok(default),
        Some(text) => match aam_protocol::spec::parse_duration_ms(&text) {
            Ok(0) => Err(format!("{FILE}: key '{key}': must be longer than 0")),
            Ok(ms) => Ok(Duration::from_millis(ms)),
            Err(e) => Err(format!("{FILE}: key '{key}': {e}")),
        },
    };
    for path in &raw.copy {
        check_copy_path(path).map_err(|e| format!("{FILE}: key 'copy': {e}"))?;
        super::globs::check(path).map_err(|e| format!("{FILE}: key 'copy': {e}"))?;
    }
    let cache = check_cache(raw.cache).map_err(|(key, e)| format!("{FILE}: key '{key}': {e}"))?;
    Ok(Workspace {
        setup: argv("setup", raw.setup)?,
        setup_timeout: time("setup_timeout", raw.setup_timeout, SETUP_TIME)?,
        teardown: argv("teardown", raw.teardown)?,
        teardown_timeout: time("teardown_timeout", raw.teardown_timeout, TEARDOWN_TIME)?,
        copy: raw.copy,
        cache,
    })
}

/// Checks the `cache` entries and writes their paths plainly: each a path
/// inside the repository (no glob, not in `.git`), with at least one key
/// file, and no two that overlap (one would be placed over the other).
/// The key at fault (`cache[1].path`) and why otherwise.
fn check_cache(entries: Vec<CachePath>) -> Result<Vec<CachePath>, (String, String)> {
    let mut checked: Vec<CachePath> = Vec::with_capacity(entries.len());
    for (at, entry) in entries.into_iter().enumerate() {
        let key = |field: &str| format!("cache[{at}].{field}");
        check_copy_path(&entry.path).map_err(|e| (key("path"), e))?;
        let path = plain(&entry.path);
        if super::globs::is_glob(&path) {
            let why = format!("'{path}' is a glob: a cache path names one path");
            return Err((key("path"), why));
        }
        if path.is_empty() || path == ".git" || path.starts_with(".git/") {
            let why = format!(
                "'{}' cannot be cached (the worktree's top or its .git)",
                entry.path
            );
            return Err((key("path"), why));
        }
        if entry.key.is_empty() {
            let why = "list at least one key file (the cache is kept while they stay the same)";
            return Err((key("key"), why.to_string()));
        }
        for file in &entry.key {
            check_copy_path(file).map_err(|e| (key("key"), e))?;
        }
        let inside = |a: &str, b: &str| a == b || a.starts_with(&format!("{b}/"));
        if let Some(other) = checked
            .iter()
            .find(|o| inside(&path, &o.path) || inside(&o.path, &path))
        {
            let why = format!("'{path}' overlaps '{}', cached already", other.path);
            return Err((key("path"), why));
        }
        let key = entry.key.iter().map(|k| plain(k)).collect();
        checked.push(CachePath { path, key });
    }
    Ok(checked)
}

/// A checked relative path written plainly: `./a//b/` is `a/b`.
fn plain(path: &str) -> String {
    let parts: Vec<_> = Path::new(path)
        .components()
        .filter_map(|c| match c {
            Component::Normal(part) => Some(part.to_string_lossy()),
            _ => None,
        })
        .collect();
    parts.join("/")
}

/// Copies each `copy` entry (a file or a directory, relative to the
/// repository's top, or a glob of them) from the worker's checkout at
/// `from` to the worktree at `to`. Blocking. The log lines it makes: one
/// per path copied or entry skipped (missing, a glob matching nothing),
/// and why one could not be copied.
pub fn copy_files(from: &Path, to: &Path, entries: &[String]) -> Vec<String> {
    let mut lines = Vec::new();
    for entry in entries {
        if !super::globs::is_glob(entry) {
            copy_one(from, to, entry, &mut lines);
            continue;
        }
        match super::globs::matches(from, entry) {
            Ok(found) if found.is_empty() => lines.push(format!(
                "copy: {entry}: no match in {}, skipped",
                from.display()
            )),
            Ok(found) => {
                for path in &found {
                    copy_one(from, to, path, &mut lines);
                }
            }
            Err(e) => lines.push(format!("copy: {entry}: not copied: {e}")),
        }
    }
    lines
}

/// Copies one path of the checkout into the worktree, saying so in `lines`.
fn copy_one(from: &Path, to: &Path, path: &str, lines: &mut Vec<String>) {
    let source = from.join(path);
    if std::fs::symlink_metadata(&source).is_err() {
        lines.push(format!("copy: {path}: not in {}, skipped", from.display()));
        return;
    }
    match copy_tree(&source, &to.join(path)) {
        Ok(()) => lines.push(format!("copy: {path}")),
        Err(e) => lines.push(format!("copy: {path}: not copied: {e}")),
    }
}

/// Copies a file, a link (as a link) or a directory with what it holds.
fn copy_tree(source: &Path, target: &Path) -> std::io::Result<()> {
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let meta = std::fs::symlink_metadata(source)?;
    if meta.is_symlink() {
        let link = std::fs::read_link(source)?;
        let _ = std::fs::remove_file(target);
        return std::os::unix::fs::symlink(link, target);
    }
    if meta.is_dir() {
        std::fs::create_dir_all(target)?;
        for entry in std::fs::read_dir(source)? {
            let entry = entry?;
            copy_tree(&entry.path(), &target.join(entry.file_name()))?;
        }
        return Ok(());
    }
    std::fs::copy(source, target).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_file_parses_with_its_durations() {
        let text = "setup = [\"npm\", \"ci\"]\nsetup_timeout = \"2m\"\n\
                    teardown = [\"make\", \"stop\"]\ncopy = [\".env\", \"config/local.json\"]\n";
        let ws = parse(text).unwrap();
        assert_eq!(ws.setup, Some(vec!["npm".into(), "ci".into()]));
        assert_eq!(ws.setup_timeout, Duration::from_secs(120));
        assert_eq!(ws.teardown_timeout, TEARDOWN_TIME);
        assert_eq!(ws.copy, [".env", "config/local.json"]);
        assert_eq!(parse("").unwrap().setup_timeout, SETUP_TIME);
    }

    #[test]
    fn cache_entries_parse_with_their_paths_written_plainly() {
        let text =
            "cache = [\n  { path = \"node_modules/\", key = [\"./package-lock.json\"] },\n  \
                    { path = \"target\", key = [\"Cargo.lock\", \"rust-toolchain.toml\"] },\n]\n";
        let ws = parse(text).unwrap();
        let entry = |path: &str, key: &[&str]| CachePath {
            path: path.into(),
            key: key.iter().map(|k| k.to_string()).collect(),
        };
        assert_eq!(
            ws.cache,
            [
                entry("node_modules", &["package-lock.json"]),
                entry("target", &["Cargo.lock", "rust-toolchain.toml"]),
            ]
        );
        assert!(parse("").unwrap().cache.is_empty());
    }

    #[test]
    fn bad_files_name_the_file_and_the_key() {
        for (text, expected) in [
            ("setup = \"npm ci\"\n", "key 'setup': invalid type"),
            ("stup = [\"x\"]\n", "unknown field `stup`"),
            ("setup = []\n", "key 'setup': the argv list is empty"),
            (
                "setup_timeout = \"soon\"\n",
                "key 'setup_timeout': 'soon' is not a duration",
            ),
            (
                "copy = [\"../secrets\"]\n",
                "key 'copy': '../secrets' is not a path inside",
            ),
            (
                "copy = [\"/etc/passwd\"]\n",
                "key 'copy': '/etc/passwd' is not a path inside",
            ),
            ("setup = [\n", "invalid array"),
            (
                "copy = [\"config/[a.json\"]\n",
                "key 'copy': 'config/[a.json' is not a valid glob",
            ),
            (
                "cache = [{ path = \"../up\", key = [\"a\"] }]\n",
                "key 'cache[0].path': '../up' is not a path inside",
            ),
            (
                "cache = [{ path = \"x\", key = [\"/etc/passwd\"] }]\n",
                "key 'cache[0].key': '/etc/passwd' is not a path inside",
            ),
            (
                "cache = [{ path = \"x\", key = [] }]\n",
                "key 'cache[0].key': list at least one key file",
            ),
            (
                "cache = [{ path = \"*/dist\", key = [\"a\"] }]\n",
                "key 'cache[0].path': '*/dist' is a glob",
            ),
            (
                "cache = [{ path = \".git\", key = [\"a\"] }]\n",
                "key 'cache[0].path': '.git' cannot be cached",
            ),
            (
                "cache = [{ path = \"a\", key = [\"k\"] }, { path = \"./a/b/\", key = [\"k\"] }]\n",
                "key 'cache[1].path': 'a/b' overlaps 'a'",
            ),
            (
                "cache = [{ path = \"a\", keys = [\"k\"] }]\n",
                "unknown field `keys`",
            ),
            ("cache = [{ key = [\"k\"] }]\n", "missing field `path`"),
        ] {
            let error = parse(text).unwrap_err();
            assert!(error.starts_with(".aam/workspace.toml: "), "{error}");
            assert!(error.contains(expected), "{text:?}: {error}");
        }
    }

    #[test]
    fn copy_takes_files_and_directories_and_skips_missing_ones() {
        let from = tempfile::tempdir().unwrap();
        let to = tempfile::tempdir().unwrap();
        std::fs::write(from.path().join(".env"), "KEY=1\n").unwrap();
        std::fs::create_dir_all(from.path().join("conf/deep")).unwrap();
        std::fs::write(from.path().join("conf/deep/a.json"), "{}").unwrap();
        let paths = [".env".to_string(), "conf".into(), "gone.txt".into()];
        let lines = copy_files(from.path(), to.path(), &paths);
        assert_eq!(lines[0], "copy: .env");
        assert_eq!(lines[1], "copy: conf");
        assert!(lines[2].starts_with("copy: gone.txt: not in "), "{lines:?}");
        assert_eq!(
            std::fs::read_to_string(to.path().join(".env")).unwrap(),
            "KEY=1\n"
        );
        assert!(to.path().join("conf/deep/a.json").is_file());
    }

    #[test]
    fn copy_globs_copy_each_match_and_skip_ones_matching_nothing() {
        let from = tempfile::tempdir().unwrap();
        let to = tempfile::tempdir().unwrap();
        for file in ["config/a.local.json", "config/b.json", "app/.env"] {
            let path = from.path().join(file);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, file).unwrap();
        }
        let entries = [
            "config/*.local.json".to_string(),
            "**/.env".into(),
            "*.pem".into(),
        ];
        let lines = copy_files(from.path(), to.path(), &entries);
        assert_eq!(lines[..2], ["copy: config/a.local.json", "copy: app/.env"]);
        assert!(
            lines[2].starts_with("copy: *.pem: no match in "),
            "{lines:?}"
        );
        assert!(to.path().join("config/a.local.json").is_file());
        assert!(!to.path().join("config/b.json").exists());
        assert_eq!(
            std::fs::read_to_string(to.path().join("app/.env")).unwrap(),
            "app/.env"
        );
    }
}
