"""Bad input at the HTTP boundary: each case gets its exact status and error, and the gateway stays healthy."""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.catalog.config import ServerSettings
from gateway.store.datadir import DataDir
from gateway.store.sandboxes import Sandbox, SandboxStore
from tests.support import RunningGateway, fixture_entry, sandbox_token, start_gateway

CATALOG = {"fix": fixture_entry("--name", "fix")}
INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
}
ACCEPT = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> RunningGateway:
    workdir = tmp_path_factory.mktemp("security")
    # A second sandbox, written to the store before start, to check that sessions stay with their sandbox.
    data = DataDir.open(workdir / "data")
    store = SandboxStore(data.database, data.secrets_key())
    store.put(Sandbox("other", {"fix": ServerSettings("fix")}))
    store.close()
    gw = start_gateway(
        ["--servers", "fix", "--allow-origin", "https://app.example.com", "--max-concurrent-requests", "4"],
        workdir=workdir,
        catalog=CATALOG,
        data_dir=data.path,
    )
    yield gw
    gw.stop()


def token_for(gateway: RunningGateway, sandbox: str) -> str:
    return sandbox_token(gateway, sandbox)


def open_session(gateway: RunningGateway, token: str | None = None) -> str:
    headers = {**ACCEPT, "Authorization": f"Bearer {token or gateway.token}"}
    response = httpx.post(gateway.url, json=INIT, headers=headers, timeout=30)
    assert response.status_code == 200, response.text
    return response.headers["mcp-session-id"]


@dataclass
class Case:
    name: str
    status: int
    body: Any = field(default_factory=lambda: INIT)
    headers: dict[str, str] = field(default_factory=dict)
    raw: bytes | None = None
    method: str = "POST"
    path: str = "/mcp"
    auth: bool = True
    session: str | None = None  # "own", "other-sandbox", "unknown"
    error_code: int | None = None
    error_text: str | None = None


