#!/usr/bin/env python3
"""Export a known set of traces with the OpenTelemetry Python SDK, for the search tests.

Seven traces (labels T1..T7) across four services, with known span names, kinds,
durations, statuses and attributes (see tests/search.rs for what each query must find).
Span start times are explicit: trace T<i> starts ``(8 - i)`` seconds before the export,
so the most recent trace is T7. Durations are exact. With ``--other``, one trace of
service ``other-svc`` with span attribute ``secret.key`` instead (for tenant isolation).

Writes ``label trace_id`` lines to ``--out``. Exit 0 when the export succeeded.
"""

from __future__ import annotations

import argparse
import sys
import time

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode

MS = 1_000_000


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--endpoint", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--tenant")
    p.add_argument("--other", action="store_true")
    args = p.parse_args()

    headers = (("x-scope-orgid", args.tenant),) if args.tenant else None
    providers: dict[str, TracerProvider] = {}
    exporters = []

    def tracer(service: str):
        if service not in providers:
            exporter = OTLPSpanExporter(endpoint=args.endpoint, insecure=True, headers=headers)
            exporters.append(exporter)
            provider = TracerProvider(
                resource=Resource({"service.name": service, "deployment.environment": "test"})
            )
            provider.add_span_processor(SimpleSpanProcessor(exporter))
            providers[service] = provider
        return providers[service].get_tracer("ringtail-search-test")

    now = time.time_ns()
    ids: list[tuple[str, str]] = []

    def root(label, index, service, name, kind, ms, attrs=None, status=None):
        start = now - (8 - index) * 1000 * MS
        span = tracer(service).start_span(name, kind=kind, start_time=start, attributes=attrs or {})
        if status is not None:
            span.set_status(status)
        ids.append((label, format(span.get_span_context().trace_id, "032x")))
        return span, start, start + ms * MS

    def child(parent, service, name, kind, start, ms, attrs=None):
        ctx = trace.set_span_in_context(parent)
        span = tracer(service).start_span(
            name, context=ctx, kind=kind, start_time=start, attributes=attrs or {}
        )
        span.end(end_time=start + ms * MS)

    if args.other:
        s, start, end = root("O1", 7, "other-svc", "secret op", SpanKind.SERVER, 20,
                             {"secret.key": "hidden"})
        s.end(end_time=end)
    else:
        s, start, end = root("T1", 1, "checkout", "POST /checkout", SpanKind.SERVER, 300,
                             {"http.request.method": "POST", "http.response.status_code": 200})
        child(s, "checkout", "SELECT orders", SpanKind.CLIENT, start + 10 * MS, 100,
              {"db.system": "postgresql"})
        s.end(end_time=end)

        s, start, end = root("T2", 2, "checkout", "POST /checkout", SpanKind.SERVER, 50,
                             {"http.request.method": "POST", "http.response.status_code": 200},
                             Status(StatusCode.OK))
        s.end(end_time=end)

        s, start, end = root("T3", 3, "checkout", "POST /checkout", SpanKind.SERVER, 120,
                             {"http.request.method": "POST", "http.response.status_code": 500},
                             Status(StatusCode.ERROR, "card declined"))
        child(s, "checkout", "charge card", SpanKind.INTERNAL, start + 10 * MS, 100,
              {"payment.provider": "acme"})
        s.end(end_time=end)

        s, start, end = root("T4", 4, "frontend", "GET /cart", SpanKind.SERVER, 80,
                             {"http.request.method": "GET", "http.response.status_code": 200})
        child(s, "cart", "cart lookup", SpanKind.INTERNAL, start + 20 * MS, 30)
        s.end(end_time=end)

        s, start, end = root("T5", 5, "cart", "GET /cart/items", SpanKind.SERVER, 10,
                             {"retry": True, "ratio": 0.75, "count": 3})
        s.end(end_time=end)

        s, start, end = root("T6", 6, "frontend", "GET /missing", SpanKind.SERVER, 5,
                             {"http.request.method": "GET", "http.response.status_code": 404})
        s.end(end_time=end)

        s, start, end = root("T7", 7, "worker", "process job", SpanKind.CONSUMER, 2000)
        child(s, "worker", "enqueue", SpanKind.PRODUCER, start + 5 * MS, 1,
              {"messaging.system": "kafka"})
        s.end(end_time=end)

    ok = True
    for provider in providers.values():
        ok = provider.force_flush(30_000) and ok
        provider.shutdown()
    with open(args.out, "w") as f:
        for label, tid in ids:
            f.write(f"{label} {tid}\n")
    if not ok:
        print("export did not complete", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
