"""Servers get the umask the gateway was started with, not the gateway's own private 077."""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.upstream.runtimes import probe_bwrap
from tests.support import RunningGateway, fixture_entry

BWRAP = asyncio.run(probe_bwrap())


@pytest.fixture
def started_with_umask_022() -> Iterator[None]:
    """Gateways started in the test inherit umask 022 (whatever the test runner's own is)."""
    before = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(before)


def path_entry() -> dict[str, Any]:
    properties = {"dir": {"type": "string", "format": "path", "x-mode": "rw"}}
    return fixture_entry("--name", "fix", config=[{"name": "fix", "properties": properties}])


async def write(gateway: RunningGateway, token: str | None, path: Path) -> None:
    async with gateway.client(token) as client:
        result = await client.call_tool("fix__write_file", {"path": str(path), "content": "x"})
    assert not result.is_error, result.content


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_host_server_writes_files_with_the_starting_umask(
    gateway_factory: Callable[..., RunningGateway], tmp_path: Path, started_with_umask_022: None
) -> None:
    gateway = gateway_factory(
        ["--servers", "fix", "--runtime", "host"], catalog={"fix": fixture_entry("--name", "fix")}
    )
    target = tmp_path / "written.txt"
    await write(gateway, None, target)
    assert mode_of(target) == 0o644


@pytest.mark.skipif(not BWRAP.ok, reason=BWRAP.detail)
async def test_bwrap_server_writes_files_into_a_rw_path_with_the_starting_umask(
    gateway_factory: Callable[..., RunningGateway], tmp_path: Path, started_with_umask_022: None
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    gateway = gateway_factory(["--runtime", "bwrap"], catalog={"fix": path_entry()})
    with gateway.admin() as admin:
        response = admin.post("/admin/sandboxes", json={"mcp": {"fix": {"dir": str(shared)}}})
    assert response.status_code == 201, response.text
    await write(gateway, response.json()["mcp_token"], shared / "out.txt")
    assert mode_of(shared / "out.txt") == 0o644


async def test_gateway_own_files_stay_private(
    gateway_factory: Callable[..., RunningGateway], started_with_umask_022: None
) -> None:
    gateway = gateway_factory(
        ["--servers", "fix", "--runtime", "host"], catalog={"fix": fixture_entry("--name", "fix")}
    )
    async with gateway.client() as client:
        await client.list_tools()
    logs = [p for p in (gateway.data_dir / "logs").rglob("*") if p.is_file()]
    assert logs and all(mode_of(p) & 0o077 == 0 for p in logs)
