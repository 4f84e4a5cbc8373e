//! The command line as clap parses it: the commands, their arguments and
//! the flags that say where the manager is.

use clap::parser::ValueSource;
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use std::ffi::OsString;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "aam",
    version,
    about = "aam, the async agent manager: run many agent jobs at once without waiting on them"
)]
pub struct Cli {
    #[command(flatten)]
    pub manager_flags: ManagerFlags,
    #[command(subcommand)]
    pub command: Command,
}

/// Where the manager is and how to authenticate to it: flags every
/// command takes, before or after its name (`endpoint.rs` resolves them).
/// Global, though not in their attributes: see `Cli::parse_line`.
#[derive(Args, Clone)]
pub struct ManagerFlags {
    /// Manager address [default: the one `aam up` started here, else 127.0.0.1:7410]
    #[arg(long, env = "AAM_MANAGER")]
    pub manager: Option<String>,
    /// Token (else AAM_TOKEN, else --token-file, else the token of `aam up` here, else ./aam-data/token)
    #[arg(long, env = "AAM_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// File holding the token
    #[arg(long, env = "AAM_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// Trust this certificate or CA file (PEM) for the manager [default:
    /// tls/cert.pem next to the token file, of `aam up` here, else ./aam-data/tls/cert.pem]
    #[arg(long, env = "AAM_CA")]
    pub ca: Option<PathBuf>,
    /// Trust exactly the manager certificate of this SHA-256 fingerprint
    /// (hex, colons optional, `sha256:` optional; the manager logs it)
    #[arg(long, env = "AAM_FINGERPRINT")]
    pub fingerprint: Option<String>,
    /// Our certificate (PEM), for a manager that requires one (--client-ca)
    #[arg(long, env = "AAM_CERT")]
    pub cert: Option<PathBuf>,
    /// The key of --cert (PEM)
    #[arg(long, env = "AAM_KEY")]
    pub key: Option<PathBuf>,
}

