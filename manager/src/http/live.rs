//! The API that reaches running agents (issue 16): `POST
//! /api/jobs/S/J/say` and `/api/sessions/S/say` (`{"text": "..."}`), and
//! the answers to a permission request, `POST /api/jobs/S/J/allow`
//! (`{"request": 3, "always": false}`) and `/deny` (`{"request": 3,
//! "message": "..."}`); `request` may be left out when the job has one
//! open. Each is answered once the manager stored it.

use super::api::{call, json_ok, read_body, session_id, ApiError};
use super::auth::Caller;
use super::Http;
use aam_protocol::messages::{ClientRequest, ClientResponse};
use actix_web::{web, HttpResponse};
use serde_json::json;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/jobs/{session}/{job}/say", web::post().to(say_job))
        .route("/sessions/{id}/say", web::post().to(say_session))
        .route("/jobs/{session}/{job}/allow", web::post().to(allow))
        .route("/jobs/{session}/{job}/deny", web::post().to(deny));
}

/// The body of a message said to running agents.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Saying {
    text: String,
}

/// Answered `{"said_to": ["s4/fix"]}` once stored.
async fn say(
    http: &Http,
    who: &Caller,
    session: &str,
    job: Option<String>,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = read_body(body, aam_protocol::say::MAX_SAY_BYTES + 1024).await?;
    let saying: Saying = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad(format!("the body must be {{\"text\": \"...\"}}: {e}")))?;
    let request = ClientRequest::Say {
        session: session_id(session)?,
        job,
        text: saying.text,
    };
    match call(http, request, who).await? {
        ClientResponse::Said { jobs } => Ok(json_ok(json!({ "said_to": jobs }))),
        other => Err(ApiError::unexpected(&other)),
    }
}

async fn say_job(
    http: web::Data<Http>,
    who: web::ReqData<Caller>,
    path: web::Path<(String, String)>,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let (session, job) = path.into_inner();
    say(&http, &who, &session, Some(job), body).await
}

async fn say_session(
    http: web::Data<Http>,
    who: web::ReqData<Caller>,
    path: web::Path<String>,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    say(&http, &who, &path.into_inner(), None, body).await
}

/// The body of an answer to a permission request (all of it optional).
#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Answer {
    request: Option<u32>,
    #[serde(default)]
    always: bool,
    message: Option<String>,
}

/// Largest body of an answer: a message (at most 4 KiB) in JSON.
const MAX_ANSWER_BODY: usize = 64 * 1024;

/// Answered `{"job", "request", "call", "decision"}` once stored.
async fn answer(
    http: &Http,
    who: &Caller,
    (session, job): (String, String),
    body: web::Payload,
    allow: bool,
) -> Result<HttpResponse, ApiError> {
    let body = read_body(body, MAX_ANSWER_BODY).await?;
    let answer: Answer = if body.iter().all(u8::is_ascii_whitespace) {
        Answer::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::bad(format!(
                "the body must be {{\"request\": ID, \"always\": BOOL, \"message\": \"...\"}} (each optional): {e}"
            ))
        })?
    };
    if allow && answer.message.is_some() {
        return Err(ApiError::bad(
            "`message` is for a denial (what the agent is told)",
        ));
    }
    if !allow && answer.always {
        return Err(ApiError::bad(
            "`always` is for an allow (the same tool for the rest of the job)",
        ));
    }
    let request = ClientRequest::DecidePermission {
        session: session_id(&session)?,
        job: job.clone(),
        request: answer.request,
        allow,
        always: answer.always,
        message: answer.message,
    };
    match call(http, request, who).await? {
        ClientResponse::PermissionDecided { request, summary } => Ok(json_ok(json!({
            "job": format!("{session}/{job}"),
            "request": request,
            "call": summary,
            "decision": if allow { "allowed" } else { "denied" },
        }))),
        other => Err(ApiError::unexpected(&other)),
    }
}

async fn allow(
    http: web::Data<Http>,
    who: web::ReqData<Caller>,
    path: web::Path<(String, String)>,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    answer(&http, &who, path.into_inner(), body, true).await
}

async fn deny(
    http: web::Data<Http>,
    who: web::ReqData<Caller>,
    path: web::Path<(String, String)>,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    answer(&http, &who, path.into_inner(), body, false).await
}
