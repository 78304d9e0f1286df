//! The per-span hot path and the detector tick, measured on realistic data:
//! decode + extract of a 512-span request, analysis of the resulting facts,
//! and one evaluation over many operations.

use std::sync::Arc;
use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use driftwatch::analyze::service::AnalysisSettings;
use driftwatch::analyze::shard::ShardAnalysis;
use driftwatch::config::Config;
use driftwatch::extract::{Extractor, SpanFact, SpanKind, SpanStatus, Sym};
use driftwatch::receive::view::RequestView;
use driftwatch::tools::simulate::realistic_request;

const NOW: u64 = 1_800_000_000 * 1_000_000_000;

fn decode_and_extract(c: &mut Criterion) {
    let body = bytes::Bytes::from(realistic_request(512, NOW - 60_000_000_000, 1));
    let extractor = Extractor::new(Duration::from_secs(600), 100_000);
    let mut group = c.benchmark_group("ingest");
    group.throughput(Throughput::Elements(512));
    group.bench_function("decode_extract_512_spans", |b| {
        let mut facts = Vec::with_capacity(512);
        b.iter(|| {
            facts.clear();
            let request = RequestView::parse(&body).expect("valid request");
            extractor.extract(&request, NOW, &mut facts).expect("well-formed spans");
            facts.len()
        })
    });
    group.finish();
}

fn facts(n: usize, start: u64) -> Vec<SpanFact> {
    let extractor = Extractor::new(Duration::from_secs(600), 100_000);
    let body = realistic_request(n, start, 2);
    let request = RequestView::parse(&body).expect("valid request");
    let mut out = Vec::new();
    extractor.extract(&request, NOW, &mut out).expect("well-formed spans");
    out
}

fn analysis(c: &mut Criterion) {
    let settings = Arc::new(AnalysisSettings::from_config(&Config::default()));
    let batch = facts(512, NOW - 60_000_000_000);
    let mut group = c.benchmark_group("analysis");
    group.throughput(Throughput::Elements(512));
    group.bench_function("observe_512_spans", |b| {
        let mut analysis = ShardAnalysis::new(settings.clone());
        let mut updates = Vec::new();
        b.iter(|| {
            analysis.observe(&batch, &mut updates);
            updates.clear();
        })
    });
    group.finish();
}

/// One evaluation over `OPERATIONS` operations of one service, each with
/// enough traffic to be tested: against its own trailing window, or after
/// a deploy against the revision before, which also reads the baseline
/// revision's windows, with 3% of requests failing so that the error-rate
/// detector's every test runs.
fn detector_tick(c: &mut Criterion) {
    tick(c, "tick_10000_operations", &["r1"], None);
    tick(c, "tick_10000_operations_after_deploy", &["r1", "r2"], Some(33));
}

/// Ten minutes of history of each of `revisions` in turn (the last one
/// serving), one request in `fail_every` failing, then `name`: one
/// evaluation of every operation.
fn tick(c: &mut Criterion, name: &str, revisions: &[&str], fail_every: Option<u64>) {
    const OPERATIONS: usize = 10_000;
    let mut config = Config::default();
    config.analyze.max_operations = OPERATIONS;
    let settings = Arc::new(AnalysisSettings::from_config(&config));
    let service = Sym::from("svc");
    let names: Vec<Sym> = (0..OPERATIONS).map(|i| Sym::from(format!("GET /op/{i}").as_str())).collect();
    let fact = |revision: &Sym, op: &Sym, end: u64, millis: u64| {
        let mut fact = SpanFact {
            trace_id: 1,
            span_id: 1,
            ..SpanFact::new(service.clone(), revision.clone(), op.clone(), SpanKind::Server, end - millis * 1_000_000, end)
        };
        if fail_every.is_some_and(|n| (end / 3_000_000_000) % n == 0) {
            fact.status = SpanStatus::Error;
        }
        fact
    };
    let mut warm = ShardAnalysis::new(settings.clone());
    let mut updates = Vec::new();
    // Ten minutes of history per revision, 200 spans per operation.
    let history = 600_000_000_000 * revisions.len() as u64;
    let revisions: Vec<Sym> = revisions.iter().map(|r| Sym::from(*r)).collect();
    for (r, revision) in revisions.iter().enumerate() {
        for step in 0..200u64 {
            let end = NOW - history + (r as u64 * 200 + step) * 3_000_000_000;
            let batch: Vec<SpanFact> = names.iter().map(|op| fact(revision, op, end, 10 + step % 7)).collect();
            warm.observe(&batch, &mut updates);
        }
    }
    let serving = revisions.last().cloned().unwrap_or_else(|| Sym::from("r1"));
    let mut group = c.benchmark_group("detect");
    group.sample_size(10);
    let mut end = NOW;
    group.bench_function(name, |b| {
        b.iter_batched(
            || {
                // One span per operation, ten seconds later: recording it
                // makes one evaluation of every operation due.
                end += 10_000_000_000;
                names.iter().map(|op| fact(&serving, op, end, 12)).collect::<Vec<SpanFact>>()
            },
            |batch| {
                warm.observe(&batch, &mut updates);
                updates.clear();
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group!(benches, decode_and_extract, analysis, detector_tick);
criterion_main!(benches);
