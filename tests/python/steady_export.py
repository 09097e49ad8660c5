#!/usr/bin/env python3
"""Steady OTLP/gRPC load with the OpenTelemetry Python SDK's exporter and its own retries.

Used by the fault tests (tests/lifecycle.rs via ``PythonLoad`` in tests/common/mod.rs, and
scripts/test-compose.sh): a real client that must ride out refusals (UNAVAILABLE) by
retrying, and that records what was acked.

Load: ``--rate`` spans per second, as traces of ``--spans-per-trace`` spans (a SERVER
root and CLIENT children), round-robin over one ``TracerProvider`` per ``--endpoint``,
each with a ``BatchSpanProcessor`` around the SDK's ``OTLPSpanExporter``. It runs until
``--stop-file`` exists or ``--duration`` seconds have passed, then flushes: every batch
is exported or given up (the exporter retries retryable codes with backoff 1, 2, 4, 8,
16 s, at most 6 attempts, within ``--export-timeout`` seconds per batch).

Output:

- ``--record``: one line ``<trace id> <span count>`` per trace whose every span was in a
  batch the exporter acked (the format of ``ringtail bench --record``);
- ``--summary`` (JSON): ``codes`` (every gRPC status code the exporter met, retries
  included, by name), ``retried_codes``, ``final_codes`` (codes of batches given up),
  ``non_retryable`` (codes outside the OTLP retryable set), ``code_times`` (unix time and
  code of each, the first 2,000), span, trace and batch counts,
  the slowest batch, ``ok``, and the verification's result when ``--query-url`` is given;
- stdout: one summary line; stderr: a progress line every ``--report-every`` seconds
  (kept short: a parent may only read the pipes at the end).

The codes are counted by a ``logging.Handler`` on the exporter's logger, from its records
"Transient error StatusCode.X ... retrying" and "Failed to export ... error code:
StatusCode.X". That logger carries the SDK's ``DuplicateFilter`` (it drops a record equal
to the previous one within 20 s), which is removed so that every record is counted; the
records are not printed.

With ``--query-url``, every fully acked trace is then read back from
``GET {query_url}/api/traces/{id}`` with ``Checker`` and ``verify_all`` of
export_and_verify.py (exactly the exported span IDs, the service name), until
``--verify-timeout``.

Exit code 0 when every span was acked, no non-retryable code was seen and (with
``--query-url``) every acked trace read back complete; 1 otherwise; 2 on bad arguments.

Example::

    PY=$(scripts/setup-python.sh)
    $PY tests/python/steady_export.py --endpoint 127.0.0.1:4317 --rate 2000 \\
        --stop-file /tmp/stop --record /tmp/acked.txt --summary /tmp/summary.json &
    ... faults ...; touch /tmp/stop; wait
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import os
import sys
import threading
import time
from typing import Sequence

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ALWAYS_ON

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from export_and_verify import (  # noqa: E402  pylint: disable=wrong-import-position
    MAX_LISTED_FAILURES,
    Checker,
    ExportedTrace,
    WrappingExporter,
    positive_float,
    positive_int,
    verify_all,
)

EXPORTER_LOGGER = "opentelemetry.exporter.otlp.proto.grpc.exporter"
# The OTLP specification's retryable gRPC codes (the SDK exporter's default set).
RETRYABLE = frozenset([
    "CANCELLED", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "ABORTED", "OUT_OF_RANGE",
    "UNAVAILABLE", "DATA_LOSS",
])
MAX_KEPT_MESSAGES = 10
MAX_KEPT_TIMES = 2000

log = logging.getLogger("steady_export")


class StatusCodeCounter(logging.Handler):
    """Counts the gRPC status codes in the OTLP exporter's log records."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self._lock_counts = threading.Lock()
        self.retried: collections.Counter[str] = collections.Counter()
        self.final: collections.Counter[str] = collections.Counter()
        self.messages: list[str] = []  # the first distinct warnings/errors, for diagnosis
        self.times: list[tuple[float, str]] = []  # (unix time, code), the first MAX_KEPT_TIMES

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno < logging.WARNING:
            return
        code = next(
            (a.name for a in (record.args or ()) if type(a).__name__ == "StatusCode"), None
        )
        with self._lock_counts:
            if code is not None:
                if str(record.msg).startswith("Transient error"):
                    self.retried[code] += 1
                else:
                    self.final[code] += 1
                if len(self.times) < MAX_KEPT_TIMES:
                    self.times.append((round(record.created, 3), code))
            if len(self.messages) < MAX_KEPT_MESSAGES:
                text = record.getMessage()[:300]
                if text not in self.messages:
                    self.messages.append(text)

    def snapshot(self) -> tuple[dict[str, int], dict[str, int]]:
        with self._lock_counts:
            return dict(self.retried), dict(self.final)


def install_counter() -> StatusCodeCounter:
    counter = StatusCodeCounter()
    exporter_log = logging.getLogger(EXPORTER_LOGGER)
    for f in list(exporter_log.filters):
        if type(f).__name__ == "DuplicateFilter":
            exporter_log.removeFilter(f)
    exporter_log.addHandler(counter)
    exporter_log.setLevel(logging.WARNING)
    exporter_log.propagate = False  # counted, not printed
    return counter


