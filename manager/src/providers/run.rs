//! The providers' loop (issue 17): every second it reads the model's
//! capacity from the scheduler and what each engine runs for this install,
//! reconciles the two (a worker that never connected within
//! `connect_timeout` is stopped and reported; one launched before a
//! restart is taken back if its join token was kept, else stopped), and
//! launches
//! what `plan::launches` decides, each worker with a join token of its
//! own. It counts what it sees every time: nothing it keeps can drift
//! into launching too many or too few.

use super::config::{Kind, Provider};
use super::join::JoinTokens;
use super::plan::{launches, FreeSlots, ProviderCapacity, Unclaimed};
use super::podman;
use crate::scheduler::{CountCapacity, ProvidersSeen, Scheduler};
use crate::state::Capacity;
use aam_protocol::model::ProviderView;
use actix::Addr;
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

/// How often the loop looks.
pub const TICK: Duration = Duration::from_secs(1);
/// After a failed launch, the provider launches nothing for this long.
pub const LAUNCH_RETRY: Duration = Duration::from_secs(10);

/// What the loop needs from the manager.
pub struct Setup {
    pub providers: Vec<Provider>,
    /// This manager's install id (`DATA_DIR/install-id`).
    pub install: String,
    /// Where workers dial the manager, and its certificate's fingerprint.
    pub manager: String,
    pub fingerprint: String,
    pub joins: JoinTokens,
    pub scheduler: Addr<Scheduler>,
}

/// A worker this manager launched.
struct Launched {
    worker: String,
    at: Instant,
    connected: bool,
}

struct ProviderRun {
    def: Provider,
    launched: HashMap<String, Launched>,
    retry_at: Option<Instant>,
    last_error: Option<String>,
}

/// Starts the loop on the current actix system.
pub fn start(setup: Setup) {
    let mut runs: Vec<ProviderRun> = setup
        .providers
        .iter()
        .cloned()
        .map(|def| ProviderRun {
            def,
            launched: HashMap::new(),
            retry_at: None,
            last_error: None,
        })
        .collect();
    tracing::info!(providers = runs.len(), install = %setup.install, "providers: launching workers on demand");
    actix::spawn(async move {
        loop {
            tick(&mut runs, &setup).await;
            tokio::time::sleep(TICK).await;
        }
    });
}

