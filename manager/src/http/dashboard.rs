//! The dashboard: `index.html`, `app.js` and `style.css` from
//! `assets/`, embedded in the binary (no build step, no CDN). They need
//! no token to load; everything they show comes from `/api`, which does.

use actix_web::http::header;
use actix_web::{web, HttpResponse};

const INDEX: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const STYLE: &str = include_str!("assets/style.css");

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route(
        "/",
        web::get().to(|| asset(INDEX, "text/html; charset=utf-8")),
    )
    .route(
        "/index.html",
        web::get().to(|| asset(INDEX, "text/html; charset=utf-8")),
    )
    .route(
        "/app.js",
        web::get().to(|| asset(APP_JS, "text/javascript; charset=utf-8")),
    )
    .route(
        "/style.css",
        web::get().to(|| asset(STYLE, "text/css; charset=utf-8")),
    );
}

async fn asset(body: &'static str, content_type: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(content_type)
        // The files change with the binary: a browser asks again each time.
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        // Nothing but our own files, and never inside another site's frame.
        .insert_header((
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; frame-ancestors 'none'",
        ))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .body(body)
}
