//! The web dashboard: pages, a JSON API, Server-Sent Events and Prometheus `/metrics`, served by axum.
//!
//! The server is only a consumer of a [`hub::Handle`]: it reads the latest snapshot (never waits for the bridge
//! loop), subscribes to events, and sends commands through the bounded request queue, so a slow browser or a
//! flood of requests cannot hold the bridge back.
//!
//! Security model (see `web/API.md`): by default it binds to 127.0.0.1 only, and there it needs no password but
//! accepts only loopback `Host` names (so a DNS-rebinding page cannot reach it). Any other bind address needs a
//! password (kept as an Argon2 hash); a login sets an HttpOnly, SameSite=Strict session cookie, and failed logins
//! are rate-limited per client address. Every state-changing request is a POST whose `Origin` must match `Host`.
//!
//! Two parts of DBE did not exist when this was written and plug in through [`Extras`]: the configuration layer
//! ([`ConfigStore`]) and the CAN frame tap (a broadcast of [`FrameRecord`]s).

mod api;
mod assets;
mod auth;
mod can;
mod config;
mod history;
mod metrics;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use crate::hub;

pub use auth::{hash_password, verify_password};
pub use can::{FrameRecord, TapDirection};
pub use config::{ConfigStore, FieldError};

/// How the dashboard listens and who may use it.
#[derive(Clone, Debug)]
pub struct WebConfig {
    pub bind: SocketAddr,
    /// PHC string from [`hash_password`]; required unless `bind` is a loopback address.
    pub password_hash: Option<String>,
    /// How often the 24 h chart takes a sample; the ring buffer holds 24 h at this interval (at most 10 000).
    pub history_interval: Duration,
    /// How long a login lasts without being used again.
    pub session_ttl: Duration,
}

impl Default for WebConfig {
    fn default() -> Self {
        WebConfig {
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            password_hash: None,
            history_interval: Duration::from_secs(60),
            session_ttl: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WebError {
    #[error("the web dashboard may listen on {bind} only with a password; set one (see `dbe hash-password`) or bind to 127.0.0.1")]
    PasswordRequired { bind: SocketAddr },
    #[error("the web password hash is not a valid Argon2 PHC string: {0}")]
    BadPasswordHash(String),
    #[error("history interval must be between 1 s and 1 h, got {0:?}")]
    BadHistoryInterval(Duration),
    #[error("cannot listen on {bind}: {source}")]
    Bind { bind: SocketAddr, source: std::io::Error },
}

impl WebConfig {
    /// Refuses a setup that would expose the bridge's controls to the network without a password.
    pub fn validate(&self) -> Result<(), WebError> {
        if let Some(hash) = &self.password_hash {
            argon2::PasswordHash::new(hash).map_err(|e| WebError::BadPasswordHash(e.to_string()))?;
        } else if !self.bind.ip().is_loopback() {
            return Err(WebError::PasswordRequired { bind: self.bind });
        }
        if self.history_interval < Duration::from_secs(1) || self.history_interval > Duration::from_secs(3600) {
            return Err(WebError::BadHistoryInterval(self.history_interval));
        }
        Ok(())
    }
}

/// Parts of DBE the dashboard can show when the binary has them; without them the pages say so.
#[derive(Clone, Default)]
pub struct Extras {
    /// The configuration layer behind the Settings page and `/api/config`.
    pub config: Option<Arc<dyn ConfigStore>>,
    /// Every CAN frame the bridge sees or sends, for the CAN page and the frame counters in `/metrics`.
    pub frames: Option<broadcast::Sender<FrameRecord>>,
}

/// A running server: where it listens, and its task (it runs until the task is aborted or the runtime stops).
pub struct Running {
    pub local_addr: SocketAddr,
    pub task: JoinHandle<()>,
}

impl Running {
    /// The address to print for the user.
    pub fn url(&self) -> String {
        format!("http://{}/", self.local_addr)
    }
}

/// What every handler shares.
pub(crate) struct AppState {
    pub handle: hub::Handle,
    pub auth: auth::Auth,
    pub history: history::History,
    pub config: Option<Arc<dyn ConfigStore>>,
    pub can: Option<can::Can>,
    pub started: std::time::Instant,
}

pub(crate) type Shared = Arc<AppState>;

/// Binds the listener, starts the background samplers and returns as soon as connections are accepted, so the
/// caller can print the URL (with port 0, the port the system chose).
pub async fn serve(config: WebConfig, handle: hub::Handle, extras: Extras) -> Result<Running, WebError> {
    config.validate()?;
    let listener = tokio::net::TcpListener::bind(config.bind)
        .await
        .map_err(|source| WebError::Bind { bind: config.bind, source })?;
    let local_addr = listener.local_addr().map_err(|source| WebError::Bind { bind: config.bind, source })?;

    let history = history::History::new(config.history_interval);
    let can = extras.frames.map(can::Can::new);
    let state = Arc::new(AppState {
        auth: auth::Auth::new(config.password_hash.clone(), config.session_ttl),
        history,
        config: extras.config,
        can,
        handle,
        started: std::time::Instant::now(),
    });
    let sampler = history::spawn_sampler(state.clone(), config.history_interval);
    let counter = state.can.as_ref().map(|c| c.spawn_counter());
    let app = router(state);
    let task = tokio::spawn(async move {
        let service = app.into_make_service_with_connect_info::<SocketAddr>();
        // Errors here are per-connection and already handled by hyper; the listener itself cannot fail later.
        let _ = axum::serve(listener, service).await;
        sampler.abort();
        if let Some(c) = counter {
            c.abort();
        }
    });
    Ok(Running { local_addr, task })
}

fn router(state: Shared) -> Router {
    Router::new()
        .merge(assets::routes())
        .merge(api::routes())
        .merge(can::routes())
        .merge(config::routes())
        .merge(auth::routes())
        .route("/metrics", axum::routing::get(metrics::metrics))
        .layer(axum::middleware::from_fn_with_state(state.clone(), auth::guard))
        .layer(axum::middleware::from_fn(api::json_errors))
        .layer(axum::middleware::map_response(assets::security_headers))
        .with_state(state)
}
