#!/usr/bin/env python3
"""Emits a known set of traces, metrics and logs through the real
OpenTelemetry Python SDK and its OTLP/HTTP (protobuf) exporter, and prints
what Inlet should store as JSON.

Configured only by the standard environment variables, as any instrumented
application would be:

    OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:8080
    OTEL_EXPORTER_OTLP_HEADERS="authorization=Bearer inlet_…"
    OTEL_SERVICE_NAME=shop
    OTEL_RESOURCE_ATTRIBUTES=deployment.environment.name=e2e,host.name=web-1

Usage: emit.py [--phases N] [--gate]

Each phase emits the same spans, histogram observations and log records,
and different counter increments, then flushes every provider (the four
flushes run at once, so a broker outage during one phase meets every
exporter). With --gate, the script waits for a line on stdin before every
phase after the first (the test uses the pause to cut the broker).

Standard output is JSON lines, one event each:
  {"event": "flushed", "phase": p}              a phase was exported
  {"event": "waiting", "phase": p}              --gate: send a line to go on
  {"event": "retrying", "signal": s, "thread": t}
                                                the exporter is retrying
                                                (429/503/timeout) by itself
  {"event": "expected", ...}                    last: what Inlet must hold
The exit status is 0 only when every export finally succeeded.

Requires opentelemetry-sdk and opentelemetry-exporter-otlp-proto-http.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
import time
import warnings
from collections import defaultdict

from opentelemetry import trace
from opentelemetry._logs import SeverityNumber
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.metrics import Counter, MeterProvider
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode

# The histogram's explicit bucket bounds (ms), set by a view so the
# expectation does not depend on the SDK's defaults.
HISTOGRAM_BOUNDS = [0.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 10000.0]
MS = 1_000_000  # nanoseconds
FLUSH_TIMEOUT_MS = 120_000

out_lock = threading.Lock()


def event(kind: str, **fields) -> None:
    with out_lock:
        sys.stdout.write(json.dumps({"event": kind, **fields}) + "\n")
        sys.stdout.flush()


class PaymentDeclined(Exception):
    """An application exception (not a builtin): the SDK names it by module."""


def span_exception_type(exc: BaseException) -> str:
    """`exception.type` as `Span.record_exception` writes it."""
    cls = type(exc)
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


def raised(exc: BaseException) -> BaseException:
    """The exception with a traceback (as if raised), so it has a stacktrace."""
    try:
        raise exc
    except BaseException as e:  # noqa: BLE001
        return e


class Expected:
    """What Inlet must hold after the run."""

    def __init__(self) -> None:
        self.tx: dict[tuple[str, str], dict] = {}
        self.errors: dict[str, int] = defaultdict(int)
        self.error_messages: dict[str, str] = {}
        self.counters: dict[tuple[str, tuple], float] = defaultdict(float)
        self.gauges: dict[tuple[str, tuple], float] = defaultdict(float)
        self.hist_values: list[float] = []
        self.logs: dict[str, int] = defaultdict(int)

    def transaction(self, namespace: str, action: str, duration_ms: int, error: bool) -> None:
        t = self.tx.setdefault(
            (namespace, action),
            {"namespace": namespace, "action": action, "count": 0, "errors": 0, "duration_sum_ms": 0, "duration_max_ms": 0},
        )
        t["count"] += 1
        t["errors"] += int(error)
        t["duration_sum_ms"] += duration_ms
        t["duration_max_ms"] = max(t["duration_max_ms"], duration_ms)

    def error(self, cls: str, message: str) -> None:
        self.errors[cls] += 1
        self.error_messages[cls] = message

    def to_json(self) -> dict:
        def series(d: dict, field: str) -> list:
            return [{"name": n, "tags": dict(tags), field: v} for (n, tags), v in sorted(d.items())]

        return {
            "transactions": sorted(self.tx.values(), key=lambda t: (t["namespace"], t["action"])),
            "error_samples": dict(sorted(self.errors.items())),
            "error_messages": dict(sorted(self.error_messages.items())),
            "counters": series(self.counters, "total"),
            "gauges": series(self.gauges, "last"),
            "distributions": [
                {
                    "name": "checkout.duration",
                    "tags": {"route": "/checkout"},
                    "count": len(self.hist_values),
                    "sum": sum(self.hist_values),
                    "min": min(self.hist_values),
                    "max": max(self.hist_values),
                    "values": self.hist_values,
                    "bounds": HISTOGRAM_BOUNDS,
                }
            ],
            "log_records": dict(sorted(self.logs.items())),
        }


class Recorder:
    """Counts each exporter's final results (after its own retries)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.results: dict[str, dict[str, int]] = defaultdict(lambda: {"ok": 0, "failed": 0})

    def wrap(self, name: str, exporter):
        export = exporter.export

        def recorded(*args, **kwargs):
            result = export(*args, **kwargs)
            with self.lock:
                self.results[name]["ok" if result.name == "SUCCESS" else "failed"] += 1
            return result

        exporter.export = recorded
        return exporter


