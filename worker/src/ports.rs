//! TCP ports reserved per job (`ports = N` in a batch): taken from the
//! worker's range (`--ports`), each free when reserved (it can be bound)
//! and held by no other job of this worker, released when the job ends.
//! The job sees them as `AAM_PORT` (the first) and `AAM_PORTS` (all).

use std::collections::HashSet;
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

/// The range a worker reserves from when `--ports` is not given: above
/// the usual servers' ports and below Linux's ephemeral range (32768-).
pub const DEFAULT_RANGE: PortRange = PortRange {
    first: 20000,
    last: 29999,
};

/// A range of TCP ports, both ends included (`20000-29999`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl std::str::FromStr for PortRange {
    type Err = String;

    fn from_str(text: &str) -> Result<PortRange, String> {
        let bad = || format!("'{text}' is not a port range (e.g. 20000-29999)");
        let (first, last) = text.trim().split_once('-').ok_or_else(bad)?;
        let first: u16 = first.trim().parse().map_err(|_| bad())?;
        let last: u16 = last.trim().parse().map_err(|_| bad())?;
        if first == 0 || first > last {
            return Err(bad());
        }
        Ok(PortRange { first, last })
    }
}

impl std::fmt::Display for PortRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

/// The worker's ports: its range, those its running jobs hold, and where
/// the next search starts (after the last port handed out, so a port a
/// job just gave back is not the next job's while its sockets close).
pub struct PortPool {
    range: PortRange,
    state: Mutex<PoolState>,
}

struct PoolState {
    held: HashSet<u16>,
    next: u16,
}

impl PortPool {
    pub fn new(range: PortRange) -> Arc<PortPool> {
        Arc::new(PortPool {
            range,
            state: Mutex::new(PoolState {
                held: HashSet::new(),
                next: range.first,
            }),
        })
    }

    /// Reserves `count` ports that can be bound now, or says why not.
    pub fn reserve(self: &Arc<Self>, count: u8) -> Result<Reservation, String> {
        self.reserve_with(count, can_bind)
    }

    /// `reserve`, with `is_free` telling whether a port can be bound.
    fn reserve_with(
        self: &Arc<Self>,
        count: u8,
        is_free: impl Fn(u16) -> bool,
    ) -> Result<Reservation, String> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let PortRange { first, last } = self.range;
        let size = (last - first) as u32 + 1;
        let mut ports = Vec::with_capacity(count as usize);
        let mut port = state.next.clamp(first, last);
        for _ in 0..size {
            if ports.len() == count as usize {
                break;
            }
            if !state.held.contains(&port) && is_free(port) {
                ports.push(port);
            }
            port = if port == last { first } else { port + 1 };
        }
        if ports.len() < count as usize {
            return Err(format!(
                "{count} ports asked, {} free in this worker's range {} ({} held by its jobs)",
                ports.len(),
                self.range,
                state.held.len()
            ));
        }
        state.held.extend(&ports);
        state.next = port;
        Ok(Reservation {
            pool: self.clone(),
            ports,
        })
    }
}

/// Whether nothing listens on `port` (any address): binding it on all
/// addresses fails when another socket is bound to it on one of them.
fn can_bind(port: u16) -> bool {
    TcpListener::bind(("0.0.0.0", port)).is_ok()
}

/// Ports a job holds; given back when dropped.
pub struct Reservation {
    pool: Arc<PortPool>,
    ports: Vec<u16>,
}

impl Reservation {
    pub fn ports(&self) -> &[u16] {
        &self.ports
    }

    /// `AAM_PORT` and `AAM_PORTS` for the job; nothing when it has no port.
    pub fn env(&self) -> Vec<(String, String)> {
        let Some(first) = self.ports.first() else {
            return Vec::new();
        };
        let all: Vec<String> = self.ports.iter().map(u16::to_string).collect();
        vec![
            ("AAM_PORT".to_string(), first.to_string()),
            ("AAM_PORTS".to_string(), all.join(",")),
        ]
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut state = self.pool.state.lock().unwrap_or_else(|p| p.into_inner());
        for port in &self.ports {
            state.held.remove(port);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(first: u16, last: u16) -> Arc<PortPool> {
        PortPool::new(PortRange { first, last })
    }

    #[test]
    fn ranges_parse_and_bad_ones_are_named() {
        assert_eq!("20000-29999".parse(), Ok(DEFAULT_RANGE));
        assert_eq!(" 5-5 ".parse(), Ok(PortRange { first: 5, last: 5 }));
        for bad in ["", "20000", "9-8", "0-10", "1-70000", "a-b"] {
            let error = bad.parse::<PortRange>().unwrap_err();
            assert!(
                error.contains(&format!("'{bad}' is not a port range")),
                "{error}"
            );
        }
    }

    #[test]
    fn jobs_get_distinct_ports_until_they_give_them_back() {
        let pool = pool(100, 104);
        let a = pool.reserve_with(2, |_| true).unwrap();
        let b = pool.reserve_with(3, |_| true).unwrap();
        assert_eq!(a.ports(), [100, 101]);
        assert_eq!(b.ports(), [102, 103, 104]);
        let error = pool.reserve_with(1, |_| true).err().unwrap();
        assert_eq!(
            error,
            "1 ports asked, 0 free in this worker's range 100-104 (5 held by its jobs)"
        );
        drop(a);
        let c = pool.reserve_with(2, |_| true).unwrap();
        assert_eq!(c.ports(), [100, 101]);
    }

    #[test]
    fn ports_in_use_elsewhere_are_skipped() {
        let pool = pool(100, 109);
        let taken = pool.reserve_with(3, |port| port % 2 == 1).unwrap();
        assert_eq!(taken.ports(), [101, 103, 105]);
        let env = taken.env();
        assert_eq!(env[0], ("AAM_PORT".into(), "101".into()));
        assert_eq!(env[1], ("AAM_PORTS".into(), "101,103,105".into()));
    }

    #[test]
    fn the_search_goes_on_after_the_last_port_handed_out() {
        let pool = pool(100, 103);
        drop(pool.reserve_with(2, |_| true).unwrap());
        // 100 and 101 are free again, but 102 comes first, then it wraps.
        let next = pool.reserve_with(3, |_| true).unwrap();
        assert_eq!(next.ports(), [102, 103, 100]);
    }

    #[test]
    fn no_ports_asked_is_an_empty_reservation_with_no_variables() {
        let pool = pool(100, 100);
        let none = pool.reserve_with(0, |_| false).unwrap();
        assert!(none.ports().is_empty() && none.env().is_empty());
    }

    #[test]
    fn a_port_something_listens_on_is_not_reserved() {
        let listener = TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let busy = listener.local_addr().unwrap().port();
        let pool = pool(busy, busy);
        assert!(pool.reserve(1).is_err());
        drop(listener);
        assert_eq!(pool.reserve(1).unwrap().ports(), [busy]);
    }
}