class RecordingExporter(WrappingExporter):
    """Wraps the OTLP exporter; remembers the spans of every acked batch."""

    def __init__(self, inner: SpanExporter) -> None:
        super().__init__(inner)
        self.acked: set[tuple[int, int]] = set()
        self.batches_ok = 0
        self.batches_failed = 0
        self.slowest_batch_seconds = 0.0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        started = time.monotonic()
        result = self._export_inner(spans)
        took = time.monotonic() - started
        with self._lock:
            self.slowest_batch_seconds = max(self.slowest_batch_seconds, took)
            if result is SpanExportResult.SUCCESS:
                self.batches_ok += 1
                self.acked.update((s.context.trace_id, s.context.span_id) for s in spans)
            else:
                self.batches_failed += 1
        return result


def run_load(args: argparse.Namespace, counter: StatusCodeCounter) -> dict:
    resource = Resource.create({"service.name": args.service_name})
    providers: list[TracerProvider] = []
    exporters: list[RecordingExporter] = []
    for endpoint in args.endpoint:
        exporter = RecordingExporter(
            OTLPSpanExporter(endpoint=endpoint, insecure=True, timeout=args.export_timeout)
        )
        provider = TracerProvider(resource=resource, sampler=ALWAYS_ON)
        provider.add_span_processor(BatchSpanProcessor(
            exporter,
            # Room for every span created while batches are retried for up to 3 minutes:
            # a span dropped from a full queue would never be acked.
            max_queue_size=max(2048, int(args.rate * 180)),
            max_export_batch_size=512,
            schedule_delay_millis=200,
        ))
        providers.append(provider)
        exporters.append(exporter)
    tracers = [p.get_tracer("ringtail.steady_export") for p in providers]

    generated: dict[int, list[int]] = {}
    interval = args.spans_per_trace / args.rate  # seconds per trace
    started = time.monotonic()
    next_report = started + args.report_every
    n = 0
    while True:
        now = time.monotonic()
        if now - started >= args.duration or (args.stop_file and os.path.exists(args.stop_file)):
            break
        if now >= next_report:
            next_report += args.report_every
            progress(now - started, generated, exporters, counter)
        tracer = tracers[n % len(tracers)]
        with tracer.start_as_current_span(
            f"steady-root-{n}", kind=trace.SpanKind.SERVER, attributes={"steady.index": n}
        ) as root:
            ctx = root.get_span_context()
            span_ids = [ctx.span_id]
            for i in range(1, args.spans_per_trace):
                with tracer.start_as_current_span(
                    f"steady-child-{i}", kind=trace.SpanKind.CLIENT,
                    attributes={"steady.index": n},
                ) as child:
                    span_ids.append(child.get_span_context().span_id)
        generated[ctx.trace_id] = span_ids
        n += 1
        # A fixed schedule: the rate does not drift when creating spans takes time.
        delay = started + n * interval - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    load_seconds = time.monotonic() - started

    flushed = True
    for p in providers:
        flushed = p.force_flush(timeout_millis=int(args.flush_timeout * 1000)) and flushed
        p.shutdown()
    progress(time.monotonic() - started, generated, exporters, counter)

    acked: dict[int, set[int]] = collections.defaultdict(set)
    for e in exporters:
        for trace_id, span_id in e.acked:
            acked[trace_id].add(span_id)
    retried, final = counter.snapshot()
    codes = collections.Counter(retried) + collections.Counter(final)
    fully_acked = [t for t, spans in generated.items() if acked.get(t) == set(spans)]
    return {
        "endpoints": args.endpoint,
        "load_seconds": round(load_seconds, 1),
        "flushed": flushed,
        "traces": len(generated),
        "spans": sum(len(s) for s in generated.values()),
        "spans_acked": sum(len(s) for s in acked.values()),
        "traces_fully_acked": len(fully_acked),
        "batches_ok": sum(e.batches_ok for e in exporters),
        "batches_failed": sum(e.batches_failed for e in exporters),
        "slowest_batch_seconds": round(max(e.slowest_batch_seconds for e in exporters), 2),
        "codes": dict(codes),
        "retried_codes": retried,
        "final_codes": final,
        "non_retryable": {c: k for c, k in codes.items() if c not in RETRYABLE},
        "exporter_messages": list(counter.messages),
        "code_times": list(counter.times),
        "_generated": generated,
        "_fully_acked": fully_acked,
    }


def progress(elapsed: float, generated: dict, exporters: list[RecordingExporter],
             counter: StatusCodeCounter) -> None:
    retried, final = counter.snapshot()
    print(
        f"[{elapsed:5.0f}s] traces {len(generated)}, spans acked "
        f"{sum(len(e.acked) for e in exporters)}, batches ok "
        f"{sum(e.batches_ok for e in exporters)} failed "
        f"{sum(e.batches_failed for e in exporters)}, retried {retried or '-'}, "
        f"given up {final or '-'}",
        file=sys.stderr, flush=True,
    )