/// Workers to launch per provider for the model's `capacity`.
pub fn decide(capacity: &Capacity, providers: &[ProviderCapacity<'_>]) -> Vec<u32> {
    let unclaimed: Vec<Unclaimed<'_>> = capacity
        .unclaimed
        .iter()
        .map(|(requires, jobs)| Unclaimed {
            requires,
            jobs: *jobs,
        })
        .collect();
    let free: Vec<FreeSlots<'_>> = capacity
        .workers
        .iter()
        .map(|(_, labels, free)| FreeSlots {
            labels,
            free: *free,
        })
        .collect();
    launches(&unclaimed, &free, providers)
}

/// A launched worker's name: its provider's and 8 hex digits.
fn worker_name(provider: &str) -> String {
    let suffix: String = crate::token::generate().chars().take(8).collect();
    format!("{provider}-{suffix}")
}

/// Whether `worker` is a name `worker_name(provider)` makes (not one of a
/// provider whose name merely starts the same).
fn is_of(provider: &str, worker: &str) -> bool {
    worker
        .strip_prefix(provider)
        .and_then(|rest| rest.strip_prefix('-'))
        .is_some_and(|s| s.len() == 8 && s.chars().all(|c| c.is_ascii_hexdigit()))
}

fn container_name(install: &str, worker: &str) -> String {
    format!("aam-{install}-{worker}")
}

async fn tick(runs: &mut [ProviderRun], setup: &Setup) {
    let Ok(capacity) = setup.scheduler.send(CountCapacity).await else {
        return;
    };
    let connected: HashSet<&str> = capacity
        .workers
        .iter()
        .map(|(n, _, _)| n.as_str())
        .collect();
    let mut counts = Vec::with_capacity(runs.len());
    for run in runs.iter_mut() {
        counts.push(reconcile(run, setup, &connected).await);
    }
    let providers: Vec<ProviderCapacity<'_>> = runs
        .iter()
        .zip(&counts)
        .map(|(run, &(connected, launching))| ProviderCapacity {
            labels: &run.def.labels,
            slots: run.def.slots,
            max_workers: run.def.max_workers,
            min_workers: run.def.min_workers,
            connected,
            launching,
        })
        .collect();
    let wanted = decide(&capacity, &providers);
    for ((run, n), (_, launching)) in runs.iter_mut().zip(wanted).zip(counts.iter_mut()) {
        if n == 0 || run.retry_at.is_some_and(|at| Instant::now() < at) {
            continue;
        }
        for _ in 0..n {
            if !launch_one(run, setup).await {
                break;
            }
            *launching += 1;
        }
    }
    let seen = runs
        .iter()
        .zip(&counts)
        .map(|(run, &(connected, launching))| ProviderView {
            name: run.def.name.clone(),
            kind: run.def.kind.name().to_string(),
            labels: run.def.labels.clone(),
            max_workers: run.def.max_workers,
            connected,
            launching,
            last_error: run.last_error.clone(),
        })
        .collect();
    setup.scheduler.do_send(ProvidersSeen(seen));
}

/// Reconciles one provider with what its engine runs: (connected,
/// launching) workers.
async fn reconcile(run: &mut ProviderRun, setup: &Setup, connected: &HashSet<&str>) -> (u32, u32) {
    let Kind::Podman { engine, .. } = &run.def.kind;
    let engine = engine.clone();
    let engine = engine.as_str();
    let listed = match podman::list(engine, &setup.install, &run.def.name).await {
        Ok(listed) => listed,
        Err(e) => {
            note_error(run, e);
            // Without a listing, count what it launched as launching.
            return (0, run.launched.len() as u32);
        }
    };
    let names: HashSet<&str> = listed.iter().map(|c| c.name.as_str()).collect();
    // Gone from the engine (exited after its idle timeout, or removed).
    let gone: Vec<String> = run
        .launched
        .keys()
        .filter(|c| !names.contains(c.as_str()))
        .cloned()
        .collect();
    for container in gone {
        if let Some(w) = run.launched.remove(&container) {
            setup.joins.revoke(&w.worker);
            if !w.connected {
                let message = format!("{container} exited before it connected");
                note_error(run, message);
            }
        }
    }
    // Tokens of this provider's workers that no container holds any more
    // (gone while the manager was down).
    let prefix = container_name(&setup.install, "");
    let listed_workers: HashSet<&str> = listed
        .iter()
        .map(|c| c.name.strip_prefix(&prefix).unwrap_or(&c.name))
        .collect();
    for worker in setup.joins.workers() {
        if is_of(&run.def.name, &worker) && !listed_workers.contains(worker.as_str()) {
            setup.joins.revoke(&worker);
        }
    }
    let (mut up, mut launching) = (0, 0);
    let connect_timeout = Duration::from_millis(run.def.connect_timeout_ms);
    for c in &listed {
        if !run.launched.contains_key(&c.name) {
            let prefix = container_name(&setup.install, "");
            let worker = c.name.strip_prefix(&prefix).unwrap_or(&c.name);
            if c.running && setup.joins.holds(worker) {
                // Launched before this manager restarted: its token was
                // kept, so it comes back; it gets `connect_timeout` to.
                tracing::info!(provider = %run.def.name, %worker, "providers: taking back a worker launched before the restart");
                run.launched.insert(
                    c.name.clone(),
                    Launched {
                        worker: worker.to_string(),
                        at: Instant::now(),
                        connected: false,
                    },
                );
            } else {
                // No token here for it: it cannot join; stop it.
                tracing::info!(provider = %run.def.name, container = %c.name,
                    "providers: stopping a worker this manager cannot take back");
                setup.joins.revoke(worker);
                let _ = podman::stop(engine, &c.name).await;
                continue;
            }
        }
        let Some(w) = run.launched.get_mut(&c.name) else {
            continue;
        };
        if connected.contains(w.worker.as_str()) && !w.connected {
            w.connected = true;
            // A worker that made it supersedes an earlier failure.
            run.last_error = None;
        }
        if !c.running {
            let message = format!("{} is {} (it did not run)", c.name, c.state);
            let worker = w.worker.clone();
            let was_connected = w.connected;
            run.launched.remove(&c.name);
            setup.joins.revoke(&worker);
            let _ = podman::stop(engine, &c.name).await;
            if !was_connected {
                note_error(run, message);
            }
        } else if w.connected {
            up += 1;
        } else if w.at.elapsed() > connect_timeout {
            let worker = w.worker.clone();
            run.launched.remove(&c.name);
            setup.joins.revoke(&worker);
            let _ = podman::stop(engine, &c.name).await;
            note_error(
                run,
                format!(
                    "{} did not connect within {}",
                    c.name,
                    aam_protocol::permission::duration_text(run.def.connect_timeout_ms)
                ),
            );
        } else {
            launching += 1;
        }
    }
    (up, launching)
}

fn note_error(run: &mut ProviderRun, message: String) {
    tracing::warn!(provider = %run.def.name, "providers: {message}");
    run.last_error = Some(message);
}

/// Launches one worker; false if it could not (the provider then waits).
async fn launch_one(run: &mut ProviderRun, setup: &Setup) -> bool {
    let Kind::Podman {
        engine,
        image,
        network,
    } = run.def.kind.clone();
    let worker = worker_name(&run.def.name);
    let container = container_name(&setup.install, &worker);
    let token = setup.joins.issue(&worker);
    let manager = run.def.manager_address.as_deref().unwrap_or(&setup.manager);
    let launch = podman::Launch {
        install: &setup.install,
        container: &container,
        worker: &worker,
        manager,
        fingerprint: &setup.fingerprint,
        token: &token,
    };
    match podman::launch(&engine, &run.def, &image, &network, &launch).await {
        Ok(()) => {
            tracing::info!(provider = %run.def.name, %worker, "providers: launched a worker");
            run.launched.insert(
                container,
                Launched {
                    worker,
                    at: Instant::now(),
                    connected: false,
                },
            );
            true
        }
        Err(e) => {
            setup.joins.revoke(&worker);
            note_error(run, e);
            run.retry_at = Some(Instant::now() + LAUNCH_RETRY);
            false
        }
    }
}

/// This data directory's install id: made once, then read.
pub fn install_id(data_dir: &std::path::Path) -> anyhow::Result<String> {
    let path = data_dir.join("install-id");
    if let Ok(text) = std::fs::read_to_string(&path) {
        let id = text.trim().to_string();
        if !id.is_empty() {
            return Ok(id);
        }
    }
    let id: String = crate::token::generate().chars().take(8).collect();
    aam_store::files::write_private(&path, format!("{id}\n").as_bytes())?;
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_belongs_to_its_provider_only() {
        let w = worker_name("pods");
        assert!(is_of("pods", &w), "{w}");
        assert!(!is_of("pod", &w) && !is_of("pods-gpu", &w));
        assert!(!is_of("pods", &worker_name("pods-gpu")));
        assert!(is_of("pods-gpu", &worker_name("pods-gpu")));
    }
}
