"""The audit log: one JSON line per tool call, names never values, rotation, and GET /admin/audit."""

from __future__ import annotations

import json
import stat
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from mcp.shared.exceptions import MCPError

from gateway.core.gateway import CallRecord
from gateway.features.audit import AuditLog, format_time
from tests.support import RunningGateway, fixture_entry

Factory = Callable[..., RunningGateway]
SECRET = "sk-live-AUDIT-SECRET-987654321"
ARG_VALUE = "ARGUMENT-VALUE-never-in-the-audit"
FIELDS = {"time", "sandbox", "session", "tool", "duration_ms", "outcome", "error", "args", "result_bytes"}


def start_fx(gateway_factory: Factory, tmp_path: Path) -> RunningGateway:
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"fx": {"fx.api_key": SECRET}}))
    entry = fixture_entry(secrets=[{"name": "fx.api_key", "env": "FX_API_KEY"}])
    return gateway_factory(["--config", f"@{config}", "--runtime", "host"], catalog={"fx": entry})


def audit_lines(gw: RunningGateway) -> list[dict]:
    path = gw.data_dir / "audit.log"
    return [json.loads(line) for line in path.read_text().splitlines()]


async def make_calls(gw: RunningGateway, token: str | None = None) -> None:
    async with gw.client(token) as client:
        await client.call_tool("fx__echo", {"text": ARG_VALUE})
        await client.call_tool("fx__add", {"a": 1234567, "b": 7654321})
        await client.call_tool("fx__fail", {"message": ARG_VALUE})
        await client.call_tool("fx__secret_echo", {"name": "FX_API_KEY"})
        with pytest.raises(MCPError):
            await client.call_tool("fx__missing", {"text": ARG_VALUE})


async def test_each_call_writes_one_line_of_names_and_sizes(gateway_factory: Factory, tmp_path: Path) -> None:
    gw = start_fx(gateway_factory, tmp_path)
    await make_calls(gw)
    lines = audit_lines(gw)
    assert [line["tool"] for line in lines] == ["fx__echo", "fx__add", "fx__fail", "fx__secret_echo", "fx__missing"]
    assert [line["outcome"] for line in lines] == ["ok", "ok", "tool_error", "ok", "unknown_tool"]
    for line in lines:
        assert FIELDS <= set(line)
        assert line["sandbox"] == "default"
        assert line["session"]
        assert line["duration_ms"] >= 0
    assert lines[0]["args"] == ["text"]
    assert lines[1]["args"] == ["a", "b"]
    assert lines[0]["result_bytes"] > len(ARG_VALUE)
    assert lines[0]["server"] == "fx"
    assert lines[4]["error"] == "UnknownTool"
    assert lines[0]["time"].endswith("Z")


async def test_the_audit_log_holds_no_argument_or_secret_value(gateway_factory: Factory, tmp_path: Path) -> None:
    gw = start_fx(gateway_factory, tmp_path)
    await make_calls(gw)
    text = (gw.data_dir / "audit.log").read_text()
    for forbidden in (ARG_VALUE, SECRET, "1234567", "7654321", gw.token, gw.admin_key):
        assert forbidden not in text


async def test_the_audit_log_is_private_to_its_owner(gateway_factory: Factory, tmp_path: Path) -> None:
    gw = start_fx(gateway_factory, tmp_path)
    async with gw.client() as client:
        await client.call_tool("fx__echo", {"text": "x"})
    mode = stat.S_IMODE((gw.data_dir / "audit.log").stat().st_mode)
    assert mode == 0o600


async def test_the_audit_route_returns_the_newest_entries_oldest_first(
    gateway_factory: Factory, tmp_path: Path
) -> None:
    gw = start_fx(gateway_factory, tmp_path)
    await make_calls(gw)
    with gw.admin() as admin:
        everything = admin.get("/admin/audit").json()["entries"]
        assert [e["tool"] for e in everything][:2] == ["fx__echo", "fx__add"]
        assert len(everything) == 5
        assert all(FIELDS <= set(e) for e in everything)
        last_two = admin.get("/admin/audit", params={"limit": 2}).json()["entries"]
        assert [e["tool"] for e in last_two] == ["fx__secret_echo", "fx__missing"]


async def test_the_audit_route_filters_by_sandbox_and_since(gateway_factory: Factory, tmp_path: Path) -> None:
    gw = start_fx(gateway_factory, tmp_path)
    await make_calls(gw)
    with gw.admin() as admin:
        entries = admin.get("/admin/audit").json()["entries"]
        assert admin.get("/admin/audit", params={"sandbox": "default"}).json()["entries"] == entries
        assert admin.get("/admin/audit", params={"sandbox": "another"}).json()["entries"] == []
        since = entries[2]["time"]
        later = admin.get("/admin/audit", params={"since": since}).json()["entries"]
        assert [e["time"] > since for e in later] == [True] * len(later)
        assert later == [e for e in entries if e["time"] > since]
        epoch = admin.get("/admin/audit", params={"since": str(time.time() + 60)}).json()["entries"]
        assert epoch == []
        assert admin.get("/admin/audit", params={"since": "0"}).json()["entries"] == entries


