//! Who is calling: the token of `Authorization: Bearer TOKEN` or of the
//! `aam_token` cookie, checked against the same tokens as TCP connections
//! (`TokenSet::find`, constant time), with their roles. `POST /api/login`
//! sets the cookie (so the dashboard never holds the token in script:
//! HttpOnly, SameSite=Strict), `POST /api/logout` clears it.

use super::api::{read_body, ApiError};
use super::Http;
use crate::access::{Grant, Identity};
use crate::tokens::TokenSet;
use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{header, StatusCode};
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage, HttpRequest, HttpResponse, ResponseError};

/// The sign-in cookie's name.
pub const COOKIE: &str = "aam_token";

/// Largest login body: a token is short.
const MAX_LOGIN_BODY: usize = 64 * 1024;

/// Who made a request: the token it presented (name, role, quotas) and
/// its address; requests go to the scheduler with it, which checks them.
#[derive(Clone, Debug)]
pub struct Caller(pub Identity);

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/login", web::post().to(login))
        .route("/api/logout", web::post().to(logout));
}

/// The token a request presents: the bearer token, else the cookie's.
fn presented(req: &HttpRequest) -> Option<String> {
    if let Some(value) = req.headers().get(header::AUTHORIZATION) {
        let value = value.to_str().ok()?;
        let token = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))?;
        return Some(token.trim().to_string());
    }
    req.headers()
        .get_all(header::COOKIE)
        .filter_map(|v| v.to_str().ok())
        .find_map(cookie_value)
        .and_then(|hex| unhex(&hex))
}

/// The `aam_token` value in a `Cookie` header.
fn cookie_value(header: &str) -> Option<String> {
    header.split(';').find_map(|pair| {
        let (name, value) = pair.trim().split_once('=')?;
        (name == COOKIE).then(|| value.trim().to_string())
    })
}

/// The cookie carries the token hex encoded: any token (spaces, `;`) fits
/// a cookie value that way.
fn hex(text: &str) -> String {
    text.bytes().map(|b| format!("{b:02x}")).collect()
}

fn unhex(hex: &str) -> Option<String> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect();
    String::from_utf8(bytes?).ok()
}

/// Checks the token a request presents; who it is, or a 401 that says
/// what is missing or wrong.
pub fn caller(req: &HttpRequest, tokens: &TokenSet) -> Result<Caller, ApiError> {
    let Some(given) = presented(req) else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "a token is needed: send `Authorization: Bearer TOKEN`, or sign in (POST /api/login)",
        ));
    };
    let peer = req
        .peer_addr()
        .map_or_else(|| "?".to_string(), |a| a.to_string());
    tokens
        .find(&given)
        .map(|entry| Caller(Identity::of(entry, peer)))
        .ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "invalid token"))
}

/// A request with a token the manager does not know: counted and audited
/// like a refused handshake.
fn invalid_token(http: &Http, req: &HttpRequest) {
    let peer = req
        .peer_addr()
        .map_or_else(|| "?".into(), |a| a.to_string());
    let unknown = Identity {
        name: "?".into(),
        grant: Grant::new([]),
        quotas: Default::default(),
        peer,
    };
    crate::listener::refused(
        &http.shared,
        &unknown,
        "http",
        "token",
        "invalid token".into(),
    );
}

/// Middleware of `/api`: nothing under it runs without a valid token; the
/// handlers find the caller in the request's extensions (`ReqData<Caller>`).
pub async fn require_token(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let Some(http) = req.app_data::<web::Data<Http>>().cloned() else {
        return Err(actix_web::error::ErrorInternalServerError(
            "no server state",
        ));
    };
    match caller(req.request(), &http.shared.tokens.current()) {
        Ok(who) => {
            req.extensions_mut().insert(who);
            Ok(next.call(req).await?.map_into_left_body())
        }
        Err(e) => {
            if presented(req.request()).is_some() {
                invalid_token(&http, req.request());
            }
            let mut response = e.error_response();
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
            Ok(req.into_response(response).map_into_right_body())
        }
    }
}

#[derive(serde::Deserialize)]
struct Login {
    token: String,
}

/// `Set-Cookie` for `value`, kept for the browser's session.
fn set_cookie(value: &str, clear: bool) -> String {
    let max_age = if clear { "; Max-Age=0" } else { "" };
    format!("{COOKIE}={value}; HttpOnly; SameSite=Strict; Path=/{max_age}")
}

async fn login(http: web::Data<Http>, body: web::Payload) -> Result<HttpResponse, ApiError> {
    let body = read_body(body, MAX_LOGIN_BODY).await?;
    let login: Login = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad(format!("the body must be {{\"token\": \"...\"}}: {e}")))?;
    let token = login.token.trim();
    let tokens = http.shared.tokens.current();
    let Some(entry) = tokens.find(token) else {
        return Err(ApiError::new(StatusCode::UNAUTHORIZED, "invalid token"));
    };
    tracing::info!(token = %entry.name, role = %entry.config.grant, "dashboard sign-in");
    Ok(HttpResponse::NoContent()
        .insert_header((header::SET_COOKIE, set_cookie(&hex(token), false)))
        .finish())
}

async fn logout() -> HttpResponse {
    HttpResponse::NoContent()
        .insert_header((header::SET_COOKIE, set_cookie("", true)))
        .finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    fn tokens() -> TokenSet {
        let ci = crate::tokens::TokenConfig {
            token: "ci token; with spaces".into(),
            grant: Grant::new([crate::access::Role::Read]),
            quotas: Default::default(),
        };
        let configured = [("ci".to_string(), ci)].into_iter().collect();
        TokenSet::new("admin", "admin-token-0123456789", &configured)
    }

    fn who(req: TestRequest) -> Result<String, StatusCode> {
        caller(&req.to_http_request(), &tokens())
            .map(|c| c.0.name)
            .map_err(|e| e.status_code())
    }

    #[test]
    fn bearer_or_cookie_names_the_token() {
        let bearer = |t: &str| TestRequest::default().insert_header(("Authorization", t));
        assert_eq!(
            who(bearer("Bearer admin-token-0123456789")).unwrap(),
            "admin"
        );
        assert_eq!(
            who(bearer("Bearer admin-token-012345678")),
            Err(StatusCode::UNAUTHORIZED)
        );
        assert_eq!(
            who(bearer("Basic admin-token-0123456789")),
            Err(StatusCode::UNAUTHORIZED)
        );
        assert_eq!(who(TestRequest::default()), Err(StatusCode::UNAUTHORIZED));
        let cookie = format!("theme=dark; {COOKIE}={}", hex("ci token; with spaces"));
        let req = TestRequest::default().insert_header(("Cookie", cookie));
        assert_eq!(who(req).unwrap(), "ci");
        let req = TestRequest::default().insert_header(("Cookie", format!("{COOKIE}=zz")));
        assert_eq!(who(req), Err(StatusCode::UNAUTHORIZED));
    }

    #[test]
    fn the_cookie_is_http_only_and_strict() {
        let set = set_cookie(&hex("t"), false);
        assert_eq!(set, "aam_token=74; HttpOnly; SameSite=Strict; Path=/");
        assert!(set_cookie("", true).ends_with("Max-Age=0"));
        assert_eq!(unhex(&hex("é; x")).as_deref(), Some("é; x"));
        assert_eq!(unhex("7"), None);
    }
}
