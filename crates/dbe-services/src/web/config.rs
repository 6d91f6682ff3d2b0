//! The seam for the configuration layer: the Settings page and `GET/POST /api/config` work against
//! [`ConfigStore`], so the config crate only has to implement it (validate, then save atomically).

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use serde_json::{json, Value};

use super::api::error;
use super::Shared;

/// Why one setting was refused; shown next to its field.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct FieldError {
    pub key: String,
    pub message: String,
}

/// What the dashboard needs from the configuration layer.
///
/// `schema()` is a JSON array of `{"key", "type": "integer"|"number"|"string"|"bool"|"enum", "label"?, "help"?,
/// "min"?, "max"?, "step"?, "unit"?, "options"?: [..], "restart"?: bool}`; `get()` a flat object `key -> value`.
/// `update` receives a flat object with the keys the user changed; it must check everything before saving
/// anything, and save nothing when it returns errors.
pub trait ConfigStore: Send + Sync {
    fn get(&self) -> Value;
    fn schema(&self) -> Value;
    fn update(&self, values: Value) -> Result<(), Vec<FieldError>>;
}

pub(crate) fn routes() -> Router<Shared> {
    Router::new().route("/api/config", get(read).post(write))
}

fn unavailable() -> Response {
    error(StatusCode::NOT_FOUND, "settings are not available in this build")
}

async fn read(State(s): State<Shared>) -> Response {
    let Some(store) = &s.config else { return unavailable() };
    Json(json!({ "values": store.get(), "schema": store.schema() })).into_response()
}

async fn write(State(s): State<Shared>, body: Bytes) -> Response {
    let Some(store) = s.config.clone() else { return unavailable() };
    let values: Value = match super::api::parse_body(&body) {
        Ok(v) => v,
        Err(r) => return r.into_response(),
    };
    if !values.is_object() {
        return error(StatusCode::BAD_REQUEST, "expected a JSON object of setting keys to values");
    }
    // The store may write a file: keep that off the async threads.
    match tokio::task::spawn_blocking(move || store.update(values)).await {
        Ok(Ok(())) => Json(json!({ "ok": true, "values": s.config.as_ref().map(|c| c.get()) })).into_response(),
        Ok(Err(fields)) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({ "error": "some settings are invalid; nothing was saved", "fields": fields })),
        )
            .into_response(),
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "the settings store failed"),
    }
}
