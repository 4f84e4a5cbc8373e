//! The internal network of egress-limited containers: made once per host
//! (`aam-egress`, `--internal`: no route out), its gateway the address the
//! jobs' proxies listen on. Its bridge's MAC address is pinned after each
//! container joins: a Linux bridge otherwise takes the lowest of its
//! ports', so every container that joins or leaves changes it and the
//! others lose their gateway (the proxy) until their ARP entry expires.
//!
//! `--internal` gives no route out, but the host itself is on the bridge:
//! a service of the host bound to every address would be reachable at the
//! gateway. So the worker drops whatever comes in from the bridge
//! (`iptables -A INPUT -i BRIDGE -j DROP`, and `ip6tables` for link-local
//! addresses), and lets through only each job's proxy port while it runs.

use super::{Containers, EngineKind};
use std::net::IpAddr;

/// The network's name, shared by every worker of the host.
pub const NAME: &str = "aam-egress";

/// The egress network as the engine made it.
#[derive(Clone, Debug)]
pub struct EgressNet {
    /// Where the proxies listen: the bridge's address, which containers
    /// on the network reach without a route.
    pub gateway: IpAddr,
    /// The bridge's interface (`podman1`).
    pub bridge: String,
}

/// Makes the network unless it exists, and reads its gateway and bridge.
pub async fn ensure(containers: &Containers) -> Result<EgressNet, String> {
    if let Err(made) = inspect(containers).await {
        let create = ["network", "create", "--internal", NAME].map(String::from);
        if let Err(why) = containers.run(&create).await {
            // Another worker of this host may have made it meanwhile.
            if inspect(containers).await.is_err() {
                return Err(format!("cannot make the network {NAME}: {why} ({made})"));
            }
        }
    }
    inspect(containers).await
}

async fn inspect(containers: &Containers) -> Result<EgressNet, String> {
    let format = match containers.engine.kind {
        EngineKind::Podman => "{{range .Subnets}}{{.Gateway}} {{end}}|{{.NetworkInterface}}",
        EngineKind::Docker => {
            "{{range .IPAM.Config}}{{.Gateway}} {{end}}|br-{{printf \"%.12s\" .Id}}"
        }
    };
    let args = ["network", "inspect", NAME, "--format", format].map(String::from);
    let out = containers.run(&args).await?;
    let (gateways, bridge) = out
        .trim()
        .split_once('|')
        .ok_or_else(|| format!("{NAME}: unexpected inspect output '{}'", out.trim()))?;
    let gateway = gateways
        .split_whitespace()
        .filter_map(|g| g.parse::<IpAddr>().ok())
        .find(IpAddr::is_ipv4)
        .ok_or_else(|| format!("{NAME} has no IPv4 gateway"))?;
    Ok(EgressNet {
        gateway,
        bridge: bridge.trim().to_string(),
    })
}

/// Whatever comes in from the bridge is dropped but for the proxy's port
/// (`port`) on the gateway, while the guard lives. Best effort: without
/// iptables (or the right to use it) the job still runs, with a warning
/// that the host's services bound to every address are within its reach.
pub async fn guard_host(net: &EgressNet, port: u16) -> HostGuard {
    let bridge = net.bridge.clone();
    let drop_all = |tool: &str, verb: &str| {
        vec![
            tool.to_string(),
            verb.into(),
            "INPUT".into(),
            "-i".into(),
            bridge.clone(),
            "-j".into(),
            "DROP".into(),
        ]
    };
    let mut ok = true;
    // Replies to connections the host opened (the job's ports, relayed)
    // come back in from the bridge: let those through first.
    let replies = |verb: &str| {
        [
            "iptables",
            verb,
            "INPUT",
            "-i",
            &bridge,
            "-m",
            "conntrack",
            "--ctstate",
            "ESTABLISHED,RELATED",
            "-j",
            "ACCEPT",
        ]
        .map(String::from)
        .to_vec()
    };
    if !iptables(&replies("-C")).await {
        ok &= iptables(&replies("-I")).await;
    }
    for tool in ["iptables", "ip6tables"] {
        // Appended once (checked first), so each job's ACCEPT, inserted at
        // the top, comes before it.
        if !iptables(&drop_all(tool, "-C")).await {
            ok &= iptables(&drop_all(tool, "-A")).await;
        }
    }
    let accept = accept_rule(net, port);
    let mut insert = accept.clone();
    insert[1] = "-I".into();
    ok &= iptables(&insert).await;
    if !ok {
        tracing::warn!(bridge = %net.bridge,
            "could not limit what egress-listed containers reach on this host (iptables):              services of this host bound to every address are within their reach");
    }
    HostGuard {
        rule: ok.then_some(accept),
    }
}

/// `iptables -? INPUT -i BRIDGE -p tcp -d GATEWAY --dport PORT -j ACCEPT`.
fn accept_rule(net: &EgressNet, port: u16) -> Vec<String> {
    [
        "iptables",
        "-D",
        "INPUT",
        "-i",
        &net.bridge,
        "-p",
        "tcp",
        "-d",
        &net.gateway.to_string(),
        "--dport",
        &port.to_string(),
        "-j",
        "ACCEPT",
    ]
    .map(String::from)
    .to_vec()
}

/// Runs an iptables command; whether it succeeded.
async fn iptables(argv: &[String]) -> bool {
    tokio::process::Command::new(&argv[0])
        .args(["-w", "5"])
        .args(&argv[1..])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .await
        .is_ok_and(|s| s.success())
}

/// A job's proxy port let through; the rule goes when it is dropped.
pub struct HostGuard {
    /// The rule to delete (`-D`), when it was added.
    rule: Option<Vec<String>>,
}

impl Drop for HostGuard {
    fn drop(&mut self) {
        let Some(rule) = self.rule.take() else {
            return;
        };
        std::thread::spawn(move || {
            let _ = std::process::Command::new(&rule[0])
                .args(["-w", "5"])
                .args(&rule[1..])
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
        });
    }
}

/// Pins the bridge's MAC address (a fixed, locally administered one
/// derived from its name). Best effort: without the right to, containers
/// only see the gateway move now and then.
pub async fn pin_bridge_address(net: &EgressNet) {
    let mac = bridge_mac(&net.bridge);
    let set = tokio::process::Command::new("ip")
        .args(["link", "set", "dev", &net.bridge, "address", &mac])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .output()
        .await;
    match set {
        Ok(out) if out.status.success() => {}
        Ok(out) => tracing::debug!(bridge = %net.bridge, "bridge address not pinned: {}",
            String::from_utf8_lossy(&out.stderr).trim()),
        Err(e) => tracing::debug!(bridge = %net.bridge, "bridge address not pinned: ip: {e}"),
    }
}

/// `02:xx:xx:xx:xx:xx` from the bridge's name (FNV-1a): the same for the
/// same bridge from every worker, so two workers never fight over it.
fn bridge_mac(bridge: &str) -> String {
    let hash = bridge.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    });
    let b = hash.to_be_bytes();
    format!(
        "02:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        b[0], b[1], b[2], b[3], b[4]
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_bridges_address_is_fixed_and_locally_administered() {
        let mac = super::bridge_mac("podman1");
        assert_eq!(mac, super::bridge_mac("podman1"));
        assert_ne!(mac, super::bridge_mac("podman2"));
        assert!(mac.starts_with("02:") && mac.len() == 17, "{mac}");
    }
}
