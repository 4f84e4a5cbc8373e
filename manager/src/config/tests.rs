//! Tests of the manager's config: files, environment, flags and the checks.

use super::*;

#[test]
fn layers_apply_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("aam.toml");
    std::fs::write(
        &path,
        "listen = \"0.0.0.0:1\"\nlease_ms = 9000\n[agents.Rev]\ncommand = [\"echo\", \"{prompt}\"]\nenv = { RUST_LOG = \"info\" }\n",
    )
    .unwrap();
    let env = vec![
        ("AAM_LEASE_MS".to_string(), "7000".to_string()),
        ("AAM_LISTEN".to_string(), "127.0.0.1:2".to_string()),
        ("AAM_MANAGER".to_string(), "ignored".to_string()),
    ];
    let cfg = ManagerConfig::load(Some(&path), env, &[("listen", "127.0.0.1:3".into())]).unwrap();
    assert_eq!(cfg.listen, "127.0.0.1:3");
    assert_eq!(cfg.lease_ms, 7000);
    assert_eq!(cfg.heartbeat_ms, 1000);
    let agent = &cfg.agents["Rev"];
    assert_eq!(agent.env["RUST_LOG"], "info");
}

#[test]
fn secret_env_takes_names_only_and_debug_hides_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("aam.toml");
    let load = |agent: &str| {
        let text =
            format!("token = \"tok-0123456789abcdef\"\n[agents.a]\ncommand = [\"x\"]\n{agent}");
        std::fs::write(&path, text).unwrap();
        ManagerConfig::load(Some(&path), vec![], &[])
    };
    let cfg = load("secret_env = [\"ANTHROPIC_API_KEY\"]\nenv = { OPENAI_API_KEY = \"sk-9\" }\n")
        .unwrap();
    assert_eq!(cfg.agents["a"].secret_env, ["ANTHROPIC_API_KEY"]);
    let shown = format!("{cfg:?}");
    assert!(
        !shown.contains("tok-0123456789abcdef") && !shown.contains("sk-9"),
        "{shown}"
    );
    let e = load("secret_env = [\"sk-ant-api03-xyz\"]\n")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("agents.a.secret_env: entry 1 is not a variable name"),
        "{e}"
    );
    assert!(!e.contains("sk-ant"), "the value is not echoed: {e}");
    let e = load("secret_env = [\"K_KEY\"]\nenv = { K_KEY = \"v\" }\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("K_KEY is in both env and secret_env"), "{e}");
}

#[test]
fn resources_keep_their_case_and_a_bad_capacity_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("aam.toml");
    std::fs::write(&path, "[resources]\nDB = 1\nemulator = 4\n").unwrap();
    let cfg = ManagerConfig::load(Some(&path), vec![], &[]).unwrap();
    let caps = cfg.state_config().resources;
    assert_eq!((caps["DB"], caps["emulator"]), (1, 4));
    std::fs::write(&path, "[resources]\ndb = 0\n").unwrap();
    let e = ManagerConfig::load(Some(&path), vec![], &[]).unwrap_err();
    assert!(
        e.to_string()
            .contains("resources.db: the capacity must be a positive integer, not 0"),
        "{e}"
    );
}

#[test]
fn http_defaults_to_loopback_and_can_be_off() {
    let cfg = ManagerConfig::load(None, vec![], &[]).unwrap();
    assert_eq!(cfg.http_addr(), Some(DEFAULT_HTTP_ADDR));
    let env = vec![("AAM_HTTP".to_string(), "off".to_string())];
    assert_eq!(
        ManagerConfig::load(None, env, &[]).unwrap().http_addr(),
        None
    );
    // A default of the caller's (aam run) under the environment and flags.
    let off = [("http", "off".to_string())];
    let cfg = ManagerConfig::load_with_defaults(None, vec![], &off, &[]).unwrap();
    assert_eq!(cfg.http_addr(), None);
    let env = vec![("AAM_HTTP".to_string(), "127.0.0.1:0".to_string())];
    let cfg = ManagerConfig::load_with_defaults(None, env, &off, &[]).unwrap();
    assert_eq!(cfg.http_addr(), Some("127.0.0.1:0"));
    let e = ManagerConfig::load(None, vec![], &[("http", "7411".into())]).unwrap_err();
    assert!(
        e.to_string().contains("http (7411) must be an address"),
        "{e}"
    );
}

