"""Captures real OpenTelemetry Python SDK export requests as fuzz seeds.

Runs a local HTTP endpoint, points the SDK's OTLP/HTTP exporter at it,
emits a varied set of spans (every attribute type, events, links, status,
nesting, several resources), and writes each request body to
corpus/otlp_wire/seed-sdk-N.bin and its OTLP/JSON form (hex ids, as the
specification asks) to corpus/otlp_json/seed-sdk-N.json.

Usage (from fuzz/): ../.venv/bin/python seeds/capture.py
"""

import base64
import http.server
import json
import os
import threading

from google.protobuf.json_format import MessageToDict
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

BODIES = []


class Capture(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        length = int(self.headers.get("content-length", 0))
        BODIES.append(self.rfile.read(length))
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, *args):
        pass


def hex_ids(node):
    """OTLP/JSON writes trace and span ids as hex, not base64."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("traceId", "spanId", "parentSpanId") and isinstance(value, str):
                node[key] = base64.b64decode(value).hex()
            else:
                hex_ids(value)
    elif isinstance(node, list):
        for item in node:
            hex_ids(item)


def emit(endpoint, service, revision):
    provider = TracerProvider(
        resource=Resource.create(
            {
                "service.name": service,
                "service.namespace": "shop",
                "deployment.environment.name": "prod",
                "vcs.ref.head.revision": revision,
            }
        )
    )
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    tracer = provider.get_tracer("driftwatch-fuzz-seeds", "1.0")
    with tracer.start_as_current_span(
        "POST /checkout",
        kind=trace.SpanKind.SERVER,
        attributes={
            "http.request.method": "POST",
            "http.route": "/checkout",
            "http.response.status_code": 500,
            "code.function.name": "checkout.handler",
            "code.file.path": "/app/src/checkout.py",
            "code.line.number": 42,
            "sampled": True,
            "ratio": 0.25,
            "tags": ["a", "b"],
            "ids": [1, 2, 3],
        },
    ) as server:
        server.add_event("exception", {"exception.type": "ValueError", "exception.message": "bad card"})
        with tracer.start_as_current_span(
            "GET",
            kind=trace.SpanKind.CLIENT,
            attributes={"url.full": "https://payments.example.com/charge", "server.address": "payments.example.com", "server.port": 443},
        ):
            pass
        with tracer.start_as_current_span(
            "SELECT orders",
            kind=trace.SpanKind.CLIENT,
            attributes={"db.system.name": "postgresql", "db.query.text": "SELECT * FROM orders WHERE id = $1"},
        ):
            pass
        link = trace.Link(server.get_span_context(), {"link.kind": "retry"})
        with tracer.start_as_current_span("publish", kind=trace.SpanKind.PRODUCER, links=[link], attributes={"messaging.destination.name": "orders"}):
            pass
        server.set_status(trace.Status(trace.StatusCode.ERROR, "payment failed"))
    with tracer.start_as_current_span("internal work", kind=trace.SpanKind.INTERNAL):
        pass
    provider.shutdown()


def main():
    server = http.server.HTTPServer(("127.0.0.1", 0), Capture)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{server.server_address[1]}/v1/traces"
    emit(endpoint, "checkout", "1a2b3c4d")
    emit(endpoint, "payments", "v2.3.1")
    server.shutdown()
    os.makedirs("corpus/otlp_wire", exist_ok=True)
    os.makedirs("corpus/otlp_json", exist_ok=True)
    for n, body in enumerate(BODIES):
        with open(f"corpus/otlp_wire/seed-sdk-{n}.bin", "wb") as f:
            f.write(body)
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        document = MessageToDict(request, use_integers_for_enums=True)
        hex_ids(document)
        with open(f"corpus/otlp_json/seed-sdk-{n}.json", "w") as f:
            json.dump(document, f, separators=(",", ":"))
    print(f"captured {len(BODIES)} requests")


if __name__ == "__main__":
    main()