class RetryWatcher(logging.Handler):
    """Turns the exporter's own "Transient error … retrying" warnings into
    `retrying` events, so the test sees that the SDK retries by itself."""

    def emit(self, record: logging.LogRecord) -> None:
        if isinstance(record.msg, str) and record.msg.startswith("Transient error") and len(record.args or ()) >= 2:
            event("retrying", signal=str(record.args[1]), thread=record.threadName)


class Sdk:
    """The providers, wired as an application would (exporters from the
    environment), plus a second meter provider that prefers delta."""

    def __init__(self, recorder: Recorder) -> None:
        resource = Resource.create()
        self.resource = resource
        self.tracer_provider = TracerProvider(resource=resource)
        self.tracer_provider.add_span_processor(
            BatchSpanProcessor(recorder.wrap("spans", OTLPSpanExporter()), schedule_delay_millis=3_600_000)
        )
        view = View(
            instrument_name="checkout.duration",
            aggregation=ExplicitBucketHistogramAggregation(boundaries=HISTOGRAM_BOUNDS),
        )
        # The SDK's default: cumulative temporality for every instrument.
        self.cumulative_reader = PeriodicExportingMetricReader(
            recorder.wrap("metrics_cumulative", OTLPMetricExporter()),
            export_interval_millis=3_600_000,
        )
        self.meter_provider = MeterProvider(resource=resource, metric_readers=[self.cumulative_reader], views=[view])
        self.delta_reader = PeriodicExportingMetricReader(
            recorder.wrap(
                "metrics_delta",
                OTLPMetricExporter(preferred_temporality={Counter: AggregationTemporality.DELTA}),
            ),
            export_interval_millis=3_600_000,
        )
        self.delta_meter_provider = MeterProvider(resource=resource, metric_readers=[self.delta_reader])
        self.logger_provider = LoggerProvider(resource=resource)
        self.logger_provider.add_log_record_processor(
            BatchLogRecordProcessor(recorder.wrap("logs", OTLPLogExporter()), schedule_delay_millis=3_600_000)
        )

        self.tracer = self.tracer_provider.get_tracer("inlet.e2e")
        meter = self.meter_provider.get_meter("inlet.e2e")
        self.orders_created = meter.create_counter("orders.created")
        self.checkout_duration = meter.create_histogram("checkout.duration", unit="ms")
        self.queue_depth = meter.create_up_down_counter("queue.depth")
        self.jobs_done = self.delta_meter_provider.get_meter("inlet.e2e").create_counter("jobs.done")

        # The application's logger only: the SDK's own warnings (retries)
        # must not become exported log records themselves.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            handler = LoggingHandler(level=logging.DEBUG, logger_provider=self.logger_provider)
        self.log = logging.getLogger("shop")
        self.log.setLevel(logging.DEBUG)
        self.log.propagate = False
        self.log.addHandler(handler)
        self.raw_logger = self.logger_provider.get_logger("shop.raw")

    def flush(self) -> None:
        """Flushes every provider at once, each on its own thread."""
        jobs = {
            "flush-spans": lambda: self.tracer_provider.force_flush(FLUSH_TIMEOUT_MS),
            "flush-metrics-cumulative": lambda: self.cumulative_reader.force_flush(FLUSH_TIMEOUT_MS),
            "flush-metrics-delta": lambda: self.delta_reader.force_flush(FLUSH_TIMEOUT_MS),
            "flush-logs": lambda: self.logger_provider.force_flush(FLUSH_TIMEOUT_MS),
        }
        threads = [threading.Thread(target=f, name=name) for name, f in jobs.items()]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    def shutdown(self) -> None:
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()
        self.delta_meter_provider.shutdown()
        self.logger_provider.shutdown()