#[test]
fn unknown_keys_and_bad_values_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("aam.toml");
    std::fs::write(&path, "lisen = \"x\"\n").unwrap();
    let e = ManagerConfig::load(Some(&path), vec![], &[])
        .unwrap_err()
        .to_string();
    assert!(e.contains("aam.toml") && e.contains("lisen"), "{e}");
    let e = ManagerConfig::load(None, vec![], &[("lease_ms", "10".into())])
        .unwrap_err()
        .to_string();
    assert!(e.contains("lease_ms"), "{e}");
}

#[test]
fn prices_limits_and_budgets_load_and_bad_ones_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("aam.toml");
    let write = |text: &str| std::fs::write(&path, text).unwrap();
    write(concat!(
        "limit_backoff = \"2m\"\n",
        "[prices]\n\"claude-3.5-Sonnet\" = { input = 2.0, output = 8.0 }\n",
        "[agents.c]\ncommand = [\"claude\"]\nformat = \"text\"\nlimit_group = \"anthropic\"\n",
    ));
    let env = vec![("AAM_MAX_COST_USD".to_string(), "2.5".to_string())];
    let cfg = ManagerConfig::load(Some(&path), env, &[]).unwrap();
    assert_eq!(cfg.max_cost_usd, Some(2.5));
    let price = cfg.prices.0["claude-3.5-Sonnet"];
    assert_eq!(
        (price.input, price.cache_read, price.cache_write),
        (2.0, 0.2, 2.5)
    );
    let state = cfg.state_config();
    assert_eq!(state.limit_backoff_ms, 120_000);
    assert_eq!(state.default_max_cost_usd, Some(2.5));
    assert_eq!(state.prices.of("claude-3.5-Sonnet-x").unwrap().output, 8.0);
    let refused = |text: &str| {
        write(text);
        ManagerConfig::load(Some(&path), vec![], &[])
            .unwrap_err()
            .to_string()
    };
    let e = refused("[agents.c]\ncommand = [\"c\"]\nformat = \"json\"\n");
    assert!(e.contains("agents.c.format: unknown format 'json'"), "{e}");
    let e = refused("[agents.c]\ncommand = [\"c\"]\nlimit_group = \"a b\"\n");
    assert!(e.contains("agents.c.limit_group"), "{e}");
    let e = refused("limit_backoff = \"2h\"\n");
    assert!(e.contains("limit_backoff"), "{e}");
    let e = refused("max_cost_usd = -1.0\n");
    assert!(e.contains("max_cost_usd"), "{e}");
    let e = refused("[prices]\nm = { input = -1.0, output = 1.0 }\n");
    assert!(e.contains("prices.m"), "{e}");
    let e = refused("[prices]\nm = { input = 1.0, outptu = 1.0 }\n");
    assert!(e.contains("outptu"), "{e}");
}

#[test]
fn worktree_keys_load_and_bad_ones_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("aam.toml");
    let write = |text: &str| std::fs::write(&path, text).unwrap();
    write("gc_branches = true\n[agents.c]\ncommand = [\"c\"]\nisolation = \"worktree\"\n");
    let cfg = ManagerConfig::load(Some(&path), vec![], &[]).unwrap();
    let state = cfg.state_config();
    assert!(state.gc_branches);
    assert_eq!(state.patch_cap, DEFAULT_PATCH_CAP);
    let refused = |text: &str| {
        write(text);
        ManagerConfig::load(Some(&path), vec![], &[])
            .unwrap_err()
            .to_string()
    };
    let e = refused("[agents.c]\ncommand = [\"c\"]\nisolation = \"jail\"\n");
    assert!(
        e.contains("agents.c.isolation: unknown isolation 'jail'"),
        "{e}"
    );
    for (text, expected) in [
        (
            "[agents.c]\ncommand = [\"c\"]\nisolation = \"worktree\"\nimage = \"x\"\n",
            "agents.c.image: 'image' needs isolation = \"container\"",
        ),
        (
            "[agents.c]\ncommand = [\"c\"]\negress = [\"nohost\"]\n",
            "agents.c.egress: 'nohost' is not host:port",
        ),
        (
            "[agents.c]\ncommand = [\"c\"]\nisolation = \"none\"\nsetup = [\"make\"]\n",
            "agents.c.setup: 'setup' needs isolation = \"worktree\" or \"container\"",
        ),
    ] {
        let e = refused(text);
        assert!(e.contains(expected), "{text}: {e}");
    }
    let e = refused("patch_cap_bytes = 16777216\n");
    assert!(
        e.contains("patch_cap_bytes (16777216) must be between"),
        "{e}"
    );
}

