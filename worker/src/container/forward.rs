//! A job's ports on its worker's loopback for a container on the egress
//! network, where the engine publishes none (it forwards no port into an
//! internal network): `127.0.0.1:PORT` on the host is relayed to the
//! container's own address, same port, while the job runs.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use tokio::net::{TcpListener, TcpStream};

/// The relays of one job; they stop when dropped.
pub struct PortRelays {
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for PortRelays {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Listens on `127.0.0.1:PORT` for each port and relays each connection
/// to `container:PORT`. A port that cannot be bound (taken meanwhile) is
/// logged and skipped.
pub async fn relay(container: IpAddr, ports: &[u16]) -> PortRelays {
    let mut tasks = Vec::new();
    for &port in ports {
        let listener = match TcpListener::bind((Ipv4Addr::LOCALHOST, port)).await {
            Ok(listener) => listener,
            Err(e) => {
                tracing::warn!(port, "the job's port is not published on loopback: {e}");
                continue;
            }
        };
        let target = SocketAddr::new(container, port);
        tasks.push(tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(async move {
                    if let Ok(mut upstream) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                    }
                });
            }
        }));
    }
    PortRelays { tasks }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_relayed_port_reaches_the_target() {
        // The "container" is a listener on another loopback address.
        let target = tokio::net::TcpListener::bind("127.0.0.2:0").await.unwrap();
        let port = target.local_addr().unwrap().port();
        let relays = super::relay("127.0.0.2".parse().unwrap(), &[port]).await;
        assert_eq!(relays.tasks.len(), 1);
        tokio::spawn(async move {
            let (mut s, _) = target.accept().await.unwrap();
            s.write_all(b"from the container").await.unwrap();
        });
        let mut client = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let mut got = String::new();
        client.read_to_string(&mut got).await.unwrap();
        assert_eq!(got, "from the container");
    }
}
