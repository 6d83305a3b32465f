"""Handshake-era calls (gateway/downstream/handshake.py): one path for every client shape.

A client that declared ``sampling`` (an upstream may ask it something back) and one that declared
nothing take the same path: the same call on each must come back as the same JSON-RPC bytes,
``application/json`` unless progress, a log message or a server request goes out first.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from mcp_types import JSONRPCResponse
from mcp_types.methods import serialize_server_result
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS

from gateway.catalog.config import ServerSettings
from gateway.downstream.wire import plain_result, shaped
from gateway.store.datadir import DataDir
from gateway.store.sandboxes import Sandbox, SandboxStore
from tests.support import RunningGateway, fixture_entry, sandbox_token, start_gateway

CATALOG = {"fix": fixture_entry("--name", "fix")}
ACCEPT = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
JSON = "application/json"
SSE = "text/event-stream"
TRICKY = 'q " b \\ n \n t \t c \x01 \x1f del \x7f é 漢字 😀 ls \u2028 ps \u2029 < > & / end'


@dataclass
class Answer:
    content_type: str
    messages: list[bytes]  # every JSON-RPC message of the response, raw; the last one answers the request

    @property
    def last(self) -> bytes:
        return self.messages[-1]

    def reply(self) -> dict[str, Any]:
        return orjson.loads(self.last)


class RawSession:
    """A hand-made streamable-HTTP session, so the exact bytes of each answer can be compared."""

    def __init__(self, http: httpx.AsyncClient, url: str, token: str, capabilities: dict[str, Any] | None = None):
        self.http = http
        self.url = url
        self.token = token
        self.capabilities = capabilities or {}
        self.session_id = ""

    def headers(self, token: str | None = None) -> dict[str, str]:
        headers = {**ACCEPT, "Authorization": f"Bearer {token or self.token}", "MCP-Protocol-Version": "2025-11-25"}
        if self.session_id:
            headers["Mcp-Session-Id"] = self.session_id
        return headers

    async def open(self) -> RawSession:
        init = {
            "jsonrpc": "2.0",
            "id": 0,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-11-25",
                "capabilities": self.capabilities,
                "clientInfo": {"name": "fastpath-test", "version": "1"},
            },
        }
        headers = {k: v for k, v in self.headers().items() if k != "MCP-Protocol-Version"}
        response = await self.http.post(self.url, json=init, headers=headers)
        assert response.status_code == 200, response.text
        self.session_id = response.headers["mcp-session-id"]
        notified = await self.post_until_admitted({"jsonrpc": "2.0", "method": "notifications/initialized"})
        assert notified.status_code == 202
        listed = await self.post_until_admitted({"jsonrpc": "2.0", "id": "list", "method": "tools/list"})
        assert listed.status_code == 200 and b'"tools"' in listed.content, listed.content
        return self

    async def post_until_admitted(self, message: dict[str, Any]) -> httpx.Response:
        """POST, retrying on 429: with a limit of 1 the SDK's previous SSE answer may still be open."""
        deadline = time.monotonic() + 30
        while (response := await self.post(message)).status_code == 429 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        return response

    async def post(self, message: dict[str, Any], token: str | None = None) -> httpx.Response:
        return await self.http.post(self.url, content=orjson.dumps(message), headers=self.headers(token))

    async def request(self, message: dict[str, Any]) -> Answer:
        """POST a request; read its answer up to the response (an SSE stream may stay open after it)."""
        async with self.http.stream(
            "POST", self.url, content=orjson.dumps(message), headers=self.headers()
        ) as response:
            assert response.status_code == 200, await response.aread()
            content_type = response.headers["content-type"].split(";")[0]
            if content_type == JSON:
                return Answer(content_type, [await response.aread()])
            messages: list[bytes] = []
            buffer = b""
            async for chunk in response.aiter_bytes():  # bytes: text line splitting would break at U+2028
                buffer += chunk
                *lines, buffer = buffer.replace(b"\r\n", b"\n").split(b"\n")
                for line in lines:
                    if line.startswith(b"data: ") and line[6:].strip():
                        messages.append(line[6:])
                        decoded = orjson.loads(messages[-1])
                        if "method" not in decoded and decoded.get("id") == message["id"]:
                            return Answer(content_type, messages)
            return Answer(content_type, messages)

    async def call(self, request_id: Any, name: str, arguments: dict[str, Any], **params: Any) -> Answer:
        message = {
            "jsonrpc": "2.0",
            "id": request_id,
            "method": "tools/call",
            "params": {"name": name, "arguments": arguments, **params},
        }
        return await self.request(message)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> RunningGateway:
    workdir = tmp_path_factory.mktemp("fastpath")
    data = DataDir.open(workdir / "data")
    store = SandboxStore(data.database, data.secrets_key())
    store.put(Sandbox("other", {"fix": ServerSettings("fix")}))
    store.close()
    gw = start_gateway(
        ["--servers", "fix", "--runtime", "host", "--max-concurrent-requests", "8"],
        workdir=workdir,
        catalog=CATALOG,
        data_dir=data.path,
    )
    yield gw
    gw.stop()


