//! The JSON API under `/api/v1`: events, filtered, and the rollout verdict.
//!
//! Query parameters are checked, never ignored: an unknown parameter or a
//! value that does not parse gets 400 with a message that names it, so a
//! typo in a gate's URL cannot turn into a silent "everything".

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use crate::clock::Timestamp;
use crate::coverage::CoverageBoard;
use crate::detect::event::EventsView;
use crate::detect::event::{DriftEvent, EventKind, EventState, Severity};
use crate::verdict::{Outcome, Request, Rules, revision_matches};

/// What the API reads: the event log, and the shards' coverage for the
/// verdict.
#[derive(Clone)]
pub(crate) struct ApiState {
    pub events: EventsView,
    pub coverage: CoverageBoard,
    pub rules: Rules,
}

pub(crate) fn router(state: ApiState) -> Router {
    Router::new()
        .route("/api/v1/events", get(list_events))
        .route("/api/v1/events/{id}", get(get_event))
        // Flagger's webhooks POST (their body is not needed).
        .route("/api/v1/verdict", get(verdict).post(verdict))
        .with_state(state)
}

type Params = Query<Vec<(String, String)>>;

fn bad_request(message: String) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({ "error": message }))).into_response()
}

/// Refuses parameters outside `known` and repeated ones.
fn check_names(params: &[(String, String)], known: &[&str]) -> Result<(), String> {
    for (i, (name, _)) in params.iter().enumerate() {
        if !known.contains(&name.as_str()) {
            return Err(format!("unknown parameter {name:?}; known: {}", known.join(", ")));
        }
        if params[..i].iter().any(|(n, _)| n == name) {
            return Err(format!("parameter {name:?} is given twice"));
        }
    }
    Ok(())
}

fn kinds(text: &str) -> Result<Vec<EventKind>, String> {
    text.split(',')
        .map(|k| {
            serde_json::from_value::<EventKind>(json!(k.trim()))
                .map_err(|_| {
                    let known: Vec<&str> = EventKind::ALL.iter().map(|k| k.as_str()).collect();
                    format!("kind {k:?} is not one of {}", known.join(", "))
                })
        })
        .collect()
}

/// A time filter: RFC 3339, its offset applied (`+` is `%2B` in a query).
fn time(name: &str, text: &str) -> Result<Timestamp, String> {
    Timestamp::parse(text).ok_or_else(|| {
        format!("{name}={text:?} is not an RFC 3339 time from 1970 on; write e.g. 2026-11-26T10:00:00Z or 2026-11-26T11:00:00%2B01:00")
    })
}

/// The filters of `GET /api/v1/events`.
#[derive(Default)]
struct Filter {
    service: Option<String>,
    environment: Option<String>,
    kinds: Option<Vec<EventKind>>,
    state: Option<EventState>,
    revision: Option<String>,
    since: Option<Timestamp>,
    until: Option<Timestamp>,
    limit: Option<usize>,
}

impl Filter {
    fn parse(params: &[(String, String)]) -> Result<Filter, String> {
        check_names(
            params,
            &["service", "environment", "kind", "state", "revision", "since", "until", "limit"],
        )?;
        let mut filter = Filter::default();
        for (name, value) in params {
            match name.as_str() {
                "service" => filter.service = Some(value.clone()),
                "environment" => filter.environment = Some(value.clone()),
                "kind" => filter.kinds = Some(kinds(value)?),
                "state" => {
                    filter.state = Some(match value.as_str() {
                        "firing" => EventState::Firing,
                        "resolved" => EventState::Resolved,
                        _ => return Err(format!("state={value:?} is not firing or resolved")),
                    })
                }
                // Exact, or an abbreviation of at least 7 characters.
                "revision" => filter.revision = Some(value.clone()),
                "since" => filter.since = Some(time("since", value)?),
                "until" => filter.until = Some(time("until", value)?),
                "limit" => {
                    filter.limit = Some(
                        value
                            .parse::<usize>()
                            .ok()
                            .filter(|n| (1..=crate::detect::MAX_EVENTS).contains(n))
                            .ok_or_else(|| format!("limit={value:?} is not a number from 1 to {}", crate::detect::MAX_EVENTS))?,
                    )
                }
                _ => {}
            }
        }
        Ok(filter)
    }

