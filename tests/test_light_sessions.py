"""Handshake-era sessions (gateway/downstream/handshake.py, store.py): opening, serving, ending.

The answers are the ones the ``mcp`` SDK's server gave (recorded here where their exact shape
matters: ``initialize``), on one path for every request of a session.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from typing import Any

import httpx
import orjson
import pytest

from gateway import __version__
from gateway.catalog.config import ServerSettings
from gateway.store.datadir import DataDir
from gateway.store.sandboxes import Sandbox, SandboxStore
from tests.support import RunningGateway, fixture_entry, sandbox_token, start_gateway
from tests.test_fastpath import JSON, SSE, RawSession

Factory = Callable[..., RunningGateway]
CATALOG = {"fix": fixture_entry("--name", "fix", "--prompts", "--resources")}
HAND_OVER = {"jsonrpc": "2.0", "id": "prompt", "method": "prompts/get", "params": {"name": "fix__plain"}}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> RunningGateway:
    workdir = tmp_path_factory.mktemp("light")
    data = DataDir.open(workdir / "data")
    store = SandboxStore(data.database, data.secrets_key())
    store.put(Sandbox("other", {"fix": ServerSettings("fix")}))
    store.close()
    gw = start_gateway(["--servers", "fix", "--runtime", "host"], workdir=workdir, catalog=CATALOG, data_dir=data.path)
    yield gw
    gw.stop()


INIT = {
    "jsonrpc": "2.0",
    "id": 0,
    "method": "initialize",
    "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
}


async def initialize(http: httpx.AsyncClient, gateway: RunningGateway, message: Any) -> httpx.Response:
    headers = {k: v for k, v in RawSession(http, gateway.url, gateway.token).headers().items()}
    del headers["MCP-Protocol-Version"]
    return await http.post(gateway.url, content=orjson.dumps(message), headers=headers)


SERVER_CAPABILITIES = {
    "completions": {},
    "logging": {},
    "prompts": {"listChanged": True},
    "resources": {"listChanged": True, "subscribe": True},
    "tools": {"listChanged": True},
}


@pytest.mark.parametrize(
    ("version", "negotiated"),
    [
        ("2025-03-26", "2025-03-26"),
        ("2025-06-18", "2025-06-18"),
        ("2025-11-25", "2025-11-25"),
        ("1999-01-01", "2025-11-25"),
    ],
)
async def test_initialize_is_answered_as_the_sdk_answered_it(
    gateway: RunningGateway, http: httpx.AsyncClient, version: str, negotiated: str
) -> None:
    message = {**INIT, "params": {**INIT["params"], "protocolVersion": version}}
    answer = await initialize(http, gateway, message)
    assert answer.status_code == 200
    assert answer.headers["content-type"] == JSON
    assert re.fullmatch("[0-9a-f]{32}", answer.headers["mcp-session-id"])
    assert answer.json() == {
        "jsonrpc": "2.0",
        "id": 0,
        "result": {
            "capabilities": SERVER_CAPABILITIES,
            "instructions": "Tools of several MCP servers, named <server>__<tool>.",
            "protocolVersion": negotiated,
            "serverInfo": {"name": "mcp-sandbox-gateway", "version": __version__},
        },
    }


@pytest.mark.parametrize(
    ("message", "status", "code"),
    [
        ({**INIT, "params": {"capabilities": {}}}, 200, -32602),
        ({**INIT, "params": {**INIT["params"], "capabilities": []}}, 200, -32602),
        ({**INIT, "id": None}, 400, -32600),
        ({**INIT, "jsonrpc": "1.0"}, 400, -32600),
        ([INIT], 400, -32600),
    ],
    ids=["no version", "capabilities not an object", "null id", "not JSON-RPC 2.0", "a batch"],
)
async def test_a_malformed_initialize_gets_a_json_rpc_error_and_no_session(
    gateway: RunningGateway, http: httpx.AsyncClient, message: Any, status: int, code: int
) -> None:
    answer = await initialize(http, gateway, message)
    assert answer.status_code == status
    assert answer.json()["error"]["code"] == code
    assert "mcp-session-id" not in answer.headers


async def test_a_body_that_is_not_json_is_a_parse_error(gateway: RunningGateway, http: httpx.AsyncClient) -> None:
    headers = RawSession(http, gateway.url, gateway.token).headers()
    answer = await http.post(gateway.url, content=b"{nope", headers=headers)
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == -32700


async def test_a_request_without_a_session_is_refused(gateway: RunningGateway, http: httpx.AsyncClient) -> None:
    answer = await RawSession(http, gateway.url, gateway.token).post(
        {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    )
    assert answer.status_code == 400
    assert answer.json()["error"]["message"] == "Bad Request: Missing session ID"


@pytest.mark.parametrize(
    ("message", "check"),
    [
        ({"jsonrpc": "2.0", "id": 7, "method": "tools/list"}, lambda r: "fix__echo" in {t["name"] for t in r["tools"]}),
        ({"jsonrpc": "2.0", "id": 7, "method": "tools/list", "params": {"cursor": "x"}}, lambda r: "tools" in r),
        ({"jsonrpc": "2.0", "id": "p", "method": "prompts/list", "params": {}}, lambda r: "fix__plain" in str(r)),
        ({"jsonrpc": "2.0", "id": 8, "method": "resources/list"}, lambda r: isinstance(r["resources"], list)),
        ({"jsonrpc": "2.0", "id": 9, "method": "resources/templates/list"}, lambda r: "resourceTemplates" in r),
        ({"jsonrpc": "2.0", "id": 10, "method": "ping"}, lambda r: r == {}),
        ({"jsonrpc": "2.0", "id": 11, "method": "logging/setLevel", "params": {"level": "notice"}}, lambda r: r == {}),
    ],
    ids=["tools", "tools with cursor", "prompts", "resources", "templates", "ping", "log level"],
)
async def test_session_requests_are_answered_as_json(
    gateway: RunningGateway, http: httpx.AsyncClient, message: dict[str, Any], check: Any
) -> None:
    session = await RawSession(http, gateway.url, gateway.token).open()
    answer = await session.request(message)
    assert answer.content_type == JSON
    reply = answer.reply()
    assert reply["id"] == message["id"]
    assert check(reply["result"]), reply


async def test_an_unknown_method_is_method_not_found(gateway: RunningGateway, http: httpx.AsyncClient) -> None:
    session = await RawSession(http, gateway.url, gateway.token).open()
    reply = (await session.request({"jsonrpc": "2.0", "id": 1, "method": "foo/bar"})).reply()
    assert reply["error"] == {"code": -32601, "message": "Method not found", "data": "foo/bar"}


async def test_a_log_level_set_on_a_session_holds_for_its_calls(
    gateway: RunningGateway, http: httpx.AsyncClient
) -> None:
    session = await RawSession(http, gateway.url, gateway.token).open()
    error_level = {"jsonrpc": "2.0", "id": 1, "method": "logging/setLevel", "params": {"level": "error"}}
    level = await session.request(error_level)
    assert level.content_type == JSON
    quiet = await session.call(2, "fix__log", {"level": "warning", "message": "below the level"})
    assert quiet.content_type == JSON  # no log message: nothing to stream
    loud = await session.call(3, "fix__log", {"level": "error", "message": "at the level"})
    assert [orjson.loads(m).get("method") for m in loud.messages] == ["notifications/message", None]


async def test_malformed_list_params_are_invalid_params(gateway: RunningGateway, http: httpx.AsyncClient) -> None:
    session = await RawSession(http, gateway.url, gateway.token).open()
    bad = {"jsonrpc": "2.0", "id": 3, "method": "tools/list", "params": {"cursor": 5}}
    assert (await session.request(bad)).reply()["error"] == {
        "code": -32602,
        "message": "Invalid request parameters",
        "data": "",
    }


async def test_one_session_serves_prompts_and_calls(gateway: RunningGateway, http: httpx.AsyncClient) -> None:
    session = await RawSession(http, gateway.url, gateway.token).open()
    got = await session.request(HAND_OVER)
    assert got.content_type == JSON
    assert got.reply()["result"]["messages"], got.reply()
    echoed = await session.call(2, "fix__echo", {"text": "after"})
    assert echoed.content_type == JSON
    assert echoed.reply()["result"]["structuredContent"] == {"text": "after"}


async def test_a_client_that_may_be_asked_back_gets_json_when_nothing_is_asked(
    gateway: RunningGateway, http: httpx.AsyncClient
) -> None:
    session = await RawSession(http, gateway.url, gateway.token, {"sampling": {}}).open()
    echoed = await session.call(2, "fix__echo", {"text": "x"})
    assert echoed.content_type == JSON
    assert echoed.reply()["result"]["structuredContent"] == {"text": "x"}


async def test_delete_ends_a_session(gateway: RunningGateway, http: httpx.AsyncClient) -> None:
    session = await RawSession(http, gateway.url, gateway.token).open()
    deleted = await http.delete(gateway.url, headers=session.headers())
    assert deleted.status_code == 200
    after = await session.post({"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
    assert after.status_code == 404
    assert after.json()["error"]["message"] == "Session not found"


async def test_another_sandbox_cannot_use_a_session(gateway: RunningGateway, http: httpx.AsyncClient) -> None:
    session = await RawSession(http, gateway.url, gateway.token).open()
    other = sandbox_token(gateway, "other")
    foreign = {**session.headers(), "Authorization": f"Bearer {other}"}
    assert (await session.post({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, token=other)).status_code == 404
    assert (await http.get(gateway.url, headers={**foreign, "Accept": "text/event-stream"})).status_code == 404
    assert (await http.delete(gateway.url, headers=foreign)).status_code == 404
    assert (await session.post({"jsonrpc": "2.0", "id": 2, "method": "ping"})).status_code == 200  # still its own


async def read_events(response: httpx.Response, queue: asyncio.Queue[dict[str, Any] | None]) -> None:
    buffer = b""
    async for chunk in response.aiter_bytes():
        buffer += chunk
        *lines, buffer = buffer.replace(b"\r\n", b"\n").split(b"\n")
        for line in lines:
            if line.startswith(b"data: "):
                await queue.put(orjson.loads(line[6:]))
    await queue.put(None)


async def test_the_event_stream_carries_list_changes_and_is_one_per_session(
    gateway: RunningGateway, http: httpx.AsyncClient
) -> None:
    session = await RawSession(http, gateway.url, gateway.token).open()
    events: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
    headers = {**session.headers(), "Accept": "text/event-stream"}
    changed = {"jsonrpc": "2.0", "method": "notifications/tools/list_changed"}
    async with http.stream("GET", gateway.url, headers=headers) as stream:
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith(SSE)
        reader = asyncio.ensure_future(read_events(stream, events))
        second = await http.get(gateway.url, headers=headers)
        assert second.status_code == 409  # one stream per session, as the SDK allows
        assert "error" not in (await session.call(1, "fix__change_tools", {})).reply()
        assert await asyncio.wait_for(events.get(), 30) == changed
        reader.cancel()


async def test_a_session_expires_when_idle(gateway_factory: Factory, http: httpx.AsyncClient) -> None:
    # --idle-timeout 1: sessions expire after 2 s with no request in flight.
    gw = gateway_factory(["--servers", "fix", "--runtime", "host", "--idle-timeout", "1"], catalog=CATALOG)
    session = await RawSession(http, gw.url, gw.token).open()
    assert session.session_id
    ping = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
    for _ in range(3):  # requests keep it alive
        await asyncio.sleep(1.0)
        assert (await session.post(ping)).status_code == 200
    deadline = time.monotonic() + 30
    while (status := (await session.post(ping)).status_code) == 200 and time.monotonic() < deadline:
        await asyncio.sleep(3.0)
    assert status == 404


async def test_the_session_limit_refuses_new_sessions(gateway_factory: Factory, http: httpx.AsyncClient) -> None:
    gw = gateway_factory(["--servers", "fix", "--runtime", "host", "--max-sessions", "2"], catalog=CATALOG)
    await RawSession(http, gw.url, gw.token).open()
    await RawSession(http, gw.url, gw.token).open()
    refused = await initialize(http, gw, INIT)
    assert refused.status_code == 503
    assert refused.headers["retry-after"]
    assert refused.json()["error"]["message"] == "Too many open sessions"


async def test_opening_a_session_starts_the_servers_never_seen_before(
    gateway_factory: Factory, http: httpx.AsyncClient
) -> None:
    gw = gateway_factory(["--servers", "fix", "--runtime", "host"], catalog=CATALOG)
    with gw.admin() as admin:
        assert server_state(admin) == "stopped"
        assert (await initialize(http, gw, INIT)).status_code == 200  # no tools/list
        deadline = time.monotonic() + 60
        while server_state(admin) != "running" and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert server_state(admin) == "running"


def server_state(admin: httpx.Client) -> str:
    sandboxes = admin.get("/admin/status").json()["sandboxes"]
    servers = [s for sandbox in sandboxes if sandbox["id"] == "default" for s in sandbox["servers"]]
    return servers[0]["state"] if servers else "stopped"
