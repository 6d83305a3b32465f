"""Server-to-client requests on the handshake era, on the wire: they go out on the call's event stream
with the gateway's own ids, and the client's JSON-RPC answer (POSTed back on the session) resolves them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest

from tests.support import RunningGateway, fixture_entry, start_gateway
from tests.test_fastpath import JSON, SSE, RawSession

CATALOG = {"fix": fixture_entry("--name", "fix")}
SAMPLE = {
    "jsonrpc": "2.0",
    "id": 5,
    "method": "tools/call",
    "params": {"name": "fix__sample", "arguments": {"prompt": "hi"}},
}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> RunningGateway:
    gw = start_gateway(
        ["--servers", "fix", "--runtime", "host"], workdir=tmp_path_factory.mktemp("requests"), catalog=CATALOG
    )
    yield gw
    gw.stop()


async def events(response: httpx.Response) -> AsyncIterator[dict[str, Any]]:
    buffer = b""
    async for chunk in response.aiter_bytes():
        buffer += chunk
        *lines, buffer = buffer.replace(b"\r\n", b"\n").split(b"\n")
        for line in lines:
            if line.startswith(b"data: "):
                yield orjson.loads(line[6:])


async def test_a_sampling_request_goes_to_the_client_and_its_answer_back_upstream(
    gateway: RunningGateway, http: httpx.AsyncClient
) -> None:
    session = await RawSession(http, gateway.url, gateway.token, {"sampling": {}}).open()
    async with http.stream("POST", gateway.url, content=orjson.dumps(SAMPLE), headers=session.headers()) as response:
        assert response.headers["content-type"].startswith(SSE)
        stream = events(response)
        asked = await asyncio.wait_for(anext(stream), 30)
        assert asked["method"] == "sampling/createMessage"
        assert isinstance(asked["id"], str) and asked["id"].startswith("gw-")
        assert asked["params"]["messages"][0]["content"]["text"] == "hi"
        answer = {
            "jsonrpc": "2.0",
            "id": asked["id"],
            "result": {"role": "assistant", "content": {"type": "text", "text": "hello"}, "model": "m"},
        }
        assert (await session.post(answer)).status_code == 202
        reply = await asyncio.wait_for(anext(stream), 30)
    assert reply["id"] == 5
    assert reply["result"]["content"][0]["text"] == "sampled: hello"


async def test_a_client_error_answer_reaches_the_upstream(gateway: RunningGateway, http: httpx.AsyncClient) -> None:
    session = await RawSession(http, gateway.url, gateway.token, {"sampling": {}}).open()
    async with http.stream("POST", gateway.url, content=orjson.dumps(SAMPLE), headers=session.headers()) as response:
        stream = events(response)
        asked = await asyncio.wait_for(anext(stream), 30)
        refusal = {"jsonrpc": "2.0", "id": asked["id"], "error": {"code": -1, "message": "user said no"}}
        assert (await session.post(refusal)).status_code == 202
        reply = await asyncio.wait_for(anext(stream), 30)
    assert reply["result"]["isError"] is True
    assert "user said no" in reply["result"]["content"][0]["text"]


async def test_a_client_without_the_capability_is_not_asked(gateway: RunningGateway, http: httpx.AsyncClient) -> None:
    session = await RawSession(http, gateway.url, gateway.token).open()
    answer = await session.request(SAMPLE)
    assert answer.content_type == JSON  # nothing went to the client
    result = answer.reply()["result"]
    assert result["isError"] is True
    assert "did not declare the sampling capability" in result["content"][0]["text"]


async def test_an_answer_to_an_unknown_request_is_accepted_and_ignored(
    gateway: RunningGateway, http: httpx.AsyncClient
) -> None:
    session = await RawSession(http, gateway.url, gateway.token, {"sampling": {}}).open()
    stray = {"jsonrpc": "2.0", "id": "gw-999", "result": {}}
    assert (await session.post(stray)).status_code == 202
    assert (await session.request({"jsonrpc": "2.0", "id": 1, "method": "ping"})).reply()["result"] == {}


async def test_deleting_the_session_fails_a_request_waiting_for_the_client(
    gateway: RunningGateway, http: httpx.AsyncClient
) -> None:
    session = await RawSession(http, gateway.url, gateway.token, {"sampling": {}}).open()
    headers = session.headers()
    async with http.stream("POST", gateway.url, content=orjson.dumps(SAMPLE), headers=headers) as response:
        stream = events(response)
        asked = await asyncio.wait_for(anext(stream), 30)
        assert asked["method"] == "sampling/createMessage"
        assert (await http.delete(gateway.url, headers=headers)).status_code == 200
        leftover = [event async for event in stream]  # the stream ends instead of hanging
    assert all(event.get("id") != "never" for event in leftover)
    assert (await session.post({"jsonrpc": "2.0", "id": 2, "method": "ping"})).status_code == 404
