//! Durability: the manager killed with SIGKILL right after `aam submit`
//! returned comes back with the session, and it runs to completion.

use crate::job;
use aam_tests::Cluster;
use serde_json::json;

#[test]
fn a_session_survives_kill_9_of_the_manager_right_after_submit() {
    let mut c = Cluster::new();
    // Shorter than the default so an unreported job is requeued quickly.
    c.manager_env
        .push(("AAM_RECONNECT_GRACE_MS".into(), "3000".into()));
    c.start_manager();
    c.start_worker("w1", 2);
    c.start_worker("w2", 2);
    let marks = c.path("marks");
    std::fs::create_dir_all(&marks).unwrap();
    let jobs: Vec<_> = (0..12)
        .map(|i| {
            json!({
                "name": format!("d{i}"),
                "command": ["sh", "-c", "sleep 0.3; echo \"$AAM_ATTEMPT\" >> \"$MARKS/$AAM_JOB_NAME\""],
                "env": { "MARKS": marks.to_str().unwrap() },
                "depends_on": if i >= 10 { vec!["d0".to_string()] } else { vec![] },
            })
        })
        .collect();
    let file = c.write(
        "durable.json",
        &json!({"name": "durable", "jobs": jobs}).to_string(),
    );
    let session = c.submit(&file);
    c.kill_manager();
    c.start_manager();
    c.aam(&["wait", &session]).expect_code(0);

    let s = c.status(&session);
    assert_eq!(s["status"], "succeeded");
    for i in 0..12 {
        let name = format!("d{i}");
        assert_eq!(job(&s, &name)["status"], "succeeded");
        let runs = std::fs::read_to_string(marks.join(&name)).unwrap();
        assert_eq!(
            runs.lines().count(),
            1,
            "{name} finished {} times: {runs:?}",
            runs.lines().count()
        );
    }
}
