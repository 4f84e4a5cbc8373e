//! The `aam` command-line client: submit sessions, watch and query them,
//! and `aam run` a batch on an embedded manager and worker. This file
//! starts the process and hands each command to its module in `cmd/`.

/// `eprintln!` written in one `write`: stderr is unbuffered, and
/// `eprintln!` writes each piece of its format on its own (a progress
/// line was eleven system calls, interleaved with other writers').
macro_rules! stderr_line {
    ($($arg:tt)*) => {
        $crate::write_stderr_line(format_args!($($arg)*))
    };
}

mod args;
mod batch;
mod client;
mod cmd;
mod embedded;
mod endpoint;
mod exit;
mod git_apply;
mod local;
mod mcp;
mod progress;
mod render;

use args::{Cli, Command, ManagerFlags};

fn main() {
    // The permission prompt of an agent run by the worker `aam run` embeds
    // (its MCP config names this executable).
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == "permission-prompt")
    {
        aam_worker::permission_prompt::main_from_args();
    }
    let cli = Cli::parse_line();
    // Quiet by default: the CLI's own output is the interface. (The
    // background process of `aam up` is started with AAM_LOG=info.)
    aam_manager::logging::init(
        &std::env::var("AAM_LOG").unwrap_or_else(|_| "warn".into()),
        false,
    );
    let code = match execute(cli) {
        Ok(code) => code,
        Err(e) => {
            stderr_line!("aam: {e:#}");
            exit::code_of(&e)
        }
    };
    std::process::exit(code);
}

/// Runs a command: those that talk to a manager on a single-threaded
/// runtime, the others (which start one, or stop one) as they are.
fn execute(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Command::Up { slots, config } => cmd::up::run(slots, config),
        Command::Down => cmd::down::run(),
        Command::Serve {
            data_dir,
            slots,
            config,
        } => cmd::serve::run(data_dir, slots, config),
        Command::Run(args) => cmd::run::run(args),
        Command::Completions { shell } => cmd::completions::run(shell),
        command => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(remote(&cli.manager_flags, command))
        }
    }
}

/// Runs a command that talks to the manager the flags point to.
async fn remote(flags: &ManagerFlags, command: Command) -> anyhow::Result<i32> {
    match command {
        Command::Submit {
            file,
            json,
            wait,
            idempotency_key,
        } => cmd::submit::run(flags, &file, json, wait, idempotency_key).await,
        Command::Status {
            session,
            json,
            offset,
            limit,
        } => cmd::status::run(flags, session, json, offset, limit).await,
        Command::Sessions {
            json,
            offset,
            limit,
        } => cmd::sessions::run(flags, json, offset, limit).await,
        Command::Wait { session, timeout } => cmd::wait::run(flags, &session, timeout).await,
        Command::Results {
            session,
            json,
            failed,
        } => cmd::results::run(flags, &session, json, failed).await,
        Command::Retry { session } => cmd::retry::run(flags, &session).await,
        Command::Cancel {
            target,
            grace,
            no_wait,
            json,
        } => cmd::cancel::run(flags, &target, grace, no_wait, json).await,
        Command::Logs { job, follow, raw } => cmd::logs::run(flags, &job, follow, raw).await,
        Command::Continue { job, prompt, json } => {
            cmd::continue_::run(flags, &job, prompt, json).await
        }
        Command::Say {
            target,
            text,
            file,
            json,
        } => cmd::say::run(flags, &target, text, file, json).await,
        Command::Allow {
            job,
            request,
            always,
            json,
        } => {
            let answer = cmd::permission::Answer {
                request,
                allow: true,
                always,
                message: None,
            };
            cmd::permission::run(flags, &job, answer, json).await
        }
        Command::Deny {
            job,
            request,
            message,
            json,
        } => {
            let answer = cmd::permission::Answer {
                request,
                allow: false,
                always: false,
                message,
            };
            cmd::permission::run(flags, &job, answer, json).await
        }
        Command::Diff { job, json } => cmd::diff::run(flags, &job, json).await,
        Command::Apply { job, json } => cmd::apply::run(flags, &job, json).await,
        Command::Approve { job, comment } => cmd::decide::run(flags, &job, true, comment).await,
        Command::Reject { job, comment } => cmd::decide::run(flags, &job, false, comment).await,
        Command::Watch { session } => cmd::watch::run(flags, &session).await,
        Command::Gc { older_than } => cmd::gc::run(flags, older_than).await,
        Command::Audit { since, json } => cmd::audit::run(flags, since, json).await,
        Command::Agents { json } => cmd::agents::run(flags, json).await,
        Command::Workers { json } => cmd::workers::run(flags, json).await,
        Command::Resources { json } => cmd::resources::run(flags, json).await,
        Command::Accounts { json } => cmd::accounts::run(flags, json).await,
        Command::Providers { json } => cmd::providers::run(flags, json).await,
        Command::Mcp => mcp::run(flags).await,
        Command::Up { .. }
        | Command::Down
        | Command::Serve { .. }
        | Command::Run(_)
        | Command::Completions { .. } => {
            unreachable!("started in execute, without a manager to talk to")
        }
    }
}

/// The line `stderr_line!` formats, with its newline, in one write. A
/// stderr that cannot be written to is not worth failing the command for.
fn write_stderr_line(args: std::fmt::Arguments) {
    use std::io::Write;
    let mut line = args.to_string();
    line.push('\n');
    let _ = std::io::stderr().write_all(line.as_bytes());
}
