//! `max_connections_per_peer`: how many authenticated connections one IP
//! address may hold at once. Counted once a peer has authenticated, so
//! sockets that never handshake (bounded apart, by the listener's
//! `MAX_HANDSHAKES`, oldest pushed out) never keep a real client of the same
//! address out.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Addresses past this many are pruned of those that hold no connection.
const PEERS_KEPT: usize = 4096;

/// Each address's connection slots, shared by every handshake.
#[derive(Clone)]
pub struct PeerSlots {
    pub per_peer: usize,
    peers: Arc<Mutex<HashMap<IpAddr, Arc<Semaphore>>>>,
}

impl PeerSlots {
    pub fn new(per_peer: usize) -> PeerSlots {
        PeerSlots {
            per_peer,
            peers: Arc::default(),
        }
    }

    /// One of `ip`'s slots, held while the connection lives; None when it
    /// holds `per_peer` already.
    pub fn take(&self, ip: IpAddr) -> Option<OwnedSemaphorePermit> {
        let mut peers = self.peers.lock().unwrap_or_else(PoisonError::into_inner);
        if peers.len() > PEERS_KEPT {
            let per_peer = self.per_peer;
            peers.retain(|_, s| s.available_permits() < per_peer);
        }
        let slots = peers
            .entry(ip)
            .or_insert_with(|| Arc::new(Semaphore::new(self.per_peer)));
        slots.clone().try_acquire_owned().ok()
    }

    /// The refusal of one connection too many from `ip`.
    pub fn refusal(&self, ip: IpAddr) -> String {
        format!(
            "too many connections from {ip}: at most {} at once (max_connections_per_peer)",
            self.per_peer
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_address_has_its_own_slots_given_back_when_dropped() {
        let slots = PeerSlots::new(2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let first = slots.take(a).unwrap();
        let _second = slots.take(a).unwrap();
        assert!(slots.take(a).is_none());
        assert!(slots.take(b).is_some());
        drop(first);
        assert!(slots.take(a).is_some());
        assert_eq!(
            slots.refusal(a),
            "too many connections from 10.0.0.1: at most 2 at once (max_connections_per_peer)"
        );
    }
}