def emit_spans(sdk: Sdk, want: Expected) -> None:
    tracer = sdk.tracer
    t0 = time.time_ns() - 20_000 * MS

    def server(route: str | None, method: str, status: int, duration: int, *, old_semconv=False, name=None,
               error_status=False, exception=None, at=0):
        start = t0 + at * MS
        attrs = {"http.method": method, "http.status_code": status} if old_semconv else {
            "http.request.method": method, "http.response.status_code": status}
        if route is not None:
            attrs["http.route"] = route
        span = tracer.start_span(name or f"{method} {route}", kind=SpanKind.SERVER, start_time=start, attributes=attrs)
        ctx = trace.set_span_in_context(span)
        # Children that are no transaction: not stored.
        db = tracer.start_span("SELECT orders", context=ctx, kind=SpanKind.INTERNAL, start_time=start + MS)
        db.end(end_time=start + 2 * MS)
        call = tracer.start_span("GET payments", context=ctx, kind=SpanKind.CLIENT, start_time=start + 2 * MS)
        call.end(end_time=start + 3 * MS)
        if exception is not None:
            span.record_exception(exception, timestamp=start + 3 * MS)
        if error_status:
            span.set_status(Status(StatusCode.ERROR, "request failed"))
        span.end(end_time=start + duration * MS)
        action = f"{method} {route}" if route is not None else (name or "")
        want.transaction("web", action, duration, error_status or status >= 500)
        if exception is not None:
            want.error(span_exception_type(exception), str(exception))

    for i, d in enumerate([12, 30, 45]):
        server("/orders/{id}", "GET", 200, d, at=i * 100)
    for i, d in enumerate([80, 95]):
        server("/orders", "POST", 201, d, at=400 + i * 100)
    # A failed request: span status ERROR, 503, and the exception recorded.
    server("/orders", "POST", 503, 120, error_status=True, at=700,
           exception=raised(ConnectionError("payments unavailable")))
    # Span status ERROR without an exception (class "SpanError").
    server("/checkout", "POST", 400, 60, error_status=True, at=900)
    # The older HTTP conventions (http.method, http.status_code).
    server("/legacy/report", "GET", 200, 7, old_semconv=True, at=1000)
    # No route: the action is the span's name.
    server(None, "GET", 200, 1, name="healthcheck", at=1100)

    # A consumer: namespace background; its INTERNAL child is no
    # transaction, but the exception it records is an error sample.
    start = t0 + 1200 * MS
    consumer = tracer.start_span(
        "orders process", kind=SpanKind.CONSUMER, start_time=start,
        attributes={"messaging.system": "rabbitmq", "messaging.destination.name": "orders"},
    )
    child = tracer.start_span("reserve stock", context=trace.set_span_in_context(consumer),
                              kind=SpanKind.INTERNAL, start_time=start + MS)
    exc = raised(KeyError("sku-42"))
    child.record_exception(exc, timestamp=start + 2 * MS)
    child.end(end_time=start + 5 * MS)
    consumer.end(end_time=start + 200 * MS)
    want.transaction("background", "orders process", 200, False)
    want.error(span_exception_type(exc), str(exc))

    # A local root INTERNAL span (a scheduled job): background; the
    # exception it records does not make the transaction an error.
    start = t0 + 1500 * MS
    job = tracer.start_span("nightly-cleanup", kind=SpanKind.INTERNAL, start_time=start)
    exc = raised(PaymentDeclined("card expired"))
    job.record_exception(exc, timestamp=start + 10 * MS)
    job.end(end_time=start + 1500 * MS)
    want.transaction("background", "nightly-cleanup", 1500, False)
    want.error(span_exception_type(exc), str(exc))


