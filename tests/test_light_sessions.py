"""Light sessions (gateway/downstream/sessions.py, light.py): the SDK's answers without the SDK's session.

A session opens light; the light path answers ``initialize``, notifications, ``ping`` and the four
lists itself. Anything else hands the session to the SDK under the same id (its ``initialize``
replayed), so each light answer is compared here with the SDK's answer to the same request on a
session that was handed over first.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import orjson
import pytest

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


@pytest.fixture(scope="module")
def sdk_gateway(tmp_path_factory: pytest.TempPathFactory) -> RunningGateway:
    """The same gateway with light sessions off: every session is the SDK's from its initialize."""
    gw = start_gateway(
        ["--servers", "fix", "--runtime", "host"],
        workdir=tmp_path_factory.mktemp("sdk"),
        catalog=CATALOG,
        env={"MCP_GATEWAY_LIGHT_SESSIONS": "0"},
    )
    yield gw
    gw.stop()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=60) as client:
        yield client


async def handed_over(gateway: RunningGateway, http: httpx.AsyncClient) -> RawSession:
    """A session that the SDK serves: prompts/get is not the light path's."""
    session = await RawSession(http, gateway.url, gateway.token).open()
    answer = await session.request(HAND_OVER)
    assert answer.content_type == SSE and answer.reply()["result"]["messages"]
    return session


INIT = {
    "jsonrpc": "2.0",
    "id": 0,
    "method": "initialize",
    "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
}


async def initialize(http: httpx.AsyncClient, gateway: RunningGateway, message: dict[str, Any]) -> httpx.Response:
    headers = {k: v for k, v in RawSession(http, gateway.url, gateway.token).headers().items()}
    del headers["MCP-Protocol-Version"]
    return await http.post(gateway.url, content=orjson.dumps(message), headers=headers)


def sse_reply(response: httpx.Response) -> dict[str, Any]:
    data = [line[6:] for line in response.content.splitlines() if line.startswith(b"data: ") and line[6:].strip()]
    return orjson.loads(data[-1])


@pytest.mark.parametrize("version", ["2025-06-18", "2025-11-25", "1999-01-01"])
async def test_initialize_is_answered_as_the_sdk_answers_it(
    gateway: RunningGateway, sdk_gateway: RunningGateway, http: httpx.AsyncClient, version: str
) -> None:
    message = {**INIT, "params": {**INIT["params"], "protocolVersion": version}}
    light = await initialize(http, gateway, message)
    sdk = await initialize(http, sdk_gateway, message)
    assert light.status_code == sdk.status_code == 200
    assert light.headers["content-type"] == JSON
    assert len(light.headers["mcp-session-id"]) == len(sdk.headers["mcp-session-id"]) == 32
    assert light.json() == sse_reply(sdk)
    assert light.json()["result"]["serverInfo"]["name"] == "mcp-sandbox-gateway"


@pytest.mark.parametrize(
    "message",
    [
        {**INIT, "params": {"capabilities": {}}},
        {**INIT, "params": {**INIT["params"], "capabilities": []}},
        {**INIT, "id": None},
        {**INIT, "jsonrpc": "1.0"},
    ],
    ids=["no version", "capabilities not an object", "null id", "not JSON-RPC 2.0"],
)
async def test_a_malformed_initialize_gets_the_sdks_error(
    gateway: RunningGateway, sdk_gateway: RunningGateway, http: httpx.AsyncClient, message: dict[str, Any]
) -> None:
    light = await initialize(http, gateway, message)
    sdk = await initialize(http, sdk_gateway, message)
    assert light.status_code == sdk.status_code
    assert light.content == sdk.content


@pytest.mark.parametrize(
    "message",
    [
        {"jsonrpc": "2.0", "id": 7, "method": "tools/list"},
        {"jsonrpc": "2.0", "id": 7, "method": "tools/list", "params": {"cursor": "ignored"}},
        {"jsonrpc": "2.0", "id": "p", "method": "prompts/list", "params": {}},
        {"jsonrpc": "2.0", "id": 8, "method": "resources/list"},
        {"jsonrpc": "2.0", "id": 9, "method": "resources/templates/list"},
        {"jsonrpc": "2.0", "id": 10, "method": "ping"},
        {"jsonrpc": "2.0", "id": 11, "method": "logging/setLevel", "params": {"level": "notice"}},
    ],
    ids=["tools", "tools with cursor", "prompts", "resources", "templates", "ping", "log level"],
)
async def test_light_answers_equal_the_sdks(
    gateway: RunningGateway, http: httpx.AsyncClient, message: dict[str, Any]
) -> None:
    light = await RawSession(http, gateway.url, gateway.token).open()
    sdk = await handed_over(gateway, http)
    quick = await light.request(message)
    slow = await sdk.request(message)
    assert (quick.content_type, slow.content_type) == (JSON, SSE)
    assert quick.reply() == slow.reply()