#[derive(Subcommand)]
// Each command's arguments are built only when that command is parsed:
// building all of them cost every `aam` start about 50 page faults
// (about 0.2 ms here, BENCHMARKS.md, twelfth session), for one command used.
#[command(defer = true)]
pub enum Command {
    /// Submit a batch file; prints the session id once it is durably stored
    Submit {
        file: PathBuf,
        #[arg(long)]
        json: bool,
        /// Then wait for the session to end (exit code as `aam wait`)
        #[arg(long)]
        wait: bool,
        /// Submitting again with the same key returns the first session
        /// instead of starting a second one
        #[arg(long)]
        idempotency_key: Option<String>,
    },
    /// The sessions, newest last, or one session's jobs
    Status {
        session: Option<String>,
        #[arg(long)]
        json: bool,
        /// Skip this many: the session's first jobs, or without SESSION the
        /// newest sessions
        #[arg(long, default_value_t = 0)]
        offset: u32,
        /// Show at most this many jobs, or without SESSION the newest
        /// sessions (0: all of them); counts are always whole
        #[arg(long, default_value_t = crate::cmd::status::DEFAULT_LIMIT)]
        limit: u32,
    },
    /// Block until a session ends; exit 0 if every job succeeded, 1 if not
    Wait {
        session: String,
        /// Give up after this long (exit 1): seconds (`90`, `2.5`) or a
        /// duration (`90s`, `10m`, `1h30m`)
        #[arg(long)]
        timeout: Option<String>,
    },
    /// The results summary (Markdown), or every job's whole output with --json
    Results {
        session: String,
        #[arg(long)]
        json: bool,
        /// Only the jobs that did not succeed
        #[arg(long)]
        failed: bool,
    },
    /// Run the failed, timed out, cancelled and skipped jobs of a session
    /// again as new attempts, keeping what succeeded
    Retry { session: String },
    /// A job's captured output: aam logs SESSION/JOB (an agent job's as a
    /// readable transcript)
    Logs {
        #[arg(value_name = "SESSION/JOB")]
        job: String,
        /// Keep printing output as it comes, until the job ends
        #[arg(long, short)]
        follow: bool,
        /// The bytes as captured, also for an agent job
        #[arg(long)]
        raw: bool,
    },
    /// Ask an agent job (SESSION/JOB) a follow-up: a new session of one job
    /// that resumes its agent's conversation with PROMPT; prints its id
    Continue {
        #[arg(value_name = "SESSION/JOB")]
        job: String,
        prompt: String,
        #[arg(long)]
        json: bool,
    },
    /// Say something to a running agent (SESSION/JOB), or to every running
    /// agent of a session that takes input (SESSION): one more message of
    /// its conversation, on its stdin
    Say {
        #[arg(value_name = "SESSION[/JOB]")]
        target: String,
        /// The message (or --file)
        text: Option<String>,
        /// Read the message from this file
        #[arg(long)]
        file: Option<std::path::PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Allow a running agent's permission request (SESSION/JOB, and the
    /// request's id when more than one is open; `aam status` lists them)
    Allow {
        #[arg(value_name = "SESSION/JOB")]
        job: String,
        request: Option<u32>,
        /// Allow the same tool for the rest of this job
        #[arg(long)]
        always: bool,
        #[arg(long)]
        json: bool,
    },
    /// Deny a running agent's permission request (SESSION/JOB [REQUEST]);
    /// the agent is told the message
    Deny {
        #[arg(value_name = "SESSION/JOB")]
        job: String,
        request: Option<u32>,
        /// What the agent is told [default: denied by TOKEN]
        #[arg(long)]
        message: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// A worktree job's patch (SESSION/JOB), as `git format-patch` wrote
    /// it (for a job of variants, its winner's)
    Diff {
        #[arg(value_name = "SESSION/JOB")]
        job: String,
        /// The branch, commits, diffstat and patch as JSON
        #[arg(long)]
        json: bool,
    },
    /// Apply a worktree job's patch (SESSION/JOB) in this directory's
    /// repository as a new branch named like the job's, and check it out
    Apply {
        #[arg(value_name = "SESSION/JOB")]
        job: String,
        #[arg(long)]
        json: bool,
    },
    /// A live view of a session's jobs until it ends
    Watch { session: String },
    /// Approve a gate (SESSION/JOB): it counts as succeeded
    Approve {
        #[arg(value_name = "SESSION/JOB")]
        job: String,
        #[arg(long)]
        comment: Option<String>,
    },
    /// Reject a gate (SESSION/JOB): it counts as failed
    Reject {
        #[arg(value_name = "SESSION/JOB")]
        job: String,
        #[arg(long)]
        comment: Option<String>,
    },
    /// Cancel a session (SESSION) or one job (SESSION/JOB): jobs not started
    /// end at once; running ones get SIGTERM, then SIGKILL after the grace
    Cancel {
        #[arg(value_name = "SESSION[/JOB]")]
        target: String,
        /// Time between SIGTERM and SIGKILL [default: the job's grace, 10s]
        #[arg(long)]
        grace: Option<String>,
        /// Return at once instead of when the running jobs have stopped
        #[arg(long)]
        no_wait: bool,
        #[arg(long)]
        json: bool,
    },
    /// Every agent jobs can name: from the config and from agent
    /// definition files, with where each comes from
    Agents {
        #[arg(long)]
        json: bool,
    },
    /// Remove finished sessions older than the retention (or --older-than)
    /// with their outputs, now, and say what was freed
    Gc {
        /// Age instead of the configured retention (e.g. 7d, 12h, 0s)
        #[arg(long)]
        older_than: Option<String>,
    },
    /// The audit log (admin token): who did, or was refused, what and when
    Audit {
        /// Only records of this recent past (e.g. 1h, 7d)
        #[arg(long)]
        since: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Connected workers
    Workers {
        #[arg(long)]
        json: bool,
    },
    /// Shared resources: capacity, in use and who holds them
    Resources {
        #[arg(long)]
        json: bool,
    },
    /// Accounts: paused until when, running jobs, cost so far
    Accounts {
        #[arg(long)]
        json: bool,
    },
    /// Providers of workers on demand: connected, launching, last error
    Providers {
        #[arg(long)]
        json: bool,
    },
    /// The sessions, newest last (as `aam status` without SESSION)
    Sessions {
        #[arg(long)]
        json: bool,
        /// Skip the newest this many
        #[arg(long, default_value_t = 0)]
        offset: u32,
        /// Show at most the newest this many (0: all of them)
        #[arg(long, default_value_t = crate::cmd::status::DEFAULT_LIMIT)]
        limit: u32,
    },
    /// Serve aam's tools to an AI assistant over MCP on stdin/stdout
    /// (register it with: claude mcp add aam -- aam mcp)
    Mcp,
    /// Print shell completions: aam completions bash > ~/.local/share/bash-completion/completions/aam
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Start a manager and a local worker in the background (state, token
    /// and logs under ./.aam); aam commands run here then use them
    Up {
        /// Jobs run at once [default: number of CPUs]
        #[arg(long)]
        slots: Option<u32>,
        /// Manager config file (for agents and defaults)
        #[arg(long, env = "AAM_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Stop what `aam up` started here, letting running jobs finish briefly
    Down,
    /// The background process of `aam up`
    #[command(name = "__serve", hide = true)]
    Serve {
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long)]
        slots: Option<u32>,
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Run a batch on an embedded manager and worker, show progress, print results
    Run(RunArgs),
}

#[derive(Args)]
pub struct RunArgs {
    pub file: PathBuf,
    /// Jobs run at once [default: number of CPUs]
    #[arg(long)]
    pub slots: Option<u32>,
    /// Where the embedded manager keeps its state
    #[arg(long, default_value = ".aam")]
    pub data_dir: PathBuf,
    /// Manager config file (for agents)
    #[arg(long, env = "AAM_CONFIG")]
    pub config: Option<PathBuf>,
    /// Print the results as JSON instead of Markdown
    #[arg(long)]
    pub json: bool,
}

impl Cli {
    /// Parses the command line; on `--help`, `--version` or an error,
    /// prints it and exits, as clap does.
    ///
    /// The manager flags are global, but clap makes an argument global by
    /// copying it into every command at each start (about 40 page faults
    /// and 0.1 ms here, for the one command used; BENCHMARKS.md,
    /// thirteenth session). So when the line names a command, they are
    /// the root's and that command's own, and the command's win (as with
    /// clap's globals, where the last one given wins). A line that names
    /// none (`aam --version`) needs no copies; anything else (`aam help
    /// CMD`, a mistyped command) gets clap's globals (`command`).
    pub fn parse_line() -> Cli {
        Cli::parse_words(std::env::args_os().collect()).unwrap_or_else(|e| e.exit())
    }

    /// `parse_line` of `line` (the program's name first), its error kept.
    fn parse_words(line: Vec<OsString>) -> Result<Cli, clap::Error> {
        let root = Cli::command();
        let (root, name) = match command_word(&root, &line) {
            Some((at, Named::Command(name))) => {
                (with_own_manager_flags(root, &name), Some((at, name)))
            }
            Some((_, Named::Other)) => (command(), None),
            None => (root, None),
        };
        let matches = root
            .try_get_matches_from(&line)
            .map_err(|e| with_job_tip(e, &line, name.as_ref()))?;
        let mut cli = Cli::from_arg_matches(&matches)?;
        if let (Some(_), Some((_, own))) = (&name, matches.subcommand()) {
            cli.manager_flags.given_after(own)?;
        }
        Ok(cli)
    }
}

/// `root` with the manager flags made the command `name`'s own too,
/// numbered as clap numbers a global it copies in (so `--help` lists the
/// command's own arguments among them, as before).
fn with_own_manager_flags(root: clap::Command, name: &str) -> clap::Command {
    let flags = ManagerFlags::of(&root);
    root.mut_subcommand(name, |own| own.args(flags).next_display_order(0))
}

/// The command line as clap defines it, the manager flags global: for
/// what needs every command whole (completions, `aam help CMD`).
pub fn command() -> clap::Command {
    Cli::command().mut_args(|arg| {
        let global = ManagerFlags::IDS.contains(&arg.get_id().as_str());
        arg.global(global)
    })
}

impl ManagerFlags {
    /// Their argument ids.
    const IDS: [&'static str; 7] = [
        "manager",
        "token",
        "token_file",
        "ca",
        "fingerprint",
        "cert",
        "key",
    ];

    /// The root's definitions of them, as clap's globals copy them.
    fn of(root: &clap::Command) -> Vec<clap::Arg> {
        let ours = |arg: &&clap::Arg| ManagerFlags::IDS.contains(&arg.get_id().as_str());
        root.get_arguments().filter(ours).cloned().collect()
    }

    /// Takes the flags given on the command line after the command's
    /// name (`own`: the command's matches) over those before it and over
    /// the environment.
    fn given_after(&mut self, own: &ArgMatches) -> Result<(), clap::Error> {
        // Every field named: a new flag will not compile until it is here.
        let ManagerFlags {
            manager,
            token,
            token_file,
            ca,
            fingerprint,
            cert,
            key,
        } = ManagerFlags::from_arg_matches(own)?;
        let given = |id: &str| own.value_source(id) == Some(ValueSource::CommandLine);
        macro_rules! take_given {
            ($($flag:ident),+) => {$(
                if given(stringify!($flag)) {
                    self.$flag = $flag;
                }
            )+};
        }
        take_given!(manager, token, token_file, ca, fingerprint, cert, key);
        Ok(())
    }
}

/// The commands whose first argument names a job as one word,
/// `SESSION/JOB`.
const JOB_COMMANDS: [&str; 9] = [
    "logs", "continue", "allow", "deny", "diff", "apply", "approve", "reject", "cancel",
];

/// clap's error for `aam logs s5 tests` (a job named as two words) with a
/// tip that gives the line as it should be: `aam logs s5/tests`. `command`
/// is the command's name and where it stands in `line`.
fn with_job_tip(
    mut error: clap::Error,
    line: &[OsString],
    command: Option<&(usize, String)>,
) -> clap::Error {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    let Some(&(at, ref name)) = command else {
        return error;
    };
    if !JOB_COMMANDS.contains(&name.as_str()) {
        return error;
    }
    // An extra word is an unknown argument; for `allow` and `deny` it is a
    // request id that does not parse.
    if !matches!(
        error.kind(),
        ErrorKind::UnknownArgument | ErrorKind::ValueValidation
    ) {
        return error;
    }
    let Some(words) = line
        .iter()
        .map(|w| w.to_str())
        .collect::<Option<Vec<&str>>>()
    else {
        return error;
    };
    let (Some(session), Some(job)) = (words.get(at + 1), words.get(at + 2)) else {
        return error;
    };
    let plain = |w: &str| !w.is_empty() && !w.starts_with('-') && !w.contains('/');
    // `aam cancel s5 s6` names two sessions, not a job.
    if !plain(session) || !plain(job) || job.parse::<aam_protocol::SessionId>().is_ok() {
        return error;
    }
    let mut fixed: Vec<String> = words.iter().map(|w| shell_word(w)).collect();
    fixed.splice(at + 1..at + 3, [shell_word(&format!("{session}/{job}"))]);
    fixed[0] = "aam".into();
    let tip = format!(
        "a job is named in one word, SESSION/JOB: '{}'",
        fixed.join(" ")
    );
    let mut tips = match error.get(ContextKind::Suggested) {
        Some(ContextValue::StyledStrs(tips)) => tips.clone(),
        _ => Vec::new(),
    };
    tips.insert(0, tip.into());
    error.insert(ContextKind::Suggested, ContextValue::StyledStrs(tips));
    error
}

/// `word` as a shell reads it back: double-quoted (`"`, `\`, `$` and `` ` ``
/// escaped) when it holds anything but letters, digits and `-_./:=@%+,`.
fn shell_word(word: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "-_./:=@%+,".contains(c);
    if !word.is_empty() && word.chars().all(safe) {
        return word.to_string();
    }
    let mut quoted = String::from('"');
    for c in word.chars() {
        if matches!(c, '"' | '\\' | '$' | '`') {
            quoted.push('\\');
        }
        quoted.push(c);
    }
    quoted.push('"');
    quoted
}

/// What the first word of a command line that is not a root flag (or a
/// root flag's value) names.
#[derive(Debug, PartialEq)]
enum Named {
    /// A command (its name, not an alias).
    Command(String),
    /// Something else: `help`, a mistyped command, `--`, a short flag.
    Other,
}

/// What `line` (with the program's name first) names as its command;
/// None if it names none (`aam`, `aam --version`).
#[cfg(test)]
fn named_command(root: &clap::Command, line: &[OsString]) -> Option<Named> {
    command_word(root, line).map(|(_, named)| named)
}

/// `named_command`, with where in `line` the word that names it stands.
fn command_word(root: &clap::Command, line: &[OsString]) -> Option<(usize, Named)> {
    let mut words = line.iter().enumerate().skip(1);
    while let Some((at, word)) = words.next() {
        let Some(word) = word.to_str() else {
            return Some((at, Named::Other));
        };
        if let Some(long) = word.strip_prefix("--") {
            let takes_value = root
                .get_arguments()
                .any(|arg| arg.get_long() == Some(long) && arg.get_action().takes_values());
            if takes_value {
                words.next();
            } else if long.is_empty() {
                return Some((at, Named::Other));
            }
            // `--flag=value`, `--help`, `--version` and unknown flags
            // (clap's to judge) take no next word.
            continue;
        }
        if word.starts_with('-') {
            return Some((at, Named::Other));
        }
        return Some(match root.find_subcommand(word) {
            Some(command) => (at, Named::Command(command.get_name().to_string())),
            None => (at, Named::Other),
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(line: &str) -> Vec<OsString> {
        line.split_whitespace().map(OsString::from).collect()
    }

    fn named(line: &str) -> Option<Named> {
        named_command(&Cli::command(), &words(line))
    }

    #[test]
    fn the_flag_ids_are_those_of_the_flags() {
        let flags = ManagerFlags::augment_args(clap::Command::new("aam"));
        let ids: Vec<&str> = flags.get_arguments().map(|a| a.get_id().as_str()).collect();
        assert_eq!(ids, ManagerFlags::IDS);
    }

    #[test]
    fn the_command_is_the_first_word_past_the_root_flags_and_their_values() {
        let command = |name: &str| Some(Named::Command(name.into()));
        assert_eq!(named("aam workers"), command("workers"));
        assert_eq!(
            named("aam --manager h:1 --token=t --ca c.pem status s1"),
            command("status")
        );
        // A flag's value that looks like a command is the flag's.
        assert_eq!(named("aam --token workers status"), command("status"));
        assert_eq!(named("aam"), None);
        assert_eq!(named("aam --version"), None);
        assert_eq!(named("aam --help workers"), command("workers"));
        for other in ["aam help workers", "aam wrkers", "aam -- workers", "aam -h"] {
            assert_eq!(named(other), Some(Named::Other), "{other}");
        }
    }

    #[test]
    fn a_job_named_in_two_words_gets_a_tip_with_the_line_as_it_should_be() {
        let error = |line: &str| match Cli::parse_words(words(line)) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("{line}: parsed"),
        };
        let logs = error("aam logs s5 tests");
        assert!(
            logs.contains("tip: a job is named in one word, SESSION/JOB: 'aam logs s5/tests'"),
            "{logs}"
        );
        let flags = error("aam --token t continue s5 review again --json");
        assert!(
            flags.contains("'aam --token t continue s5/review again --json'"),
            "{flags}"
        );
        // The job after the command, not a flag's value of the same name.
        let flag = error("aam --token logs logs s5 x");
        assert!(flag.contains("'aam --token logs logs s5/x'"), "{flag}");
        // `allow` and `deny` take a request id second.
        let allow = error("aam allow s5 tests");
        assert!(allow.contains("'aam allow s5/tests'"), "{allow}");
        // Words a shell would split are quoted back.
        let line = vec![
            OsString::from("aam"),
            OsString::from("continue"),
            OsString::from("s5"),
            OsString::from("review"),
            OsString::from("fix \"the\" $tests"),
        ];
        let quoted = Cli::parse_words(line).err().unwrap().to_string();
        assert!(
            quoted.contains(r#"'aam continue s5/review "fix \"the\" \$tests"'"#),
            "{quoted}"
        );
        // Not for a line whose job is already one word, nor for a command
        // that names no job, nor for what is not an extra word, nor for two
        // sessions.
        for line in [
            "aam logs s5/tests extra",
            "aam status s5 tests",
            "aam logs s5 --no-such-flag",
            "aam cancel s5 s6",
        ] {
            let other = error(line);
            assert!(!other.contains("a job is named"), "{line}: {other}");
        }
        assert!(Cli::parse_words(words("aam logs s5/tests")).is_ok());
    }

    #[test]
    fn manager_flags_go_before_or_after_the_command_and_the_later_wins() {
        let flags = |line: &str| Cli::parse_words(words(line)).unwrap().manager_flags;
        let after = flags("aam workers --token b --manager h:2");
        assert_eq!(after.token.as_deref(), Some("b"));
        assert_eq!(after.manager.as_deref(), Some("h:2"));
        let before = flags("aam --token a --fingerprint f workers");
        assert_eq!(before.token.as_deref(), Some("a"));
        assert_eq!(before.fingerprint.as_deref(), Some("f"));
        let both = flags("aam --token a --key k.pem workers --token b");
        assert_eq!(both.token.as_deref(), Some("b"));
        assert_eq!(both.key, Some(PathBuf::from("k.pem")));
        // clap's own globals (`command`) read the same lines the same way.
        for line in [
            "aam workers --token b --manager h:2",
            "aam --token a --key k.pem workers --token b",
        ] {
            let globals = command().try_get_matches_from(words(line)).unwrap();
            let globals = Cli::from_arg_matches(&globals).unwrap().manager_flags;
            assert_eq!(globals.token, flags(line).token, "{line}");
            assert_eq!(globals.manager, flags(line).manager, "{line}");
            assert_eq!(globals.key, flags(line).key, "{line}");
        }
    }

    #[test]
    fn every_command_s_help_lists_the_manager_flags_as_clap_s_globals_do() {
        let help = |mut root: clap::Command, name: &str| {
            root.build();
            let mut own = root.find_subcommand_mut(name).unwrap().clone();
            own.render_help().to_string()
        };
        let names: Vec<String> = Cli::command()
            .get_subcommands()
            .map(|c| c.get_name().to_string())
            .collect();
        assert!(names.len() > 20, "{names:?}");
        for name in &names {
            let own = help(with_own_manager_flags(Cli::command(), name), name);
            assert_eq!(own, help(command(), name), "aam {name} --help");
            assert!(own.contains("--fingerprint"), "{own}");
        }
    }
}
