//! A TCP proxy that records every byte it forwards, both ways: what someone
//! on the path between a client and the manager would see.

use crate::netns::Host;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// A running proxy; stopped when dropped.
pub struct RecordingProxy {
    /// Where clients connect to reach the target through it.
    pub addr: SocketAddr,
    recorded: Arc<Mutex<Vec<u8>>>,
    stop: Arc<AtomicBool>,
    host: Host,
    accepter: Option<JoinHandle<()>>,
}

impl RecordingProxy {
    /// Listens on `host` at `port` and forwards each connection to `target`.
    pub fn start(host: &Host, port: u16, target: SocketAddr) -> RecordingProxy {
        let addr = host.addr(port);
        let listener = host.run(move || TcpListener::bind(addr));
        let listener = listener.unwrap_or_else(|e| panic!("proxy binding {addr}: {e}"));
        let recorded = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (rec, halt) = (recorded.clone(), stop.clone());
        // Connections to the target are made on the proxy's host.
        let accepter = host.spawn(move || accept_loop(listener, target, rec, halt));
        RecordingProxy {
            addr,
            recorded,
            stop,
            host: host.clone(),
            accepter: Some(accepter),
        }
    }

    /// Everything forwarded so far, both directions.
    pub fn recorded(&self) -> Vec<u8> {
        self.recorded.lock().unwrap().clone()
    }

    /// Whether `needle` crossed the proxy in clear.
    pub fn saw(&self, needle: &str) -> bool {
        let hay = self.recorded();
        !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle.as_bytes())
    }
}

impl Drop for RecordingProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so it sees the stop.
        let addr = self.addr;
        let _ = self.host.run(move || TcpStream::connect(addr));
        if let Some(t) = self.accepter.take() {
            let _ = t.join();
        }
    }
}

fn accept_loop(
    listener: TcpListener,
    target: SocketAddr,
    recorded: Arc<Mutex<Vec<u8>>>,
    stop: Arc<AtomicBool>,
) {
    for client in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = client else { continue };
        let Ok(server) = TcpStream::connect(target) else {
            continue;
        };
        for (from, to) in [
            (client.try_clone(), server.try_clone()),
            (server.try_clone(), client.try_clone()),
        ] {
            if let (Ok(from), Ok(to)) = (from, to) {
                let rec = recorded.clone();
                std::thread::spawn(move || pump(from, to, rec));
            }
        }
    }
}

/// Copies one direction until either side closes, recording what passes.
fn pump(mut from: TcpStream, mut to: TcpStream, recorded: Arc<Mutex<Vec<u8>>>) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                recorded.lock().unwrap().extend_from_slice(&buf[..n]);
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
    let _ = from.shutdown(Shutdown::Read);
}
