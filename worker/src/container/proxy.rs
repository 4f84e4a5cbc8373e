//! A job's egress proxy: the only way out of a container on the internal
//! network. It listens on the network's gateway (bound with `IP_FREEBIND`:
//! the address exists only while a container is attached) and takes HTTP
//! `CONNECT host:port` (HTTPS and any TCP) and plain HTTP requests in
//! absolute form (`GET http://host:port/path`), letting through only the
//! job's `egress` pairs. Each refusal is answered 403 and told to the job's
//! log.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::mpsc::UnboundedSender;

/// Largest request head read.
const MAX_HEAD: usize = 16 * 1024;
/// Longest a client may take to send its head, and a connection upstream.
const HEAD_TIME: Duration = Duration::from_secs(10);

/// A running proxy; it stops when dropped.
pub struct EgressProxy {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for EgressProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts a proxy on `ip` (any port) for the `allowed` `host:port`
/// pairs (lower case); each refusal is sent to `refusals` as a log line.
pub fn start(
    ip: IpAddr,
    allowed: &[String],
    refusals: UnboundedSender<String>,
) -> std::io::Result<EgressProxy> {
    let listener = listen(ip)?;
    let addr = listener.local_addr()?;
    let allowed: HashSet<String> = allowed.iter().map(|a| a.to_ascii_lowercase()).collect();
    let allowed = std::sync::Arc::new(allowed);
    let task = tokio::spawn(async move {
        loop {
            let Ok((client, _)) = listener.accept().await else {
                continue;
            };
            let (allowed, refusals) = (allowed.clone(), refusals.clone());
            tokio::spawn(async move {
                if let Err(e) = serve(client, &allowed, &refusals).await {
                    tracing::debug!("egress proxy connection: {e}");
                }
            });
        }
    });
    Ok(EgressProxy { addr, task })
}

fn listen(ip: IpAddr) -> std::io::Result<TcpListener> {
    let socket = match ip {
        IpAddr::V4(_) => TcpSocket::new_v4()?,
        IpAddr::V6(_) => TcpSocket::new_v6()?,
    };
    let one: libc::c_int = 1;
    // SAFETY: setsockopt on a socket we own, with a pointer to a c_int
    // that outlives the call and its size.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_IP,
            libc::IP_FREEBIND,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    socket.bind(SocketAddr::new(ip, 0))?;
    socket.listen(128)
}

/// A request head, parsed.
#[derive(Debug, PartialEq, Eq)]
struct Request {
    /// `host:port`, the host in lower case.
    target: String,
    /// For plain HTTP, the head to send upstream (origin form); none for CONNECT.
    forward: Option<Vec<u8>>,
}

/// Parses a proxy request's head (up to and including its blank line).
fn parse_head(head: &[u8]) -> Result<Request, &'static str> {
    let text = std::str::from_utf8(head).map_err(|_| "the request head is not text")?;
    let mut lines = text.split("\r\n");
    let first = lines.next().unwrap_or_default();
    let mut parts = first.split(' ');
    let (Some(method), Some(uri), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err("not an HTTP request");
    };
    if method.eq_ignore_ascii_case("CONNECT") {
        if !uri.contains(':') {
            return Err("CONNECT needs host:port");
        }
        return Ok(Request {
            target: uri.to_ascii_lowercase(),
            forward: None,
        });
    }
    let rest = uri
        .strip_prefix("http://")
        .or_else(|| uri.strip_prefix("HTTP://"))
        .ok_or("only http:// URLs and CONNECT go through this proxy")?;
    let (authority, path) = match rest.find('/') {
        Some(at) => (&rest[..at], &rest[at..]),
        None => (rest, "/"),
    };
    let authority = authority.rsplit('@').next().unwrap_or(authority);
    let has_port = authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.chars().all(|c| c.is_ascii_digit()) && !authority.ends_with(']'));
    let target = if has_port {
        authority.to_ascii_lowercase()
    } else {
        format!("{}:80", authority.to_ascii_lowercase())
    };
    let mut forward = format!("{method} {path} {version}\r\n");
    for line in lines {
        let name = line.split(':').next().unwrap_or_default();
        if name.eq_ignore_ascii_case("proxy-connection")
            || name.eq_ignore_ascii_case("proxy-authorization")
        {
            continue;
        }
        forward.push_str(line);
        forward.push_str("\r\n");
    }
    // The head's blank line was the last split; one pair of CRLF ends it.
    while forward.ends_with("\r\n\r\n\r\n") {
        forward.truncate(forward.len() - 2);
    }
    Ok(Request {
        target,
        forward: Some(forward.into_bytes()),
    })
}

