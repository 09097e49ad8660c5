#!/usr/bin/env python3
"""Export traces to Ringtail over OTLP/gRPC with the OpenTelemetry Python SDK, then read them back.

This is an end-to-end check that uses a third-party client instead of our own
Rust code. It has two phases:

1. Export: build a ``TracerProvider`` with ``service.name`` set on its
   resource and a ``BatchSpanProcessor`` around the SDK's OTLP gRPC
   ``OTLPSpanExporter``. Then create ``--traces`` traces of
   ``--spans-per-trace`` spans each: a SERVER root span and CLIENT/INTERNAL
   children. Each span carries an ``e2e.index`` attribute. The script records
   every trace ID (32 hex digits) and the span IDs (16 hex digits) in it,
   then flushes and shuts the provider down.

2. Verify: fetch every trace from the Tempo-compatible query API with
   ``GET {query_url}/api/traces/{trace_id}`` (``Accept: application/json``),
   using 8 worker threads. A trace counts as complete when the span IDs in all
   ``batches[].scopeSpans[].spans[]`` exactly match the exported set, every
   span's ``traceId`` equals the trace ID, and at least one batch's resource
   has ``service.name`` set to ``--service-name``. Traces that are missing
   (404) or incomplete are polled again in rounds with backoff until the
   overall ``--verify-timeout`` runs out.

If ``--tenant`` is given, it is sent as the ``X-Scope-OrgID`` header both
when exporting (as gRPC metadata) and when querying.

The script exits 0 only when the export succeeded and every trace was
verified complete. It exits 1 when the export or verification fails, and 2
on bad arguments.

Example::

    .venv/bin/python tests/python/export_and_verify.py \\
        --endpoint 127.0.0.1:4317 --query-url http://127.0.0.1:3200 \\
        --traces 1000 --spans-per-trace 10 --out /tmp/e2e.json

Only the standard library and the OpenTelemetry packages in
``tests/python/requirements.txt`` are used.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import logging
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Sequence

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.sampling import ALWAYS_ON

TENANT_HEADER = "X-Scope-OrgID"
VERIFY_WORKERS = 8
MAX_LISTED_FAILURES = 10

log = logging.getLogger("export_and_verify")


# --------------------------------------------------------------------------- export


class WrappingExporter(SpanExporter):
    """Base of the exporters that wrap the SDK's OTLP exporter to observe its results.

    Subclasses implement ``export`` (calling ``self._export_inner``); shutdown and
    flush go to the wrapped exporter.
    """

    def __init__(self, inner: SpanExporter) -> None:
        self._inner = inner
        self._lock = threading.Lock()

    def _export_inner(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """The wrapped exporter's result; an exception it raises counts as FAILURE."""
        try:
            return self._inner.export(spans)
        except Exception:  # pylint: disable=broad-exception-caught
            log.exception("OTLP exporter raised")
            return SpanExportResult.FAILURE

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._inner.force_flush(timeout_millis)


class CountingExporter(WrappingExporter):
    """Wraps the OTLP exporter to count how many spans were exported and how many failed.

    In SDK 1.45, ``BatchSpanProcessor.force_flush()`` returns True even when
    the exporter reports FAILURE, so we count the results here. After the
    first failure, later batches fail at once without being sent, because the
    run has already failed. Otherwise a dead endpoint would make every batch
    wait out its full exporter timeout, and the script would hang for
    minutes.
    """

    def __init__(self, inner: SpanExporter) -> None:
        super().__init__(inner)
        self.ok_spans = 0
        self.failed_spans = 0
        self.ok_batches = 0
        self.failed_batches = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with self._lock:
            failed_before = self.failed_batches > 0
        result = SpanExportResult.FAILURE if failed_before else self._export_inner(spans)
        with self._lock:
            if result is SpanExportResult.SUCCESS:
                self.ok_spans += len(spans)
                self.ok_batches += 1
            else:
                self.failed_spans += len(spans)
                self.failed_batches += 1
        return result


@dataclass
class ExportedTrace:
    trace_id: str
    span_ids: frozenset[str]


