//! The per-span hot path and the detector tick, measured on realistic data:
//! decode + extract of a 512-span request, analysis of the resulting facts,
//! and one evaluation over many operations.

use std::sync::Arc;
use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use driftwatch::analyze::service::AnalysisSettings;
use driftwatch::analyze::shard::ShardAnalysis;
use driftwatch::config::Config;
use driftwatch::extract::{Extractor, SpanFact, SpanKind, Sym};
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
/// enough traffic to be tested.
fn detector_tick(c: &mut Criterion) {
    const OPERATIONS: usize = 10_000;
    let mut config = Config::default();
    config.analyze.max_operations = OPERATIONS;
    let settings = Arc::new(AnalysisSettings::from_config(&config));
    let service = Sym::from("svc");
    let revision = Sym::from("r1");
    let names: Vec<Sym> = (0..OPERATIONS).map(|i| Sym::from(format!("GET /op/{i}").as_str())).collect();
    let fact = |op: &Sym, end: u64, millis: u64| SpanFact {
        trace_id: 1,
        span_id: 1,
        ..SpanFact::new(service.clone(), revision.clone(), op.clone(), SpanKind::Server, end - millis * 1_000_000, end)
    };
    let mut warm = ShardAnalysis::new(settings.clone());
    let mut updates = Vec::new();
    // Ten minutes of history, 200 spans per operation.
    for step in 0..200u64 {
        let end = NOW - 600_000_000_000 + step * 3_000_000_000;
        let batch: Vec<SpanFact> = names.iter().map(|op| fact(op, end, 10 + step % 7)).collect();
        warm.observe(&batch, &mut updates);
    }
    let mut group = c.benchmark_group("detect");
    group.sample_size(10);
    let mut end = NOW;
    group.bench_function("tick_10000_operations", |b| {
        b.iter_batched(
            || {
                // One span per operation, ten seconds later: recording it
                // makes one evaluation of every operation due.
                end += 10_000_000_000;
                names.iter().map(|op| fact(op, end, 12)).collect::<Vec<SpanFact>>()
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
