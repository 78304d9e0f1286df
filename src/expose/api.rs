//! The JSON API under `/api/v1`.

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use crate::detect::SharedEventLog;

pub fn router(events: SharedEventLog) -> Router {
    Router::new()
        .route("/api/v1/events", get(list_events))
        .route("/api/v1/events/{id}", get(get_event))
        .with_state(events)
}

async fn list_events(State(events): State<SharedEventLog>) -> Response {
    let log = events.read().unwrap_or_else(|e| e.into_inner());
    Json(json!({ "events": log.list() })).into_response()
}

async fn get_event(State(events): State<SharedEventLog>, Path(id): Path<String>) -> Response {
    let log = events.read().unwrap_or_else(|e| e.into_inner());
    match log.get(&id) {
        Some(event) => Json(event).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({ "error": format!("no event with id {id:?}; list events at /api/v1/events") })),
        )
            .into_response(),
    }
}
