//! Incident pages: `/ui` lists events, `/ui/events/{id}` shows one — what
//! drifted, the before/after latency distribution as a server-rendered SVG,
//! the calling operations of a new peer, and the suspects with their AI tool,
//! marker and evidence. No script, no CDN: a page an on-call engineer can
//! open from an alert anywhere. Every string from spans or commits is
//! HTML-escaped.

use std::fmt::Write;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::detect::event::EventsView;
use crate::detect::event::{Distribution, DriftEvent, EventKind, EventState, Severity};
use crate::detect::details::CallsSummary;

pub(crate) fn router(events: EventsView) -> Router {
    Router::new()
        .route("/ui", get(list))
        .route("/ui/events/{id}", get(incident))
        .with_state(events)
}

/// Escapes text for HTML element content and attribute values.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() && c != '\n' => {}
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2rem;color:#222;max-width:70rem}\
    table{border-collapse:collapse;width:100%}td,th{border-bottom:1px solid #ddd;padding:.35rem .5rem;text-align:left;vertical-align:top}\
    .critical{color:#b00020;font-weight:bold}.warning{color:#b26a00;font-weight:bold}.resolved{color:#2e7d32}\
    code{background:#f3f3f3;padding:0 .2rem}.evidence{margin:.2rem 0 0 1rem;color:#444}.hunk{margin:.3rem 0 0 1rem;padding:.3rem;background:#f7f7f7;font-size:.8rem;overflow-x:auto}.added{background:#e6ffec}.muted{color:#777}\
    .ai{background:#ede7f6;border-radius:.3rem;padding:0 .3rem}";

fn page(title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title><style>{STYLE}</style></head><body>{body}</body></html>",
        escape(title)
    );
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response()
}

fn severity_class(event: &DriftEvent) -> &'static str {
    match (event.state, event.severity) {
        (EventState::Resolved, _) => "resolved",
        (_, Severity::Critical) => "critical",
        (_, Severity::Warning) => "warning",
        (_, Severity::Info) => "info",
    }
}

fn subject(event: &DriftEvent) -> String {
    match event.kind {
        EventKind::LatencyRegression | EventKind::ErrorRateRegression => event.operation.clone().unwrap_or_default(),
        EventKind::NewOutboundPeer => event.peer.clone().unwrap_or_default(),
        EventKind::RepeatedUnsafeCall | EventKind::FanoutRegression => format!(
            "{} → {}",
            event.operation.as_deref().unwrap_or_default(),
            event.peer.as_deref().unwrap_or_default()
        ),
        EventKind::NewDependency => event.dependency.as_ref().map(|d| d.scope.clone()).unwrap_or_default(),
    }
}

async fn list(State(events): State<EventsView>) -> Response {
    let log = events.current();
    let mut body = String::from("<h1>driftwatch: drift events</h1>");
    if log.list().is_empty() {
        body.push_str("<p class=\"muted\">No drift detected yet.</p>");
    } else {
        body.push_str("<table><tr><th>state</th><th>kind</th><th>service</th><th>operation / peer</th><th>revision</th><th>detected</th><th>top suspect</th></tr>");
        for e in log.list() {
            let suspect = e.suspects.first().map(|s| escape(&s.summary)).unwrap_or_default();
            let _ = write!(
                body,
                "<tr><td class=\"{}\">{:?}</td><td>{}</td><td>{}</td><td><a href=\"/ui/events/{}\">{}</a></td><td><code>{}</code></td><td>{}</td><td>{}</td></tr>",
                severity_class(e),
                e.state,
                e.kind.as_str(),
                escape(&e.service_key().to_string()),
                escape(&e.id),
                escape(&subject(e)),
                escape(&e.revision[..e.revision.len().min(12)]),
                e.detected_at,
                suspect
            );
        }
        body.push_str("</table>");
    }
    page("driftwatch events", &body)
}

async fn incident(State(events): State<EventsView>, Path(id): Path<String>) -> Response {
    let event = events.current().get(&id).cloned();
    let Some(event) = event else {
        let body = format!(
            "<h1>No such event</h1><p>No event with id <code>{}</code>. <a href=\"/ui\">All events</a></p>",
            escape(&id)
        );
        let mut response = page("driftwatch: no such event", &body);
        *response.status_mut() = StatusCode::NOT_FOUND;
        return response;
    };
    page(
        &format!("driftwatch: {} {}", event.service_key(), subject(&event)),
        &render_incident(&event),
    )
}

/// The body of an incident page.
pub(crate) fn render_incident(event: &DriftEvent) -> String {
    let mut b = String::new();
    let kind = event.kind.title();
    let _ = write!(
        b,
        "<p><a href=\"/ui\">← all events</a></p><h1>{kind}: {} <code>{}</code></h1>\
         <p class=\"{}\">{:?} · {:?}</p><table>\
         <tr><th>introduced in</th><td><code>{}</code></td></tr><tr><th>still present in</th><td>{}</td></tr>\
         <tr><th>baseline revision</th><td><code>{}</code></td></tr>\
         <tr><th>onset</th><td>{}</td></tr><tr><th>detected</th><td>{}</td></tr><tr><th>resolved</th><td>{}</td></tr></table>",
        escape(&event.service_key().to_string()),
        escape(&subject(event)),
        severity_class(event),
        event.severity,
        event.state,
        escape(&event.revision),
        if event.seen_in.is_empty() {
            "—".to_owned()
        } else {
            event
                .seen_in
                .iter()
                .map(|r| format!("<code>{}</code>", escape(r)))
                .collect::<Vec<_>>()
                .join(", ")
        },
        escape(event.baseline_revision.as_deref().unwrap_or("—")),
        event.onset,
        event.detected_at,
        escape(&match (&event.resolved_at, &event.resolution) {
            (Some(at), Some(resolution)) => format!("{at} — {}", resolution.describe()),
            (Some(at), None) => at.to_string(),
            (None, _) => "—".to_owned(),
        }),
    );
    if let Some(rates) = event.stats.as_ref().and_then(|s| s.error_rate.as_ref())
        && let Some(stats) = &event.stats
    {
        let _ = write!(
            b,
            "<h2>Error rate before and after</h2><table><tr><th></th><th>spans</th><th>errors</th><th>error rate</th></tr>\
             <tr><td>baseline</td><td>{}</td><td>{}</td><td>{}</td></tr>\
             <tr><td>current</td><td>{}</td><td>{}</td><td>{}</td></tr></table>\
             <p>Fisher's exact test {} over {} test(s)</p>",
            stats.baseline.count,
            rates.baseline_errors,
            escape(&crate::text::percent(rates.baseline)),
            stats.current.count,
            rates.current_errors,
            escape(&crate::text::percent(rates.current)),
            escape(&crate::detect::stats::describe_p_value(stats.p_value)),
            stats.tests,
        );
        b.push_str(&error_rate_svg(rates.baseline, rates.current));
        if rates.timeline.len() >= 2 {
            b.push_str("<h2>Error rate over time</h2>");
            b.push_str(&error_rate_timeline_svg(&rates.timeline));
        }
        if !rates.new_error_types.is_empty() {
            b.push_str("<h2>Errors new in this revision</h2><table><tr><th>type</th><th>failures</th></tr>");
            for t in &rates.new_error_types {
                let _ = write!(b, "<tr><td><code>{}</code></td><td>{}</td></tr>", escape(&t.error_type), t.count);
            }
            b.push_str("</table>");
        }
    } else if let Some(stats) = &event.stats {
        let _ = write!(
            b,
            "<h2>Latency before and after</h2><table><tr><th></th><th>spans</th><th>p50</th><th>p95</th><th>p99</th></tr>\
             <tr><td>baseline</td><td>{}</td><td>{:.1} ms</td><td>{:.1} ms</td><td>{:.1} ms</td></tr>\
             <tr><td>current</td><td>{}</td><td>{:.1} ms</td><td>{:.1} ms</td><td>{:.1} ms</td></tr></table>\
             <p>p95 +{:.0}% · Mann-Whitney {} over {} test(s) · P(current &gt; baseline) = {:.2}</p>",
            stats.baseline.count,
            stats.baseline.p50_ms,
            stats.baseline.p95_ms,
            stats.baseline.p99_ms,
            stats.current.count,
            stats.current.p50_ms,
            stats.current.p95_ms,
            stats.current.p99_ms,
            stats.relative_increase * 100.0,
            escape(&crate::detect::stats::describe_p_value(stats.p_value)),
            stats.tests,
            stats.effect_size.unwrap_or(0.5)
        );
        if let Some(distribution) = &stats.distribution {
            b.push_str(&distribution_svg(distribution, stats.baseline.p95_ms, stats.current.p95_ms));
        }
    }
    if let Some(outbound) = &event.outbound {
        let reasons: Vec<String> = outbound.reasons.iter().map(|r| format!("{r:?}")).collect();
        let _ = write!(
            b,
            "<h2>Calls</h2><p>{} call(s); reported because: {}</p>",
            outbound.calls,
            escape(&reasons.join(", "))
        );
        b.push_str(
            "<table><tr><th>calling operation</th><th>calls</th><th>p95 call</th><th>share of the caller's time</th></tr>",
        );
        for c in &outbound.callers {
            let _ = write!(
                b,
                "<tr><td>{}</td><td>{}</td><td>{:.1} ms</td><td>{:.0}%</td></tr>",
                escape(&c.operation),
                c.calls,
                c.p95_call_ms,
                c.median_share * 100.0
            );
        }
        b.push_str("</table>");
    }
    if let Some(repeats) = &event.repeats {
        let _ = write!(
            b,
            "<h2>Calls per request</h2><table><tr><th></th><th>requests making the call</th><th>making it more than once</th></tr>\
             <tr><td>baseline</td><td>{}</td><td>0</td></tr>\
             <tr><td>current</td><td>{}</td><td>{} (up to {} times)</td></tr></table>",
            repeats.baseline_requests, repeats.requests, repeats.repeated_requests, repeats.max_calls_per_request
        );
    }
    if let Some(fanout) = &event.fanout {
        let _ = write!(
            b,
            "<h2>Calls per request</h2><table><tr><th></th><th>requests</th><th>mean</th><th>p50</th><th>p95</th><th>max</th></tr>\
             <tr><td>baseline</td><td>{}</td><td>{:.2}</td><td>{}</td><td>{}</td><td>{}</td></tr>\
             <tr><td>current</td><td>{}</td><td>{:.2}</td><td>{}</td><td>{}</td><td>{}</td></tr></table>\
             <p>mean +{:.0}% · Mann-Whitney {} over {} test(s)</p>",
            fanout.baseline.requests,
            fanout.baseline.mean,
            fanout.baseline.p50,
            fanout.baseline.p95,
            fanout.baseline.max,
            fanout.current.requests,
            fanout.current.mean,
            fanout.current.p50,
            fanout.current.p95,
            fanout.current.max,
            fanout.relative_increase * 100.0,
            escape(&crate::detect::stats::describe_p_value(fanout.p_value)),
            fanout.tests,
        );
        b.push_str(&calls_per_request_svg(&fanout.baseline, &fanout.current));
    }
    if let Some(dependency) = &event.dependency {
        let _ = write!(
            b,
            "<h2>New library</h2><p><code>{}</code>: {} span(s)</p><table><tr><th>operation</th><th>spans</th></tr>",
            escape(&dependency.scope),
            dependency.spans
        );
        for o in &dependency.operations {
            let _ = write!(b, "<tr><td>{}</td><td>{}</td></tr>", escape(&o.operation), o.spans);
        }
        b.push_str("</table>");
    }
    b.push_str("<h2>Suspects</h2>");
    if let Some(note) = &event.attribution {
        let _ = write!(b, "<p class=\"muted\">{}</p>", escape(note));
    }
    if event.suspects.is_empty() {
        b.push_str("<p>No suspect commits.</p>");
    } else {
        b.push_str("<table><tr><th>score</th><th>commit</th><th>AI</th><th>evidence</th></tr>");
        for s in &event.suspects {
            let ai = match &s.ai {
                Some(ai) => format!(
                    "<span class=\"ai\">{}</span> ({})<div class=\"evidence\"><code>{}</code></div>",
                    escape(&ai.tool),
                    escape(ai.confidence.as_str()),
                    escape(&ai.marker)
                ),
                None => "<span class=\"muted\">no marker</span>".to_owned(),
            };
            let mut evidence: String = s
                .evidence
                .iter()
                .map(|e| format!("<div class=\"evidence\">{}</div>", escape(e)))
                .collect();
            for hunk in &s.hunks {
                evidence.push_str(&hunk_html(hunk));
            }
            let pull_request = match &s.pull_request {
                Some(pr) => match &pr.url {
                    Some(url) => format!(" <a href=\"{}\">#{}</a>", escape(url), pr.number),
                    None => format!(" #{}", pr.number),
                },
                None => String::new(),
            };
            let _ = write!(
                b,
                "<tr{}><td>{:.2}</td><td><code>{}</code> {}{pull_request}<div class=\"muted\">{} · {}</div></td><td>{ai}</td><td>{evidence}</td></tr>",
                // In range, with nothing linking it to the drift: greyed.
                if s.linked { "" } else { " class=\"muted\"" },
                s.score,
                escape(&s.commit[..s.commit.len().min(12)]),
                escape(&s.summary),
                escape(&s.author),
                escape(&s.committed_at.rfc3339())
            );
        }
        b.push_str("</table>");
    }
    b
}

/// A suspect's hunk as numbered lines: added ones marked `+` and tinted,
/// and those an agent wrote (git-ai notes) tagged with the agent.
fn hunk_html(hunk: &crate::detect::event::Hunk) -> String {
    let mut b = format!("<pre class=\"hunk\"><span class=\"muted\">{}</span>\n", escape(&hunk.path));
    for (i, line) in hunk.lines.iter().enumerate() {
        let number = hunk.start_line as usize + i;
        let mark = if line.added { '+' } else { ' ' };
        let agent = line
            .agent
            .as_deref()
            .map(|a| format!(" <span class=\"ai\">{}</span>", escape(a)))
            .unwrap_or_default();
        let class = if line.added { " class=\"added\"" } else { "" };
        let _ = writeln!(b, "<span{class}>{number:>5} {mark} {}</span>{agent}", escape(&line.text));
    }
    b.push_str("</pre>");
    b
}

/// The error rate per analysis window, baseline windows grey and the
/// drifting revision's red, on a time axis, with the deploy marked where
/// the drifting revision's first window starts.
pub(crate) fn error_rate_timeline_svg(points: &[crate::detect::event::RatePoint]) -> String {
    let (width, height, left, right, top, bottom) = (760.0_f64, 180.0_f64, 56.0_f64, 12.0_f64, 12.0_f64, 36.0_f64);
    let rate = |p: &crate::detect::event::RatePoint| p.errors as f64 / p.spans.max(1) as f64;
    let (first, last) = match (points.iter().map(|p| p.start_ms).min(), points.iter().map(|p| p.start_ms).max()) {
        (Some(first), Some(last)) => (first, last.max(first + 1)),
        _ => return String::new(),
    };
    let peak = points.iter().map(rate).fold(0.0_f64, f64::max).max(1e-9);
    let x = |ms: u64| left + (width - left - right) * (ms - first) as f64 / (last - first) as f64;
    let y = |r: f64| top + (height - top - bottom) * (1.0 - r / peak);
    let mut svg = format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" id="error-rate-timeline" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" aria-label="error rate over time"> <line x1="{left}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#999"/> <text x="4" y="{:.1}" font-size="11">{}</text><text x="4" y="{:.1}" font-size="11">0%</text>"##,
        y(0.0),
        width - right,
        y(0.0),
        y(peak) + 10.0,
        escape(&crate::text::percent(peak)),
        y(0.0)
    );
    for (current, color, name) in [(false, "#607d8b", "baseline"), (true, "#d32f2f", "current")] {
        let line: Vec<String> = points
            .iter()
            .filter(|p| p.current == current)
            .map(|p| format!("{:.1},{:.1}", x(p.start_ms), y(rate(p))))
            .collect();
        if !line.is_empty() {
            let _ = write!(
                svg,
                r##"<polyline class="{name}" points="{}" fill="none" stroke="{color}" stroke-width="1.5"/>"##,
                line.join(" ")
            );
        }
    }
    if let Some(deploy) = points.iter().filter(|p| p.current).map(|p| p.start_ms).min()
        && points.iter().any(|p| !p.current)
    {
        let at = x(deploy);
        let _ = write!(
            svg,
            r##"<line class="deploy" x1="{at:.1}" y1="{top}" x2="{at:.1}" y2="{:.1}" stroke="#333" stroke-dasharray="4 3"/><text x="{:.1}" y="{:.1}" font-size="11">deploy</text>"##,
            y(0.0),
            at + 4.0,
            top + 10.0
        );
    }
    let minutes = (last - first) as f64 / 60_000.0;
    let _ = write!(
        svg,
        r##"<text x="{:.1}" y="{:.1}" font-size="11" text-anchor="middle">{minutes:.0} min · grey: baseline revision · red: this revision</text></svg>"##,
        (left + width - right) / 2.0,
        height - 8.0
    );
    svg
}

/// The share of requests making each number of calls, before and after,
/// as pairs of bars.
pub(crate) fn calls_per_request_svg(baseline: &CallsSummary, current: &CallsSummary) -> String {
    let (width, height, left, bottom, top) = (760.0_f64, 220.0_f64, 50.0_f64, 36.0_f64, 16.0_f64);
    let mut values: Vec<u32> = baseline.histogram.iter().chain(&current.histogram).map(|(v, _)| *v).collect();
    values.sort_unstable();
    values.dedup();
    if values.is_empty() {
        return String::new();
    }
    let share = |side: &CallsSummary, value: u32| {
        let n = side.histogram.iter().find(|(v, _)| *v == value).map_or(0, |(_, n)| *n);
        n as f64 / side.requests.max(1) as f64
    };
    let slot = (width - left - 10.0) / values.len() as f64;
    let bar = (slot / 2.5).min(40.0);
    let y = |s: f64| top + (height - top - bottom) * (1.0 - s);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" id=\"calls-per-request\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" role=\"img\" aria-label=\"calls per request before and after\">"
    );
    for (i, value) in values.iter().enumerate() {
        let x = left + slot * i as f64 + slot / 2.0;
        for (offset, side, color, name) in [(-bar, baseline, "#607d8b", "baseline"), (0.0, current, "#d32f2f", "current")] {
            let s = share(side, *value);
            let _ = write!(
                svg,
                "<rect class=\"{name}\" x=\"{:.1}\" y=\"{:.1}\" width=\"{bar:.1}\" height=\"{:.1}\" fill=\"{color}\" fill-opacity=\"0.6\"><title>{name}: {:.0}% of requests make {value} call(s)</title></rect>",
                x + offset,
                y(s),
                y(0.0) - y(s),
                s * 100.0
            );
        }
        let _ = write!(
            svg,
            "<text x=\"{x:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"middle\">{value}</text>",
            height - bottom + 14.0
        );
    }
    let _ = write!(
        svg,
        "<line x1=\"{left}\" x2=\"{:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"#333\"/>\
         <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"middle\">calls per request</text>\
         <text x=\"4\" y=\"{:.1}\" font-size=\"11\">100%</text><text x=\"4\" y=\"{:.1}\" font-size=\"11\">0%</text>\
         <text x=\"{:.1}\" y=\"{top}\" font-size=\"11\" fill=\"#607d8b\">■ baseline</text>\
         <text x=\"{:.1}\" y=\"{top}\" font-size=\"11\" fill=\"#d32f2f\">■ current</text>",
        width - 10.0,
        y(0.0),
        y(0.0),
        (left + width) / 2.0,
        height - 4.0,
        y(1.0) + 4.0,
        y(0.0),
        width - 160.0,
        width - 80.0,
    );
    svg.push_str("</svg>");
    svg
}

