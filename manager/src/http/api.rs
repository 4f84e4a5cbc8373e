//! The JSON API under `/api`: each handler turns a request into a
//! `ClientRequest`, sends it to the scheduler as a `ClientCall` (as the TCP
//! client connection does) and answers with the documents of
//! `aam_protocol::json`, the shapes `aam ... --json` prints. Errors are
//! `{"error": "message"}` with the status of their `ErrorKind`.

use super::auth::Caller;
use super::Http;
use crate::peer_input::check_request;
use crate::scheduler::ClientCall;
use aam_protocol::json;
use aam_protocol::messages::{ClientRequest, ClientResponse, ErrorKind, JobPage, OutputWanted};
use aam_protocol::spec::{check_batch, parse_batch, Format, Limits};
use aam_protocol::SessionId;
use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use futures::StreamExt;
use serde_json::{json, Value};
use std::fmt;
use tokio::sync::oneshot;

/// An error answer: `{"error": message}` with its status.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }

    pub fn bad(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn unexpected(response: &ClientResponse) -> ApiError {
        tracing::error!(?response, "unexpected answer to an HTTP request");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the scheduler gave an unexpected answer",
        )
    }
}

/// The HTTP status of a refusal of this kind.
pub fn status_of(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::BadRequest => StatusCode::BAD_REQUEST,
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::Conflict => StatusCode::CONFLICT,
        ErrorKind::PermissionDenied => StatusCode::FORBIDDEN,
        ErrorKind::QuotaExceeded => StatusCode::TOO_MANY_REQUESTS,
        // A store that takes no writes, a manager shutting down: try later.
        ErrorKind::Internal => StatusCode::SERVICE_UNAVAILABLE,
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        HttpResponse::build(self.status).json(json!({ "error": self.message }))
    }
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/sessions", web::get().to(sessions))
        .route("/sessions", web::post().to(submit))
        .route("/sessions/{id}", web::get().to(session))
        .route("/sessions/{id}/results", web::get().to(results))
        .route("/sessions/{id}/cancel", web::post().to(cancel_session))
        .route("/jobs/{session}/{job}/log", web::get().to(log))
        .route("/jobs/{session}/{job}/cancel", web::post().to(cancel_job))
        .route("/jobs/{session}/{job}/approve", web::post().to(approve))
        .route("/jobs/{session}/{job}/reject", web::post().to(reject))
        .route("/workers", web::get().to(workers))
        .route("/resources", web::get().to(resources))
        .route("/accounts", web::get().to(accounts))
        .route("/agents", web::get().to(agents))
        .route("/audit", web::get().to(audit));
    super::live::routes(cfg);
}

/// Sends `request` to the scheduler, as the TCP client connection does,
/// and waits for its answer; an `Error` answer becomes its status.
pub async fn call(
    http: &Http,
    request: ClientRequest,
    who: &Caller,
) -> Result<ClientResponse, ApiError> {
    check_request(&request).map_err(ApiError::bad)?;
    let (reply, answer) = oneshot::channel();
    http.shared.scheduler.do_send(ClientCall {
        request,
        reply,
        watcher: None,
        who: who.0.clone(),
        earlier_parts: Vec::new(),
    });
    match answer.await {
        Ok(Some(ClientResponse::Error { kind, message })) => {
            Err(ApiError::new(status_of(kind), message))
        }
        Ok(Some(ClientResponse::Invalid(errors))) => Err(ApiError::bad(errors.to_string())),
        Ok(Some(response)) => Ok(response),
        Ok(None) | Err(_) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the manager is shutting down",
        )),
    }
}

/// Reads a request body of at most `limit` bytes (413 past it).
pub async fn read_body(mut payload: web::Payload, limit: usize) -> Result<Vec<u8>, ApiError> {
    let mut body = Vec::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| ApiError::bad(format!("reading the request body: {e}")))?;
        if body.len() + chunk.len() > limit {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the request body exceeds the limit of {limit} bytes (the manager's max_frame_bytes)"),
            ));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