/// Reads the head (and what came after it), then refuses or connects.
async fn serve(
    mut client: TcpStream,
    allowed: &HashSet<String>,
    refusals: &UnboundedSender<String>,
) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let end = tokio::time::timeout(HEAD_TIME, read_head(&mut client, &mut buf))
        .await
        .map_err(|_| std::io::Error::other("no request head in time"))??;
    let request = match parse_head(&buf[..end]) {
        Ok(request) => request,
        Err(why) => return answer(&mut client, "400 Bad Request", why).await,
    };
    if !allowed.contains(&request.target) {
        let _ = refusals.send(format!(
            "[aam: egress refused: {} is not in the job's egress list]\n",
            request.target
        ));
        let why = format!(
            "aam: egress to {} is not allowed for this job",
            request.target
        );
        return answer(&mut client, "403 Forbidden", &why).await;
    }
    let upstream = tokio::time::timeout(HEAD_TIME, TcpStream::connect(&request.target)).await;
    let mut upstream = match upstream {
        Ok(Ok(upstream)) => upstream,
        Ok(Err(e)) => {
            let why = format!("aam: cannot reach {}: {e}", request.target);
            return answer(&mut client, "502 Bad Gateway", &why).await;
        }
        Err(_) => {
            let why = format!("aam: {} did not answer in time", request.target);
            return answer(&mut client, "504 Gateway Timeout", &why).await;
        }
    };
    match &request.forward {
        None => {
            client
                .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                .await?
        }
        Some(head) => upstream.write_all(head).await?,
    }
    upstream.write_all(&buf[end..]).await?;
    tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
    Ok(())
}

/// Reads until the head's blank line: where the head ends in `buf`.
async fn read_head(client: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    let mut chunk = [0u8; 2048];
    loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Ok(at + 4);
        }
        if buf.len() > MAX_HEAD {
            return Err(std::io::Error::other("request head too large"));
        }
        let n = client.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::Error::other(
                "closed before its request head ended",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn answer(client: &mut TcpStream, status: &str, body: &str) -> std::io::Result<()> {
    let reply = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}\n",
        body.len() + 1
    );
    client.write_all(reply.as_bytes()).await?;
    client.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_and_absolute_requests_name_their_target() {
        let connect =
            parse_head(b"CONNECT API.example.com:443 HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        assert_eq!(connect.target, "api.example.com:443");
        assert_eq!(connect.forward, None);
        let get = parse_head(
            b"GET http://10.0.0.1:8080/a?b=1 HTTP/1.1\r\nHost: 10.0.0.1:8080\r\nProxy-Connection: keep-alive\r\n\r\n",
        )
        .unwrap();
        assert_eq!(get.target, "10.0.0.1:8080");
        assert_eq!(
            String::from_utf8(get.forward.unwrap()).unwrap(),
            "GET /a?b=1 HTTP/1.1\r\nHost: 10.0.0.1:8080\r\n\r\n"
        );
        let default_port = parse_head(b"GET http://example.com HTTP/1.0\r\n\r\n").unwrap();
        assert_eq!(default_port.target, "example.com:80");
        assert!(parse_head(b"GET /relative HTTP/1.1\r\n\r\n").is_err());
        assert!(parse_head(b"CONNECT nohost HTTP/1.1\r\n\r\n").is_err());
    }

    #[tokio::test]
    async fn only_listed_targets_get_through_and_refusals_are_told() {
        let upstream = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let allowed = upstream.local_addr().unwrap().to_string();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let proxy = start(
            "127.0.0.1".parse().unwrap(),
            std::slice::from_ref(&allowed),
            tx,
        )
        .unwrap();
        tokio::spawn(async move {
            let (mut s, _) = upstream.accept().await.unwrap();
            let mut head = vec![0u8; 1024];
            let n = s.read(&mut head).await.unwrap();
            assert!(head[..n].starts_with(b"GET /hello HTTP/1.1\r\n"));
            s.write_all(b"HTTP/1.0 200 OK\r\n\r\nhi").await.unwrap();
        });
        let mut ok = TcpStream::connect(proxy.addr).await.unwrap();
        let request = format!("GET http://{allowed}/hello HTTP/1.1\r\nHost: {allowed}\r\n\r\n");
        ok.write_all(request.as_bytes()).await.unwrap();
        let mut reply = String::new();
        ok.read_to_string(&mut reply).await.unwrap();
        assert!(reply.ends_with("\r\n\r\nhi"), "{reply}");
        let mut refused = TcpStream::connect(proxy.addr).await.unwrap();
        refused
            .write_all(b"CONNECT 127.0.0.1:9 HTTP/1.1\r\n\r\n")
            .await
            .unwrap();
        let mut reply = String::new();
        refused.read_to_string(&mut reply).await.unwrap();
        assert!(reply.starts_with("HTTP/1.1 403"), "{reply}");
        let line = rx.recv().await.unwrap();
        assert!(line.contains("egress refused: 127.0.0.1:9"), "{line}");
    }
}
