//! The admin HTTP server on `admin.listen`.
//!
//! `/healthz` answers while the process runs; `/readyz` answers 200 only
//! while every receiver is listening, shutdown has not begun and the store
//! writes, so a Kubernetes readiness probe takes the pod out of rotation
//! before it stops, and says why when the store is degraded (a full disk).
//! A fleet whose database is away leaves it at 200, saying so: the replica
//! still receives and detects on its own.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::telemetry::metrics::Metrics;
use crate::detect::event::EventsView;

/// State shared by the admin routes.
#[derive(Clone)]
pub(crate) struct AdminState {
    pub metrics: Arc<Metrics>,
    pub ready: Arc<AtomicBool>,
    pub events: EventsView,
    /// The embedded store, whose health `/readyz` and `/metrics` report.
    pub store: Option<Arc<crate::store::EmbeddedStore>>,
    /// The fleet's store, whose health `/readyz` and `/metrics` report.
    pub fleet: Option<Arc<crate::fleet::store::FleetStore>>,
    /// What the shards saw of each revision, for the verdict.
    pub coverage: crate::coverage::CoverageBoard,
    pub verdict: crate::verdict::Rules,
}

/// Bearer tokens guarding the admin routes; `/healthz` and `/readyz` stay
/// open for the kubelet's probes.
#[derive(Clone, Default)]
pub(crate) struct Tokens {
    /// `/api` and `/ui` (they show commit authors' names and e-mails).
    pub api: Option<Arc<crate::auth::BearerToken>>,
    pub metrics: Option<Arc<crate::auth::BearerToken>>,
}

pub(crate) fn router(state: AdminState, tokens: Tokens) -> Router {
    let api = super::api::router(super::api::ApiState {
        events: state.events.clone(),
        coverage: state.coverage.clone(),
        rules: state.verdict.clone(),
    })
    .merge(super::ui::router(state.events.clone()));
    let metrics_route = Router::new().route("/metrics", get(metrics)).with_state(state.clone());
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(state)
        .merge(crate::auth::require(metrics_route, tokens.metrics))
        .merge(crate::auth::require(api, tokens.api))
}

async fn readyz(State(state): State<AdminState>) -> impl IntoResponse {
    if !state.ready.load(Ordering::Acquire) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: starting or shutting down\n".to_owned(),
        );
    }
    let health = state.store.as_ref().map(|s| s.health());
    if let Some(health) = health.filter(|h| h.error.is_some()) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "not ready: the store cannot be written ({}); {} events and alerts kept in memory\n",
                health.error.unwrap_or_default(),
                health.pending
            ),
        );
    }
    // A fleet whose database is away does not make the pod unready: the
    // replica receives and detects on its own, and says so.
    match state.fleet.as_ref().map(|f| f.health()).filter(|h| h.degraded()) {
        Some(health) => (
            StatusCode::OK,
            format!(
                "ready; fleet: degraded ({}): detecting on this replica alone until the database answers\n",
                health.error.as_deref().unwrap_or("not reached yet")
            ),
        ),
        None => (StatusCode::OK, "ready\n".to_owned()),
    }
}

async fn metrics(State(state): State<AdminState>) -> impl IntoResponse {
    if let Some(store) = &state.store {
        store.health().observe(&state.metrics.store);
    }
    if let Some(fleet) = &state.fleet {
        fleet.health().observe(&state.metrics.fleet);
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        state.metrics.render(),
    )
}