/// Two bars: the error rate before and after, on a scale that fits both.
pub(crate) fn error_rate_svg(baseline: f64, current: f64) -> String {
    let (width, height, left, top, bar) = (760.0_f64, 120.0_f64, 90.0_f64, 16.0_f64, 32.0_f64);
    let peak = baseline.max(current).max(1e-9);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" id=\"error-rate\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" role=\"img\" aria-label=\"error rate before and after\">"
    );
    for (i, (rate, color, name)) in [(baseline, "#607d8b", "baseline"), (current, "#d32f2f", "current")]
        .into_iter()
        .enumerate()
    {
        let y = top + i as f64 * (bar + 16.0);
        let length = (width - left - 80.0) * rate / peak;
        let _ = write!(
            svg,
            "<text x=\"4\" y=\"{:.1}\" font-size=\"12\">{name}</text>\
             <rect class=\"{name}\" x=\"{left}\" y=\"{y:.1}\" width=\"{length:.1}\" height=\"{bar}\" fill=\"{color}\" fill-opacity=\"0.6\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"12\" fill=\"{color}\">{}</text>",
            y + bar / 2.0 + 4.0,
            left + length + 6.0,
            y + bar / 2.0 + 4.0,
            escape(&crate::text::percent(rate))
        );
    }
    svg.push_str("</svg>");
    svg
}

