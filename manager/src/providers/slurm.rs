//! The Slurm kind: each worker a batch job (`sbatch --parsable --wrap`) of
//! the host's `aam-worker`, named `aam-INSTALL-WORKER` so `squeue` finds
//! everything this install submitted; `scancel` stops one, `scontrol show
//! job` says why one went. Slurm's own environment (`SLURM_CONF`, `PATH`)
//! is the manager's: the commands run as the manager's user. Works with
//! Slurm 22.05 and later (`squeue --json` where it answers, else `squeue
//! -h -o`).

use super::config::{Provider, SlurmOptions};
use super::engine::{
    engine_name, run_command, worker_of, Engine, EngineFuture, Listed, Phase, WorkerSpec,
};
use serde_json::Value;
use std::cell::Cell;

/// How long a worker told to stop by Slurm lets its jobs run before it
/// stops them (and they are requeued).
pub const SLURM_DRAIN: &str = "15s";

/// A Slurm provider.
pub struct Slurm {
    pub def: Provider,
    pub install: String,
    pub options: SlurmOptions,
    /// Whether `squeue --json` answered here; set by the first listing.
    json: Cell<Option<bool>>,
}

impl Slurm {
    pub fn new(def: Provider, install: String, options: SlurmOptions) -> Slurm {
        Slurm {
            def,
            install,
            options,
            json: Cell::new(None),
        }
    }

    /// The argv of `sbatch` for one worker: the provider's options, then
    /// its extra `sbatch_args`, then the worker's command line (the token
    /// travels in the job's environment, exported from sbatch's own).
    pub fn sbatch_args(&self, spec: &WorkerSpec<'_>) -> Vec<String> {
        let o = &self.options;
        let mut args: Vec<String> = vec![
            "--parsable".into(),
            format!("--job-name={}", engine_name(&self.install, spec.worker)),
            format!("--output={}", o.output),
            "--ntasks=1".into(),
            format!("--cpus-per-task={}", o.cpus_per_worker),
        ];
        for (key, value) in [
            ("partition", &o.partition),
            ("time", &o.time),
            ("mem", &o.mem),
            ("account", &o.account),
        ] {
            if let Some(v) = value {
                args.push(format!("--{key}={v}"));
            }
        }
        if o.time.is_some() {
            // A minute before the time limit the worker is told to drain,
            // so its jobs are requeued, not killed with it.
            args.push("--signal=B:TERM@60".into());
        }
        args.extend(o.sbatch_args.iter().cloned());
        let mut command = vec![self.def.worker_bin.clone()];
        command.extend(super::worker_args(&self.def, spec));
        // Slurm kills a cancelled job's processes `KillWait` (30 s by
        // default) after its SIGTERM: running jobs are stopped and handed
        // back well before.
        command.extend(["--drain-timeout".into(), SLURM_DRAIN.into()]);
        let line: Vec<String> = command.iter().map(|a| shell_quote(a)).collect();
        args.push(format!("--wrap=exec {}", line.join(" ")));
        args
    }

    async fn squeue(&self) -> Result<Vec<Listed>, String> {
        if self.json.get() != Some(false) {
            let args = ["--json", "--states=all"].map(String::from);
            match run_command("squeue", &args, &[]).await {
                Ok(text) => {
                    if let Some(listed) = parse_squeue_json(&self.install, &text) {
                        self.json.set(Some(true));
                        return Ok(listed);
                    }
                    self.json.set(Some(false));
                }
                // An squeue without JSON support says so; one that cannot
                // reach slurmctld fails the same way without `--json`.
                Err(e) if self.json.get() == Some(true) => return Err(e),
                Err(_) => self.json.set(Some(false)),
            }
        }
        let args = ["-h", "--states=all", "-o", "%i|%j|%T|%r"].map(String::from);
        let text = run_command("squeue", &args, &[]).await?;
        Ok(parse_squeue_text(&self.install, &text))
    }
}

