//! Who may use the dashboard: password login, session cookies, the cross-site check on every POST, and the rate
//! limit on wrong passwords.
//!
//! The cross-site check compares `Origin` with `Host` rather than issuing CSRF tokens: every browser sends
//! `Origin` on a POST (fetch or form), so a page on another site cannot forge one, and a script only has to add
//! one header. The session cookie is SameSite=Strict on top of that.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use serde::Deserialize;

use super::api::error;
use super::assets;
use super::Shared;

const COOKIE: &str = "dbe_session";
/// Wrong passwords allowed per client address within [`FAILURE_WINDOW`] before logins are refused outright.
const MAX_FAILURES: u32 = 5;
const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Bounds on the tables an unauthenticated client can grow.
const MAX_SESSIONS: usize = 256;
const MAX_TRACKED_CLIENTS: usize = 4096;

/// Hashes a password for `WebConfig::password_hash` (the `dbe hash-password` command).
pub fn hash_password(password: &str) -> String {
    let mut salt = [0u8; 16];
    fill_random(&mut salt);
    // Encoding 16 random bytes as a salt cannot fail (length within 4..=64 bytes).
    let salt = SaltString::encode_b64(&salt).expect("16-byte salt is valid");
    Argon2::default().hash_password(password.as_bytes(), &salt).expect("Argon2 with default params").to_string()
}

/// Whether `password` matches a hash from [`hash_password`]; a malformed hash matches nothing.
pub fn verify_password(password: &str, hash: &str) -> bool {
    match PasswordHash::new(hash) {
        Ok(parsed) => Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok(),
        Err(_) => false,
    }
}

fn fill_random(buf: &mut [u8]) {
    // The OS random source failing is not something a web server can work around.
    getrandom::getrandom(buf).expect("OS random source");
}

fn new_token() -> String {
    let mut b = [0u8; 32];
    fill_random(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub(crate) struct Auth {
    password_hash: Option<String>,
    session_ttl: Duration,
    sessions: Mutex<HashMap<String, Instant>>,
    failures: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

pub(crate) enum Attempt {
    Ok(String),
    Wrong,
    Limited(Duration),
}

impl Auth {
    pub fn new(password_hash: Option<String>, session_ttl: Duration) -> Auth {
        Auth { password_hash, session_ttl, sessions: Mutex::default(), failures: Mutex::default() }
    }

    pub fn required(&self) -> bool {
        self.password_hash.is_some()
    }

    fn session_valid(&self, token: &str) -> bool {
        let now = Instant::now();
        let mut s = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        match s.get_mut(token) {
            Some(exp) if *exp > now => {
                *exp = now + self.session_ttl;
                true
            }
            Some(_) => {
                s.remove(token);
                false
            }
            None => false,
        }
    }

    fn end_session(&self, token: &str) {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner()).remove(token);
    }

    /// Checks a password, counting failures per client; Argon2 runs off the async threads.
    /// `session`: start a cookie session on success (a login form) or not (HTTP Basic on each request).
    pub async fn attempt(&self, client: IpAddr, password: String, session: bool) -> Attempt {
        let Some(hash) = self.password_hash.clone() else { return Attempt::Wrong };
        let now = Instant::now();
        {
            let mut f = self.failures.lock().unwrap_or_else(|e| e.into_inner());
            if f.len() > MAX_TRACKED_CLIENTS {
                f.retain(|_, (start, _)| now.duration_since(*start) < FAILURE_WINDOW);
            }
            if let Some((start, n)) = f.get(&client) {
                let elapsed = now.duration_since(*start);
                if elapsed < FAILURE_WINDOW && *n >= MAX_FAILURES {
                    return Attempt::Limited(FAILURE_WINDOW - elapsed);
                }
            }
        }
        let ok = tokio::task::spawn_blocking(move || verify_password(&password, &hash)).await.unwrap_or(false);
        if !ok {
            let mut f = self.failures.lock().unwrap_or_else(|e| e.into_inner());
            let entry = f.entry(client).or_insert((now, 0));
            if now.duration_since(entry.0) >= FAILURE_WINDOW {
                *entry = (now, 0);
            }
            entry.1 += 1;
            return Attempt::Wrong;
        }
        if !session {
            return Attempt::Ok(String::new());
        }
        let token = new_token();
        let mut s = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        if s.len() >= MAX_SESSIONS {
            s.retain(|_, exp| *exp > now);
            if s.len() >= MAX_SESSIONS {
                // Drop the session closest to expiry, so a new login always succeeds.
                if let Some(k) = s.iter().min_by_key(|(_, e)| **e).map(|(k, _)| k.clone()) {
                    s.remove(&k);
                }
            }
        }
        s.insert(token.clone(), now + self.session_ttl);
        Attempt::Ok(token)
    }
}

fn cookie_token(headers: &HeaderMap) -> Option<&str> {
    headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(';')).find_map(|c| {
        let (k, v) = c.trim().split_once('=')?;
        (k == COOKIE).then_some(v)
    })
}

fn basic_password(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let b64 = v.strip_prefix("Basic ")?;
    let raw = decode_base64(b64.trim())?;
    let s = String::from_utf8(raw).ok()?;
    Some(s.split_once(':').map(|(_, p)| p.to_string()).unwrap_or(s))
}

fn decode_base64(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes().filter(|&c| c != b'=') {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

fn host_of(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::HOST)?.to_str().ok()
}

/// `Host` names a loopback-only server answers to; anything else is a DNS-rebinding attempt or a proxy we
/// were not told about.
fn is_loopback_host(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host)
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<IpAddr>().map(|ip| ip.is_loopback()).unwrap_or(false)
}

/// A POST from a page on another site (or one whose origin we cannot tell) is refused before it does anything.
fn cross_site(headers: &HeaderMap) -> Option<&'static str> {
    if headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) == Some("cross-site") {
        return Some("cross-site request refused");
    }
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return Some("cross-site check failed: send an Origin header matching Host (e.g. Origin: http://<host:port>)");
    };
    let origin_host = origin.split_once("://").map(|(_, h)| h.trim_end_matches('/')).unwrap_or("");
    match host_of(headers) {
        Some(host) if !origin_host.is_empty() && origin_host.eq_ignore_ascii_case(host) => None,
        _ => Some("cross-site request refused: Origin does not match Host"),
    }
}