#[test]
fn the_example_config_loads_and_documents_every_key() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/aam.example.toml");
    let cfg = ManagerConfig::load(Some(&path), vec![], &[]).unwrap();
    assert!(cfg.agents.contains_key("echo"), "{:?}", cfg.agents.keys());
    let text = std::fs::read_to_string(&path).unwrap();
    for key in ENV_KEYS {
        let documented = text
            .lines()
            .any(|l| l.trim_start_matches("# ").starts_with(&format!("{key} =")));
        assert!(
            documented,
            "deploy/aam.example.toml does not document '{key}'"
        );
    }
}

#[test]
fn accounts_keep_their_case_and_an_unknown_one_names_agent_and_account() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("aam.toml");
    let write = |text: &str| std::fs::write(&path, text).unwrap();
    write(concat!(
        "resume_burst = 3\nresume_interval = \"5s\"\n",
        "[accounts.Work]\nenv = { CLAUDE_CONFIG_DIR = \"/home/u/.claude-work\" }\n",
        "[accounts.personal]\nenv = { ANTHROPIC_API_KEY = \"k\" }\n",
        "[agents.c]\ncommand = [\"claude\"]\naccounts = [\"Work\", \"personal\"]\n",
    ));
    let cfg = ManagerConfig::load(Some(&path), vec![], &[]).unwrap();
    let state = cfg.state_config();
    assert_eq!(
        state.accounts["Work"].env["CLAUDE_CONFIG_DIR"],
        "/home/u/.claude-work"
    );
    assert_eq!(state.agents["c"].accounts, ["Work", "personal"]);
    assert_eq!((state.resume_burst, state.resume_interval_ms), (3, 5000));
    // Never a value in the config's Debug.
    assert!(!format!("{cfg:?} {state:?}").contains("claude-work"));

    let refused = |text: &str| {
        write(text);
        ManagerConfig::load(Some(&path), vec![], &[])
            .unwrap_err()
            .to_string()
    };
    let e = refused("[accounts.work]\n[agents.c]\ncommand = [\"c\"]\naccounts = [\"wrok\"]\n");
    assert!(
        e.contains("agents.c.accounts: unknown account 'wrok' (declared: work)"),
        "{e}"
    );
    let e = refused("[agents.c]\ncommand = [\"c\"]\naccounts = [\"work\"]\n");
    assert!(e.contains("no [accounts.NAME]"), "{e}");
    let e = refused("[accounts.w]\nenv = { \"A B\" = \"x\" }\n");
    assert!(
        e.contains("accounts.w.env: 'A B' is not a variable name"),
        "{e}"
    );
    // secret_env: the value names the worker's variable, never holds a key.
    let e = refused("[accounts.w]\nsecret_env = { ANTHROPIC_API_KEY = \"sk-ant-api03-xyz\" }\n");
    assert!(
        e.contains("accounts.w.secret_env.ANTHROPIC_API_KEY: the value must name a variable"),
        "{e}"
    );
    assert!(!e.contains("sk-ant"), "the pasted key is not echoed: {e}");
    let e = refused("[accounts.w]\nenv = { K = \"v\" }\nsecret_env = { K = \"W_K\" }\n");
    assert!(e.contains("K is in both its env and its secret_env"), "{e}");
    let e = refused("[accounts.w]\n[agents.c]\ncommand = [\"c\"]\naccounts = [\"w\", \"w\"]\n");
    assert!(e.contains("account 'w' is listed twice"), "{e}");
    let e = refused("resume_burst = 0\n");
    assert!(e.contains("resume_burst must be at least 1"), "{e}");
    let e = refused("resume_interval = \"soon\"\n");
    assert!(e.contains("resume_interval"), "{e}");
}
