//! The admin HTTP server on `admin.listen`.
//!
//! `/healthz` answers while the process runs; `/readyz` answers 200 only
//! while every receiver is listening and shutdown has not begun, so a
//! Kubernetes readiness probe takes the pod out of rotation before it stops.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use super::metrics::Metrics;
use crate::detect::SharedEventLog;

/// State shared by the admin routes.
#[derive(Clone)]
pub struct AdminState {
    pub metrics: Arc<Metrics>,
    pub ready: Arc<AtomicBool>,
    pub events: SharedEventLog,
}

pub fn router(state: AdminState) -> Router {
    let api = super::api::router(state.events.clone());
    let ui = super::ui::router(state.events.clone());
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
        .merge(api)
        .merge(ui)
}

async fn readyz(State(state): State<AdminState>) -> impl IntoResponse {
    if state.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready: starting or shutting down\n")
    }
}

async fn metrics(State(state): State<AdminState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        state.metrics.render(),
    )
}
