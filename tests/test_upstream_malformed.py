"""Malformed upstream messages, over stdio and over streamable HTTP: the call concerned fails with a
clear error (or, over stdio, a message that concerns no call is logged and dropped), and the same
server keeps serving.

Both servers are tests/fixtures/remote_server.py (``--stdio``, and on loopback): its ``bad_*``
tools answer with the malformed message. Over HTTP every answer comes on its request's own
response, so even a reply to an unknown id or a bare ``42`` fails exactly that call; over stdio
those two concern no call (they are dropped, the server's proper answer follows).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest
from mcp.shared.exceptions import MCPError

from tests.support import RunningGateway, start_gateway
from tests.test_remote import REMOTE_SERVER
from tests.upstream_helpers import server_status

SERVERS = ["raw", "rem"]  # stdio, streamable HTTP


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    workdir = tmp_path_factory.mktemp("malformed")
    remote = subprocess.Popen(
        [sys.executable, str(REMOTE_SERVER), "--port", "0", "--record", str(workdir / "requests.jsonl")],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert remote.stdout is not None
    port = int(remote.stdout.readline().split()[-1])
    catalog = {
        "raw": {"command": [sys.executable, str(REMOTE_SERVER), "--stdio"]},
        "rem": {"remote": {"url": f"http://127.0.0.1:{port}/mcp"}},
    }
    gateway = start_gateway(["--runtime", "host", "--servers", "raw,rem"], workdir=workdir, catalog=catalog)
    try:
        yield gateway
    finally:
        gateway.stop()
        remote.terminate()
        remote.wait(10)


async def failed_call(gw: RunningGateway, server: str, tool: str) -> str:
    """Call ``tool``, expect a JSON-RPC error; then check the server still answers. The error's text."""
    async with gw.client() as client:
        with pytest.raises(MCPError) as caught:
            await client.call_tool(f"{server}__{tool}", {})
        after = await client.call_tool(f"{server}__echo", {"text": "still here"})
    assert after.content[0].text == "still here"  # type: ignore[union-attr]
    assert server_status(gw, server)["restarts"] == 0
    return caught.value.message


@pytest.mark.parametrize("server", SERVERS)
async def test_an_error_with_a_null_code_fails_that_call_clearly(gw: RunningGateway, server: str) -> None:
    message = await failed_call(gw, server, "bad_code_null")
    assert f"server '{server}' answered tools/call with a malformed error (code null): null code" in message


@pytest.mark.parametrize("server", SERVERS)
async def test_an_error_with_a_string_code_fails_that_call_clearly(gw: RunningGateway, server: str) -> None:
    message = await failed_call(gw, server, "bad_code_string")
    assert f"server '{server}' answered tools/call with a malformed error (code \"E42\"): string code" in message


@pytest.mark.parametrize("server", SERVERS)
async def test_a_50_mb_answer_that_is_not_json_fails_that_call_clearly(gw: RunningGateway, server: str) -> None:
    message = await failed_call(gw, server, "bad_huge")
    assert f"server '{server}' sent a message that is not valid JSON" in message
    assert "(answering tools/call)" in message


async def test_an_http_answer_to_an_unknown_id_fails_that_call_clearly(gw: RunningGateway) -> None:
    message = await failed_call(gw, "rem", "bad_unknown_id")
    assert "server 'rem' ended its answer without a JSON-RPC response (answering tools/call)" in message
    assert "answered a request that is not waiting (id 1000" in gw.output()


async def test_an_http_answer_that_is_not_an_object_fails_that_call_clearly(gw: RunningGateway) -> None:
    message = await failed_call(gw, "rem", "bad_not_object")
    assert "server 'rem' sent a JSON int instead of a JSON-RPC message (answering tools/call)" in message


@pytest.mark.parametrize("tool", ["bad_unknown_id", "bad_not_object"])
async def test_a_stdio_message_that_concerns_no_call_is_logged_and_dropped(gw: RunningGateway, tool: str) -> None:
    async with gw.client() as client:
        result = await client.call_tool(f"raw__{tool}", {})
        after = await client.call_tool("raw__echo", {"text": "still here"})
    assert result.content[0].text == f"answered after {tool}"  # type: ignore[union-attr]
    assert after.content[0].text == "still here"  # type: ignore[union-attr]
    assert server_status(gw, "raw")["restarts"] == 0
    logged = {
        "bad_unknown_id": "server raw answered a request that is not waiting (id 1000",
        "bad_not_object": "server raw wrote a JSON value that is not a message (skipped)",
    }
    assert logged[tool] in gw.output()
