"""Shared pieces of the sandbox tests: a catalog with secret-holding fixture servers, small waits."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from tests.support import FIXTURE_SERVER, RunningGateway, fixture_entry, process_tree

CANARY_SECRET = [{"name": "canary.token", "env": "CANARY_TOKEN"}]

CATALOG: dict[str, Any] = {
    # A fixture server that holds one secret, read back by its secret_echo/env tools.
    "canary": fixture_entry("--name", "canary", "--prompts", secrets=CANARY_SECRET),
    # A second server with no secrets, to narrow tokens to.
    "plain": fixture_entry("--name", "plain"),
    # Writes its secret to stderr at start, then becomes the fixture server.
    "noisy": {
        "command": [
            "python",
            "-c",
            "import os, sys; print('starting with token', os.environ['NOISY_TOKEN'], file=sys.stderr, flush=True);"
            " os.execv(sys.executable, [sys.executable, sys.argv[1], '--name', 'noisy'])",
            str(FIXTURE_SERVER),
        ],
        "secrets": [{"name": "noisy.token", "env": "NOISY_TOKEN"}],
    },
    # Fails at start after printing its secret to stderr: the gateway logs the stderr tail.
    "broken": {
        "command": ["sh", "-c", 'echo "fatal: bad token $BROKEN_TOKEN" >&2; exit 3'],
        "secrets": [{"name": "broken.token", "env": "BROKEN_TOKEN"}],
    },
}


def create(gateway: RunningGateway, mcp: dict[str, Any], **extra: Any) -> dict[str, Any]:
    with gateway.admin() as admin:
        response = admin.post("/admin/sandboxes", json={"mcp": mcp, **extra})
    assert response.status_code == 201, response.text
    return response.json()


def text_of(result: Any) -> str:
    return "".join(getattr(block, "text", "") for block in result.content)


def dump(result: Any) -> str:
    """Everything a tool result holds, as one string to search."""
    return json.dumps(result.model_dump(mode="json", by_alias=True))


def wait_until(condition: Callable[[], bool], timeout: float = 20.0, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return condition()


def mcp_status(gateway: RunningGateway, token: str) -> int:
    """The HTTP status of an initialize request made with ``token``."""
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
    }
    headers = {
        "Authorization": f"Bearer {token}",
        "Accept": "application/json, text/event-stream",
        "Content-Type": "application/json",
    }
    return httpx.post(gateway.url, json=body, headers=headers, timeout=30).status_code


def child_environments(gateway: RunningGateway) -> dict[int, bytes]:
    """pid -> raw /proc environ of every process the gateway started."""
    found: dict[int, bytes] = {}
    for pid in process_tree(gateway.process.pid):
        with contextlib.suppress(OSError):
            found[pid] = Path(f"/proc/{pid}/environ").read_bytes()
    return found


def all_logs(gateway: RunningGateway) -> str:
    """The gateway's own output and every server log file of its data dir."""
    parts = [gateway.output()]
    logs = gateway.data_dir / "logs"
    if logs.is_dir():
        parts += [p.read_text(errors="replace") for p in sorted(logs.rglob("*")) if p.is_file()]
    return "\n".join(parts)