def generate_traces(
    provider: TracerProvider, n_traces: int, spans_per_trace: int
) -> list[ExportedTrace]:
    """Create the traces and return their IDs. Spans go to the provider's processors as they end."""
    tracer = provider.get_tracer("ringtail.e2e.export_and_verify")
    child_kinds = (trace.SpanKind.CLIENT, trace.SpanKind.INTERNAL)
    traces: list[ExportedTrace] = []
    for t in range(n_traces):
        span_ids: set[str] = set()
        with tracer.start_as_current_span(
            f"e2e-root-{t}",
            kind=trace.SpanKind.SERVER,
            attributes={"e2e.index": 0, "e2e.trace_index": t},
        ) as root:
            ctx = root.get_span_context()
            trace_id = format(ctx.trace_id, "032x")
            span_ids.add(format(ctx.span_id, "016x"))
            # The children are siblings under the root, which is the current span here.
            for i in range(1, spans_per_trace):
                with tracer.start_as_current_span(
                    f"e2e-child-{i}",
                    kind=child_kinds[i % 2],
                    attributes={"e2e.index": i, "e2e.trace_index": t},
                ) as child:
                    span_ids.add(format(child.get_span_context().span_id, "016x"))
        traces.append(ExportedTrace(trace_id, frozenset(span_ids)))
    return traces


# --------------------------------------------------------------------------- verify


@dataclass
class VerifyResult:
    trace_id: str
    ok: bool
    reason: str = ""
    attempts: int = 0


@dataclass
class Checker:
    query_url: str
    service_name: str
    tenant: str | None
    deadline: float  # time.monotonic() value
    request_timeout: float = 10.0
    _headers: dict[str, str] = field(init=False)

    def __post_init__(self) -> None:
        self.query_url = self.query_url.rstrip("/")
        self._headers = {"Accept": "application/json"}
        if self.tenant:
            self._headers[TENANT_HEADER] = self.tenant

    def fetch(self, trace_id: str) -> tuple[int | None, object | None, str]:
        """GET one trace. Returns (http_status or None, parsed_json or None, error_text)."""
        url = f"{self.query_url}/api/traces/{urllib.parse.quote(trace_id)}"
        req = urllib.request.Request(url, headers=self._headers, method="GET")
        try:
            with urllib.request.urlopen(req, timeout=self.request_timeout) as resp:
                status = resp.status
                body = resp.read()
        except urllib.error.HTTPError as e:
            return e.code, None, f"HTTP {e.code}"
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            return None, None, f"request error: {reason}"
        try:
            return status, json.loads(body), ""
        except ValueError as e:
            return status, None, f"HTTP {status} with invalid JSON: {e}"

    def check_body(self, expected: ExportedTrace, body: object) -> str:
        """Return "" if the response holds exactly the expected trace, otherwise a reason."""
        if not isinstance(body, dict) or not isinstance(body.get("batches"), list):
            return "response has no 'batches' list"
        seen: set[str] = set()
        bad_trace_ids: set[str] = set()
        service_found = False
        for batch in body["batches"]:
            if not isinstance(batch, dict):
                return "batch is not an object"
            resource = batch.get("resource") or {}
            for attr in resource.get("attributes") or []:
                if (
                    attr.get("key") == "service.name"
                    and (attr.get("value") or {}).get("stringValue") == self.service_name
                ):
                    service_found = True
            for scope_spans in batch.get("scopeSpans") or []:
                for span in scope_spans.get("spans") or []:
                    seen.add(str(span.get("spanId")))
                    if span.get("traceId") != expected.trace_id:
                        bad_trace_ids.add(str(span.get("traceId")))
        if bad_trace_ids:
            sample = sorted(bad_trace_ids)[0]
            return f"{len(bad_trace_ids)} span(s) with wrong traceId (e.g. {sample!r})"
        missing = expected.span_ids - seen
        extra = seen - expected.span_ids
        if missing or extra:
            parts = []
            if missing:
                parts.append(f"missing {len(missing)}/{len(expected.span_ids)} spans")
            if extra:
                parts.append(f"{len(extra)} unexpected span id(s) (e.g. {sorted(extra)[0]!r})")
            return ", ".join(parts)
        if not service_found:
            return f"no batch with resource service.name={self.service_name!r}"
        return ""

    def check_once(self, expected: ExportedTrace) -> str:
        """Fetch and check one trace once. Returns "" if it is complete, otherwise a reason."""
        status, body, err = self.fetch(expected.trace_id)
        if err:
            return err
        if status != 200:
            return f"HTTP {status}"
        return self.check_body(expected, body)