async def sessions(gateway: RunningGateway, http: httpx.AsyncClient) -> tuple[RawSession, RawSession]:
    """(plain, asking): a session that declared nothing and one whose client declared sampling."""
    fast = await RawSession(http, gateway.url, gateway.token).open()
    sdk = await RawSession(http, gateway.url, gateway.token, {"sampling": {}}).open()
    return fast, sdk


CASES: list[tuple[str, Any, str, dict[str, Any], dict[str, Any]]] = [
    ("structured result", 11, "fix__echo", {"text": TRICKY}, {}),
    ("plain text result", 12, "fix__big", {"size": 3000}, {}),
    ("tool error with odd text", 13, "fix__fail", {"message": TRICKY}, {}),
    ("floats", 14, "fix__add", {"a": 0.1, "b": 1e16}, {}),
    ("JSON-RPC error upstream", 15, "fix__rpc_error", {"code": -32000, "message": TRICKY}, {}),
    ("unknown tool", 16, "fix__nope", {}, {}),
    ("missing argument", 17, "fix__echo", {}, {}),
    ("string id", "call-18", "fix__echo", {"text": "x"}, {}),
    ("forwarded _meta", 19, "fix__meta", {}, {"_meta": {"custom": {"a": [1, None]}, "dropped": None}}),
]


@pytest.mark.parametrize(("case", "request_id", "tool", "arguments", "params"), CASES, ids=[c[0] for c in CASES])
async def test_a_client_that_may_be_asked_back_gets_the_same_bytes(
    gateway: RunningGateway,
    http: httpx.AsyncClient,
    case: str,
    request_id: Any,
    tool: str,
    arguments: dict[str, Any],
    params: dict[str, Any],
) -> None:
    fast, sdk = await sessions(gateway, http)
    quick = await fast.call(request_id, tool, arguments, **params)
    slow = await sdk.call(request_id, tool, arguments, **params)
    assert (quick.content_type, slow.content_type) == (JSON, JSON)
    assert quick.last == slow.last


async def test_upstream_log_messages_reach_the_client_before_the_result(
    gateway: RunningGateway, http: httpx.AsyncClient
) -> None:
    fast, sdk = await sessions(gateway, http)
    quick = await fast.call(5, "fix__log", {"level": "warning", "message": TRICKY})
    slow = await sdk.call(5, "fix__log", {"level": "warning", "message": TRICKY})
    assert quick.content_type == slow.content_type == SSE  # the answer became a stream for the log message
    assert quick.messages == slow.messages
    assert orjson.loads(quick.messages[0])["method"] == "notifications/message"


