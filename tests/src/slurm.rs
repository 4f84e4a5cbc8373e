//! A Slurm cluster of one node for the Slurm provider's tests: Debian's
//! `munged`, `slurmctld` and `slurmd` (22.05; `.ci/run` installs them)
//! started as root in a directory of their own with a `slurm.conf` of
//! their own (free ports, `SlurmUser=root`, `ProctrackType=proctrack/pgid`,
//! `TaskPlugin=task/none`, accounting off), and stopped when dropped. The
//! Slurm commands find it through `SLURM_CONF` ([`SlurmCluster::env`]).

use crate::{free_port, poll};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

pub struct SlurmCluster {
    dir: tempfile::TempDir,
}

/// Fails the test with a clear message unless Slurm's daemons are here.
pub fn require_slurm() {
    for program in [
        "munged",
        "slurmctld",
        "slurmd",
        "sbatch",
        "squeue",
        "scancel",
    ] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {program}")])
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(
            found,
            "the Slurm tests need {program} (Debian's slurmctld, slurmd, slurm-client and munge; .ci/run installs them)"
        );
    }
}

fn hostname() -> String {
    let out = Command::new("hostname").output().expect("hostname");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

impl SlurmCluster {
    /// Starts munged, slurmctld and slurmd; returns once the node is idle.
    pub fn start() -> SlurmCluster {
        require_slurm();
        let dir = tempfile::Builder::new()
            .prefix("aam-slurm-")
            .tempdir()
            .unwrap();
        let d = dir.path();
        for sub in ["state", "spool"] {
            std::fs::create_dir_all(d.join(sub)).unwrap();
        }
        let key: Vec<u8> = (0..1024).map(|i| (i * 7 + 13) as u8).collect();
        write_private(&d.join("munge.key"), &key);
        let host = hostname();
        let conf = format!(
            "ClusterName=aamtest\n\
             SlurmctldHost={host}(127.0.0.1)\n\
             SlurmUser=root\nSlurmdUser=root\n\
             SlurmctldPort={ctld}\nSlurmdPort={slurmd}\n\
             AuthType=auth/munge\nAuthInfo=socket={d}/munge.sock\n\
             StateSaveLocation={d}/state\nSlurmdSpoolDir={d}/spool\n\
             SlurmctldPidFile={d}/slurmctld.pid\nSlurmdPidFile={d}/slurmd.pid\n\
             SlurmctldLogFile={d}/slurmctld.log\nSlurmdLogFile={d}/slurmd.log\n\
             ProctrackType=proctrack/pgid\nTaskPlugin=task/none\n\
             JobAcctGatherType=jobacct_gather/none\n\
             AccountingStorageType=accounting_storage/none\n\
             SchedulerType=sched/backfill\nSelectType=select/cons_tres\n\
             SelectTypeParameters=CR_Core\nReturnToService=2\nMpiDefault=none\n\
             NodeName=aamnode NodeHostname={host} NodeAddr=127.0.0.1 CPUs=2 State=UNKNOWN\n\
             PartitionName=work Nodes=aamnode Default=YES MaxTime=INFINITE State=UP\n",
            ctld = free_port(),
            slurmd = free_port(),
            d = d.display(),
        );
        std::fs::write(d.join("slurm.conf"), conf).unwrap();
        let cluster = SlurmCluster { dir };
        let d = cluster.dir.path();
        cluster.daemon(
            Command::new("munged")
                .arg(format!("--socket={}/munge.sock", d.display()))
                .arg(format!("--key-file={}/munge.key", d.display()))
                .arg(format!("--pid-file={}/munged.pid", d.display()))
                .arg(format!("--log-file={}/munged.log", d.display()))
                .arg(format!("--seed-file={}/munge.seed", d.display()))
                .arg("--force"),
        );
        cluster.daemon(Command::new("slurmctld").arg("-f").arg(cluster.conf()));
        cluster.daemon(
            Command::new("slurmd")
                .arg("-f")
                .arg(cluster.conf())
                .args(["-N", "aamnode"]),
        );
        poll(Duration::from_secs(30), || {
            let out = cluster.command("sinfo", &["-h", "-o", "%T"]);
            out.contains("idle").then_some(())
        })
        .unwrap_or_else(|| panic!("the test Slurm node did not come up\n{}", cluster.logs()));
        cluster
    }

    fn conf(&self) -> PathBuf {
        self.dir.path().join("slurm.conf")
    }

    /// The environment the Slurm commands (and a manager that runs them)
    /// need to find this cluster.
    pub fn env(&self) -> (String, String) {
        ("SLURM_CONF".into(), self.conf().display().to_string())
    }

    /// Starts one of the daemons (each forks into the background).
    fn daemon(&self, cmd: &mut Command) {
        let out = cmd
            .env("SLURM_CONF", self.conf())
            .output()
            .expect("starting a Slurm daemon");
        assert!(
            out.status.success(),
            "{cmd:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.logs()
        );
    }

    /// Runs one of Slurm's commands against this cluster: its stdout.
    pub fn command(&self, program: &str, args: &[&str]) -> String {
        let out = Command::new(program)
            .args(args)
            .env("SLURM_CONF", self.conf())
            .output()
            .unwrap_or_else(|e| panic!("{program}: {e}"));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `ID|NAME|STATE|REASON` of every job the cluster still shows.
    pub fn jobs(&self) -> Vec<String> {
        self.command("squeue", &["-h", "--states=all", "-o", "%i|%j|%T|%r"])
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Jobs pending or running.
    pub fn active_jobs(&self) -> Vec<String> {
        self.jobs()
            .into_iter()
            .filter(|l| {
                l.contains("|PENDING|") || l.contains("|RUNNING|") || l.contains("|COMPLETING|")
            })
            .collect()
    }

    pub fn logs(&self) -> String {
        let mut text = String::new();
        for name in ["slurmctld.log", "slurmd.log", "munged.log"] {
            let log = std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            text.push_str(&format!("--- {name} (last lines)\n"));
            for line in tail.into_iter().rev() {
                text.push_str(line);
                text.push('\n');
            }
        }
        text
    }
}

fn write_private(path: &Path, bytes: &[u8]) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, bytes).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

impl Drop for SlurmCluster {
    fn drop(&mut self) {
        // Jobs first (their workers), then the daemons, by their pid files.
        let _ = Command::new("scancel")
            .args(["--user=root", "--full"])
            .env("SLURM_CONF", self.conf())
            .output();
        for pid in ["slurmd.pid", "slurmctld.pid", "munged.pid"] {
            if let Ok(text) = std::fs::read_to_string(self.dir.path().join(pid)) {
                if let Ok(pid) = text.trim().parse::<i32>() {
                    unsafe { libc::kill(pid, libc::SIGTERM) };
                    let gone = poll(Duration::from_secs(10), || {
                        (unsafe { libc::kill(pid, 0) } != 0).then_some(())
                    });
                    if gone.is_none() {
                        unsafe { libc::kill(pid, libc::SIGKILL) };
                    }
                }
            }
        }
    }
}
