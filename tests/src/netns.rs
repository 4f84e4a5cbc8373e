//! Test hosts with addresses of their own: network namespaces joined by veth
//! pairs to a bridge of the test's own, so managers, workers and clients talk
//! over a real network that a test can cut (`ip link set ... down`).
//!
//! The machine's own namespace gets no address on the bridge: nothing a test
//! sends leaves its hosts. Every host of a [`TestNet`] is deleted when it is
//! dropped, panics included, and hosts left by a test process that died are
//! swept when the next one starts.

use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// Namespaces are named `PREFIX-PID-NET-HOST`, so leftovers of dead test
/// processes can be found.
const PREFIX: &str = "aamt";

/// One test host: a network namespace with one address on its test network.
#[derive(Clone, Debug)]
pub struct Host {
    /// The namespace's name (`ip netns exec NAME ...`).
    pub ns: String,
    pub ip: Ipv4Addr,
    /// The machine-side end of its veth pair: down cuts the host off.
    link: String,
}

/// A bridge and the hosts on it.
pub struct TestNet {
    bridge: String,
    pub hosts: Vec<Host>,
}

/// Fails the test with a clear message unless this process is root: test
/// hosts need `ip netns add` (no silent skip).
pub fn require_root(what: &str) {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "{what} needs root (euid {euid}): it makes test hosts with `ip netns add`, veth pairs and a bridge; run the tests as root"
    );
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap_or_else(|e| {
        panic!(
            "running `ip {}`: {e} (is iproute2 installed?)",
            args.join(" ")
        )
    });
    assert!(
        out.status.success(),
        "`ip {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// Deletes namespaces (and with them their veth pairs) and bridges that test
/// processes no longer alive left behind.
fn sweep_leftovers() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or_default();
        let mut parts = name.split('-');
        if parts.next() != Some(PREFIX) {
            continue;
        }
        let Some(pid) = parts.next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = Command::new("ip").args(["netns", "del", name]).status();
            if let Some(net) = parts.next() {
                let _ = Command::new("ip")
                    .args(["link", "del", &bridge_name(pid, net)])
                    .status();
            }
        }
    }
}

fn bridge_name(pid: u32, net: &str) -> String {
    // Interface names have at most 15 characters.
    format!("{PREFIX}{:x}{net}b", pid & 0xfffff)
}

impl TestNet {
    /// `hosts` hosts at 10.77.0.1, .2, ... on a bridge of their own. Each
    /// network is isolated, so every test may use the same addresses.
    pub fn new(hosts: usize) -> TestNet {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        require_root("a test on hosts of their own");
        sweep_leftovers();
        let pid = std::process::id();
        let net = NEXT.fetch_add(1, Ordering::Relaxed).to_string();
        let bridge = bridge_name(pid, &net);
        ip(&["link", "add", &bridge, "type", "bridge"]);
        let mut this = TestNet {
            bridge: bridge.clone(),
            hosts: Vec::new(),
        };
        ip(&["link", "set", &bridge, "up"]);
        for i in 1..=hosts {
            let host = Host {
                ns: format!("{PREFIX}-{pid}-{net}-{i}"),
                ip: Ipv4Addr::new(10, 77, 0, i as u8),
                link: format!("{}r{i}", &bridge[..bridge.len() - 1]),
            };
            let peer = format!("{}p{i}", &bridge[..bridge.len() - 1]);
            ip(&["netns", "add", &host.ns]);
            // Pushed now: dropped with the rest if a later step fails.
            this.hosts.push(host.clone());
            ip(&[
                "link", "add", &host.link, "type", "veth", "peer", "name", &peer,
            ]);
            ip(&["link", "set", &peer, "netns", &host.ns]);
            ip(&["link", "set", &host.link, "master", &bridge]);
            ip(&["link", "set", &host.link, "up"]);
            ip(&["-n", &host.ns, "link", "set", &peer, "name", "eth0"]);
            let cidr = format!("{}/24", host.ip);
            ip(&["-n", &host.ns, "addr", "add", &cidr, "dev", "eth0"]);
            ip(&["-n", &host.ns, "link", "set", "eth0", "up"]);
            ip(&["-n", &host.ns, "link", "set", "lo", "up"]);
        }
        this
    }

    pub fn host(&self, i: usize) -> &Host {
        &self.hosts[i]
    }

    /// Gives this machine's own namespace the address `10.77.0.LAST` on
    /// the bridge, so its processes (a worker, its egress proxy) reach the
    /// hosts through it; it goes with the bridge.
    pub fn join_machine(&self, last: u8) -> Ipv4Addr {
        let addr = Ipv4Addr::new(10, 77, 0, last);
        ip(&["addr", "add", &format!("{addr}/24"), "dev", &self.bridge]);
        addr
    }
}

impl Drop for TestNet {
    fn drop(&mut self) {
        // Deleting a namespace deletes its end of the veth pair, and with it
        // the other end.
        for host in &self.hosts {
            let _ = Command::new("ip").args(["netns", "del", &host.ns]).status();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .status();
    }
}

impl Host {
    /// `program` run on this host.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns]).arg(program);
        cmd
    }

    /// An address of this host with `port`.
    pub fn addr(&self, port: u16) -> SocketAddr {
        SocketAddr::new(self.ip.into(), port)
    }

    /// Unplugs the host from the bridge: nothing reaches it or leaves it,
    /// and its connections stay open, as when a cable is pulled.
    pub fn cut(&self) {
        ip(&["link", "set", &self.link, "down"]);
    }

    /// Plugs the host back in.
    pub fn restore(&self) {
        ip(&["link", "set", &self.link, "up"]);
    }

    /// Runs `f` on a thread inside this host's network: the sockets it
    /// makes belong to this host, and keep doing so when handed out.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        self.spawn(f)
            .join()
            .expect("a thread on a test host panicked")
    }

    /// Like [`Host::run`], without waiting for `f`.
    pub fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        let path = format!("/run/netns/{}", self.ns);
        std::thread::spawn(move || {
            let ns = std::fs::File::open(&path).unwrap_or_else(|e| panic!("opening {path}: {e}"));
            // SAFETY: setns on a namespace file we hold open; it changes only
            // this thread's network namespace.
            let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
            f()
        })
    }

    /// Whether a TCP connection from this host to `addr` opens (within 2 s).
    pub fn connects(&self, addr: SocketAddr) -> bool {
        self.run(move || {
            std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(2)).is_ok()
        })
    }
}