/// Baseline and current distributions as overlaid histograms on a log
/// time axis, with their p95s marked.
pub(crate) fn distribution_svg(d: &Distribution, baseline_p95: f64, current_p95: f64) -> String {
    let (width, height, left, bottom, top) = (760.0_f64, 260.0_f64, 50.0_f64, 36.0_f64, 16.0_f64);
    let bins = d.baseline.len().min(d.current.len());
    if bins == 0 || d.edges_ms.len() < bins + 1 {
        return String::new();
    }
    let (low, high) = (d.edges_ms[0].max(1e-3), d.edges_ms[bins].max(1e-3));
    let x = |ms: f64| left + (width - left - 10.0) * ((ms.max(low) / low).ln() / (high / low).ln().max(1e-9));
    let peak = d.baseline.iter().chain(&d.current).cloned().fold(0.0_f64, f64::max).max(1e-9);
    let y = |share: f64| top + (height - top - bottom) * (1.0 - share / peak);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" id=\"latency-distribution\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" role=\"img\" aria-label=\"latency distribution before and after\">"
    );
    for (values, color, name) in [(&d.baseline, "#607d8b", "baseline"), (&d.current, "#d32f2f", "current")] {
        let mut path = format!("M{:.1},{:.1}", x(d.edges_ms[0]), y(0.0));
        for (edges, value) in d.edges_ms.windows(2).zip(values.iter()).take(bins) {
            let _ = write!(
                path,
                " L{:.1},{:.1} L{:.1},{:.1}",
                x(edges[0]),
                y(*value),
                x(edges[1]),
                y(*value)
            );
        }
        let _ = write!(path, " L{:.1},{:.1} Z", x(d.edges_ms[bins]), y(0.0));
        let _ = write!(
            svg,
            "<path class=\"{name}\" d=\"{path}\" fill=\"{color}\" fill-opacity=\"0.35\" stroke=\"{color}\"/>"
        );
    }
    for (p95, color, label) in [
        (baseline_p95, "#37474f", "baseline p95"),
        (current_p95, "#b71c1c", "current p95"),
    ] {
        let px = x(p95);
        let _ = write!(
            svg,
            "<line x1=\"{px:.1}\" x2=\"{px:.1}\" y1=\"{top}\" y2=\"{:.1}\" stroke=\"{color}\" stroke-dasharray=\"4 3\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" fill=\"{color}\">{label} {p95:.0} ms</text>",
            height - bottom,
            px + 3.0,
            if label.starts_with("baseline") {
                top + 10.0
            } else {
                top + 24.0
            }
        );
    }
    let axis_y = height - bottom;
    let _ = write!(
        svg,
        "<line x1=\"{left}\" x2=\"{:.1}\" y1=\"{axis_y}\" y2=\"{axis_y}\" stroke=\"#333\"/>",
        width - 10.0
    );
    let mut tick = 10f64.powf(low.log10().floor());
    while tick <= high * 1.0001 {
        for m in [1.0, 2.0, 5.0] {
            let t = tick * m;
            if t >= low && t <= high {
                let tx = x(t);
                let _ = write!(
                    svg,
                    "<line x1=\"{tx:.1}\" x2=\"{tx:.1}\" y1=\"{axis_y}\" y2=\"{:.1}\" stroke=\"#333\"/><text x=\"{tx:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"middle\">{}</text>",
                    axis_y + 4.0,
                    axis_y + 16.0,
                    format_ms(t)
                );
            }
        }
        tick *= 10.0;
    }
    let _ = write!(
        svg,
        "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"middle\">latency (log scale) · grey: baseline · red: current</text></svg>",
        (width + left) / 2.0,
        height - 4.0
    );
    svg
}

