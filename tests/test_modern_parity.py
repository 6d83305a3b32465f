"""The gateway refuses a malformed 2026-07-28 request exactly as an `mcp` SDK server does.

Every case is sent to both: the SDK's own streamable-HTTP server (``tests/fixtures/sdk_server.py
--http``) and the gateway; the HTTP status and the JSON-RPC error code must be the same. Where the
SDK answers with an empty body (406, 405), the gateway adds a JSON-RPC error saying why; the status
is the same.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support import REPO, RunningGateway, fixture_entry, free_port, start_gateway

MODERN = "2026-07-28"


@pytest.fixture(scope="module")
def sdk_url() -> Iterator[str]:
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, str(REPO / "tests" / "fixtures" / "sdk_server.py"), "--http", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        server.terminate()
        server.wait(15)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    gw = start_gateway(
        ["--servers", "fix", "--runtime", "host"],
        workdir=tmp_path_factory.mktemp("modern-parity"),
        catalog={"fix": fixture_entry("--name", "fix")},
    )
    yield gw
    gw.stop()


def envelope(version: str = MODERN) -> dict[str, Any]:
    return {
        "io.modelcontextprotocol/protocolVersion": version,
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "parity", "version": "1"},
    }


def request(method: str, params: dict[str, Any] | None = None) -> bytes:
    body: dict[str, Any] = {"jsonrpc": "2.0", "id": 1, "method": method}
    body["params"] = {"_meta": envelope()} if params is None else params
    return json.dumps(body).encode()


def headers(method: str, **extra: str) -> dict[str, str]:
    return {
        "Accept": "application/json, text/event-stream",
        "Content-Type": "application/json",
        "MCP-Protocol-Version": MODERN,
        "Mcp-Method": method,
        **extra,
    }


CASES: dict[str, tuple[str, bytes, dict[str, str]]] = {
    "parse error": ("POST", b"{nope", headers("tools/list")),
    "batch": ("POST", b"[" + request("tools/list") + b"]", headers("tools/list")),
    "wrong jsonrpc": ("POST", request("tools/list").replace(b'"2.0"', b'"1.0"'), headers("tools/list")),
    "no envelope": ("POST", request("tools/list", {}), headers("tools/list")),
    "method header mismatch": ("POST", request("tools/list"), headers("prompts/list")),
    "missing method header": ("POST", request("tools/list"), {**headers("tools/list"), "Mcp-Method": ""}),
    "name header mismatch": (
        "POST",
        request("tools/call", {"name": "echo", "arguments": {"text": "x"}, "_meta": envelope()}),
        headers("tools/call", **{"Mcp-Name": "other"}),
    ),
    "version header mismatch": (
        "POST",
        request("tools/list", {"_meta": envelope("2099-01-01")}),
        headers("tools/list"),
    ),
    "unsupported version": (
        "POST",
        request("tools/list", {"_meta": envelope("2099-01-01")}),
        headers("tools/list", **{"MCP-Protocol-Version": "2099-01-01"}),
    ),
    "initialize": ("POST", request("initialize"), headers("initialize")),
    "ping": ("POST", request("ping"), headers("ping")),
    "unknown method": ("POST", request("no/such"), headers("no/such")),
    "malformed params": (
        "POST",
        request("prompts/get", {"name": 5, "_meta": envelope()}),
        headers("prompts/get", **{"Mcp-Name": "5"}),
    ),
    "notification": ("POST", b'{"jsonrpc": "2.0", "method": "notifications/x"}', headers("notifications/x")),
    "json only accept": ("POST", request("tools/list"), {**headers("tools/list"), "Accept": "application/json"}),
    "get": ("GET", b"", headers("tools/list")),
}


def outcome(response: httpx.Response) -> tuple[int, int | None]:
    code = None
    if response.headers.get("content-type", "").startswith("application/json") and response.content:
        code = response.json().get("error", {}).get("code")
    return response.status_code, code


@pytest.mark.parametrize("case", list(CASES))
async def test_a_malformed_request_gets_the_status_and_code_the_sdk_server_gives(
    case: str, sdk_url: str, gateway: RunningGateway, http: httpx.AsyncClient
) -> None:
    verb, content, sent = CASES[case]
    direct = await http.request(verb, sdk_url, content=content or None, headers=sent)
    through = await http.request(
        verb, gateway.url, content=content or None, headers={**sent, "Authorization": f"Bearer {gateway.token}"}
    )
    expected, got = outcome(direct), outcome(through)
    if expected[1] is None and expected[0] in (405, 406):
        got = (got[0], None)
    assert got == expected, (direct.text, through.text)