@pytest.mark.parametrize("token", ["p-1", 7])
async def test_progress_reaches_the_client_before_the_result(
    gateway: RunningGateway, http: httpx.AsyncClient, token: Any
) -> None:
    fast, sdk = await sessions(gateway, http)
    quick = await fast.call(3, "fix__progress", {"steps": 2}, _meta={"progressToken": token})
    slow = await sdk.call(3, "fix__progress", {"steps": 2}, _meta={"progressToken": token})
    assert quick.content_type == slow.content_type == SSE  # the answer became a stream for the progress
    assert quick.messages == slow.messages
    progress = [orjson.loads(m) for m in quick.messages[:-1]]
    assert [(p["params"]["progressToken"], p["params"]["progress"]) for p in progress] == [(token, 1), (token, 2)]
    assert quick.reply()["result"]["content"][0]["text"] == "done"


async def test_a_call_with_a_progress_token_of_the_wrong_type_is_refused(
    gateway: RunningGateway, http: httpx.AsyncClient
) -> None:
    fast, _ = await sessions(gateway, http)
    answer = await fast.call(4, "fix__progress", {"steps": 1}, _meta={"progressToken": 1.5})
    assert answer.content_type == JSON
    assert answer.reply()["error"]["code"] == -32602


async def test_an_upstream_error_leaves_the_session_serving(gateway: RunningGateway, http: httpx.AsyncClient) -> None:
    fast, _ = await sessions(gateway, http)
    read = {"jsonrpc": "2.0", "id": 4, "method": "resources/read", "params": {"uri": "fix://nothing"}}
    answer = await fast.request(read)
    assert answer.content_type == JSON
    assert answer.reply()["error"]["code"] < 0
    listed = await fast.request({"jsonrpc": "2.0", "id": 5, "method": "tools/list"})
    assert listed.content_type == JSON
    assert "fix__echo" in {t["name"] for t in listed.reply()["result"]["tools"]}


async def test_a_session_of_another_sandbox_answers_404_like_an_unknown_one(
    gateway: RunningGateway, http: httpx.AsyncClient
) -> None:
    fast, _ = await sessions(gateway, http)
    other = sandbox_token(gateway, "other")
    call = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "fix__echo", "arguments": {}}}
    foreign = await fast.post(call, token=other)
    fast.session_id = "0" * 32
    unknown = await fast.post(call)
    assert foreign.status_code == unknown.status_code == 404
    assert foreign.content == unknown.content


async def test_the_client_cancelling_a_call_stops_it(gateway: RunningGateway, http: httpx.AsyncClient) -> None:
    fast, sdk = await sessions(gateway, http)
    answers = []
    for session in (fast, sdk):
        started = time.monotonic()
        call = asyncio.ensure_future(session.call(21, "fix__sleep", {"seconds": 30}))
        await asyncio.sleep(1.0)
        cancel = {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 21}}
        assert (await session.post(cancel)).status_code == 202
        answer = await asyncio.wait_for(call, 20)
        assert time.monotonic() - started < 20
        answers.append(answer)
    assert answers[0].content_type == answers[1].content_type == JSON
    assert answers[0].last == answers[1].last
    assert answers[0].reply()["error"]["code"] == -32800


async def test_the_request_limit_applies_to_calls(tmp_path: Path, http: httpx.AsyncClient) -> None:
    gw = start_gateway(
        ["--servers", "fix", "--runtime", "host", "--max-concurrent-requests", "1"],
        workdir=tmp_path,
        catalog=CATALOG,
    )
    try:
        fast = await RawSession(http, gw.url, gw.token).open()
        call = {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "fix__echo", "arguments": {}}}
        assert (await fast.post_until_admitted(call)).status_code == 200
        slow = asyncio.ensure_future(fast.call(1, "fix__sleep", {"seconds": 6}))
        busy = None
        deadline = time.monotonic() + 5
        while busy is None and time.monotonic() < deadline and not slow.done():
            await asyncio.sleep(0.2)  # until the slow call is in flight (a busy machine may take a while)
            response = await fast.post(call)
            busy = response if response.status_code == 429 else None
        assert busy is not None, "no 429 while a call was in flight"
        assert busy.headers["retry-after"] == "1"
        answer = await asyncio.wait_for(slow, 30)
        assert answer.content_type == JSON
        assert answer.reply()["result"]["content"][0]["text"] == "slept"
    finally:
        gw.stop()