def emit_metrics(sdk: Sdk, want: Expected, phase: int) -> None:
    # Cumulative counter: phase 1 adds 7 (web) and 3 (api); later phases 5
    # (web) only, so the api series is exported again unchanged.
    web, api = (7, 3) if phase == 1 else (5, 0)
    for _ in range(web):
        sdk.orders_created.add(1, {"channel": "web"})
    for _ in range(api):
        sdk.orders_created.add(1, {"channel": "api"})
    want.counters[("orders.created", (("channel", "web"),))] += web
    want.counters[("orders.created", (("channel", "api"),))] += api

    # Delta counter: 4 × 2 per phase.
    for _ in range(4):
        sdk.jobs_done.add(2, {"queue": "default"})
    want.counters[("jobs.done", (("queue", "default"),))] += 8

    # Histogram (cumulative): the open-ended buckets are hit in phase 2.
    values = [3.0, 7.0, 15.0, 40.0, 250.0, 1200.0] if phase == 1 else [0.5, 20000.0]
    for v in values:
        sdk.checkout_duration.record(v, {"route": "/checkout"})
    want.hist_values.extend(values)

    # Up-down counter (a non-monotonic cumulative sum): a gauge.
    deltas = [10, -3] if phase == 1 else [2]
    for d in deltas:
        sdk.queue_depth.add(d, {"queue": "orders"})
    want.gauges[("queue.depth", (("queue", "orders"),))] += sum(deltas)


def emit_logs(sdk: Sdk, want: Expected) -> None:
    log = sdk.log
    for i in range(2):
        log.debug("cache miss %d", i)
    for i in range(5):
        log.info("order %d placed", i)
    for i in range(3):
        log.warning("slow query %d", i)
    log.error("payment retry scheduled")
    # With exc_info, the handler writes exception.type as the class's bare
    # name and exception.message as its first argument.
    try:
        int("not a number")
    except ValueError as e:
        log.exception("could not parse quantity")
        want.error(type(e).__name__, str(e.args[0]))
    try:
        raise PaymentDeclined("card expired")
    except PaymentDeclined as e:
        log.critical("checkout broken", exc_info=True)
        want.error(type(e).__name__, str(e.args[0]))
    # Straight through the Logs API: a severity number and no text.
    sdk.raw_logger.emit(severity_number=SeverityNumber.WARN2, body="disk 91% full")
    # The handler writes WARNING as "WARN" and CRITICAL as "FATAL"; Inlet
    # lower-cases the text.
    for severity, n in {"debug": 2, "info": 5, "warn": 3 + 1, "error": 2, "fatal": 1}.items():
        want.logs[severity] += n


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--phases", type=int, default=2)
    parser.add_argument("--gate", action="store_true", help="wait for a stdin line before each later phase")
    args = parser.parse_args()

    watcher = RetryWatcher()
    logging.getLogger("opentelemetry").addHandler(watcher)
    logging.getLogger("opentelemetry").setLevel(logging.WARNING)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)

    recorder = Recorder()
    sdk = Sdk(recorder)
    want = Expected()
    for phase in range(1, args.phases + 1):
        if phase > 1 and args.gate:
            event("waiting", phase=phase)
            if not sys.stdin.readline():
                print("emit.py: stdin closed while waiting", file=sys.stderr)
                return 2
        emit_spans(sdk, want)
        emit_metrics(sdk, want, phase)
        emit_logs(sdk, want)
        sdk.flush()
        event("flushed", phase=phase)
    sdk.shutdown()

    attrs = sdk.resource.attributes
    expected = want.to_json()
    expected.update(
        {
            "service": attrs.get("service.name"),
            "environment": attrs.get("deployment.environment.name"),
            "agent": {
                "name": f"{attrs.get('telemetry.sdk.name')}-{attrs.get('telemetry.sdk.language')}",
                "version": attrs.get("telemetry.sdk.version"),
            },
            "phases": args.phases,
            "exports": dict(recorder.results),
        }
    )
    event("expected", **expected)
    failed = sum(r["failed"] for r in recorder.results.values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