fn format_ms(ms: f64) -> String {
    if ms >= 1000.0 {
        format!("{}s", ms / 1000.0)
    } else if ms >= 1.0 {
        format!("{ms}ms")
    } else {
        format!("{}µs", ms * 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Timestamp;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            escape("<script>alert('x')</script> & \"q\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;"
        );
    }

    #[test]
    fn the_error_rate_over_time_marks_the_deploy() {
        use crate::detect::event::RatePoint;
        let point = |minute: u64, errors: u64, current: bool| RatePoint {
            start_ms: 1_700_000_000_000 + minute * 60_000,
            spans: 200,
            errors,
            current,
        };
        let points: Vec<RatePoint> = (0..6)
            .map(|m| point(m, 1, false))
            .chain((6..9).map(|m| point(m, 12, true)))
            .collect();
        let svg = error_rate_timeline_svg(&points);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"), "{svg}");
        assert!(svg.contains("class=\"baseline\"") && svg.contains("class=\"current\""));
        assert!(svg.contains("class=\"deploy\""));
        assert!(svg.contains("6.0%"), "the peak rate labels the axis: {svg}");
        assert!(error_rate_timeline_svg(&[]).is_empty());
    }

    #[test]
    fn svg_has_both_distributions() {
        let d = Distribution {
            edges_ms: vec![1.0, 2.0, 4.0, 8.0],
            baseline: vec![0.5, 0.5, 0.0],
            current: vec![0.0, 0.5, 0.5],
        };
        let svg = distribution_svg(&d, 2.0, 6.0);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert!(svg.contains("class=\"baseline\"") && svg.contains("class=\"current\""));
        assert!(svg.contains("current p95 6 ms"));
    }

    #[test]
    fn the_page_says_where_the_drift_is_still_present_and_how_it_ended() {
        let mut event = crate::detect::event::example_event("e-1", 1_700_000_000_000_000_000);
        event.seen_in = vec!["<b>r2</b>".into()];
        let page = render_incident(&event);
        assert!(
            page.contains("still present in</th><td><code>&lt;b&gt;r2&lt;/b&gt;</code>"),
            "{page}"
        );
        event.state = crate::detect::event::EventState::Resolved;
        event.resolved_at = Timestamp::parse("2023-11-14T22:20:00.000Z");
        event.resolution = Some(crate::detect::event::Resolution {
            reason: crate::detect::event::ResolutionReason::RolledBack,
            revision: Some("r0".into()),
        });
        let page = render_incident(&event);
        assert!(page.contains("2023-11-14T22:20:00.000Z — rolled back to r0"), "{page}");
    }
}
