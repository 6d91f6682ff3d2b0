//! The dashboard's pages, compiled into the binary: hand-written HTML, CSS and JavaScript, no CDN and no build
//! step, so the dashboard works on an installation without internet access.

use axum::http::{header, HeaderValue};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::Shared;

pub(crate) const INDEX_HTML: &str = include_str!("../../web/index.html");
pub(crate) const LOGIN_HTML: &str = include_str!("../../web/login.html");
const APP_JS: &str = include_str!("../../web/app.js");
const APP_CSS: &str = include_str!("../../web/app.css");
const FAVICON: &str = include_str!("../../web/favicon.svg");

/// The pages; the script shows the one the path names.
const PAGES: &[&str] = &["/", "/cells", "/pack", "/events", "/controls", "/can", "/settings"];

pub(crate) fn routes() -> Router<Shared> {
    let mut r = Router::new();
    for p in PAGES {
        r = r.route(p, get(|| async { Html(INDEX_HTML) }));
    }
    r.route("/assets/app.js", get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }))
        .route("/assets/app.css", get(|| async { asset("text/css; charset=utf-8", APP_CSS) }))
        .route("/favicon.svg", get(|| async { asset("image/svg+xml", FAVICON) }))
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-cache")], body).into_response()
}

/// Headers that keep the pages from being framed, sniffed or made to run scripts from elsewhere.
pub(crate) async fn security_headers(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; \
             frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        ),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    r
}