def verify(args: argparse.Namespace, summary: dict) -> list[str]:
    """Reads every fully acked trace back; returns the failures."""
    generated = summary["_generated"]
    traces = [
        ExportedTrace(format(t, "032x"), frozenset(format(s, "016x") for s in generated[t]))
        for t in summary["_fully_acked"]
    ]
    checker = Checker(
        query_url=args.query_url,
        service_name=args.service_name,
        tenant=None,
        deadline=time.monotonic() + args.verify_timeout,
        request_timeout=min(10.0, args.verify_timeout),
    )
    started = time.monotonic()
    results = verify_all(checker, traces)
    failures = [f"{r.trace_id}: {r.reason} ({r.attempts} attempts)" for r in results if not r.ok]
    summary["verify"] = {
        "query_url": args.query_url,
        "traces": len(results),
        "complete": len(results) - len(failures),
        "seconds": round(time.monotonic() - started, 1),
        "failures": failures[:100],
    }
    return failures


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--endpoint", action="append", required=True,
                   help="OTLP gRPC endpoint, host:port (plaintext); repeat to spread the "
                        "traces round-robin")
    p.add_argument("--rate", type=positive_float, default=2000.0,
                   help="spans per second (default: %(default)s)")
    p.add_argument("--spans-per-trace", type=positive_int, default=10,
                   help="spans per trace (default: %(default)s)")
    p.add_argument("--stop-file", default=None, help="stop the load when this file exists")
    p.add_argument("--duration", type=positive_float, default=900.0,
                   help="stop the load after this many seconds at the latest "
                        "(default: %(default)s)")
    p.add_argument("--export-timeout", type=positive_float, default=60.0,
                   help="exporter timeout per batch in seconds, retries included "
                        "(default: %(default)s)")
    p.add_argument("--flush-timeout", type=positive_float, default=180.0,
                   help="seconds allowed for the final flush (default: %(default)s)")
    p.add_argument("--record", default=None,
                   help="file of '<trace id> <span count>' lines, one per fully acked trace")
    p.add_argument("--summary", default=None, help="JSON summary file")
    p.add_argument("--service-name", default="steady-export",
                   help="resource service.name (default: %(default)s)")
    p.add_argument("--query-url", default=None,
                   help="after the load, read every fully acked trace back from here")
    p.add_argument("--verify-timeout", type=positive_float, default=120.0,
                   help="seconds allowed for reading back (default: %(default)s)")
    p.add_argument("--report-every", type=positive_float, default=10.0,
                   help="progress line on stderr every this many seconds "
                        "(default: %(default)s)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    counter = install_counter()
    summary = run_load(args, counter)

    problems = []
    if summary["non_retryable"]:
        problems.append(f"non-retryable status codes: {summary['non_retryable']}")
    if summary["batches_failed"] or summary["spans_acked"] != summary["spans"]:
        problems.append(
            f"{summary['spans'] - summary['spans_acked']} of {summary['spans']} spans not "
            f"acked ({summary['batches_failed']} batches given up, codes "
            f"{summary['final_codes'] or '-'})")
    if not summary["flushed"]:
        problems.append(f"the span processors did not flush within {args.flush_timeout}s")
    if not summary["_fully_acked"]:
        problems.append("no trace was acked")
    if args.record:
        generated = summary["_generated"]
        with open(args.record, "w", encoding="utf-8") as f:
            for t in summary["_fully_acked"]:
                f.write(f"{t:032x} {len(generated[t])}\n")
    print(
        f"steady_export: {summary['load_seconds']}s to {', '.join(args.endpoint)}: "
        f"{summary['traces']} traces / {summary['spans']} spans, {summary['spans_acked']} "
        f"spans acked ({summary['traces_fully_acked']} traces fully), batches ok "
        f"{summary['batches_ok']} given up {summary['batches_failed']}, slowest batch "
        f"{summary['slowest_batch_seconds']}s; codes met {summary['codes'] or 'none'} "
        f"(non-retryable: {summary['non_retryable'] or 'none'})",
        flush=True,
    )
    for m in summary["exporter_messages"][:3]:
        print(f"  exporter: {m}", flush=True)

    if args.query_url and summary["_fully_acked"]:
        failures = verify(args, summary)
        v = summary["verify"]
        print(f"steady_export: read back {v['complete']}/{v['traces']} acked traces complete "
              f"in {v['seconds']}s", flush=True)
        for f in failures[:MAX_LISTED_FAILURES]:
            print(f"  {f}", flush=True)
        if failures:
            problems.append(f"{len(failures)} acked traces missing or incomplete")

    summary["ok"] = not problems
    summary["problems"] = problems
    for p in problems:
        print(f"steady_export: FAIL: {p}", flush=True)
    if args.summary:
        public = {k: v for k, v in summary.items() if not k.startswith("_")}
        with open(args.summary, "w", encoding="utf-8") as f:
            json.dump(public, f, indent=2, sort_keys=True)
            f.write("\n")
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