def verify_all(checker: Checker, traces: list[ExportedTrace]) -> list[VerifyResult]:
    """Poll all traces in rounds until every one is complete or the deadline passes.

    Each round checks every trace that is still pending, once, using the
    thread pool. Between rounds the script sleeps, and the sleep doubles from
    0.2 s up to 2 s. Because each round rechecks all pending traces, a few
    traces that never complete cannot keep the others from being retried. No
    retry starts after the deadline. A trace's first attempt may start up to
    one request timeout later, so verification takes at most about
    ``--verify-timeout`` plus two request timeouts.
    """
    results = {
        t.trace_id: VerifyResult(t.trace_id, False, "not attempted before the verify timeout")
        for t in traces
    }
    # First attempts may start until one request timeout after the deadline, so
    # that a slow server still gets every trace checked. A hung server is then
    # still cut off in bounded time.
    first_attempt_cutoff = checker.deadline + checker.request_timeout

    def attempt(expected: ExportedTrace) -> str | None:
        """Check one trace, or return None when it is too late to start a request."""
        now = time.monotonic()
        r = results[expected.trace_id]
        if now > (first_attempt_cutoff if r.attempts == 0 else checker.deadline):
            return None
        return checker.check_once(expected)

    pending = list(traces)
    backoff = 0.2
    with concurrent.futures.ThreadPoolExecutor(
        max_workers=VERIFY_WORKERS, thread_name_prefix="verify"
    ) as pool:
        while pending:
            reasons = list(pool.map(attempt, pending))
            still_pending = []
            for expected, reason in zip(pending, reasons):
                r = results[expected.trace_id]
                if reason is not None:
                    r.attempts += 1
                    r.ok = not reason
                    r.reason = reason
                if not r.ok:
                    still_pending.append(expected)
            pending = still_pending
            remaining = checker.deadline - time.monotonic()
            if not pending or remaining <= 0:
                break
            time.sleep(min(backoff, remaining))
            backoff = min(backoff * 2, 2.0)
    return [results[t.trace_id] for t in traces]


# --------------------------------------------------------------------------- main


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Export traces over OTLP/gRPC with the OpenTelemetry Python SDK "
        "and verify them via the Tempo trace-by-ID API.",
    )
    p.add_argument("--endpoint", required=True,
                   help="OTLP gRPC endpoint, host:port (plaintext), e.g. 127.0.0.1:4317")
    p.add_argument("--query-url", required=True,
                   help="base URL of the query API, e.g. http://127.0.0.1:3200")
    p.add_argument("--traces", type=positive_int, default=1000,
                   help="number of traces to export (default: %(default)s)")
    p.add_argument("--spans-per-trace", type=positive_int, default=10,
                   help="spans per trace, including the root (default: %(default)s)")
    p.add_argument("--tenant", default=None,
                   help=f"tenant ID, sent as {TENANT_HEADER} on export and query")
    p.add_argument("--service-name", default="python-e2e",
                   help="resource service.name (default: %(default)s)")
    p.add_argument("--out", default=None, help="optional path for a JSON summary")
    p.add_argument("--ca-file", default=None,
                   help="export over TLS, trusting this PEM certificate (else plaintext)")
    p.add_argument("--verify-timeout", type=positive_float, default=60.0,
                   help="overall seconds allowed for verification (default: %(default)s)")
    p.add_argument("--export-timeout", type=positive_float, default=10.0,
                   help="OTLP exporter timeout per batch in seconds, including retries "
                        "(default: %(default)s)")
    return p.parse_args(argv)


