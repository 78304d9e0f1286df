"""Sends spans to driftwatch with the OpenTelemetry Python SDK.

Usage:
  send_spans.py --protocol grpc|http --endpoint URL --service NAME
                [--revision SHA] [--count N] [--plan FILE]
                [--batch-size N] [--pace-ms MS]

Without --plan, sends N server spans named "GET /python". With --plan, a JSON
file lists spans with explicit times, so tests control event time:
  {"resource": {"service.version": "..."},
   "spans": [{"name": "...", "kind": "server|client|internal|producer|consumer",
              "start_ns": 1, "end_ns": 2, "attributes": {...},
              "error": true, "exception": "TypeName",   (both optional)
              "raise": "package.module:function",       (optional)
              "children": [ ...same shape... ]}]}
"raise" calls that function, which must raise, and records what it raised
with span.record_exception (a real traceback); the plan's "modules" maps
file paths ("shop/pay.py") to the source of such modules, written to a
temporary directory on sys.path.
A plan may instead hold "segments": [{"revision": "...", "spans": [...]}],
sent one after the other from one process, each flushed before the next
(one deploy after another). --batch-size sets the SDK's export batch size;
--pace-ms sleeps that long after every batch's worth of spans.
"""

import argparse
import importlib
import json
import os
import sys
import tempfile
import time

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

KINDS = {
    "server": trace.SpanKind.SERVER,
    "client": trace.SpanKind.CLIENT,
    "internal": trace.SpanKind.INTERNAL,
    "producer": trace.SpanKind.PRODUCER,
    "consumer": trace.SpanKind.CONSUMER,
}


def exporter(protocol, endpoint):
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        # https:// verifies the server against OTEL_EXPORTER_OTLP_CERTIFICATE.
        return OTLPSpanExporter(endpoint=endpoint, insecure=not endpoint.startswith("https://"))
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(endpoint=endpoint.rstrip("/") + "/v1/traces")


def emit(tracer, spec, parent_ctx=None):
    span = tracer.start_span(
        spec["name"],
        context=parent_ctx,
        kind=KINDS[spec.get("kind", "internal")],
        attributes=spec.get("attributes", {}),
        start_time=spec["start_ns"],
    )
    ctx = trace.set_span_in_context(span)
    for child in spec.get("children", []):
        emit(tracer, child, ctx)
    if spec.get("raise"):
        module, function = spec["raise"].split(":")
        try:
            getattr(importlib.import_module(module), function)()
        except Exception as error:  # noqa: BLE001 - any exception is the point
            span.record_exception(error)
    if spec.get("exception"):
        # What span.record_exception records, without raising one here.
        span.add_event("exception", {"exception.type": spec["exception"], "exception.message": "failed"})
    if spec.get("error"):
        span.set_status(trace.Status(trace.StatusCode.ERROR))
    span.end(end_time=spec["end_ns"])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--protocol", choices=["grpc", "http"], required=True)
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--service", required=True)
    parser.add_argument("--revision")
    parser.add_argument("--count", type=int, default=10)
    parser.add_argument("--plan")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--pace-ms", type=int, default=0)
    args = parser.parse_args()

    base = {"service.name": args.service}
    plan = None
    if args.plan:
        with open(args.plan) as f:
            plan = json.load(f)
        base.update(plan.get("resource", {}))
        if plan.get("modules"):
            root = tempfile.mkdtemp()
            for path, source in plan["modules"].items():
                os.makedirs(os.path.join(root, os.path.dirname(path)), exist_ok=True)
                with open(os.path.join(root, path), "w") as f:
                    f.write(source)
            sys.path.insert(0, root)
    if args.revision:
        base["vcs.ref.head.revision"] = args.revision
    if plan is not None and "segments" in plan:
        segments = [(dict(base, **{"vcs.ref.head.revision": s["revision"]}), s["spans"]) for s in plan["segments"]]
    elif plan is not None:
        segments = [(base, plan["spans"])]
    else:
        segments = [(base, None)]

    for attributes, spans in segments:
        provider = TracerProvider(resource=Resource.create(attributes))
        provider.add_span_processor(
            BatchSpanProcessor(
                exporter(args.protocol, args.endpoint),
                max_export_batch_size=args.batch_size,
                max_queue_size=1 << 20,
            )
        )
        tracer = provider.get_tracer("driftwatch-tests")
        if spans is not None:
            for i, spec in enumerate(spans):
                emit(tracer, spec)
                if args.pace_ms and (i + 1) % args.batch_size == 0:
                    time.sleep(args.pace_ms / 1000)
        else:
            for i in range(args.count):
                with tracer.start_as_current_span("GET /python", kind=trace.SpanKind.SERVER) as span:
                    span.set_attribute("http.route", "/python")
        ok = provider.force_flush(30_000)
        provider.shutdown()
        if not ok:
            print("force_flush timed out", file=sys.stderr)
            sys.exit(1)


if __name__ == "__main__":
    main()
