//! A tool call said short, as status lines show it: the tool's name and
//! the one argument that tells what it works on (`Edit src/lib.rs`,
//! `Bash cargo test`, `Grep fn main`), a path relative to the run's
//! working directory when it is under it.

use super::events::{Text, ToolInput};
use crate::agent_output::cap_text;

/// Most bytes of a tool call said short.
pub const MAX_TOOL_TEXT: usize = 120;

/// `name` called with `input`, short; paths under `cwd` are relative.
pub fn describe(name: &str, input: &ToolInput<'_>, cwd: Option<&str>) -> String {
    // The first argument that says what the call is about, in the order
    // Claude Code's tools use them (Grep has a pattern and a path: the
    // pattern says more).
    let argument = relative(&input.file_path, cwd)
        .or_else(|| relative(&input.notebook_path, cwd))
        .or_else(|| first_line(&input.command))
        .or_else(|| first_line(&input.pattern))
        .or_else(|| first_line(&input.url))
        .or_else(|| first_line(&input.query))
        .or_else(|| first_line(&input.description))
        .or_else(|| first_line(&input.skill))
        .or_else(|| relative(&input.path, cwd))
        .or_else(|| first_line(&input.prompt));
    let text = match argument {
        Some(argument) if !argument.is_empty() => format!("{name} {argument}"),
        _ => name.to_string(),
    };
    cap_text(&text, MAX_TOOL_TEXT)
}

/// The first non-blank line of a text argument, trimmed.
fn first_line<'t>(text: &'t Text<'_>) -> Option<&'t str> {
    text.as_deref()?
        .lines()
        .map(str::trim)
        .find(|line| !line.is_empty())
}

/// A path argument, relative to `cwd` when it is inside it.
fn relative<'t>(path: &'t Text<'_>, cwd: Option<&str>) -> Option<&'t str> {
    path.as_deref().map(|p| relative_to(p, cwd))
}

/// `path` relative to `cwd` when it is inside it; as it is otherwise.
fn relative_to<'p>(path: &'p str, cwd: Option<&str>) -> &'p str {
    let Some(cwd) = cwd
        .map(|c| c.trim_end_matches('/'))
        .filter(|c| !c.is_empty())
    else {
        return path;
    };
    match path.strip_prefix(cwd) {
        Some("") | Some("/") => ".",
        Some(rest) if rest.starts_with('/') => &rest[1..],
        _ => path,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(name: &str, input: &str, cwd: Option<&str>) -> String {
        let input: ToolInput = serde_json::from_str(input).unwrap();
        describe(name, &input, cwd)
    }

    #[test]
    fn each_tool_shows_what_it_works_on() {
        let cwd = Some("/work/repo");
        assert_eq!(
            call(
                "Edit",
                r#"{"file_path":"/work/repo/src/lib.rs","old_string":"a"}"#,
                cwd
            ),
            "Edit src/lib.rs"
        );
        assert_eq!(
            call("Read", r#"{"file_path":"/etc/hosts"}"#, cwd),
            "Read /etc/hosts"
        );
        assert_eq!(
            call(
                "Bash",
                r#"{"command":"\n  cargo test --all\necho done","description":"Run tests"}"#,
                cwd
            ),
            "Bash cargo test --all"
        );
        assert_eq!(
            call("Grep", r#"{"pattern":"fn main","path":"/work/repo"}"#, cwd),
            "Grep fn main"
        );
        assert_eq!(call("Glob", r#"{"path":"/work/repo/"}"#, cwd), "Glob .");
        assert_eq!(
            call(
                "Task",
                r#"{"description":"Count files","prompt":"Count them"}"#,
                cwd
            ),
            "Task Count files"
        );
        assert_eq!(call("TodoWrite", r#"{"todos":[]}"#, cwd), "TodoWrite");
        // A sibling directory whose name starts like the cwd is not under it.
        assert_eq!(
            call("Write", r#"{"file_path":"/work/repo2/x"}"#, cwd),
            "Write /work/repo2/x"
        );
    }

    #[test]
    fn a_long_argument_is_cut_on_a_character_boundary() {
        let long = format!(r#"{{"command":"echo {}"}}"#, "é".repeat(200));
        let text = call("Bash", &long, None);
        assert!(text.len() <= MAX_TOOL_TEXT, "{}", text.len());
        assert!(
            text.starts_with("Bash echo éé") && text.ends_with('…'),
            "{text}"
        );
    }
}