pub fn session_id(text: &str) -> Result<SessionId, ApiError> {
    text.parse()
        .map_err(|_| ApiError::bad(format!("'{text}' is not a session id (like s42)")))
}

pub fn json_ok(doc: Value) -> HttpResponse {
    HttpResponse::Ok().json(doc)
}

/// Sessions `/api/sessions` lists without `limit`: as `aam status`.
const SESSIONS_LISTED: u32 = 1000;

/// `aam status --json [--offset N] [--limit N]`: the newest sessions
/// (`limit` 0: all), and how many there are.
async fn sessions(
    http: web::Data<Http>,
    who: web::ReqData<Caller>,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    let request = ClientRequest::ListSessions {
        limit: query.limit.unwrap_or(SESSIONS_LISTED),
        offset: query.offset.unwrap_or(0),
    };
    match call(&http, request, &who).await? {
        ClientResponse::Sessions {
            sessions,
            total,
            paused,
            waiting,
        } => Ok(json_ok(json!({
            "sessions": sessions.iter().map(json::summary_json).collect::<Vec<_>>(),
            "total": total,
            "paused": json::paused_json(&paused),
            "waiting": waiting.iter().map(json::waiting_json).collect::<Vec<_>>(),
        }))),
        other => Err(ApiError::unexpected(&other)),
    }
}

async fn view(
    http: &Http,
    who: &Caller,
    id: &str,
    output: OutputWanted,
    page: Option<JobPage>,
) -> Result<aam_protocol::model::SessionView, ApiError> {
    let session = session_id(id)?;
    let request = ClientRequest::Session {
        session,
        output,
        page,
    };
    match call(http, request, who).await? {
        ClientResponse::Session(view) => Ok(view),
        other => Err(ApiError::unexpected(&other)),
    }
}

/// `?offset=N&limit=N`: a page of a session's jobs (either alone pages),
/// or of the session list, newest first.
#[derive(serde::Deserialize)]
struct PageQuery {
    offset: Option<u32>,
    limit: Option<u32>,
}

impl PageQuery {
    fn page(&self) -> Option<JobPage> {
        (self.offset.is_some() || self.limit.is_some()).then(|| JobPage {
            offset: self.offset.unwrap_or(0),
            limit: self.limit.unwrap_or(u32::MAX),
        })
    }
}

/// `aam status ID --json [--offset N] [--limit N]`.
async fn session(
    http: web::Data<Http>,
    who: web::ReqData<Caller>,
    id: web::Path<String>,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    let view = view(&http, &who, &id, OutputWanted::None, query.page()).await?;
    Ok(json_ok(json::session_json(&view, false)))
}

#[derive(serde::Deserialize)]
struct ResultsQuery {
    #[serde(default)]
    failed: bool,
}

/// `aam results ID --json [--failed]`.
async fn results(
    http: web::Data<Http>,
    who: web::ReqData<Caller>,
    id: web::Path<String>,
    query: web::Query<ResultsQuery>,
) -> Result<HttpResponse, ApiError> {
    let view = view(&http, &who, &id, OutputWanted::All, None).await?;
    Ok(json_ok(json::results_json(&view, query.failed)))
}

/// `aam submit FILE --json` with the batch's JSON form as the body: the
/// same checks as the CLI's, in the same words (without its file name).
async fn submit(
    req: HttpRequest,
    http: web::Data<Http>,
    who: web::ReqData<Caller>,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = read_body(body, http.shared.max_frame).await?;
    let text = std::str::from_utf8(&body).map_err(|_| ApiError::bad("the body is not UTF-8"))?;
    let mut batch = parse_batch(text, Format::Json).map_err(|e| ApiError::bad(e.to_string()))?;
    check_batch(&mut batch, &Limits::structural()).map_err(|e| ApiError::bad(e.to_string()))?;
    let idempotency_key = match req.headers().get("Idempotency-Key") {
        Some(v) => Some(
            v.to_str()
                .map_err(|_| ApiError::bad("Idempotency-Key: not printable ASCII"))?
                .to_string(),
        ),
        None => None,
    };
    let name = batch.name.clone();
    let request = ClientRequest::Submit {
        batch,
        idempotency_key,
    };
    match call(&http, request, &who).await? {
        ClientResponse::Submitted {
            session,
            jobs,
            existing,
            estimate,
        } => {
            let doc = json::submitted_json(session, &name, jobs, existing, &estimate);
            let status = if existing {
                StatusCode::OK
            } else {
                StatusCode::CREATED
            };
            Ok(HttpResponse::build(status)
                .insert_header((header::LOCATION, format!("/api/sessions/{session}")))
                .json(doc))
        }
        other => Err(ApiError::unexpected(&other)),
    }
}

