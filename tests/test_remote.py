"""Remote upstreams (``remote:`` entries): streamable HTTP and SSE, credential injection, one session.

The upstream is tests/fixtures/remote_server.py on loopback; it records the headers of every
request it receives.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mcp_types as types
import pytest
from mcp.shared.exceptions import MCPError

from tests.support import REPO, RunningGateway, free_port
from tests.upstream_helpers import eventually

REMOTE_SERVER = REPO / "tests" / "fixtures" / "remote_server.py"
SECRET = "remote-secret-value-5e0a"


@dataclass
class Remote:
    port: int
    record: Path

    def requests(self) -> list[dict[str, object]]:
        if not self.record.exists():
            return []
        return [json.loads(line) for line in self.record.read_text().splitlines() if line.strip()]


@pytest.fixture
def remote(tmp_path: Path) -> Iterator[Remote]:
    record = tmp_path / "requests.jsonl"
    process = subprocess.Popen(
        [sys.executable, str(REMOTE_SERVER), "--port", "0", "--record", str(record)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("listening on "), line
        yield Remote(int(line.split()[-1]), record)
    finally:
        process.terminate()
        process.wait(10)


def catalog(url: str, transport: str = "http") -> dict[str, object]:
    return {
        "rem": {
            "remote": {
                "url": url,
                "transport_type": transport,
                "headers": {"Authorization": "Bearer ${API_TOKEN}", "X-Plain": "plain-value"},
            },
            "secrets": [{"name": "rem.api_token", "env": "API_TOKEN"}],
        }
    }


def start(factory: Callable[..., RunningGateway], tmp_path: Path, registry: dict[str, object]) -> RunningGateway:
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"rem": {"apiToken": SECRET}}))
    return factory(["--config", f"@{config}"], catalog=registry)


async def test_remote_tools_are_listed_and_called_over_streamable_http(
    gateway_factory: Callable[..., RunningGateway], tmp_path: Path, remote: Remote
) -> None:
    gateway = start(gateway_factory, tmp_path, catalog(f"http://127.0.0.1:{remote.port}/mcp"))
    async with gateway.client() as client:
        names = {tool.name for tool in (await client.list_tools()).tools}
        result = await client.call_tool("rem__echo", {"text": "over http"})
    assert {"rem__echo", "rem__headers"} <= names
    assert result.content[0].text == "over http"  # type: ignore[union-attr]


async def test_header_values_are_filled_from_the_sandbox_secret(
    gateway_factory: Callable[..., RunningGateway], tmp_path: Path, remote: Remote
) -> None:
    gateway = start(gateway_factory, tmp_path, catalog(f"http://127.0.0.1:{remote.port}/mcp"))
    async with gateway.client() as client:
        result = await client.call_tool("rem__headers", {})
    posts = [r for r in remote.requests() if r["method"] == "POST"]
    assert posts
    for request in posts:
        headers = request["headers"]
        assert isinstance(headers, dict)
        assert headers["authorization"] == f"Bearer {SECRET}"
        assert headers["x-plain"] == "plain-value"
    # What the remote echoes back is redacted like any result.
    assert SECRET not in result.content[0].text  # type: ignore[union-attr]
    assert "[REDACTED:rem.api_token]" in result.content[0].text  # type: ignore[union-attr]


async def test_the_clients_token_is_never_passed_upstream(
    gateway_factory: Callable[..., RunningGateway], tmp_path: Path, remote: Remote
) -> None:
    gateway = start(gateway_factory, tmp_path, catalog(f"http://127.0.0.1:{remote.port}/mcp"))
    async with gateway.client() as client:
        await client.call_tool("rem__echo", {"text": "x"})
    recorded = remote.record.read_text()
    assert gateway.token not in recorded
    assert gateway.token.split(".")[2] not in recorded  # not even the signature


async def test_sse_transport_works(
    gateway_factory: Callable[..., RunningGateway], tmp_path: Path, remote: Remote
) -> None:
    gateway = start(gateway_factory, tmp_path, catalog(f"http://127.0.0.1:{remote.port}/sse", "sse"))
    async with gateway.client() as client:
        result = await client.call_tool("rem__echo", {"text": "over sse"})
    assert result.content[0].text == "over sse"  # type: ignore[union-attr]
    assert all(r["headers"]["authorization"] == f"Bearer {SECRET}" for r in remote.requests())  # type: ignore[index]


async def test_one_upstream_session_serves_every_client_session_of_the_sandbox(
    gateway_factory: Callable[..., RunningGateway], tmp_path: Path, remote: Remote
) -> None:
    gateway = start(gateway_factory, tmp_path, catalog(f"http://127.0.0.1:{remote.port}/mcp"))
    for text in ("one", "two", "three"):
        async with gateway.client() as client:
            await client.call_tool("rem__echo", {"text": text})
    initializes = [r for r in remote.requests() if r["method"] == "POST" and "mcp-session-id" not in r["headers"]]  # type: ignore[operator]
    assert len(initializes) == 1


async def test_unreachable_remote_is_reported_and_the_gateway_keeps_serving(
    gateway_factory: Callable[..., RunningGateway], tmp_path: Path
) -> None:
    gateway = start(gateway_factory, tmp_path, catalog(f"http://127.0.0.1:{free_port()}/mcp"))
    async with gateway.client() as client:
        tools = await client.list_tools()
    assert tools.tools == []
    with gateway.admin() as admin:
        status = admin.get("/admin/status").json()
    server = next(s for box in status["sandboxes"] for s in box["servers"] if s["name"] == "rem")
    assert server["state"] == "failed"
    assert "127.0.0.1" in server["last_error"]
    assert SECRET not in json.dumps(status)


def answers_as(who: str) -> Any:
    async def elicitation(ctx: Any, params: Any) -> types.ElicitResult:
        return types.ElicitResult(action="accept", content={"name": who})

    return elicitation


async def test_elicitation_reaches_the_session_whose_call_asked_not_the_newest_caller(
    gateway_factory: Callable[..., RunningGateway], tmp_path: Path, remote: Remote
) -> None:
    """Session A's call asks the client; meanwhile session B has a newer call in flight on the
    same remote. The question goes to A (it came on the response of A's request)."""
    gateway = start(gateway_factory, tmp_path, catalog(f"http://127.0.0.1:{remote.port}/mcp"))
    async with (
        gateway.client(elicitation_callback=answers_as("A")) as a,
        gateway.client(elicitation_callback=answers_as("B")) as b,
    ):
        asking = asyncio.ensure_future(a.call_tool("rem__ask", {}))
        await eventually(lambda: any(r.get("tool") == "ask" for r in remote.requests()), 60, "ask upstream")
        held = await asyncio.wait_for(b.call_tool("rem__hold", {}), 90)
        asked = await asyncio.wait_for(asking, 90)
    assert held.content[0].text == "held"  # type: ignore[union-attr]
    assert json.loads(asked.content[0].text) == {"action": "accept", "content": {"name": "A"}}  # type: ignore[union-attr]


async def test_a_gateway_with_a_remote_server_shuts_down_cleanly(
    gateway_factory: Callable[..., RunningGateway], tmp_path: Path, remote: Remote
) -> None:
    gateway = start(gateway_factory, tmp_path, catalog(f"http://127.0.0.1:{remote.port}/mcp"))
    async with gateway.client() as client:
        await client.call_tool("rem__echo", {"text": "x"})
    assert gateway.stop() == 0
    assert "Traceback" not in gateway.output()
    deletes = [r for r in remote.requests() if r["method"] == "DELETE"]
    assert len(deletes) == 1  # the upstream session was ended, not dropped


async def test_a_remote_resource_update_reaches_the_subscribed_session(
    gateway_factory: Callable[..., RunningGateway], tmp_path: Path, remote: Remote
) -> None:
    gateway = start(gateway_factory, tmp_path, catalog(f"http://127.0.0.1:{remote.port}/mcp"))
    updated: list[str] = []

    async def on_message(message: Any) -> None:
        if isinstance(message, types.ResourceUpdatedNotification):
            updated.append(str(message.params.uri))

    async with gateway.client(message_handler=on_message) as client:
        [note] = (await client.list_resources()).resources
        await client.subscribe_resource(str(note.uri))
        await client.call_tool("rem__touch", {})
        await eventually(lambda: bool(updated), 30, "resources/updated")
    assert updated == [str(note.uri)]


@pytest.mark.parametrize(
    ("tool", "expected"),
    [
        ("bad_code_null", "server 'rem' answered tools/call with a malformed error (code null): null code"),
        ("bad_huge", "server 'rem' sent a message that is not valid JSON"),
    ],
)
async def test_a_malformed_answer_over_sse_fails_only_that_call(
    gateway_factory: Callable[..., RunningGateway], tmp_path: Path, remote: Remote, tool: str, expected: str
) -> None:
    gateway = start(gateway_factory, tmp_path, catalog(f"http://127.0.0.1:{remote.port}/sse", "sse"))
    async with gateway.client() as client:
        with pytest.raises(MCPError) as caught:
            await client.call_tool(f"rem__{tool}", {})
        after = await client.call_tool("rem__echo", {"text": "still here"})
    assert expected in caught.value.message
    assert after.content[0].text == "still here"  # type: ignore[union-attr]
