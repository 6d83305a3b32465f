"""``GET /admin/status``: admin-only, every sandbox's servers with state, pid, uptime, restarts, last
error and calls; ``/healthz`` stays cheap while servers start or hang."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx
import pytest
from mcp.shared.exceptions import MCPError

from tests.support import RunningGateway, fixture_entry, pid_alive
from tests.upstream_helpers import add_sandbox, healthz_ms, status

CATALOG = {"fix": fixture_entry("--name", "fix"), "broken": fixture_entry("--exit-at-start")}


@pytest.fixture
def gw(gateway_factory: Callable[..., RunningGateway], tmp_path: object) -> RunningGateway:
    workdir = tmp_path / "gw"  # type: ignore[operator]
    add_sandbox(workdir / "data", "idle-sandbox", {"fix": {}})
    return gateway_factory(["--runtime", "host", "--servers", "fix,broken"], catalog=CATALOG, workdir=workdir)


@pytest.mark.parametrize("authorization", [None, "Bearer wrong-key", "Basic abc"])
def test_status_requires_the_admin_key(gw: RunningGateway, authorization: str | None) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    response = httpx.get(gw.base_url + "/admin/status", headers=headers, timeout=10)
    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"


def test_status_does_not_accept_a_sandbox_token(gw: RunningGateway) -> None:
    response = httpx.get(gw.base_url + "/admin/status", headers={"Authorization": f"Bearer {gw.token}"})
    assert response.status_code == 403
    assert response.json()["error"] == "insufficient_scope"
    assert 'error="insufficient_scope"' in response.headers["www-authenticate"]


async def test_status_shows_every_server_of_every_sandbox(gw: RunningGateway) -> None:
    async with gw.client() as client:
        await client.list_tools()
        for _ in range(3):
            await client.call_tool("fix__echo", {"text": "x"})
        with pytest.raises(MCPError):
            await client.call_tool("fix__crash", {})
        await client.call_tool("fix__echo", {"text": "after restart"})
        await asyncio.sleep(0.2)
    document = status(gw)
    sandboxes = {s["id"]: {srv["name"]: srv for srv in s["servers"]} for s in document["sandboxes"]}
    assert set(sandboxes) == {"default", "idle-sandbox"}
    fix = sandboxes["default"]["fix"]
    assert set(fix) == {"name", "state", "pid", "uptime_s", "restarts", "last_error", "calls"}
    assert fix["state"] == "running" and pid_alive(fix["pid"])
    assert fix["uptime_s"] >= 0
    assert fix["restarts"] == 1
    assert fix["calls"] == 5
    assert "exited with code 3" in fix["last_error"]
    broken = sandboxes["default"]["broken"]
    assert broken["state"] == "failed" and broken["pid"] is None and broken["uptime_s"] is None
    assert "fatal: configured to exit" in broken["last_error"]
    # A sandbox nobody used yet: its servers exist, stopped.
    assert sandboxes["idle-sandbox"]["fix"] == {
        "name": "fix",
        "state": "stopped",
        "pid": None,
        "uptime_s": None,
        "restarts": 0,
        "last_error": None,
        "calls": 0,
    }


async def test_healthz_stays_fast_while_a_server_hangs_starting(
    gateway_factory: Callable[..., RunningGateway],
) -> None:
    catalog = {"hung": fixture_entry("--hang-on-initialize", limits={"start_timeout": 20})}
    gw = gateway_factory(["--runtime", "host", "--servers", "hung"], catalog=catalog)
    async with gw.client() as client:
        listing = asyncio.ensure_future(client.list_tools())
        await asyncio.sleep(1)
        assert not listing.done()
        assert max(healthz_ms(gw) for _ in range(5)) < 500
        hung = next(s for s in status(gw)["sandboxes"][0]["servers"] if s["name"] == "hung")
        assert hung["state"] == "starting" and pid_alive(hung["pid"])
        listing.cancel()
        await asyncio.gather(listing, return_exceptions=True)
        # The gateway answers the cancelled request (-32800) at once; let that answer arrive while the
        # client is still open (the mcp client fails if an answer lands while it is closing).
        await asyncio.sleep(2)
