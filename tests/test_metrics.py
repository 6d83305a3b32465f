"""Prometheus metrics end to end: they move as calls are made and carry no secret."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp.shared.exceptions import MCPError
from prometheus_client.parser import text_string_to_metric_families

from gateway.core.gateway import CallRecord
from gateway.features.metrics import Metrics
from tests.support import RunningGateway, fixture_entry, free_port

Factory = Callable[..., RunningGateway]
SECRET = "sk-live-METRICS-SECRET-0123456789"
ARG_VALUE = "ARGUMENT-VALUE-must-not-leak-42"


def scrape(gw: RunningGateway) -> str:
    with gw.admin() as admin:
        response = admin.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return response.text


def value(text: str, name: str, **labels: str) -> float:
    """The sum of the samples called ``name`` whose labels include ``labels``."""
    total = 0.0
    found = False
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
                found = True
    if not found:
        raise AssertionError(f"no sample {name} {labels}")
    return total


def start_fx(gateway_factory: Factory, *args: str, **entry: Any) -> RunningGateway:
    return gateway_factory(["--servers", "fx", "--runtime", "host", *args], catalog={"fx": fixture_entry(**entry)})


def test_metrics_need_the_admin_key(gateway_factory: Factory) -> None:
    gw = start_fx(gateway_factory)
    assert httpx.get(gw.base_url + "/metrics").status_code == 401
    bad = httpx.get(gw.base_url + "/metrics", headers={"Authorization": "Bearer not-the-key"})
    assert bad.status_code == 401
    assert bad.json()["error"] == "unauthorized"
    assert "mcp_gateway_tool_calls" in scrape(gw)


async def test_tool_calls_are_counted_by_sandbox_server_tool_and_outcome(gateway_factory: Factory) -> None:
    gw = start_fx(gateway_factory)
    async with gw.client() as client:
        await client.call_tool("fx__echo", {"text": "a"})
        await client.call_tool("fx__echo", {"text": "b"})
        await client.call_tool("fx__fail", {"message": "no"})
        with pytest.raises(MCPError):
            await client.call_tool("fx__no_such_tool", {})
    text = scrape(gw)
    ok = {"sandbox": "default", "server": "fx", "tool": "fx__echo", "outcome": "ok"}
    assert value(text, "mcp_gateway_tool_calls_total", **ok) == 2
    failed = {"server": "fx", "tool": "fx__fail", "outcome": "tool_error"}
    assert value(text, "mcp_gateway_tool_calls_total", **failed) == 1
    # An unknown name is never a label value: clients cannot mint label values.
    assert value(text, "mcp_gateway_tool_calls_total", outcome="unknown_tool", tool="unknown", server="unknown") == 1
    assert "fx__no_such_tool" not in text


async def test_latency_histograms_keep_upstream_and_gateway_time_apart(gateway_factory: Factory) -> None:
    gw = start_fx(gateway_factory)
    async with gw.client() as client:
        await client.call_tool("fx__echo", {"text": "warm up"})
        before = scrape(gw)
        await client.call_tool("fx__sleep", {"seconds": 0.3})
    after = scrape(gw)

    def moved(name: str) -> float:
        return value(after, name, server="fx") - value(before, name, server="fx")

    upstream = moved("mcp_gateway_tool_call_upstream_seconds_sum")
    added = moved("mcp_gateway_tool_call_gateway_seconds_sum")
    total = moved("mcp_gateway_tool_call_duration_seconds_sum")
    assert moved("mcp_gateway_tool_call_upstream_seconds_count") == 1
    assert moved("mcp_gateway_tool_call_gateway_seconds_count") == 1
    assert 0.3 <= upstream < 5
    assert 0 <= added < 0.25
    assert total == pytest.approx(upstream + added, abs=0.001)
    bucket = value(after, "mcp_gateway_tool_call_upstream_seconds_bucket", server="fx", le="0.25")
    assert bucket == 1  # the warm-up echo, not the sleep


async def test_server_state_starts_restarts_and_crashes_are_scraped_live(gateway_factory: Factory) -> None:
    gw = start_fx(gateway_factory)
    text = scrape(gw)
    assert "mcp_gateway_upstream_server_up" in text
    async with gw.client() as client:
        await client.call_tool("fx__echo", {"text": "start"})
        running = scrape(gw)
        assert value(running, "mcp_gateway_upstream_server_state", server="fx", state="running") == 1
        assert value(running, "mcp_gateway_upstream_server_state", server="fx", state="crashed") == 0
        assert value(running, "mcp_gateway_upstream_server_up", sandbox="default", server="fx") == 1
        assert value(running, "mcp_gateway_upstream_server_starts_total", server="fx") == 1
        assert value(running, "mcp_gateway_upstream_server_crashes_total", server="fx") == 0

        result_or_error: Any
        try:
            result_or_error = await client.call_tool("fx__crash", {})
        except MCPError as exc:
            result_or_error = exc
        assert result_or_error is not None
        crashed = scrape(gw)
        assert value(crashed, "mcp_gateway_upstream_server_crashes_total", server="fx") == 1
        assert value(crashed, "mcp_gateway_upstream_server_up", server="fx") == 0

        await client.call_tool("fx__echo", {"text": "again"})
    again = scrape(gw)
    assert value(again, "mcp_gateway_upstream_server_starts_total", server="fx") == 2
    assert value(again, "mcp_gateway_upstream_server_restarts_total", server="fx") == 1
    assert value(again, "mcp_gateway_upstream_server_crashes_total", server="fx") == 1
    assert value(again, "mcp_gateway_upstream_server_state", server="fx", state="running") == 1


async def test_open_sessions_count_a_connected_client(gateway_factory: Factory) -> None:
    gw = start_fx(gateway_factory)
    async with gw.client() as client:
        await client.list_tools()
        assert value(scrape(gw), "mcp_gateway_open_sessions", sandbox="default") >= 1
        assert value(scrape(gw), "mcp_gateway_live_sandboxes") == 1


def test_refused_admin_keys_count_as_auth_rejections(gateway_factory: Factory) -> None:
    gw = start_fx(gateway_factory)
    before = value(scrape(gw), "mcp_gateway_rejected_requests_total", reason="auth")
    for _ in range(3):
        assert httpx.get(gw.base_url + "/admin/audit", headers={"Authorization": "Bearer nope"}).status_code == 401
    after = scrape(gw)
    assert value(after, "mcp_gateway_rejected_requests_total", reason="auth") == before + 3
    for reason in ("origin", "host", "size", "rate"):
        assert value(after, "mcp_gateway_rejected_requests_total", reason=reason) >= 0


def test_foreign_origins_are_refused_and_counted(gateway_factory: Factory) -> None:
    gw = start_fx(gateway_factory)
    with gw.admin() as admin:
        refused = admin.get("/metrics", headers={"Origin": "https://evil.example"})
        assert refused.status_code == 403
        assert admin.get("/metrics", headers={"Origin": gw.base_url}).status_code == 200
    assert value(scrape(gw), "mcp_gateway_rejected_requests_total", reason="origin") == 1


async def test_metrics_carry_no_secret_token_or_argument_value(gateway_factory: Factory, tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"fx": {"fx.api_key": SECRET}}))
    entry = fixture_entry(secrets=[{"name": "fx.api_key", "env": "FX_API_KEY"}])
    gw = gateway_factory(["--config", f"@{config}", "--runtime", "host"], catalog={"fx": entry})
    async with gw.client() as client:
        echoed = await client.call_tool("fx__echo", {"text": ARG_VALUE})
        assert echoed.content[0].text == ARG_VALUE  # type: ignore[union-attr]
        leaked = await client.call_tool("fx__secret_echo", {"name": "FX_API_KEY"})
        assert SECRET not in json.dumps(leaked.model_dump(mode="json"))
        await client.call_tool("fx__add", {"a": 40, "b": 2})
        with pytest.raises(MCPError):
            await client.call_tool(f"fx__{ARG_VALUE}", {"text": SECRET})
    httpx.get(gw.base_url + "/metrics", headers={"Authorization": f"Bearer {SECRET}"})
    text = scrape(gw)
    assert value(text, "mcp_gateway_tool_calls_total", tool="fx__echo") == 1
    for forbidden in (SECRET, ARG_VALUE, gw.token, gw.admin_key, "40", "42"):
        lines = [line for line in text.splitlines() if forbidden in line.split(" ")[0]]
        assert lines == [], f"{forbidden!r} in labels: {lines}"
    assert SECRET not in text and ARG_VALUE not in text and gw.token not in text and gw.admin_key not in text


def test_metrics_port_serves_metrics_without_a_key_on_loopback(gateway_factory: Factory) -> None:
    port = free_port()
    gw = start_fx(gateway_factory, "--metrics-port", str(port))
    response = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
    assert response.status_code == 200
    assert "mcp_gateway_tool_calls" in response.text
    other = httpx.get(f"http://127.0.0.1:{port}/admin/audit", timeout=10)  # only metrics, on any path
    assert "mcp_gateway_tool_calls" in other.text and '"entries"' not in other.text
    assert httpx.get(gw.base_url + "/metrics").status_code == 401  # the main port still wants the key


def test_the_scrape_has_the_gateway_process_series(gateway_factory: Factory) -> None:
    gw = start_fx(gateway_factory)
    text = scrape(gw)
    assert value(text, "process_resident_memory_bytes") > 1_000_000
    assert value(text, "process_open_fds") > 0
    assert value(text, "process_start_time_seconds") > 1_600_000_000
    assert value(text, "python_info", major="3") == 1


def test_metrics_port_serves_the_process_series(gateway_factory: Factory) -> None:
    port = free_port()
    start_fx(gateway_factory, "--metrics-port", str(port))
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    assert value(text, "process_cpu_seconds_total") >= 0
    assert value(text, "mcp_gateway_rejected_requests_total", reason="auth") == 0


def test_metrics_port_closes_when_the_gateway_stops(gateway_factory: Factory) -> None:
    port = free_port()
    gw = start_fx(gateway_factory, "--metrics-port", str(port))
    assert httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).status_code == 200
    assert gw.stop() == 0
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=1)
        except httpx.ConnectError:
            return
        time.sleep(0.1)
    raise AssertionError("the metrics port still answers after the gateway stopped")


@pytest.mark.parametrize("outcome", ["unknown_tool", "cancelled", "error"])
def test_a_call_that_reached_no_known_tool_is_counted_under_unknown(outcome: str) -> None:
    metrics = Metrics()
    for n in range(3):
        record = CallRecord(time=0.0, sandbox="default", session=None, tool=f"invented-{n}", args=[], outcome=outcome)
        metrics.observe(record)
    text = metrics.render().decode()
    assert "invented" not in text
    assert value(text, "mcp_gateway_tool_calls_total", tool="unknown", server="unknown", outcome=outcome) == 3


async def test_the_series_of_a_deleted_sandbox_are_removed(gateway_factory: Factory) -> None:
    gw = start_fx(gateway_factory)
    with gw.admin() as admin:
        created = admin.post("/admin/sandboxes", json={"mcp": {"fx": {}}}).json()
    async with gw.client(created["mcp_token"]) as client:
        await client.call_tool("fx__echo", {"text": "a"})
    async with gw.client() as client:
        await client.call_tool("fx__echo", {"text": "b"})
    assert value(scrape(gw), "mcp_gateway_tool_calls_total", sandbox=created["id"]) == 1
    with gw.admin() as admin:
        assert admin.delete(f"/admin/sandboxes/{created['id']}").status_code == 204
    text = scrape(gw)
    assert f'sandbox="{created["id"]}"' not in text
    assert value(text, "mcp_gateway_tool_calls_total", sandbox="default") == 1