async def test_a_log_level_set_on_a_light_session_holds_before_and_after_the_handover(
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
    assert (await session.request(HAND_OVER)).content_type == SSE  # the SDK's session now
    for call_id in (4, 5):  # the first call may still take the SDK path, the next one the fast path
        after = await session.call(call_id, "fix__log", {"level": "warning", "message": "below the level"})
        assert [orjson.loads(m).get("method") for m in after.messages] == [None]  # the level was replayed


async def test_malformed_list_params_get_the_sdks_error(gateway: RunningGateway, http: httpx.AsyncClient) -> None:
    light = await RawSession(http, gateway.url, gateway.token).open()
    sdk = await handed_over(gateway, http)
    bad = {"jsonrpc": "2.0", "id": 3, "method": "tools/list", "params": {"cursor": 5}}
    assert (await light.request(bad)).reply() == (await sdk.request(bad)).reply()
    assert (await light.request(bad)).reply()["error"]["code"] == -32602


async def test_a_handed_over_session_keeps_its_id_and_serves_everything(
    gateway: RunningGateway, http: httpx.AsyncClient
) -> None:
    session = await RawSession(http, gateway.url, gateway.token).open()
    session_id = session.session_id
    prompt = {"jsonrpc": "2.0", "id": 1, "method": "prompts/get", "params": {"name": "fix__plain"}}
    got = await session.request(prompt)  # not the light path's: the session is handed to the SDK
    assert got.content_type == SSE
    assert got.reply()["result"]["messages"], got.reply()
    assert session.session_id == session_id
    echoed = await session.call(2, "fix__echo", {"text": "after"})
    assert echoed.content_type == JSON  # the fast path serves the SDK's session too
    assert echoed.reply()["result"]["structuredContent"] == {"text": "after"}


async def test_a_client_that_may_be_asked_back_is_handed_over_on_its_first_call(
    gateway: RunningGateway, http: httpx.AsyncClient
) -> None:
    session = await RawSession(http, gateway.url, gateway.token, {"sampling": {}}).open()
    listed = await session.request({"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
    assert listed.content_type == JSON  # lists stay light
    echoed = await session.call(2, "fix__echo", {"text": "x"})
    assert echoed.content_type == SSE  # the call needs the SDK's request channel
    assert echoed.reply()["result"]["structuredContent"] == {"text": "x"}


async def test_delete_ends_a_light_session(gateway: RunningGateway, http: httpx.AsyncClient) -> None:
    session = await RawSession(http, gateway.url, gateway.token).open()
    deleted = await http.delete(gateway.url, headers=session.headers())
    assert deleted.status_code == 200
    after = await session.post({"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
    assert after.status_code == 404
    assert after.json()["error"]["message"] == "Session not found"


async def test_another_sandbox_cannot_use_a_light_session(gateway: RunningGateway, http: httpx.AsyncClient) -> None:
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


async def test_the_event_stream_carries_list_changes_and_outlives_the_handover(
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
        await session.request(HAND_OVER)  # hands the session to the SDK, with this stream
        assert "error" not in (await session.call(2, "fix__change_tools", {})).reply()
        assert await asyncio.wait_for(events.get(), 30) == changed  # the same stream, now the SDK's
        assert (await http.get(gateway.url, headers=headers)).status_code == 409
        reader.cancel()


async def test_a_light_session_expires_when_idle(gateway_factory: Factory, http: httpx.AsyncClient) -> None:
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


async def test_the_session_limit_counts_light_sessions(gateway_factory: Factory, http: httpx.AsyncClient) -> None:
    gw = gateway_factory(["--servers", "fix", "--runtime", "host", "--max-sessions", "2"], catalog=CATALOG)
    await RawSession(http, gw.url, gw.token).open()
    await handed_over(gw, http)
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