/// Quotes one word for the `sh -c` that `--wrap` makes.
fn shell_quote(word: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_./:=@,+%".contains(c);
    if !word.is_empty() && word.chars().all(plain) {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// Slurm's job state, as a phase.
fn phase(state: &str, reason: &str, exit: Option<&str>) -> Phase {
    let said = match (reason, exit) {
        ("None" | "", None) => state.to_string(),
        ("None" | "", Some(x)) => format!("{state}, exit {x}"),
        (r, None) => format!("{state}: {r}"),
        (r, Some(x)) => format!("{state}: {r}, exit {x}"),
    };
    match state {
        // Completing still holds its allocation (a worker draining after
        // `scancel`): it counts against `max_workers` until it is gone.
        "RUNNING" | "COMPLETING" | "STOPPED" => Phase::Running,
        "PENDING" | "CONFIGURING" | "REQUEUED" | "RESIZING" | "SUSPENDED" => Phase::Pending(said),
        _ => Phase::Ended(said),
    }
}

/// `squeue --json`'s jobs of this install; `None` if it is not the JSON
/// `squeue` speaks (22.05: `job_state` a string; 23.02 and later: a list).
pub fn parse_squeue_json(install: &str, text: &str) -> Option<Vec<Listed>> {
    let doc: Value = serde_json::from_str(text).ok()?;
    let jobs = doc.get("jobs")?.as_array()?;
    let word = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Array(a) => a.first().and_then(Value::as_str).map(String::from),
        _ => None,
    };
    Some(
        jobs.iter()
            .filter_map(|j| {
                let name = j.get("name")?.as_str()?;
                let worker = worker_of(install, name)?;
                let id = match j.get("job_id")? {
                    Value::Number(n) => n.to_string(),
                    Value::String(s) => s.clone(),
                    _ => return None,
                };
                let state = word(j.get("job_state")?)?;
                let reason = j.get("state_reason").and_then(Value::as_str).unwrap_or("");
                Some(Listed {
                    handle: id,
                    worker: worker.to_string(),
                    phase: phase(&state, reason, None),
                })
            })
            .collect(),
    )
}

/// `squeue -h -o '%i|%j|%T|%r'` lines of this install's jobs.
pub fn parse_squeue_text(install: &str, text: &str) -> Vec<Listed> {
    text.lines()
        .filter_map(|l| {
            let mut parts = l.trim().splitn(4, '|');
            let (id, name, state) = (parts.next()?, parts.next()?, parts.next()?);
            let reason = parts.next().unwrap_or("");
            Some(Listed {
                handle: id.to_string(),
                worker: worker_of(install, name)?.to_string(),
                phase: phase(state, reason, None),
            })
        })
        .collect()
}

/// `scontrol show job -o ID`'s one line (`JobId=12 JobName=... JobState=
/// FAILED Reason=NonZeroExitCode ... ExitCode=1:0 ...`).
pub fn parse_scontrol(install: &str, text: &str) -> Option<Listed> {
    let field = |key: &str| {
        text.split_whitespace()
            .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
    };
    let exit = field("ExitCode").filter(|x| *x != "0:0");
    Some(Listed {
        handle: field("JobId")?.to_string(),
        worker: worker_of(install, field("JobName")?)?.to_string(),
        phase: phase(field("JobState")?, field("Reason").unwrap_or(""), exit),
    })
}

impl Engine for Slurm {
    fn launch<'a>(&'a self, spec: &'a WorkerSpec<'a>) -> EngineFuture<'a, String> {
        Box::pin(async move {
            let args = self.sbatch_args(spec);
            let env = [
                ("AAM_TOKEN", spec.token),
                ("AAM_FINGERPRINT", spec.fingerprint),
            ];
            let out = run_command("sbatch", &args, &env).await?;
            // `--parsable` prints `ID` or `ID;CLUSTER`.
            let id = out.trim().split(';').next().unwrap_or("").to_string();
            if id.is_empty() || !id.chars().all(|c| c.is_ascii_digit()) {
                return Err(format!("sbatch: no job id in its answer '{}'", out.trim()));
            }
            Ok(id)
        })
    }

    fn list(&self) -> EngineFuture<'_, Vec<Listed>> {
        Box::pin(self.squeue())
    }

    fn status<'a>(&'a self, handle: &'a str) -> EngineFuture<'a, Option<Listed>> {
        Box::pin(async move {
            let args = ["show", "job", "-o", handle].map(String::from);
            match run_command("scontrol", &args, &[]).await {
                Ok(text) => Ok(parse_scontrol(&self.install, &text)),
                // Aged out of slurmctld's memory (`MinJobAge`).
                Err(e) if e.contains("Invalid job id") => Ok(None),
                Err(e) => Err(e),
            }
        })
    }

    fn stop<'a>(&'a self, handle: &'a str) -> EngineFuture<'a, ()> {
        Box::pin(async move {
            run_command("scancel", &[handle.to_string()], &[])
                .await
                .map(drop)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slurm(options: SlurmOptions) -> Slurm {
        let mut def = super::super::config::tests::entry("hpc", "slurm");
        def.slots = Some(4);
        def.labels = [("site".to_string(), "lab's".to_string())].into();
        let def = super::super::config::providers(&[def]).unwrap().remove(0);
        Slurm::new(def, "ab12cd34".into(), options)
    }

    #[test]
    fn the_sbatch_argv_carries_the_options_and_a_quoted_worker_line_without_the_token() {
        let s = slurm(SlurmOptions {
            partition: Some("gpu".into()),
            time: Some("01:00:00".into()),
            cpus_per_worker: 4,
            mem: Some("8G".into()),
            account: Some("lab".into()),
            sbatch_args: vec!["--qos=low".into()],
            output: "/tmp/aam-%j.log".into(),
        });
        let spec = WorkerSpec {
            worker: "hpc-0a1b2c3d",
            manager: "10.0.0.1:7410",
            fingerprint: "AA:BB",
            token: "secret-token",
        };
        let args = s.sbatch_args(&spec);
        for part in [
            "--parsable",
            "--job-name=aam-ab12cd34-hpc-0a1b2c3d",
            "--output=/tmp/aam-%j.log",
            "--cpus-per-task=4",
            "--partition=gpu",
            "--time=01:00:00",
            "--mem=8G",
            "--account=lab",
            "--qos=low",
            "--signal=B:TERM@60",
        ] {
            assert!(args.iter().any(|a| a == part), "{part} in {args:?}");
        }
        let wrap = args.last().unwrap();
        assert!(
            wrap.starts_with("--wrap=exec ")
                && wrap
                    .contains("aam-worker --manager 10.0.0.1:7410 --name hpc-0a1b2c3d --slots 4"),
            "{wrap}"
        );
        assert!(wrap.contains(r"--label 'site=lab'\''s'"), "{wrap}");
        assert!(
            wrap.contains("--once-idle --idle-timeout 300000ms --drain-timeout 15s"),
            "{wrap}"
        );
        assert!(!args.join(" ").contains("secret-token"));
    }

    #[test]
    fn squeue_json_of_22_05_and_of_later_versions_reads_the_same() {
        let old = r#"{"jobs": [
            {"job_id": 7, "name": "aam-ab12cd34-hpc-0a1b2c3d", "job_state": "PENDING", "state_reason": "Resources"},
            {"job_id": 8, "name": "aam-ab12cd34-hpc-1a1b2c3d", "job_state": "RUNNING", "state_reason": "None"},
            {"job_id": 9, "name": "someone-else", "job_state": "RUNNING", "state_reason": "None"}
        ]}"#;
        let listed = parse_squeue_json("ab12cd34", old).unwrap();
        assert_eq!(listed.len(), 2, "{listed:?}");
        assert_eq!(listed[0].handle, "7");
        assert_eq!(listed[0].worker, "hpc-0a1b2c3d");
        assert_eq!(listed[0].phase, Phase::Pending("PENDING: Resources".into()));
        assert_eq!(listed[1].phase, Phase::Running);
        let new = r#"{"jobs": [{"job_id": 7, "name": "aam-ab12cd34-hpc-0a1b2c3d",
            "job_state": ["FAILED"], "state_reason": "NonZeroExitCode"}]}"#;
        let listed = parse_squeue_json("ab12cd34", new).unwrap();
        assert_eq!(
            listed[0].phase,
            Phase::Ended("FAILED: NonZeroExitCode".into())
        );
        assert!(parse_squeue_json("ab12cd34", "squeue: unrecognized option").is_none());
    }

    #[test]
    fn squeue_text_and_scontrol_say_the_same() {
        let listed = parse_squeue_text(
            "ab12cd34",
            "7|aam-ab12cd34-hpc-0a1b2c3d|PENDING|PartitionDown\n9|other|RUNNING|None\n",
        );
        assert_eq!(listed.len(), 1);
        assert_eq!(
            listed[0].phase,
            Phase::Pending("PENDING: PartitionDown".into())
        );
        let one = parse_scontrol(
            "ab12cd34",
            "JobId=7 JobName=aam-ab12cd34-hpc-0a1b2c3d UserId=root(0) JobState=FAILED \
             Reason=NonZeroExitCode Dependency=(null) ExitCode=1:0 RunTime=00:00:01",
        )
        .unwrap();
        assert_eq!(one.handle, "7");
        assert_eq!(
            one.phase,
            Phase::Ended("FAILED: NonZeroExitCode, exit 1:0".into())
        );
    }
}