CASES = [
    Case("foreign origin", 403, headers={"Origin": "https://evil.example.com"}, error_text="Origin"),
    Case("null origin", 403, headers={"Origin": "null"}),
    Case("loopback origin", 200, headers={"Origin": "http://localhost:5173"}),
    Case("listed origin", 200, headers={"Origin": "https://app.example.com"}),
    Case("foreign host (DNS rebinding)", 421, headers={"Host": "evil.example.com"}),
    Case("loopback host name", 200, headers={"Host": "localhost"}),
    Case(
        "body over 4 MiB",
        413,
        raw=b'{"jsonrpc":"2.0","id":1,"method":"ping","params":{"x":"' + b"a" * (5 << 20) + b'"}}',
    ),
    Case("not JSON", 400, raw=b"{not json", error_code=-32700),
    Case("truncated JSON", 400, raw=b'{"jsonrpc":"2.0","id":1,"meth', error_code=-32700),
    Case("JSON-RPC batch", 400, body=[INIT, INIT]),
    Case("unknown session", 404, body={"jsonrpc": "2.0", "id": 2, "method": "tools/list"}, session="unknown"),
    Case(
        "session of another sandbox",
        404,
        body={"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
        session="other-sandbox",
    ),
    Case(
        "unsupported protocol version header",
        400,
        body={"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
        headers={"MCP-Protocol-Version": "1999-01-01"},
        session="own",
    ),
    Case("no token", 401, auth=False),
    Case("token in the query string only", 401, auth=False, path="/mcp?access_token=anything"),
    Case("basic auth instead of bearer", 401, auth=False, headers={"Authorization": "Basic dXNlcjpwYXNz"}),
    Case("wrong accept header", 406, headers={"Accept": "text/plain"}),
    Case("unknown well-known document", 404, method="GET", path="/.well-known/oauth-authorization-server", auth=False),
    Case("unknown route", 404, method="GET", path="/nope", auth=False),
    Case("PUT on /mcp", 405, method="PUT"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_gets_its_exact_status(gateway: RunningGateway, case: Case) -> None:
    headers = dict(ACCEPT)
    if case.auth:
        token = gateway.token
        headers["Authorization"] = f"Bearer {token}"
    if case.session == "own":
        headers["mcp-session-id"] = open_session(gateway)
    elif case.session == "unknown":
        headers["mcp-session-id"] = "0" * 32
    elif case.session == "other-sandbox":
        headers["mcp-session-id"] = open_session(gateway, token_for(gateway, "other"))
    headers.update(case.headers)
    content = case.raw if case.raw is not None else httpx._content.json_dumps(case.body).encode()  # type: ignore[attr-defined]
    response = httpx.request(case.method, gateway.base_url + case.path, content=content, headers=headers, timeout=60)
    assert response.status_code == case.status, response.text[:300]
    if case.error_code is not None:
        assert response.json()["error"]["code"] == case.error_code
    if case.error_text is not None:
        assert case.error_text in response.text
    assert httpx.get(gateway.base_url + "/healthz").status_code == 200


def test_session_ids_are_long_and_random(gateway: RunningGateway) -> None:
    ids = {open_session(gateway) for _ in range(5)}
    assert len(ids) == 5
    assert all(len(i) >= 32 for i in ids)


def test_too_many_concurrent_requests_get_429_with_retry_after(gateway: RunningGateway) -> None:
    async def run() -> list[httpx.Response]:
        headers = {**ACCEPT, "Authorization": f"Bearer {gateway.token}"}
        headers["mcp-session-id"] = open_session(gateway)
        headers["mcp-protocol-version"] = "2025-11-25"
        call = {
            "jsonrpc": "2.0",
            "id": 9,
            "method": "tools/call",
            "params": {"name": "fix__sleep", "arguments": {"seconds": 2}},
        }
        async with httpx.AsyncClient(timeout=60) as http:
            await http.post(
                gateway.url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=headers
            )
            return await asyncio.gather(
                *(http.post(gateway.url, json={**call, "id": i}, headers=headers) for i in range(8))
            )

    responses = asyncio.run(run())
    statuses = sorted(r.status_code for r in responses)
    assert statuses.count(200) == 4
    assert statuses.count(429) == 4
    limited = next(r for r in responses if r.status_code == 429)
    assert limited.headers["retry-after"] == "1"


def test_random_and_truncated_input_never_gets_a_5xx(gateway: RunningGateway) -> None:
    rng = random.Random(1234)
    seeds = [
        INIT,
        {
            "jsonrpc": "2.0",
            "id": 3,
            "method": "tools/call",
            "params": {"name": "fix__echo", "arguments": {"text": "x"}},
        },
        {"jsonrpc": "2.0", "id": 4, "method": "resources/read", "params": {"uri": "x://y"}},
        {"id": "sandbox", "mcp": {"fix": {}}},
    ]
    import json

    bodies: list[bytes] = []
    for seed in seeds:
        text = json.dumps(seed).encode()
        for _ in range(40):
            cut = text[: rng.randrange(len(text))]
            noise = bytes(rng.randrange(256) for _ in range(rng.randrange(20)))
            bodies += [cut, cut + noise, bytes(b ^ 0x20 if rng.random() < 0.05 else b for b in text)]
    bodies += [b"", b"null", b"[]", b"{}", b"1", b'"x"', b'{"jsonrpc":"2.0"}', b'{"jsonrpc":"2.0","id":{},"method":1}']
    headers = {**ACCEPT, "Authorization": f"Bearer {gateway.token}"}
    admin = {**ACCEPT, "Authorization": f"Bearer {gateway.admin_key}"}
    deadline = time.monotonic() + 60
    with httpx.Client(timeout=30) as http:
        for body in bodies:
            if time.monotonic() > deadline:
                break
            for url, hdrs in ((gateway.url, headers), (gateway.base_url + "/admin/sandboxes", admin)):
                response = http.post(url, content=body, headers=hdrs)
                assert response.status_code < 500, (url, body[:80], response.status_code, response.text[:200])
    assert httpx.get(gateway.base_url + "/healthz").status_code == 200


def test_gateway_still_serves_calls_after_the_bad_input(gateway: RunningGateway, tmp_path: Path) -> None:
    async def call() -> str:
        async with gateway.client() as client:
            result = await client.call_tool("fix__echo", {"text": "alive"})
        return result.content[0].text

    assert asyncio.run(call()) == "alive"