async fn cancel(
    http: &Http,
    who: &Caller,
    session: &str,
    job: Option<String>,
) -> Result<HttpResponse, ApiError> {
    let session = session_id(session)?;
    let request = ClientRequest::Cancel {
        session,
        job,
        grace_ms: None,
        // Answered at once: running jobs are being stopped (`stopped`).
        wait: false,
    };
    match call(http, request, who).await? {
        ClientResponse::Cancelled { cancelled, stopped } => Ok(json_ok(json!({
            "cancelled": cancelled,
            "stopped": stopped,
        }))),
        other => Err(ApiError::unexpected(&other)),
    }
}

async fn cancel_session(
    http: web::Data<Http>,
    who: web::ReqData<Caller>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    cancel(&http, &who, &id, None).await
}

async fn cancel_job(
    http: web::Data<Http>,
    who: web::ReqData<Caller>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (session, job) = path.into_inner();
    cancel(&http, &who, &session, Some(job)).await
}

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Decision {
    comment: Option<String>,
}

/// Largest body of an approval: a comment (at most 4 KiB) in JSON.
const MAX_DECISION_BODY: usize = 64 * 1024;

async fn decide(
    http: &Http,
    who: &Caller,
    path: (String, String),
    body: web::Payload,
    approve: bool,
) -> Result<HttpResponse, ApiError> {
    let body = read_body(body, MAX_DECISION_BODY).await?;
    let decision: Decision = if body.iter().all(u8::is_ascii_whitespace) {
        Decision::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad(format!("the body must be {{\"comment\": \"...\"}}: {e}")))?
    };
    let (session, job) = path;
    let request = ClientRequest::Decide {
        session: session_id(&session)?,
        job: job.clone(),
        approve,
        comment: decision.comment,
    };
    match call(http, request, who).await? {
        ClientResponse::Decided { status } => Ok(json_ok(json!({
            "job": format!("{session}/{job}"),
            "decision": if approve { "approved" } else { "rejected" },
            "status": status.as_str(),
        }))),
        other => Err(ApiError::unexpected(&other)),
    }
}

async fn approve(
    http: web::Data<Http>,
    who: web::ReqData<Caller>,
    path: web::Path<(String, String)>,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    decide(&http, &who, path.into_inner(), body, true).await
}

async fn reject(
    http: web::Data<Http>,
    who: web::ReqData<Caller>,
    path: web::Path<(String, String)>,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    decide(&http, &who, path.into_inner(), body, false).await
}

#[derive(serde::Deserialize)]
struct LogQuery {
    from: Option<u64>,
    tail: Option<u64>,
}

/// The job's output from byte `from` (or its last `tail` bytes) as
/// bytes; `X-Aam-Next` is the offset to ask for next, `X-Aam-Attempt` the
/// attempt the bytes belong to (a new one starts over at 0).
async fn log(
    http: web::Data<Http>,
    who: web::ReqData<Caller>,
    path: web::Path<(String, String)>,
    query: web::Query<LogQuery>,
) -> Result<HttpResponse, ApiError> {
    let (session, job) = path.into_inner();
    let session = session_id(&session)?;
    let ask = |from: u64| ClientRequest::Logs {
        session,
        job: job.clone(),
        from,
    };
    let from = match (query.from, query.tail) {
        (Some(_), Some(_)) => return Err(ApiError::bad("give either from or tail, not both")),
        (_, Some(tail)) => match call(&http, ask(u64::MAX), &who).await? {
            ClientResponse::Logs { output_bytes, .. } => output_bytes.saturating_sub(tail),
            other => return Err(ApiError::unexpected(&other)),
        },
        (from, None) => from.unwrap_or(0),
    };
    match call(&http, ask(from), &who).await? {
        ClientResponse::Logs {
            status,
            attempt,
            output,
            output_bytes,
            ..
        } => Ok(HttpResponse::Ok()
            .content_type("text/plain; charset=utf-8")
            .insert_header(("X-Aam-Next", output_bytes.to_string()))
            .insert_header(("X-Aam-Attempt", attempt.to_string()))
            .insert_header(("X-Aam-Status", status.as_str()))
            .body(output)),
        other => Err(ApiError::unexpected(&other)),
    }
}

