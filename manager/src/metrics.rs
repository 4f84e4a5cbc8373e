//! The manager's Prometheus metrics (`GET /metrics` of the HTTP server), in
//! the Prometheus text format (0.0.4), all named `aam_...`.
//!
//! Two kinds, kept apart so that nothing shares the model (invariant 2):
//! - Gauges that describe the model (jobs and sessions by status, the
//!   queue, workers and slots, paused limit groups) are counted when
//!   scraped: `render` asks the scheduler (`CountModel`), which answers from
//!   its `State` like any query.
//! - Histograms and counters of events (dispatch latency, attempt durations,
//!   commit groups, agents' spend, limit pauses) are observed where the
//!   event happens, by the model and the commit thread, through an
//!   `Observer`: prometheus-client's metric types (atomics; a histogram is
//!   a short uncontended mutex of its own), no lock over the model. They
//!   start from zero at every start (Prometheus handles counter resets).

use crate::scheduler::Scheduler;
use aam_protocol::model::{AttemptOutcome, JobStatus, SessionStatus};
use actix::prelude::*;
use prometheus_client::encoding::{prometheus_text, EncodeLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};
use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

/// The `Content-Type` of what `render` returns.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// Every metric's name starts with `aam_`.
const PREFIX: &str = "aam";

/// Session statuses, in the order of `ModelCounts::sessions`.
pub const SESSION_STATUSES: [SessionStatus; 4] = [
    SessionStatus::Running,
    SessionStatus::Succeeded,
    SessionStatus::Failed,
    SessionStatus::Cancelled,
];

/// Attempt outcomes, in the order of `Events::attempt_seconds`.
const OUTCOMES: [AttemptOutcome; 6] = [
    AttemptOutcome::Succeeded,
    AttemptOutcome::Failed,
    AttemptOutcome::TimedOut,
    AttemptOutcome::Cancelled,
    AttemptOutcome::Requeued,
    AttemptOutcome::Limited,
];

/// The model's gauges, counted by `State::counts` when scraped.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ModelCounts {
    /// Jobs held by the model, per status (`JobStatus::ALL` order).
    pub jobs: [u64; 8],
    /// Sessions held by the model, per status (`SESSION_STATUSES` order).
    pub sessions: [u64; 4],
    /// Jobs in the queue for a slot (retries in their backoff aside).
    pub queue_length: u64,
    /// How long the job queued longest has waited (ms; 0: none queued).
    pub oldest_queued_ms: u64,
    /// Attempts held by connected workers.
    pub running: u64,
    pub workers: u64,
    pub slots: u64,
    pub slots_free: u64,
    /// Limit groups paused now.
    pub paused_groups: u64,
    /// Shared resources: (name, capacity, in use).
    pub resources: Vec<(String, u64, u64)>,
    /// Providers: (name, workers launched and not connected yet).
    pub launching: Vec<(String, u64)>,
}

