//! The manager's HTTP server (actix-web): the JSON API (`api`), its event
//! streams (`events`), tokens and the sign-in cookie (`auth`), the
//! embedded dashboard (`dashboard`), and `/healthz`, `/readyz`, `/metrics`.
//!
//! **Architecture invariant:** the HTTP server holds no state; it speaks to
//! the scheduler through `ClientCall` like TCP clients (and `Subscribe` /
//! `Readiness`, which only observe). It runs on its own worker thread, so
//! encoding JSON for browsers never runs on the scheduler's thread.

pub mod api;
pub mod auth;
pub mod dashboard;
pub mod events;
pub mod live;

use crate::listener::Shared;
use crate::scheduler::Readiness;
use actix_web::dev::ServerHandle;
use actix_web::http::StatusCode;
use actix_web::{web, App, HttpRequest, HttpResponse};
use anyhow::Context as _;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::path::Path;
use tokio_util::sync::CancellationToken;

/// Seconds the server waits for requests under way when it stops.
const SHUTDOWN_GRACE_SECS: u64 = 5;

/// What every handler is given.
pub struct Http {
    pub shared: Shared,
    /// Bound to a loopback address: `/healthz`, `/readyz` and `/metrics`
    /// need no token.
    pub loopback: bool,
    /// Cancelled when the manager stops: event streams end.
    pub stopping: CancellationToken,
}

/// A running HTTP server.
pub struct HttpServer {
    /// Its address (resolved, so port 0 becomes the real port).
    pub addr: SocketAddr,
    handle: ServerHandle,
    stopping: CancellationToken,
}

impl HttpServer {
    /// Ends the event streams, lets requests under way finish (up to
    /// `SHUTDOWN_GRACE_SECS`), and stops.
    pub async fn stop(self) {
        self.stopping.cancel();
        self.handle.stop(true).await;
    }
}

/// Binds the HTTP address; with `any_port`, a taken port gives way to a
/// free one on the same interface.
pub fn bind(addr: &str, any_port: bool) -> anyhow::Result<TcpListener> {
    let resolved: Vec<SocketAddr> = addr
        .to_socket_addrs()
        .with_context(|| format!("http: cannot resolve {addr}"))?
        .collect();
    let first = *resolved
        .first()
        .with_context(|| format!("http: {addr} resolves to no address"))?;
    let listener = match TcpListener::bind(&resolved[..]) {
        Err(e) if any_port && e.kind() == std::io::ErrorKind::AddrInUse => {
            tracing::info!(%addr, "the HTTP port is taken: listening on a free port instead");
            TcpListener::bind(SocketAddr::new(first.ip(), 0))
        }
        other => other,
    }
    .with_context(|| format!("cannot listen on {addr} (http)"))?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// Writes (or, with HTTP off, removes) `DATA_DIR/http.addr`, which tells
/// scripts, tests and `aam up` where the server is.
pub fn write_addr_file(data_dir: &Path, addr: Option<SocketAddr>) -> anyhow::Result<()> {
    let path = data_dir.join("http.addr");
    match addr {
        Some(addr) => aam_store::files::write_private(&path, format!("{addr}\n").as_bytes())
            .with_context(|| format!("writing {}", path.display())),
        None => match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(e).with_context(|| format!("removing {}", path.display()))
            }
            _ => Ok(()),
        },
    }
}

/// Starts serving HTTPS on `listener` inside the current actix system (one
/// worker thread of its own; the manager handles signals itself), with
/// the TCP port's TLS configuration: one certificate, one fingerprint.
pub fn start(
    listener: TcpListener,
    shared: Shared,
    tls: &rustls::ServerConfig,
) -> anyhow::Result<HttpServer> {
    let addr = listener.local_addr()?;
    let stopping = CancellationToken::new();
    let http = web::Data::new(Http {
        shared,
        loopback: addr.ip().is_loopback(),
        stopping: stopping.clone(),
    });
    let server =
        actix_web::HttpServer::new(move || {
            App::new()
                .app_data(http.clone())
                // A query string that does not parse (`?limit=abc`) is answered
                // as every other refusal, `{"error": ...}`.
                .app_data(web::QueryConfig::default().error_handler(|e, _| {
                    api::ApiError::bad(format!("the query string: {e}")).into()
                }))
                .configure(routes)
                .default_service(web::to(not_found))
        })
        .workers(1)
        .disable_signals()
        .shutdown_timeout(SHUTDOWN_GRACE_SECS)
        .listen_rustls_0_23(listener, tls.clone())
        .context("http: starting the server")?
        .run();
    let handle = server.handle();
    actix::spawn(async move {
        if let Err(e) = server.await {
            tracing::error!("the HTTP server stopped: {e}");
        }
    });
    tracing::info!(%addr, "HTTPS API and dashboard listening");
    Ok(HttpServer {
        addr,
        handle,
        stopping,
    })
}

/// Every route.
fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz))
        .route("/metrics", web::get().to(metrics))
        .configure(dashboard::routes)
        .configure(auth::routes)
        .service(
            web::scope("/api")
                .wrap(actix_web::middleware::from_fn(auth::require_token))
                .configure(api::routes)
                .route("/events", web::get().to(events::events))
                .default_service(web::to(not_found)),
        );
}

async fn not_found() -> Result<HttpResponse, api::ApiError> {
    Err(api::ApiError::new(StatusCode::NOT_FOUND, "no such route"))
}

/// Probes and metrics are open on loopback; elsewhere they need a token.
fn probe_allowed(req: &HttpRequest, http: &Http) -> Result<(), api::ApiError> {
    if http.loopback {
        return Ok(());
    }
    auth::caller(req, &http.shared.tokens.current()).map(|_| ())
}

async fn healthz(req: HttpRequest, http: web::Data<Http>) -> Result<HttpResponse, api::ApiError> {
    probe_allowed(&req, &http)?;
    Ok(HttpResponse::Ok().content_type("text/plain").body("ok\n"))
}

async fn readyz(req: HttpRequest, http: web::Data<Http>) -> Result<HttpResponse, api::ApiError> {
    probe_allowed(&req, &http)?;
    let ready = match http.shared.scheduler.send(Readiness).await {
        Ok(ready) => ready,
        Err(_) => Err("the manager is shutting down".to_string()),
    };
    Ok(match ready {
        Ok(()) => HttpResponse::Ok()
            .content_type("text/plain")
            .body("ready\n"),
        Err(why) => HttpResponse::ServiceUnavailable()
            .content_type("text/plain")
            .body(format!("not ready: {why}\n")),
    })
}

async fn metrics(req: HttpRequest, http: web::Data<Http>) -> Result<HttpResponse, api::ApiError> {
    probe_allowed(&req, &http)?;
    let text = http.shared.metrics.render().await;
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(text))
}