async def test_calls_keep_their_session_from_expiring(tmp_path: Path, http: httpx.AsyncClient) -> None:
    # --idle-timeout 1: sessions expire after 2 s with no request in flight.
    gw = start_gateway(
        ["--servers", "fix", "--runtime", "host", "--idle-timeout", "1"], workdir=tmp_path, catalog=CATALOG
    )
    try:
        fast = await RawSession(http, gw.url, gw.token).open()
        long_call = await fast.call(1, "fix__sleep", {"seconds": 3.5})
        assert long_call.content_type == JSON
        assert long_call.reply()["result"]["content"][0]["text"] == "slept"
        after = await fast.call(2, "fix__echo", {"text": "still here"})
        assert after.reply()["result"]["content"][0]["text"] == "still here"
        await asyncio.sleep(4.0)  # and without requests it does expire, as before
        call = {"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "fix__echo", "arguments": {}}}
        assert (await fast.post(call)).status_code == 404
    finally:
        gw.stop()


async def test_token_claims_narrow_calls(gateway: RunningGateway, http: httpx.AsyncClient) -> None:
    narrow = sandbox_token(gateway, "default", tools=["fix__echo"])
    fast = await RawSession(http, gateway.url, narrow).open()
    allowed = await fast.call(1, "fix__echo", {"text": "ok"})
    refused = await fast.call(2, "fix__big", {"size": 3})
    assert allowed.content_type == refused.content_type == JSON
    assert allowed.reply()["result"]["content"][0]["text"] == "ok"
    assert refused.reply()["error"]["code"] == -32602


EVERY_KIND_OF_TEXT = "".join(chr(c) for c in range(0x80)) + "é漢字😀\u2028\u2029\ufeff\U0010ffff"
PLAIN_RESULTS = [
    {"content": [{"type": "text", "text": EVERY_KIND_OF_TEXT}]},
    {"content": [{"text": "a", "type": "text"}, {"type": "text", "text": ""}], "isError": True},
    {"isError": False, "content": []},
]


@pytest.mark.parametrize("version", HANDSHAKE_PROTOCOL_VERSIONS)
@pytest.mark.parametrize("result", PLAIN_RESULTS)
def test_plain_results_are_written_as_the_protocol_types_write_them(version: str, result: dict[str, Any]) -> None:
    for request_id in (7, "7", "x"):
        fast = orjson.dumps({"jsonrpc": "2.0", "id": request_id, "result": plain_result(result)})
        surface = serialize_server_result("tools/call", version, {"isError": False, **result})
        sdk = JSONRPCResponse(jsonrpc="2.0", id=request_id, result=surface)
        assert fast == sdk.model_dump_json(by_alias=True, exclude_unset=True).encode()
        assert shaped("tools/call", version, result) == surface


@pytest.mark.parametrize(
    "result",
    [
        {"content": [{"type": "text", "text": "a", "annotations": None}]},
        {"content": [{"type": "image", "data": "aGk=", "mimeType": "image/png"}]},
        {"content": [{"type": "text", "text": "a"}], "structuredContent": {"x": 1.5}},
        {"content": [{"type": "text", "text": "a"}], "isError": None},
        {"content": [{"type": "text", "text": "a"}], "_meta": {}},
    ],
)
def test_other_results_go_through_the_protocol_types(result: dict[str, Any]) -> None:
    assert plain_result(result) is None