    fn keeps(&self, event: &DriftEvent) -> bool {
        self.service.as_ref().is_none_or(|s| &event.service == s)
            && self.environment.as_ref().is_none_or(|e| event.environment.as_ref() == Some(e))
            && self.kinds.as_ref().is_none_or(|k| k.contains(&event.kind))
            && self.state.is_none_or(|s| event.state == s)
            && self.revision.as_ref().is_none_or(|r| {
                revision_matches(r, &event.revision) || event.seen_in.iter().any(|seen| revision_matches(r, seen))
            })
            && self.since.is_none_or(|t| event.detected_at >= t)
            && self.until.is_none_or(|t| event.detected_at < t)
    }
}

async fn list_events(State(state): State<ApiState>, Query(params): Params) -> Response {
    let filter = match Filter::parse(&params) {
        Ok(filter) => filter,
        Err(message) => return bad_request(message),
    };
    let log = state.events.current();
    let events: Vec<&DriftEvent> = log
        .list()
        .iter()
        .map(|e| &**e)
        .filter(|e| filter.keeps(e))
        .take(filter.limit.unwrap_or(usize::MAX))
        .collect();
    Json(json!({ "events": events })).into_response()
}

async fn get_event(State(state): State<ApiState>, Path(id): Path<String>) -> Response {
    let log = state.events.current();
    match log.get(&id) {
        Some(event) => Json(event).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({ "error": format!("no event with id {id:?}; list events at /api/v1/events") })),
        )
            .into_response(),
    }
}

fn verdict_request(params: &[(String, String)]) -> Result<(Request, bool), String> {
    check_names(
        params,
        &["service", "environment", "revision", "min_samples", "kind", "severity", "status_codes"],
    )?;
    let get = |name: &str| params.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
    let service = get("service").ok_or("service is required")?.to_owned();
    let environment = get("environment").map(str::to_owned);
    // Without a revision, the newest one the service serves is judged:
    // a canary's, when the caller (Flagger) cannot name it.
    let revision = get("revision").unwrap_or_default().to_owned();
    let min_samples = get("min_samples")
        .map(|v| v.parse::<u64>().map_err(|_| format!("min_samples={v:?} is not a whole number")))
        .transpose()?;
    let kinds = get("kind").map(kinds).transpose()?;
    let severity = match get("severity") {
        None | Some("warning") => Severity::Warning,
        Some("critical") => Severity::Critical,
        Some("info") => Severity::Info,
        Some(other) => return Err(format!("severity={other:?} is not info, warning or critical")),
    };
    let status_codes = match get("status_codes") {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => return Err(format!("status_codes={other:?} is not true or false")),
    };
    Ok((
        Request {
            service,
            environment,
            revision,
            min_samples,
            kinds,
            severity,
        },
        status_codes,
    ))
}

async fn verdict(State(state): State<ApiState>, Query(params): Params) -> Response {
    let (mut request, status_codes) = match verdict_request(&params) {
        Ok(request) => request,
        Err(message) => return bad_request(message),
    };
    let coverage = state.coverage.service(&request.service, request.environment.as_deref()).await;
    if request.revision.is_empty() {
        let newest = coverage
            .as_ref()
            .and_then(|c| c.revisions.iter().max_by_key(|r| r.first_seen_unix_nanos))
            .map(|r| r.revision.clone());
        if let Some(newest) = newest {
            request.revision = newest;
        }
    }
    let verdict = {
        let log = state.events.current();
        crate::verdict::decide(&request, &state.rules, coverage.as_ref(), log.list().iter().map(|e| &**e))
    };
    // Argo Rollouts' web provider reads the JSON of any 200; Flagger's
    // webhooks read the status code, with `status_codes=true`.
    let status = match (status_codes, verdict.verdict) {
        (false, _) | (true, Outcome::Pass) => StatusCode::OK,
        (true, Outcome::Fail) => StatusCode::UNPROCESSABLE_ENTITY,
        (true, Outcome::Inconclusive) => StatusCode::SERVICE_UNAVAILABLE,
    };
    (status, Json(verdict)).into_response()
}