async def test_the_audit_route_separates_sandboxes(gateway_factory: Factory, tmp_path: Path) -> None:
    gw = start_fx(gateway_factory, tmp_path)
    with gw.admin() as admin:
        created = admin.post("/admin/sandboxes", json={"id": "team-b", "mcp": {"fx": {"fx.api_key": "other"}}})
        if created.status_code == 404:
            pytest.skip("this gateway has no sandbox admin API")
        assert created.status_code == 201, created.text
        async with gw.client(created.json()["mcp_token"]) as client:
            await client.call_tool("fx__echo", {"text": "from b"})
        async with gw.client() as client:
            await client.call_tool("fx__add", {"a": 1, "b": 2})
        team_b = admin.get("/admin/audit", params={"sandbox": "team-b"}).json()["entries"]
        default = admin.get("/admin/audit", params={"sandbox": "default"}).json()["entries"]
    assert [(e["sandbox"], e["tool"]) for e in team_b] == [("team-b", "fx__echo")]
    assert [(e["sandbox"], e["tool"]) for e in default] == [("default", "fx__add")]


def test_the_audit_route_refuses_bad_parameters(gateway_factory: Factory, tmp_path: Path) -> None:
    gw = start_fx(gateway_factory, tmp_path)
    with gw.admin() as admin:
        for query in ("limit=0", "limit=many", "limit=100001", "since=yesterday", "since=2025-13-45"):
            response = admin.get(f"/admin/audit?{query}")
            assert response.status_code == 400, query
            body = response.json()
            assert body["error"] == "bad_request"
            assert body["message"] and "\n" not in body["message"]


def test_the_audit_route_needs_the_admin_key(gateway_factory: Factory, tmp_path: Path) -> None:
    gw = start_fx(gateway_factory, tmp_path)
    assert httpx.get(gw.base_url + "/admin/audit").status_code == 401
    wrong = httpx.get(gw.base_url + "/admin/audit", headers={"Authorization": "Bearer not-the-admin-key"})
    assert wrong.status_code == 401
    sandbox_token = httpx.get(gw.base_url + "/admin/audit", headers={"Authorization": f"Bearer {gw.token}"})
    assert sandbox_token.status_code == 403


# -- the log file itself (in process) ---------------------------------------------------------------


def record(i: int, sandbox: str = "default", at: float | None = None) -> CallRecord:
    return CallRecord(
        time=at if at is not None else 1_700_000_000 + i,
        sandbox=sandbox,
        session="s1",
        tool=f"fx__tool_{i:04d}",
        args=["a", "b"],
        server="fx",
        duration_ms=1.5,
        result_bytes=i,
    )


def test_rotation_bounds_the_files_and_reading_crosses_them(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.log", max_bytes=4096, backups=3)
    for i in range(200):
        log.observe(record(i, sandbox="a" if i % 2 else "b"))
    log.close()
    files = log.files()
    assert [p.name for p in files] == ["audit.log", "audit.log.1", "audit.log.2", "audit.log.3"]
    assert all(p.stat().st_size <= 4096 for p in files)
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in files)

    kept = [json.loads(line) for p in reversed(files) for line in p.read_text().splitlines()]
    assert [e["result_bytes"] for e in kept] == list(range(200 - len(kept), 200))
    assert log.read(limit=10_000) == kept
    assert [e["result_bytes"] for e in log.read(limit=3)] == [197, 198, 199]
    assert [e["result_bytes"] for e in log.read(sandbox="b", limit=2)] == [196, 198]
    since = 1_700_000_000 + kept[5]["result_bytes"]
    assert log.read(since=since, limit=10_000) == kept[6:]


def test_a_torn_or_damaged_line_is_skipped(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.log")
    log.observe(record(1))
    with open(tmp_path / "audit.log", "a") as handle:
        handle.write("not json\n")
    log.observe(record(2))
    with open(tmp_path / "audit.log", "a") as handle:
        handle.write('{"time": "2030-01-01T00:00:00.0')  # a write in progress
    assert [e["result_bytes"] for e in log.read()] == [1, 2]
    log.close()


def test_times_are_utc_iso_with_milliseconds() -> None:
    assert format_time(0) == "1970-01-01T00:00:00.000Z"
    assert format_time(1_700_000_000.1234) == "2023-11-14T22:13:20.123Z"
