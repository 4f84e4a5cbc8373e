//! The internal network of egress-limited containers: made once per host
//! (`aam-egress`, `--internal`: no route out), its gateway the address the
//! jobs' proxies listen on. Its bridge's MAC address is pinned after each
//! container joins: a Linux bridge otherwise takes the lowest of its
//! ports', so every container that joins or leaves changes it and the
//! others lose their gateway (the proxy) until their ARP entry expires.

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