def write_summary(path: str | None, summary: dict) -> None:
    if not path:
        return
    with open(path, "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2, sort_keys=True)
        f.write("\n")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING, stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )

    total_spans = args.traces * args.spans_per_trace
    summary: dict = {
        "endpoint": args.endpoint,
        "query_url": args.query_url,
        "tenant": args.tenant,
        "service_name": args.service_name,
        "traces": args.traces,
        "spans_per_trace": args.spans_per_trace,
        "spans": total_spans,
        "ok": False,
    }

    # ---- export
    # gRPC only accepts lowercase metadata keys. HTTP/2 header names are lowercase on the wire anyway.
    headers = {TENANT_HEADER.lower(): args.tenant} if args.tenant else None
    if args.ca_file:
        import grpc

        with open(args.ca_file, "rb") as f:
            credentials = grpc.ssl_channel_credentials(root_certificates=f.read())
        otlp = OTLPSpanExporter(
            endpoint=args.endpoint, insecure=False, credentials=credentials, headers=headers,
            timeout=args.export_timeout,
        )
    else:
        otlp = OTLPSpanExporter(
            endpoint=args.endpoint, insecure=True, headers=headers, timeout=args.export_timeout
        )
    exporter = CountingExporter(otlp)
    provider = TracerProvider(
        resource=Resource.create({"service.name": args.service_name}), sampler=ALWAYS_ON
    )
    provider.add_span_processor(
        BatchSpanProcessor(
            exporter,
            # The queue holds every span, so none are dropped while we generate faster than we export.
            max_queue_size=max(2048, total_spans),
            max_export_batch_size=512,
            schedule_delay_millis=200,
        )
    )

    t0 = time.monotonic()
    traces = generate_traces(provider, args.traces, args.spans_per_trace)
    flushed = provider.force_flush(timeout_millis=60000)
    provider.shutdown()
    export_secs = time.monotonic() - t0
    summary.update(
        export_seconds=round(export_secs, 3),
        exported_spans_ok=exporter.ok_spans,
        exported_spans_failed=exporter.failed_spans,
        export_batches_ok=exporter.ok_batches,
        export_batches_failed=exporter.failed_batches,
    )

    if not flushed:
        msg = "force_flush did not complete (returned False)"
    elif exporter.failed_batches:
        msg = (f"{exporter.failed_batches} export batch(es) / {exporter.failed_spans} spans "
               f"failed to {args.endpoint}; see exporter errors above")
    elif exporter.ok_spans != total_spans:
        msg = f"only {exporter.ok_spans} of {total_spans} spans reached the exporter"
    else:
        msg = ""
    if msg:
        print(f"export failed: {msg}", file=sys.stderr)
        summary["error"] = f"export failed: {msg}"
        write_summary(args.out, summary)
        return 1
    print(f"exported {len(traces)} traces / {total_spans} spans in {export_secs:.2f}s; verifying...",
          file=sys.stderr)

    # ---- verify
    checker = Checker(
        query_url=args.query_url,
        service_name=args.service_name,
        tenant=args.tenant,
        deadline=time.monotonic() + args.verify_timeout,
        request_timeout=min(10.0, args.verify_timeout),
    )
    t1 = time.monotonic()
    results = verify_all(checker, traces)
    verify_secs = time.monotonic() - t1
    failures = [r for r in results if not r.ok]
    complete = len(results) - len(failures)

    print(f"exported {len(traces)} traces / {total_spans} spans; "
          f"verified {complete} complete, {len(failures)} failed")
    for r in failures[:MAX_LISTED_FAILURES]:
        print(f"  {r.trace_id}: {r.reason}")
    if len(failures) > MAX_LISTED_FAILURES:
        print(f"  ... and {len(failures) - MAX_LISTED_FAILURES} more")

    summary.update(
        verify_seconds=round(verify_secs, 3),
        verified=complete,
        failed=len(failures),
        failures=[{"trace_id": r.trace_id, "reason": r.reason, "attempts": r.attempts}
                  for r in failures],
        ok=not failures,
    )
    write_summary(args.out, summary)
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
