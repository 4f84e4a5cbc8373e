//! Tests of a worktree job's own workspace keys and container: merged
//! over its agent's into the order, a container job placed only on a
//! worker with an engine (and why it waits otherwise), and one without an
//! image refused at submit.

use super::super::testing::*;
use aam_protocol::workspace::{Network, CONTAINER_LABEL, CONTAINER_LABEL_VALUE};
use aam_protocol::worktree::Isolation;

#[test]
fn a_container_jobs_keys_merge_over_its_agents_and_it_goes_to_a_worker_with_an_engine() {
    let mut config = agent_config();
    let claude = config.agents.get_mut("claude").unwrap();
    claude.image = Some("localhost/agents:1".into());
    claude.egress = Some(vec!["api.anthropic.com:443".into()]);
    claude.setup = Some(vec!["npm".into(), "ci".into()]);
    let mut s = State::new(config);
    let job = JobSpec {
        setup: Some(vec!["make".into(), "deps".into()]),
        cpus: Some(2.0),
        ..agent_job("fix", "claude")
    };
    let (id, _) = s.submit(batch(vec![job]), None, 0).unwrap();
    // A worker without an engine gets nothing, and the job says why.
    s.register_worker(1, worker("bare", 4), &[], 0).unwrap();
    assert!(s.dispatch(1).is_empty());
    let reason = job_view(&s, id, "fix", 1).reason.unwrap();
    assert_eq!(reason, "no worker can run containers");
    let mut boxed = worker("boxed", 4);
    boxed
        .labels
        .insert(CONTAINER_LABEL.into(), CONTAINER_LABEL_VALUE.into());
    s.register_worker(2, boxed, &[], 0).unwrap();
    let assigned = s.dispatch(2);
    assert_eq!(assigned.len(), 1);
    let (worker_id, assignment) = &assigned[0];
    assert_eq!(*worker_id, 2);
    let order = assignment.worktree.as_deref().expect("a worktree order");
    let workspace = order.workspace.as_deref().expect("its workspace keys");
    assert_eq!(
        workspace.setup,
        Some(vec!["make".to_string(), "deps".into()])
    );
    let container = workspace.container.as_ref().unwrap();
    assert_eq!(container.image, "localhost/agents:1");
    assert_eq!(container.cpus, Some(2.0));
    assert_eq!(
        container.network(),
        Network::Egress(vec!["api.anthropic.com:443".into()])
    );
}

#[test]
fn a_container_job_without_an_image_is_refused_naming_the_job_and_field() {
    let mut s = State::new(agent_config());
    let boxed = JobSpec {
        isolation: Some("container".into()),
        ..job("box", &[])
    };
    let err = s
        .submit(batch(vec![boxed]), None, 0)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("job 'box': field 'image': isolation = \"container\" needs an image"),
        "{err}"
    );
    // Workspace keys alone imply a worktree, with no container.
    let tidy = JobSpec {
        teardown: Some(vec!["make".into(), "stop".into()]),
        ..job("tidy", &[])
    };
    let (id, _) = s.submit(batch(vec![tidy]), None, 0).unwrap();
    let record = s
        .job(aam_protocol::JobKey {
            session: id,
            index: 0,
        })
        .unwrap();
    assert_eq!(record.isolation, Isolation::Worktree);
    assert!(record.workspace.as_ref().unwrap().container.is_none());
    assert!(!record.requires.contains_key(CONTAINER_LABEL));
}
