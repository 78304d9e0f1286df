"""Exports metrics and logs with the OpenTelemetry Python SDK, as an
application configured to send every signal to one collector would.

Usage:
  send_signals.py --protocol grpc|http --endpoint URL --service NAME

Exits non-zero when an export fails.
"""

import argparse
import logging
import sys

from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, MetricExportResult
from opentelemetry.sdk.resources import Resource


def exporters(protocol, endpoint):
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

        return OTLPMetricExporter(endpoint=endpoint, insecure=True), OTLPLogExporter(endpoint=endpoint, insecure=True)
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

    base = endpoint.rstrip("/")
    return OTLPMetricExporter(endpoint=base + "/v1/metrics"), OTLPLogExporter(endpoint=base + "/v1/logs")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--protocol", choices=["grpc", "http"], required=True)
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--service", required=True)
    args = parser.parse_args()
    resource = Resource.create({"service.name": args.service})
    metric_exporter, log_exporter = exporters(args.protocol, args.endpoint)

    reader = InMemoryMetricReader()
    meter = MeterProvider(resource=resource, metric_readers=[reader]).get_meter("driftwatch-tests")
    meter.create_counter("orders").add(3, {"route": "/checkout"})
    result = metric_exporter.export(reader.get_metrics_data())
    if result != MetricExportResult.SUCCESS:
        sys.exit(f"metrics export failed: {result}")

    logs = LoggerProvider(resource=resource)
    failures = []

    class Checked(SimpleLogRecordProcessor):
        def on_emit(self, log_data):
            batch = [log_data]
            result = self._exporter.export(batch)
            if getattr(result, "name", str(result)) != "SUCCESS":
                failures.append(result)

    logs.add_log_record_processor(Checked(log_exporter))
    logger = logging.getLogger("checkout")
    logger.addHandler(LoggingHandler(logger_provider=logs))
    logger.warning("card declined")
    logs.shutdown()
    if failures:
        sys.exit(f"logs export failed: {failures}")
    print("exported")


if __name__ == "__main__":
    main()
