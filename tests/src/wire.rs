//! A blocking peer speaking the wire protocol directly: frames of a u32
//! big-endian length and a bincode payload, after TLS (trusting the
//! certificate the cluster's manager made) and the handshake. Tests use
//! it to send what `aam` and `aam-worker` never would (forged reports,
//! oversized registrations, requests never read); benchmarks use it so
//! their figures do not include starting a process per request.

use aam_protocol::codec;
use aam_protocol::messages::{Handshake, HandshakeReply, ManagerToWorker, Role, WorkerToManager};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::time::Duration;

/// How long `recv` waits for a frame before it panics.
const RECV_TIMEOUT: Duration = Duration::from_secs(120);

pub struct Wire {
    pub stream: crate::tls::TlsStream,
}

impl Wire {
    /// Connects and authenticates as `role`; panics if refused.
    pub fn connect(addr: &str, role: Role, token: &str) -> Wire {
        Wire::try_connect(addr, role, token).expect("connecting to the manager")
    }

    /// Connects and authenticates as `role`, waiting up to 10 s for the
    /// manager's answer.
    pub fn try_connect(addr: &str, role: Role, token: &str) -> io::Result<Wire> {
        let stream = crate::tls::connect(addr)?;
        let mut wire = Wire { stream };
        let mut handshake = Handshake::new(role, token);
        // A benchmark of an older build (`AAM_BIN_DIR`) whose client
        // messages are the same may claim its protocol version.
        if let Some(version) = std::env::var("AAM_PEER_PROTOCOL_VERSION")
            .ok()
            .and_then(|v| v.parse().ok())
        {
            handshake.version = version;
        }
        wire.try_send(&handshake)?;
        match wire.try_recv::<HandshakeReply>(Duration::from_secs(10))? {
            HandshakeReply::Accepted { .. } => Ok(wire),
            HandshakeReply::Rejected { reason } => Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("handshake rejected: {reason}"),
            )),
        }
    }

    /// Writes one frame; panics if the connection is gone.
    pub fn send<T: Serialize>(&mut self, msg: &T) {
        self.try_send(msg).expect("writing a frame");
    }

    /// Writes one frame.
    pub fn try_send<T: Serialize>(&mut self, msg: &T) -> io::Result<()> {
        let payload = codec::encode(msg).expect("encodable message");
        self.send_encoded(&payload)
    }

    /// Writes one frame of a message already encoded (`codec::encode`).
    pub fn send_encoded(&mut self, payload: &[u8]) -> io::Result<()> {
        let mut frame = (payload.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(payload);
        self.stream.write_all(&frame)?;
        self.stream.flush()
    }

    /// Reads one frame, waiting up to 120 s; panics otherwise.
    pub fn recv<T: DeserializeOwned>(&mut self) -> T {
        self.try_recv(RECV_TIMEOUT).expect("reading a frame")
    }

    /// Reads one frame, waiting up to `timeout` for it to start; an error
    /// when it does not come, or the connection is closed.
    pub fn try_recv<T: DeserializeOwned>(&mut self, timeout: Duration) -> io::Result<T> {
        self.stream.sock.set_read_timeout(Some(timeout))?;
        let mut len = [0u8; 4];
        self.stream.read_exact(&mut len)?;
        self.stream.sock.set_read_timeout(Some(RECV_TIMEOUT))?;
        let mut payload = vec![0u8; u32::from_be_bytes(len) as usize];
        self.stream.read_exact(&mut payload)?;
        codec::decode(&payload).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }

    /// Connects as a worker and sends `Register`; returns the connection
    /// and the manager's first answer.
    pub fn register(addr: &str, token: &str, register: WorkerToManager) -> (Wire, ManagerToWorker) {
        let mut wire = Wire::connect(addr, Role::Worker, token);
        wire.send(&register);
        let answer = wire.recv();
        (wire, answer)
    }
}

/// A `Register` of a worker with one slot, no labels and no attempts.
pub fn registration(name: &str, instance: u64) -> WorkerToManager {
    WorkerToManager::Register {
        name: name.into(),
        instance,
        slots: 1,
        prefetch: aam_protocol::messages::Prefetch::Fixed(0),
        labels: BTreeMap::new(),
        assigned: Vec::new(),
    }
}
