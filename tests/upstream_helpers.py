"""Helpers shared by the upstream lifecycle tests (tests/test_upstream_*.py)."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from gateway.catalog.config import ServerSettings
from gateway.store.datadir import DataDir
from gateway.store.sandboxes import Sandbox, SandboxStore
from tests.support import REPO, RunningGateway, pid_alive, process_tree


def status(gw: RunningGateway) -> dict[str, Any]:
    with gw.admin() as admin:
        response = admin.get("/admin/status")
    response.raise_for_status()
    return response.json()


def server_status(gw: RunningGateway, name: str, sandbox: str = "default") -> dict[str, Any]:
    for entry in status(gw)["sandboxes"]:
        if entry["id"] == sandbox:
            for server in entry["servers"]:
                if server["name"] == name:
                    return server
    raise AssertionError(f"no status for {sandbox}/{name}")


def server_log(gw: RunningGateway, name: str, sandbox: str = "default") -> str:
    path = gw.data_dir / "logs" / sandbox / f"{name}.log"
    return path.read_text(errors="replace") if path.exists() else ""


async def eventually(check: Callable[[], bool], timeout: float = 15.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def live_descendants(pid: int) -> set[int]:
    """Descendants of ``pid`` that are running (zombies excluded)."""
    return {p for p in process_tree(pid) if pid_alive(p)}


def zombies_under(pid: int) -> set[int]:
    return {p for p in process_tree(pid) if not pid_alive(p) and Path(f"/proc/{p}").exists()}


def add_sandbox(data_dir: Path, sandbox_id: str, servers: dict[str, dict[str, Any]]) -> None:
    """Write a sandbox into a data dir before the gateway starts (``{server: config}``)."""
    data = DataDir.open(data_dir)
    store = SandboxStore(data.database, data.secrets_key())
    try:
        settings = {name: ServerSettings(name=name, config=config) for name, config in servers.items()}
        store.put(Sandbox(sandbox_id, settings))
    finally:
        store.close()


def mint_token(gw: RunningGateway, sandbox: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "gateway", "token", "--data-dir", str(gw.data_dir), "--sandbox", sandbox],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return out.stdout.strip()


def healthz_ms(gw: RunningGateway) -> float:
    started = time.perf_counter()
    assert httpx.get(gw.base_url + "/healthz", timeout=10).status_code == 200
    return (time.perf_counter() - started) * 1000


@contextlib.asynccontextmanager
async def unlimited_client(gw: RunningGateway, mode: str = "legacy") -> AsyncIterator[Client]:
    """Like ``gw.client()``, without the SDK client's own 1 MiB limit on one event."""
    headers = {"Authorization": f"Bearer {gw.token}"}
    async with httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(120)) as http:
        transport = streamable_http_client(gw.url, http_client=http, max_sse_event_size=None)
        async with Client(transport, mode=mode) as client:
            yield client