/// Asks the scheduler for the model's counts (answered from its state).
#[derive(Message)]
#[rtype(result = "ModelCounts")]
pub struct CountModel;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResourceLabel {
    resource: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderLabel {
    provider: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AgentLabel {
    agent: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenLabels {
    agent: String,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

/// Why requests are refused, as `aam_refusals_total` counts them.
pub const REFUSAL_REASONS: [&str; 5] = [
    "role",
    "token",
    "max_sessions",
    "max_queued_jobs",
    "connections_per_peer",
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GroupLabel {
    group: String,
}

type CostCounter = Counter<f64, AtomicU64>;
type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// One agent's counters, created once so that an attempt's end looks them
/// up by name without allocating a label.
#[derive(Clone, Debug)]
struct AgentCounters {
    cost: CostCounter,
    input: Counter,
    output: Counter,
    cache_read: Counter,
}

/// The event metrics and the registry that renders them.
#[derive(Debug)]
struct Events {
    registry: Registry,
    dispatch_latency: Histogram,
    /// Per outcome, in `OUTCOMES` order.
    attempt_seconds: [Histogram; 6],
    commit_group_size: Histogram,
    commit_seconds: Histogram,
    fdatasync_seconds: Histogram,
    agent_cost: Family<AgentLabel, CostCounter>,
    agent_tokens: Family<TokenLabels, Counter>,
    agents: HashMap<String, AgentCounters>,
    limit_pauses: Family<GroupLabel, Counter>,
    /// The known limit groups' counters (a series at 0 from the start).
    groups: HashMap<String, Counter>,
    /// Per reason, in `REFUSAL_REASONS` order.
    refusals: [Counter; 5],
}

fn latency_buckets() -> Histogram {
    // 1 ms to ~70 min, ×4 a bucket: from an idle cluster to a long backlog.
    Histogram::new(exponential_buckets(0.001, 4.0, 12))
}

fn duration_buckets() -> Histogram {
    // 10 ms (`true`) to ~11.6 h (a long agent run), ×4 a bucket.
    Histogram::new(exponential_buckets(0.01, 4.0, 12))
}

/// Where events are observed: the model (through `StateConfig::metrics`)
/// and the commit thread hold clones. Cheap to clone; every observation is
/// an atomic update, with no allocation.
#[derive(Clone)]
pub struct Observer(Arc<Events>);

impl std::fmt::Debug for Observer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Observer")
    }
}

impl Default for Observer {
    fn default() -> Self {
        Observer::new(std::iter::empty::<(&str, &str)>())
    }
}

impl Observer {
    /// The event metrics, registered, with series ready for `agents`:
    /// (name, limit group).
    pub fn new<'a>(agents: impl IntoIterator<Item = (&'a str, &'a str)>) -> Observer {
        let mut registry = Registry::with_prefix(PREFIX);
        let dispatch_latency = latency_buckets();
        registry.register_with_unit(
            "dispatch_latency",
            "Time from a job being queued (submitted ready, its dependencies met, \
             its backoff over, or requeued) to its attempt starting on a worker",
            Unit::Seconds,
            dispatch_latency.clone(),
        );
        let by_outcome: HistogramFamily<OutcomeLabel> =
            Family::new_with_constructor(duration_buckets);
        let attempt_seconds = OUTCOMES.map(|o| {
            by_outcome
                .get_or_create(&OutcomeLabel {
                    outcome: o.as_str(),
                })
                .clone()
        });
        registry.register_with_unit(
            "job_duration",
            "Time from an attempt's start to its end, by how it ended \
             (outcome: succeeded, failed, timed_out, cancelled, queued (requeued), limited)",
            Unit::Seconds,
            by_outcome,
        );
        let commit_group_size = Histogram::new(exponential_buckets(1.0, 2.0, 12));
        registry.register(
            "commit_group_size",
            "Change sets made durable by one commit of the commit thread (one log sync)",
            commit_group_size.clone(),
        );
        // 0.1 ms to ~2.4 s, ×2.5 a bucket.
        let commit_seconds = Histogram::new(exponential_buckets(0.0001, 2.5, 12));
        registry.register_with_unit(
            "commit_duration",
            "Time one commit group takes to become durable: the log append, its \
             fdatasync, and the write into sled",
            Unit::Seconds,
            commit_seconds.clone(),
        );
        let fdatasync_seconds = Histogram::new(exponential_buckets(0.0001, 2.5, 12));
        registry.register_with_unit(
            "fdatasync",
            "Time the store log's fdatasync takes, once per commit group",
            Unit::Seconds,
            fdatasync_seconds.clone(),
        );
        let agent_cost = Family::<AgentLabel, CostCounter>::default();
        let agent_tokens = Family::<TokenLabels, Counter>::default();
        let limit_pauses = Family::<GroupLabel, Counter>::default();
        let mut by_agent = HashMap::new();
        let mut groups = HashMap::new();
        for (agent, group) in agents {
            let counters = agent_counters(&agent_cost, &agent_tokens, agent);
            by_agent.insert(agent.to_string(), counters);
            let label = GroupLabel {
                group: group.to_string(),
            };
            groups.insert(
                label.group.clone(),
                limit_pauses.get_or_create(&label).clone(),
            );
        }
        registry.register(
            "agent_cost_usd",
            "What ended attempts of each agent cost, in US dollars (the agent's own \
             figure, else its tokens priced)",
            agent_cost.clone(),
        );
        registry.register(
            "agent_tokens",
            "Tokens used by ended attempts of each agent (kind: input, output, cache_read)",
            agent_tokens.clone(),
        );
        registry.register(
            "limit_pauses",
            "Times a limit group was paused because an agent met its usage limit",
            limit_pauses.clone(),
        );
        let refusals_family = Family::<ReasonLabel, Counter>::default();
        let refusals = REFUSAL_REASONS.map(|reason| {
            refusals_family
                .get_or_create(&ReasonLabel { reason })
                .clone()
        });
        registry.register(
            "refusals",
            "Requests and connections refused, by reason (role: beyond the token's role; \
             token: an unknown token; max_sessions, max_queued_jobs: a token's quota; \
             connections_per_peer: too many connections from one address)",
            refusals_family,
        );
        Observer(Arc::new(Events {
            registry,
            dispatch_latency,
            attempt_seconds,
            commit_group_size,
            commit_seconds,
            fdatasync_seconds,
            agent_cost,
            agent_tokens,
            agents: by_agent,
            limit_pauses,
            groups,
            refusals,
        }))
    }

    /// A request or connection was refused for `reason` (one of `REFUSAL_REASONS`).
    pub fn refused(&self, reason: &str) {
        if let Some(slot) = REFUSAL_REASONS.iter().position(|r| *r == reason) {
            self.0.refusals[slot].inc();
        }
    }

    /// A queued job's attempt started after `waited_ms` in the queue.
    pub fn dispatched(&self, waited_ms: u64) {
        self.0.dispatch_latency.observe(seconds(waited_ms));
    }

    /// An attempt ended with `outcome` after `ms`.
    pub fn attempt_ended(&self, outcome: AttemptOutcome, ms: u64) {
        let slot = OUTCOMES.iter().position(|o| *o == outcome).unwrap_or(0);
        self.0.attempt_seconds[slot].observe(seconds(ms));
    }

    /// An attempt of `agent` ended having spent this much.
    /// Tokens: (input, output, cache read).
    pub fn agent_spent(&self, agent: &str, cost_usd: f64, tokens: (u64, u64, u64)) {
        let (input, output, cache) = tokens;
        let events = &self.0;
        let created;
        let counters = match events.agents.get(agent) {
            Some(counters) => counters,
            // An agent the manager did not start with: rare, so allocating
            // its labels here is fine.
            None => {
                created = agent_counters(&events.agent_cost, &events.agent_tokens, agent);
                &created
            }
        };
        if cost_usd > 0.0 {
            counters.cost.inc_by(cost_usd);
        }
        counters.input.inc_by(input);
        counters.output.inc_by(output);
        counters.cache_read.inc_by(cache);
    }

    /// A limit group was paused.
    pub fn limit_paused(&self, group: &str) {
        match self.0.groups.get(group) {
            Some(counter) => counter.inc(),
            None => {
                let label = GroupLabel {
                    group: group.to_string(),
                };
                self.0.limit_pauses.get_or_create(&label).inc()
            }
        };
    }

    /// The commit thread made `change_sets` durable with one sync, in
    /// `took`, of which `synced` was the log's fdatasync.
    pub fn committed(&self, change_sets: usize, took: Duration, synced: Duration) {
        self.0.commit_group_size.observe(change_sets as f64);
        self.0.commit_seconds.observe(took.as_secs_f64());
        self.0.fdatasync_seconds.observe(synced.as_secs_f64());
    }
}

fn seconds(ms: u64) -> f64 {
    ms as f64 / 1000.0
}

/// `agent`'s counters in the families (created there if new).
fn agent_counters(
    cost: &Family<AgentLabel, CostCounter>,
    tokens: &Family<TokenLabels, Counter>,
    agent: &str,
) -> AgentCounters {
    let token = |kind| {
        let labels = TokenLabels {
            agent: agent.to_string(),
            kind,
        };
        tokens.get_or_create(&labels).clone()
    };
    AgentCounters {
        cost: cost
            .get_or_create(&AgentLabel {
                agent: agent.to_string(),
            })
            .clone(),
        input: token("input"),
        output: token("output"),
        cache_read: token("cache_read"),
    }
}

/// A handle on the manager's metrics, cheap to clone into every server.
#[derive(Clone, Default)]
pub struct Metrics {
    observer: Observer,
    /// Answers the model's gauges (none in a manager-less test).
    scheduler: Option<Addr<Scheduler>>,
}

impl Metrics {
    /// Where events are counted (refusals, from the listener).
    pub fn observer(&self) -> &Observer {
        &self.observer
    }

    pub fn new(observer: Observer, scheduler: Addr<Scheduler>) -> Metrics {
        Metrics {
            observer,
            scheduler: Some(scheduler),
        }
    }

    /// The event metrics alone, with no scheduler to count the model (tests).
    pub fn for_observer(observer: Observer) -> Metrics {
        Metrics {
            observer,
            scheduler: None,
        }
    }

    /// The metrics in the Prometheus text exposition format (0.0.4,
    /// `CONTENT_TYPE`): the model's gauges, counted now, then the events'.
    pub async fn render(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        if let Some(scheduler) = &self.scheduler {
            match scheduler.send(CountModel).await {
                Ok(counts) => encode(&mut out, &gauges(&counts)),
                Err(e) => tracing::warn!("metrics: the scheduler did not answer ({e}): no gauges"),
            }
        }
        encode(&mut out, &self.observer.0.registry);
        out
    }
}

fn encode(out: &mut String, registry: &Registry) {
    // Writing into a String cannot fail.
    let _ = prometheus_text::encode(out, registry);
}

/// A registry of the model's gauges, built for one scrape.
fn gauges(counts: &ModelCounts) -> Registry {
    let mut registry = Registry::with_prefix(PREFIX);
    let jobs = Family::<StatusLabel, Gauge>::default();
    for (status, n) in JobStatus::ALL.iter().zip(counts.jobs) {
        let label = StatusLabel {
            status: status.as_str(),
        };
        jobs.get_or_create(&label).set(n as i64);
    }
    registry.register(
        "jobs",
        "Jobs the manager holds (finished sessions until removed by retention), by status",
        jobs,
    );
    let sessions = Family::<StatusLabel, Gauge>::default();
    for (status, n) in SESSION_STATUSES.iter().zip(counts.sessions) {
        let label = StatusLabel {
            status: status.as_str(),
        };
        sessions.get_or_create(&label).set(n as i64);
    }
    registry.register(
        "sessions",
        "Sessions the manager holds, by status",
        sessions,
    );
    let single = [
        (
            "queue_length",
            "Jobs queued for a worker slot (retries waiting for their backoff aside)",
            counts.queue_length,
        ),
        (
            "running_jobs",
            "Attempts running on connected workers",
            counts.running,
        ),
        // For autoscalers (KEDA): only jobs no worker has claimed, and
        // what runs; the two above under the names scalers expect.
        (
            "jobs_queued_unclaimed",
            "Jobs waiting for a worker slot that no worker has been given (scale on this)",
            counts.queue_length,
        ),
        (
            "jobs_running",
            "Jobs running on workers (assigned and not ended)",
            counts.running,
        ),
        ("workers", "Workers connected", counts.workers),
        (
            "worker_slots",
            "Job slots of the connected workers",
            counts.slots,
        ),
        (
            "worker_slots_free",
            "Job slots of the connected workers not running a job",
            counts.slots_free,
        ),
        (
            "limit_groups_paused",
            "Limit groups whose agents' jobs are held now after a usage limit",
            counts.paused_groups,
        ),
    ];
    for (name, help, value) in single {
        let gauge = Gauge::<i64>::default();
        gauge.set(value as i64);
        registry.register(name, help, gauge);
    }
    let oldest = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
    oldest.set(counts.oldest_queued_ms as f64 / 1000.0);
    registry.register(
        "oldest_queued_seconds",
        "How long the job queued longest has waited for a worker slot (0: none queued)",
        oldest,
    );
    let launching = Family::<ProviderLabel, Gauge>::default();
    for (provider, n) in &counts.launching {
        let label = ProviderLabel {
            provider: provider.clone(),
        };
        launching.get_or_create(&label).set(*n as i64);
    }
    registry.register(
        "workers_launching",
        "Workers each provider launched that have not connected yet",
        launching,
    );
    let capacity = Family::<ResourceLabel, Gauge>::default();
    let in_use = Family::<ResourceLabel, Gauge>::default();
    for (name, cap, used) in &counts.resources {
        let label = ResourceLabel {
            resource: name.clone(),
        };
        capacity.get_or_create(&label).set(*cap as i64);
        in_use.get_or_create(&label).set(*used as i64);
    }
    registry.register(
        "resource_capacity",
        "Units of each shared resource ([resources])",
        capacity,
    );
    registry.register(
        "resource_in_use",
        "Units of each shared resource held by running jobs",
        in_use,
    );
    registry
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts() -> ModelCounts {
        ModelCounts {
            jobs: [1, 2, 3, 4, 5, 6, 7, 8],
            sessions: [1, 2, 3, 4],
            queue_length: 2,
            oldest_queued_ms: 1500,
            running: 3,
            workers: 2,
            slots: 8,
            slots_free: 5,
            paused_groups: 1,
            resources: vec![("db".into(), 1, 1)],
            launching: vec![("pods".into(), 2)],
        }
    }

    /// What a scrape shows: the gauges of `counts`, then the events.
    fn scrape(observer: &Observer, counts: &ModelCounts) -> String {
        let mut out = String::new();
        encode(&mut out, &gauges(counts));
        encode(&mut out, &observer.0.registry);
        out
    }

    #[test]
    fn every_family_is_there_with_help_type_and_aam_prefix() {
        let text = scrape(&Observer::new([("claude", "anthropic")]), &counts());
        for (family, kind) in [
            ("aam_jobs", "gauge"),
            ("aam_sessions", "gauge"),
            ("aam_queue_length", "gauge"),
            ("aam_running_jobs", "gauge"),
            ("aam_jobs_queued_unclaimed", "gauge"),
            ("aam_jobs_running", "gauge"),
            ("aam_oldest_queued_seconds", "gauge"),
            ("aam_workers_launching", "gauge"),
            ("aam_workers", "gauge"),
            ("aam_worker_slots", "gauge"),
            ("aam_worker_slots_free", "gauge"),
            ("aam_limit_groups_paused", "gauge"),
            ("aam_resource_capacity", "gauge"),
            ("aam_resource_in_use", "gauge"),
            ("aam_dispatch_latency_seconds", "histogram"),
            ("aam_job_duration_seconds", "histogram"),
            ("aam_commit_group_size", "histogram"),
            ("aam_commit_duration_seconds", "histogram"),
            ("aam_fdatasync_seconds", "histogram"),
            ("aam_agent_cost_usd_total", "counter"),
            ("aam_agent_tokens_total", "counter"),
            ("aam_limit_pauses_total", "counter"),
        ] {
            assert!(
                text.contains(&format!("# TYPE {family} {kind}\n")),
                "{family}: {text}"
            );
            assert!(text.contains(&format!("# HELP {family} ")), "{family}");
        }
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            assert!(line.starts_with("aam_"), "{line}");
        }
    }

    #[test]
    fn gauges_show_the_counts_with_every_status() {
        let text = scrape(&Observer::default(), &counts());
        for (status, n) in JobStatus::ALL.iter().zip(1..) {
            let line = format!("aam_jobs{{status=\"{}\"}} {n}\n", status.as_str());
            assert!(text.contains(&line), "{line} in {text}");
        }
        for (status, n) in SESSION_STATUSES.iter().zip(1..) {
            let line = format!("aam_sessions{{status=\"{}\"}} {n}\n", status.as_str());
            assert!(text.contains(&line), "{line} in {text}");
        }
        for line in [
            "aam_queue_length 2\n",
            "aam_running_jobs 3\n",
            "aam_jobs_queued_unclaimed 2\n",
            "aam_jobs_running 3\n",
            "aam_oldest_queued_seconds 1.5\n",
            "aam_workers_launching{provider=\"pods\"} 2\n",
            "aam_workers 2\n",
            "aam_worker_slots 8\n",
            "aam_worker_slots_free 5\n",
            "aam_limit_groups_paused 1\n",
            "aam_resource_capacity{resource=\"db\"} 1\n",
            "aam_resource_in_use{resource=\"db\"} 1\n",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
    }

    #[test]
    fn events_land_in_their_series() {
        let observer = Observer::new([("claude", "anthropic")]);
        observer.agent_spent("claude", 0.5, (100, 20, 7));
        observer.agent_spent("claude", 0.25, (1, 2, 3));
        // An agent not known at start gets its series on first use.
        observer.agent_spent("later", 0.0, (5, 0, 0));
        observer.limit_paused("anthropic");
        observer.limit_paused("anthropic");
        observer.committed(3, Duration::from_millis(2), Duration::from_millis(1));
        observer.attempt_ended(AttemptOutcome::Limited, 1500);
        let text = scrape(&observer, &ModelCounts::default());
        for line in [
            "aam_agent_cost_usd_total{agent=\"claude\"} 0.75\n",
            "aam_agent_tokens_total{agent=\"claude\",kind=\"input\"} 101\n",
            "aam_agent_tokens_total{agent=\"claude\",kind=\"output\"} 22\n",
            "aam_agent_tokens_total{agent=\"claude\",kind=\"cache_read\"} 10\n",
            "aam_agent_tokens_total{agent=\"later\",kind=\"input\"} 5\n",
            "aam_limit_pauses_total{group=\"anthropic\"} 2\n",
            "aam_commit_group_size_count 1\n",
            "aam_commit_group_size_sum 3.0\n",
            "aam_commit_duration_seconds_count 1\n",
            "aam_fdatasync_seconds_count 1\n",
            "aam_job_duration_seconds_count{outcome=\"limited\"} 1\n",
            "aam_job_duration_seconds_sum{outcome=\"limited\"} 1.5\n",
            // Every outcome has its series from the start, at zero.
            "aam_job_duration_seconds_count{outcome=\"timed_out\"} 0\n",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
    }
}
