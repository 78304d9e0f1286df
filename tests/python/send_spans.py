"""Sends spans to driftwatch with the OpenTelemetry Python SDK.

Usage:
  send_spans.py --protocol grpc|http --endpoint URL --service NAME
                [--revision SHA] [--count N] [--plan FILE]

Without --plan, sends N server spans named "GET /python". With --plan, a JSON
file lists spans with explicit times, so tests control event time:
  {"resource": {"service.version": "..."},
   "spans": [{"name": "...", "kind": "server|client|internal|producer|consumer",
              "start_ns": 1, "end_ns": 2, "attributes": {...},
              "children": [ ...same shape... ]}]}
"""

import argparse
import json
import sys

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

        return OTLPSpanExporter(endpoint=endpoint, insecure=True)
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
    args = parser.parse_args()

    attributes = {"service.name": args.service}
    plan = None
    if args.plan:
        with open(args.plan) as f:
            plan = json.load(f)
        attributes.update(plan.get("resource", {}))
    if args.revision:
        attributes["vcs.ref.head.revision"] = args.revision

    provider = TracerProvider(resource=Resource.create(attributes))
    provider.add_span_processor(
        BatchSpanProcessor(exporter(args.protocol, args.endpoint), max_export_batch_size=512, max_queue_size=1 << 20)
    )
    tracer = provider.get_tracer("driftwatch-tests")

    if plan is not None:
        for spec in plan["spans"]:
            emit(tracer, spec)
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
