//! The handshake's cost: a new connection's TCP connect + TLS handshake +
//! aam handshake, against TCP connect + aam handshake in clear, measured
//! in the same run. Both are also measured against a tiny in-process echo
//! of the aam handshake (plain and TLS, the manager's own certificate and
//! key), so the difference is TLS alone, not the manager.

use aam_protocol::codec;
use aam_protocol::messages::{Handshake, HandshakeReply, Role};
use aam_protocol::tls::{server_config, ServerIdentity, Trust, KEY_FILE};
use aam_tests::wire::Wire;
use aam_tests::Cluster;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Sends a handshake frame and reads the reply frame; panics unless accepted.
fn exchange(stream: &mut (impl Read + Write), token: &str) {
    let payload = codec::encode(&Handshake::new(Role::Client, token)).unwrap();
    stream
        .write_all(&(payload.len() as u32).to_be_bytes())
        .unwrap();
    stream.write_all(&payload).unwrap();
    stream.flush().unwrap();
    let reply: HandshakeReply = read_frame(stream);
    assert!(
        matches!(reply, HandshakeReply::Accepted { .. }),
        "{reply:?}"
    );
}

fn read_frame<T: serde::de::DeserializeOwned>(stream: &mut impl Read) -> T {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).unwrap();
    let mut payload = vec![0u8; u32::from_be_bytes(len) as usize];
    stream.read_exact(&mut payload).unwrap();
    codec::decode(&payload).unwrap()
}

/// Answers one aam handshake per connection, one connection at a time
/// (the bench dials sequentially), in clear or with TLS; its address.
fn echo_server(tls: Option<Arc<rustls::ServerConfig>>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for tcp in listener.incoming() {
            let Ok(tcp) = tcp else { continue };
            tcp.set_nodelay(true).unwrap();
            let _ = match &tls {
                None => answer(tcp),
                Some(config) => {
                    let conn = rustls::ServerConnection::new(config.clone()).unwrap();
                    answer(rustls::StreamOwned::new(conn, tcp))
                }
            };
        }
    });
    addr
}

fn answer(mut stream: impl Read + Write) -> std::io::Result<()> {
    let _: Handshake = read_frame(&mut stream);
    let reply = HandshakeReply::Accepted {
        manager_version: "echo".into(),
    };
    let payload = codec::encode(&reply).unwrap();
    stream.write_all(&(payload.len() as u32).to_be_bytes())?;
    stream.write_all(&payload)?;
    stream.flush()
}

fn timed(f: impl FnOnce()) -> Duration {
    let start = Instant::now();
    f();
    start.elapsed()
}

/// `name: p50 .. p99 ..` of sorted samples, and their median.
fn show(name: &str, samples: &mut [Duration]) -> f64 {
    samples.sort();
    let median = super::percentile_ms(samples, 0.5);
    println!(
        "  {name:<38} {}",
        super::quantiles(samples, &[("p50", 0.5), ("p90", 0.9), ("p99", 0.99)])
    );
    median
}

pub fn handshake() {
    let n = super::env_count("AAM_BENCH_HANDSHAKES", 300);
    let c = Cluster::with_manager();
    let identity = ServerIdentity::load(&c.cert(), &c.data_dir().join(KEY_FILE)).unwrap();
    let config = Arc::new(server_config(&identity, None).unwrap());
    let plain_echo = echo_server(None);
    let tls_echo = echo_server(Some(config));
    let trust = Trust::Ca(c.cert());
    let (mut plain, mut tls, mut manager) = (Vec::new(), Vec::new(), Vec::new());
    // Interleaved, so drift in the machine's speed hits all three alike.
    for _ in 0..n {
        plain.push(timed(|| {
            let mut s = TcpStream::connect(&plain_echo).unwrap();
            s.set_nodelay(true).unwrap();
            exchange(&mut s, &c.token);
        }));
        tls.push(timed(|| {
            let mut s = aam_tests::tls::connect_trusting(&tls_echo, &trust).unwrap();
            exchange(&mut s, &c.token);
        }));
        manager.push(timed(|| {
            Wire::connect(&c.addr, Role::Client, &c.token);
        }));
    }
    println!("handshake: {n} new connections each, sequential, loopback");
    let plain_ms = show("TCP + aam handshake (echo, clear):", &mut plain);
    let tls_ms = show("TCP + TLS + aam handshake (echo):", &mut tls);
    let manager_ms = show("TCP + TLS + aam handshake (manager):", &mut manager);
    println!(
        "  TLS adds {:.2} ms per new connection (median, echo: x{:.1}); the manager: x{:.2} the TLS echo",
        tls_ms - plain_ms,
        tls_ms / plain_ms,
        manager_ms / tls_ms
    );
}