fn wants_json(path: &str) -> bool {
    path.starts_with("/api/") || path == "/metrics"
}

/// Every request passes here: Host check, cross-site check on state changes, then the login check.
pub(crate) async fn guard(
    State(state): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    let headers = request.headers();
    let path = request.uri().path().to_string();
    let auth = &state.auth;
    if !auth.required() && !host_of(headers).map(is_loopback_host).unwrap_or(false) {
        return error(
            StatusCode::FORBIDDEN,
            "this dashboard answers only to localhost / 127.0.0.1 (set a password to serve other names)",
        );
    }
    let safe = matches!(*request.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if !safe {
        if let Some(why) = cross_site(headers) {
            return error(StatusCode::FORBIDDEN, why);
        }
    }
    let public = path == "/login" || path.starts_with("/assets/") || path == "/favicon.svg";
    if !auth.required() || public {
        return next.run(request).await;
    }
    if cookie_token(headers).map(|t| auth.session_valid(t)).unwrap_or(false) {
        return next.run(request).await;
    }
    if let Some(pw) = basic_password(headers) {
        match auth.attempt(peer.ip(), pw, false).await {
            Attempt::Ok(_) => return next.run(request).await,
            Attempt::Limited(wait) => return limited(wait),
            Attempt::Wrong => {}
        }
    }
    if wants_json(&path) {
        let mut r = error(StatusCode::UNAUTHORIZED, "login required");
        r.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Basic realm=\"DBE\""));
        r
    } else {
        Redirect::to("/login").into_response()
    }
}

fn limited(wait: Duration) -> Response {
    let secs = wait.as_secs().max(1);
    let mut r = error(StatusCode::TOO_MANY_REQUESTS, &format!("too many wrong passwords; try again in {secs} s"));
    r.headers_mut().insert(header::RETRY_AFTER, secs.into());
    r
}

pub(crate) fn routes() -> Router<Shared> {
    Router::new().route("/login", get(login_page).post(login)).route("/logout", post(logout))
}

fn login_html(message: &str) -> Html<String> {
    Html(assets::LOGIN_HTML.replace("{{message}}", message))
}

async fn login_page(State(state): State<Shared>) -> Response {
    if !state.auth.required() {
        return Redirect::to("/").into_response();
    }
    login_html("").into_response()
}

#[derive(Deserialize)]
struct LoginForm {
    password: String,
}

async fn login(
    State(state): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    form: Result<Form<LoginForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    if !state.auth.required() {
        return Redirect::to("/").into_response();
    }
    let Ok(Form(form)) = form else {
        return (StatusCode::BAD_REQUEST, login_html("<p class=\"err\">Send the password as a form field.</p>"))
            .into_response();
    };
    match state.auth.attempt(peer.ip(), form.password, true).await {
        Attempt::Ok(token) => {
            let cookie = format!("{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/");
            let mut r = Redirect::to("/").into_response();
            if let Ok(v) = header::HeaderValue::from_str(&cookie) {
                r.headers_mut().insert(header::SET_COOKIE, v);
            }
            r
        }
        Attempt::Wrong => {
            (StatusCode::UNAUTHORIZED, login_html("<p class=\"err\" id=\"login-error\">Wrong password.</p>"))
                .into_response()
        }
        Attempt::Limited(wait) => {
            let msg = format!(
                "<p class=\"err\" id=\"login-error\">Too many wrong passwords; try again in {} s.</p>",
                wait.as_secs().max(1)
            );
            let mut r = (StatusCode::TOO_MANY_REQUESTS, login_html(&msg)).into_response();
            r.headers_mut().insert(header::RETRY_AFTER, wait.as_secs().max(1).into());
            r
        }
    }
}

async fn logout(State(state): State<Shared>, headers: HeaderMap) -> Response {
    if let Some(t) = cookie_token(&headers) {
        state.auth.end_session(t);
    }
    let mut r = Redirect::to(if state.auth.required() { "/login" } else { "/" }).into_response();
    r.headers_mut().insert(
        header::SET_COOKIE,
        header::HeaderValue::from_static("dbe_session=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_round_trip() {
        let h = hash_password("s3cret");
        assert!(h.starts_with("$argon2"));
        assert!(verify_password("s3cret", &h));
        assert!(!verify_password("wrong", &h));
        assert!(!verify_password("s3cret", "not a hash"));
    }

    #[test]
    fn loopback_hosts() {
        for h in ["localhost", "localhost:8080", "127.0.0.1:80", "127.0.0.2", "[::1]:8080"] {
            assert!(is_loopback_host(h), "{h}");
        }
        for h in ["evil.example:8080", "192.168.1.5:80", "[fe80::1]:80", ""] {
            assert!(!is_loopback_host(h), "{h}");
        }
    }

    #[test]
    fn base64() {
        assert_eq!(decode_base64("dXNlcjpwdw==").unwrap(), b"user:pw");
        assert!(decode_base64("!!").is_none());
    }
}