/// `aam workers --json`.
async fn workers(
    http: web::Data<Http>,
    who: web::ReqData<Caller>,
) -> Result<HttpResponse, ApiError> {
    match call(&http, ClientRequest::Workers, &who).await? {
        ClientResponse::Workers(list) => Ok(json_ok(json::workers_json(&list))),
        other => Err(ApiError::unexpected(&other)),
    }
}

/// `aam resources --json`.
async fn resources(
    http: web::Data<Http>,
    who: web::ReqData<Caller>,
) -> Result<HttpResponse, ApiError> {
    match call(&http, ClientRequest::Resources, &who).await? {
        ClientResponse::Resources(list) => Ok(json_ok(json::resources_json(&list))),
        other => Err(ApiError::unexpected(&other)),
    }
}

/// `aam accounts --json`.
async fn accounts(
    http: web::Data<Http>,
    who: web::ReqData<Caller>,
) -> Result<HttpResponse, ApiError> {
    match call(&http, ClientRequest::Accounts, &who).await? {
        ClientResponse::Accounts(list) => Ok(json_ok(json::accounts_json(&list))),
        other => Err(ApiError::unexpected(&other)),
    }
}

/// `aam agents --json`.
async fn agents(
    http: web::Data<Http>,
    who: web::ReqData<Caller>,
) -> Result<HttpResponse, ApiError> {
    match call(&http, ClientRequest::Agents, &who).await? {
        ClientResponse::Agents { agents, problems } => {
            Ok(json_ok(json::agents_json(&agents, &problems)))
        }
        other => Err(ApiError::unexpected(&other)),
    }
}

#[derive(serde::Deserialize)]
struct AuditQuery {
    /// Records from this time on (ms since the epoch).
    since_ms: Option<u64>,
}

/// `aam audit --json` (admin tokens only).
async fn audit(
    http: web::Data<Http>,
    who: web::ReqData<Caller>,
    query: web::Query<AuditQuery>,
) -> Result<HttpResponse, ApiError> {
    let request = ClientRequest::Audit {
        since_ms: query.since_ms,
    };
    match call(&http, request, &who).await? {
        ClientResponse::Audit { records, .. } => {
            Ok(json_ok(aam_protocol::audit::audit_json(&records)))
        }
        other => Err(ApiError::unexpected(&other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_of_refusal_has_its_status() {
        assert_eq!(status_of(ErrorKind::BadRequest), StatusCode::BAD_REQUEST);
        assert_eq!(status_of(ErrorKind::NotFound), StatusCode::NOT_FOUND);
        assert_eq!(status_of(ErrorKind::Conflict), StatusCode::CONFLICT);
        assert_eq!(
            status_of(ErrorKind::PermissionDenied),
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            status_of(ErrorKind::QuotaExceeded),
            StatusCode::TOO_MANY_REQUESTS
        );
        assert_eq!(
            status_of(ErrorKind::Internal),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }

    #[test]
    fn errors_are_json_with_their_status() {
        let e = ApiError::new(StatusCode::CONFLICT, "s1/a is not a gate");
        let response = e.error_response();
        assert_eq!(response.status(), StatusCode::CONFLICT);
        assert!(session_id("s12").is_ok());
        assert_eq!(
            session_id("twelve").unwrap_err().message,
            "'twelve' is not a session id (like s42)"
        );
    }
}
