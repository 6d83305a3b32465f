"""Prometheus metrics of one gateway, in a registry of its own.

Call counts and latencies are fed by a call observer (``Metrics.observe``). Upstream server
states, starts, restarts and crashes and the open sessions are read from the live routers when
``/metrics`` is scraped, so they are never stale and cost nothing between scrapes.

Labels carry sandbox ids, server names, tool names the client sees, outcomes and fixed reason
words: never a token, secret, argument value or free text from a client. Only names of tools a
sandbox's servers really offer become label values: a call to any other name (unknown, not
visible to the token, cancelled or failed before it was routed) is counted under
``server="unknown", tool="unknown"``, so a client cannot mint label values at will. The series of
a deleted sandbox are removed with it (``forget_sandbox``).
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from gateway.core.gateway import CallRecord, Gateway

PREFIX = "mcp_gateway"
SERVER_STATES = ("stopped", "starting", "running", "crashed", "failed", "stopping")
REJECTION_REASONS = ("auth", "origin", "host", "size", "rate")
OUTCOMES = ("ok", "tool_error", "error", "unknown_tool", "cancelled")
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
MAX_LABEL_CHARS = 128
UNKNOWN = "unknown"  # the server and tool label of a call that reached no known tool


def _label(value: str | None) -> str:
    return (value or "")[:MAX_LABEL_CHARS]


class ServerCollector(Collector):
    """Upstream servers and sessions, collected from the live routers at scrape time."""

    def __init__(self, gateway: Gateway) -> None:
        self._gateway = weakref.ref(gateway)
        # Crashes: UpstreamServer keeps recent crash times only; remember each one we have seen.
        self._crash_times: weakref.WeakKeyDictionary[Any, set[float]] = weakref.WeakKeyDictionary()
        self._crash_lock = threading.Lock()  # scrapes may come from the metrics-port thread

    def _crashes(self, server: Any) -> int:
        counted = getattr(server, "crashes", None)
        if isinstance(counted, int):
            return counted
        with self._crash_lock:
            seen = self._crash_times.setdefault(server, set())
            seen.update(list(getattr(server, "_crashes", ())))
            return len(seen)

    def collect(self) -> Iterator[Metric]:
        gateway = self._gateway()
        state = GaugeMetricFamily(
            f"{PREFIX}_upstream_server_state",
            "1 for the state each upstream server is in",
            labels=["sandbox", "server", "state"],
        )
        up = GaugeMetricFamily(
            f"{PREFIX}_upstream_server_up", "1 if the upstream server is running", labels=["sandbox", "server"]
        )
        starts = CounterMetricFamily(
            f"{PREFIX}_upstream_server_starts", "Times the upstream server was started", labels=["sandbox", "server"]
        )
        restarts = CounterMetricFamily(
            f"{PREFIX}_upstream_server_restarts", "Starts after the first one", labels=["sandbox", "server"]
        )
        crashes = CounterMetricFamily(
            f"{PREFIX}_upstream_server_crashes",
            "Times the upstream server exited unasked or failed to start",
            labels=["sandbox", "server"],
        )
        sessions = GaugeMetricFamily(
            f"{PREFIX}_open_sessions", "MCP sessions connected, per sandbox", labels=["sandbox"]
        )
        sandboxes = GaugeMetricFamily(f"{PREFIX}_live_sandboxes", "Sandboxes with a live router")
        if gateway is not None:
            routers = dict(gateway.live_routers())
            sandboxes.add_metric([], len(routers))
            for sandbox_id, router in routers.items():
                for name, server in list(router.servers.items()):
                    labels = [_label(sandbox_id), _label(name)]
                    current = getattr(server, "state", "stopped")
                    for known in SERVER_STATES:
                        state.add_metric([*labels, known], 1.0 if current == known else 0.0)
                    up.add_metric(labels, 1.0 if current == "running" else 0.0)
                    starts.add_metric(labels, getattr(server, "starts", 0))
                    restarts.add_metric(labels, getattr(server, "restarts", 0))
                    crashes.add_metric(labels, self._crashes(server))
            for sandbox_id, count in gateway.open_sessions().items():
                sessions.add_metric([_label(sandbox_id)], count)
        yield from (state, up, starts, restarts, crashes, sessions, sandboxes)


class Metrics:
    """The gateway's metrics. ``observe`` is a call observer; ``render`` is the scrape."""

    def __init__(self, gateway: Gateway | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        # The gateway process itself: process_* (CPU, memory, open fds; Linux only), python_info, python_gc_*.
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self.calls = Counter(
            f"{PREFIX}_tool_calls",
            "Tool calls by sandbox, server, tool and outcome",
            ["sandbox", "server", "tool", "outcome"],
            registry=self.registry,
        )
        self.call_seconds = Histogram(
            f"{PREFIX}_tool_call_duration_seconds",
            "Tool call latency as the client sees it (gateway and upstream)",
            ["sandbox", "server", "outcome"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.upstream_seconds = Histogram(
            f"{PREFIX}_tool_call_upstream_seconds",
            "Time a tool call spent in the upstream server",
            ["sandbox", "server"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.gateway_seconds = Histogram(
            f"{PREFIX}_tool_call_gateway_seconds",
            "Time the gateway added to a tool call (routing, server start, redaction)",
            ["sandbox", "server"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.result_bytes = Counter(
            f"{PREFIX}_tool_result_bytes",
            "Bytes of tool results returned",
            ["sandbox", "server"],
            registry=self.registry,
        )
        self.rejections = Counter(
            f"{PREFIX}_rejected_requests",
            "Requests refused before reaching a server, by reason (auth, origin, host, size, rate)",
            ["reason"],
            registry=self.registry,
        )
        for reason in REJECTION_REASONS:
            self.rejections.labels(reason)  # present at 0 from the start
        # sandbox -> (metric, label values) of each series it has, for forget_sandbox
        self._series: dict[str, set[tuple[Any, tuple[str, ...]]]] = {}
        self._series_lock = threading.Lock()
        if gateway is not None:
            self.registry.register(ServerCollector(gateway))

    def observe(self, record: CallRecord) -> None:
        # record.server is only set when the name is a tool the sandbox's servers offer.
        known = record.server is not None and record.outcome != "unknown_tool"
        sandbox = _label(record.sandbox)
        server = _label(record.server) if known else UNKNOWN
        tool = _label(record.tool) if known else UNKNOWN
        outcome = record.outcome if record.outcome in OUTCOMES else "error"
        with self._series_lock:
            self._count(self.calls, sandbox, server, tool, outcome).inc()
            total = record.duration_ms / 1000
            self._count(self.call_seconds, sandbox, server, outcome).observe(total)
            upstream_ms = getattr(record, "upstream_ms", None)
            if known and upstream_ms is not None:
                upstream = min(upstream_ms / 1000, total)
                self._count(self.upstream_seconds, sandbox, server).observe(upstream)
                self._count(self.gateway_seconds, sandbox, server).observe(total - upstream)
            if record.result_bytes:
                self._count(self.result_bytes, sandbox, server).inc(record.result_bytes)

    def _count(self, metric: Any, sandbox: str, *labels: str) -> Any:
        """``metric.labels(sandbox, *labels)``, remembered so the sandbox's series can be removed."""
        values = (sandbox, *labels)
        self._series.setdefault(sandbox, set()).add((metric, values))
        return metric.labels(*values)

    def forget_sandbox(self, sandbox_id: str) -> None:
        """Remove every series of a deleted sandbox (its counts would otherwise stay forever)."""
        with self._series_lock:
            for metric, values in self._series.pop(_label(sandbox_id), set()):
                try:
                    metric.remove(*values)
                except KeyError:
                    pass

    def count_rejection(self, reason: str) -> None:
        self.rejections.labels(reason if reason in REJECTION_REASONS else "other").inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


_active: Metrics | None = None


def activate(metrics: Metrics) -> None:
    """Make ``metrics`` the one :func:`count_rejection` feeds (one gateway per process)."""
    global _active
    _active = metrics


def count_rejection(reason: str) -> None:
    """Count a request refused for ``reason`` (auth, origin, host, size, rate); a no-op without metrics.

    For the HTTP layer: call it where it answers 401, 403, 421, 413 or 429.
    """
    if _active is not None:
        _active.count_rejection(reason)
