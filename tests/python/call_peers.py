"""Makes real HTTP calls under the OpenTelemetry `requests` instrumentation.

Each iteration opens a SERVER span named --operation and, inside it, calls
every --call URL with `requests`; the instrumentation produces the CLIENT
spans (with http.url, or url.full/server.address under
OTEL_SEMCONV_STABILITY_OPT_IN=http).

With --uninstrumented, `requests` is not instrumented: the revision
produces only its own SERVER and INTERNAL spans, as a build without the
library's instrumentation would.

--method POST --times 2 makes each call a POST, twice per request (a
retry around a payment call).

Usage:
  call_peers.py --endpoint URL --service NAME --revision REV
                --operation NAME --repeat N --call URL [--call URL ...]
                [--uninstrumented] [--method GET|POST] [--times N]
"""

import argparse

import requests
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.requests import RequestsInstrumentor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--service", required=True)
    parser.add_argument("--revision", required=True)
    parser.add_argument("--operation", default="POST /checkout")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--call", action="append", default=[])
    parser.add_argument("--uninstrumented", action="store_true")
    parser.add_argument("--method", default="GET")
    parser.add_argument("--times", type=int, default=1)
    args = parser.parse_args()

    provider = TracerProvider(
        resource=Resource.create({"service.name": args.service, "vcs.ref.head.revision": args.revision})
    )
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=args.endpoint, insecure=True)))
    if not args.uninstrumented:
        RequestsInstrumentor().instrument(tracer_provider=provider)
    tracer = provider.get_tracer("driftwatch-tests")
    session = requests.Session()
    for _ in range(args.repeat):
        with tracer.start_as_current_span(args.operation, kind=trace.SpanKind.SERVER):
            with tracer.start_as_current_span("score_order"):
                for url in args.call:
                    for _ in range(args.times):
                        session.request(args.method, url, timeout=5)
    provider.force_flush(30_000)
    provider.shutdown()


if __name__ == "__main__":
    main()
