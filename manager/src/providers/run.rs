//! The providers' loop (issue 17): every second it reads the model's
//! capacity from the scheduler and what each engine runs for this install,
//! reconciles the two (a worker that never connected within
//! `connect_timeout` is stopped and reported; one launched before a
//! restart is taken back if its join token was kept, else stopped), and
//! launches
//! what `plan::launches` decides, each worker with a join token of its
//! own. It counts what it sees every time: nothing it keeps can drift
//! into launching too many or too few.

use super::config::Provider;
use super::engine::{Engine, Listed, Phase, WorkerSpec};
use super::join::JoinTokens;
use super::plan::{launches, FreeSlots, ProviderCapacity, Unclaimed};
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

/// A worker this manager launched, by the engine's handle for it.
struct Launched {
    worker: String,
    at: Instant,
    connected: bool,
}

struct ProviderRun {
    def: Provider,
    engine: Box<dyn Engine>,
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
            engine: super::engine(&def, &setup.install),
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

async fn tick(runs: &mut [ProviderRun], setup: &Setup) {
    let launchable = runs.iter().fold(0u32, |n, run| {
        n.saturating_add(run.def.max_workers.saturating_mul(run.def.slots.max(1)))
    });
    let Ok(capacity) = setup.scheduler.send(CountCapacity { launchable }).await else {
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
    let listed = match run.engine.list().await {
        Ok(listed) => listed,
        Err(e) => {
            note_error(run, e);
            // Without a listing, count what it launched as launching.
            return (0, run.launched.len() as u32);
        }
    };
    let handles: HashSet<&str> = listed.iter().map(|l| l.handle.as_str()).collect();
    // Gone from the engine's view (exited after its idle timeout, removed,
    // or aged out of it).
    let gone: Vec<String> = run
        .launched
        .keys()
        .filter(|h| !handles.contains(h.as_str()))
        .cloned()
        .collect();
    for handle in gone {
        let Some(w) = run.launched.remove(&handle) else {
            continue;
        };
        let joined = w.connected || setup.joins.used(&w.worker);
        setup.joins.revoke(&w.worker);
        if !joined {
            let how = match run.engine.status(&handle).await {
                Ok(Some(Listed {
                    phase: Phase::Ended(how) | Phase::Pending(how),
                    ..
                })) => how,
                _ => "gone".into(),
            };
            failed(
                run,
                format!("{} ({handle}) ended before it connected: {how}", w.worker),
            );
        }
    }
    // Tokens of this provider's workers the engine no longer shows (gone
    // while the manager was down). An ended one's token stays until the
    // loop below has read it: it tells a worker that joined and left
    // between two looks from one that never joined.
    let alive: HashSet<&str> = listed.iter().map(|l| l.worker.as_str()).collect();
    for worker in setup.joins.workers() {
        if is_of(&run.def.name, &worker) && !alive.contains(worker.as_str()) {
            setup.joins.revoke(&worker);
        }
    }
    let (mut up, mut launching) = (0, 0);
    let connect_timeout = Duration::from_millis(run.def.connect_timeout_ms);
    for l in &listed {
        if !run.launched.contains_key(&l.handle) {
            match l.phase {
                Phase::Ended(_) => {
                    if run.engine.removes_ended() {
                        let _ = run.engine.stop(&l.handle).await;
                    }
                    continue;
                }
                _ if setup.joins.holds(&l.worker) => {
                    // Launched before this manager restarted: its token
                    // was kept, so it comes back; it gets `connect_timeout`
                    // to.
                    tracing::info!(provider = %run.def.name, worker = %l.worker,
                        "providers: taking back a worker launched before the restart");
                    run.launched.insert(
                        l.handle.clone(),
                        Launched {
                            worker: l.worker.clone(),
                            at: Instant::now(),
                            connected: false,
                        },
                    );
                }
                _ => {
                    // No token here for it: it cannot join; stop it.
                    tracing::info!(provider = %run.def.name, handle = %l.handle,
                        "providers: stopping a worker this manager cannot take back");
                    setup.joins.revoke(&l.worker);
                    let _ = run.engine.stop(&l.handle).await;
                    continue;
                }
            }
        }
        let Some(w) = run.launched.get_mut(&l.handle) else {
            continue;
        };
        // Connected now, or it joined between two looks (a quick job and
        // a short idle timeout can see a worker come and go within one).
        let joined = connected.contains(w.worker.as_str()) || setup.joins.used(&w.worker);
        if joined && !w.connected {
            w.connected = true;
            // A worker that made it supersedes an earlier failure.
            run.last_error = None;
        }
        let (worker, was_connected) = (w.worker.clone(), w.connected);
        match &l.phase {
            Phase::Ended(how) => {
                run.launched.remove(&l.handle);
                setup.joins.revoke(&worker);
                if run.engine.removes_ended() {
                    let _ = run.engine.stop(&l.handle).await;
                }
                if !was_connected {
                    failed(
                        run,
                        format!("{worker} ({}) ended before it connected: {how}", l.handle),
                    );
                }
            }
            _ if was_connected => up += 1,
            phase if w.at.elapsed() > connect_timeout => {
                let state = match phase {
                    Phase::Pending(how) => how.as_str(),
                    _ => "running",
                };
                let message = format!(
                    "{worker} ({}) did not connect within {} ({state}); stopped it",
                    l.handle,
                    aam_protocol::permission::duration_text(run.def.connect_timeout_ms)
                );
                run.launched.remove(&l.handle);
                setup.joins.revoke(&worker);
                let _ = run.engine.stop(&l.handle).await;
                failed(run, message);
            }
            _ => launching += 1,
        }
    }
    (up, launching)
}

/// A launched worker that did not make it: reported, and the provider
/// waits before it launches again (no loop of failing launches).
fn failed(run: &mut ProviderRun, message: String) {
    note_error(run, message);
    run.retry_at = Some(Instant::now() + LAUNCH_RETRY);
}

fn note_error(run: &mut ProviderRun, message: String) {
    tracing::warn!(provider = %run.def.name, "providers: {message}");
    run.last_error = Some(message);
}

/// Launches one worker; false if it could not (the provider then waits).
async fn launch_one(run: &mut ProviderRun, setup: &Setup) -> bool {
    let worker = worker_name(&run.def.name);
    let token = setup.joins.issue(&worker, run.def.connect_timeout_ms);
    let manager = run.def.manager_address.as_deref().unwrap_or(&setup.manager);
    let spec = WorkerSpec {
        worker: &worker,
        manager,
        fingerprint: &setup.fingerprint,
        token: &token,
    };
    match run.engine.launch(&spec).await {
        Ok(handle) => {
            tracing::info!(provider = %run.def.name, %worker, %handle, "providers: launched a worker");
            run.launched.insert(
                handle,
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
            failed(run, e);
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
