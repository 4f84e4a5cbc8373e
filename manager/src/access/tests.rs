//! The role table, the request → action mapping and the agent-token batch check.

use super::*;
use aam_protocol::messages::OutputWanted;
use aam_protocol::spec::{parse_batch, Format};
use aam_protocol::SessionId;

fn batch(toml: &str) -> BatchSpec {
    parse_batch(&format!("name = \"b\"\n{toml}"), Format::Toml).unwrap()
}

#[test]
fn the_role_table() {
    use Action::*;
    let all = [
        Read("status"),
        Submit,
        Cancel,
        Approve,
        Reject,
        Retry,
        Continue,
        Gc,
        Audit,
        Register,
    ];
    let allowed = |role| -> Vec<&str> {
        all.iter()
            .filter(|&&a| role_allows(role, a))
            .map(|a| a.name())
            .collect()
    };
    assert_eq!(
        allowed(Role::Admin),
        ["status", "submit", "cancel", "approve", "reject", "retry", "continue", "gc", "audit"]
    );
    let submit = [
        "status", "submit", "cancel", "approve", "reject", "retry", "continue",
    ];
    assert_eq!(allowed(Role::Submit), submit);
    assert_eq!(allowed(Role::Agent), submit);
    assert_eq!(allowed(Role::Read), ["status"]);
    assert_eq!(allowed(Role::Worker), ["register"]);
    // The main token of old: everything.
    assert!(all.iter().all(|&a| Grant::admin_and_worker().allows(a)));
}

#[test]
fn requests_map_to_actions_and_refusals_name_token_and_role() {
    let session = SessionId(3);
    let read = Grant::new([Role::Read]);
    let view = ClientRequest::Session {
        session,
        output: OutputWanted::None,
        page: None,
    };
    assert_eq!(check("ro", &read, &view), Ok(()));
    let gc = ClientRequest::Gc {
        older_than_ms: None,
    };
    assert_eq!(
        check("ro", &read, &gc),
        Err("permission denied: token ro has role read".into())
    );
    let reject = ClientRequest::Decide {
        session,
        job: "gate".into(),
        approve: false,
        comment: None,
    };
    assert_eq!(action_of(&reject), Action::Reject);
    assert_eq!(target_of(&reject), "s3/gate");
    let both = Grant::new([Role::Worker, Role::Submit]);
    assert_eq!(
        check("w", &both, &gc),
        Err("permission denied: token w has role submit+worker".into())
    );
    assert_eq!(check("w", &both, &reject), Ok(()));
}

#[test]
fn an_agent_token_runs_only_configured_agents() {
    let agent = Grant::new([Role::Agent]);
    let submit = |b: &str| ClientRequest::Submit {
        batch: batch(b),
        idempotency_key: None,
    };
    let ok = "[[jobs]]\nname = \"a\"\nagent = \"rev\"\nprompt = \"hi\"\nworkdir = \"src/x\"\n\
              [[jobs]]\nname = \"g\"\ngate = true\n";
    assert_eq!(check("bot", &agent, &submit(ok)), Ok(()));
    let refused = [
        (
            "[[jobs]]\nname = \"a\"\ncommand = [\"rm\"]\n",
            "sets `command`",
        ),
        (
            "[[jobs]]\nname = \"a\"\nagent = \"rev\"\nenv = { X = \"1\" }\n",
            "sets `env`",
        ),
        (
            "[[jobs]]\nname = \"a\"\nagent = \"rev\"\nworkdir = \"/etc\"\n",
            "absolute",
        ),
        (
            "[[jobs]]\nname = \"a\"\nagent = \"rev\"\nworkdir = \"../x\"\n",
            "climbs out",
        ),
        (
            "[[jobs]]\nname = \"a\"\nagent = \"rev\"\nworkdir = \"a/../../x\"\n",
            "climbs out",
        ),
        (
            "[[jobs]]\nname = \"a\"\nagent = \"rev\"\nverify = [\"make\"]\n",
            "verify",
        ),
    ];
    for (text, why) in refused {
        let err = check("bot", &agent, &submit(text)).unwrap_err();
        assert!(
            err.starts_with("permission denied: token bot has role agent: job a"),
            "{err}"
        );
        assert!(err.contains(why), "{err}");
    }
    // A submit token may run commands.
    let cmd = "[[jobs]]\nname = \"a\"\ncommand = [\"true\"]\nworkdir = \"/tmp\"\n";
    assert_eq!(
        check("ci", &Grant::new([Role::Submit]), &submit(cmd)),
        Ok(())
    );
    assert_eq!(
        check("ci", &Grant::new([Role::Agent, Role::Submit]), &submit(cmd)),
        Ok(())
    );
}
