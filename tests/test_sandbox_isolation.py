"""Sandboxes cannot see or reach each other: results, logs, lists, child environments, sessions, tokens."""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from mcp.shared.exceptions import MCPError

from tests.sandbox_helpers import CATALOG, all_logs, child_environments, create, dump, text_of
from tests.support import RunningGateway, start_gateway

SESSIONS_PER_SANDBOX = 3
CALLS_PER_SESSION = 12


async def run_session(gateway: RunningGateway, token: str, mode: str, seed: int) -> list[str]:
    """One session making interleaved calls; returns every result (and list) it saw, serialized."""
    rng = random.Random(seed)
    seen: list[str] = []
    async with gateway.client(token, mode=mode) as client:
        tools = await client.list_tools()
        seen.append(json.dumps([t.model_dump(mode="json") for t in tools.tools]))
        for _ in range(CALLS_PER_SESSION):
            choice = rng.choice(["secret", "env", "echo"])
            if choice == "secret":
                result = await client.call_tool("canary__secret_echo", {"name": "CANARY_TOKEN"})
            elif choice == "env":
                result = await client.call_tool("canary__env", {})
            else:
                result = await client.call_tool("canary__echo", {"text": f"hello {seed}"})
            assert not result.is_error, dump(result)
            seen.append(dump(result))
            await asyncio.sleep(rng.random() / 50)
    return seen


async def run_both(gateway: RunningGateway, token_a: str, token_b: str) -> tuple[list[str], list[str]]:
    # Start each sandbox's servers first, so this test is about isolation only: a first call
    # racing a server's start could meet a tool index built while it was starting (reported).
    for token in (token_a, token_b):
        async with gateway.client(token) as client:
            await client.list_tools()
    modes = ["legacy", "2026-07-28"]
    jobs_a = [run_session(gateway, token_a, modes[i % 2], i) for i in range(SESSIONS_PER_SANDBOX)]
    jobs_b = [run_session(gateway, token_b, modes[i % 2], 100 + i) for i in range(SESSIONS_PER_SANDBOX)]
    results = await asyncio.gather(*jobs_a, *jobs_b)
    seen_a = [s for r in results[:SESSIONS_PER_SANDBOX] for s in r]
    seen_b = [s for r in results[SESSIONS_PER_SANDBOX:] for s in r]
    return seen_a, seen_b


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    gateway = start_gateway(workdir=tmp_path_factory.mktemp("isolation"), catalog=CATALOG)
    yield gateway
    gateway.stop()


@pytest.fixture(scope="module")
def raw_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    """A gateway with --no-redact: results show secret values, so routing can be checked exactly."""
    gateway = start_gateway(["--no-redact"], workdir=tmp_path_factory.mktemp("raw"), catalog=CATALOG)
    yield gateway
    gateway.stop()


@pytest.fixture
def canaries() -> tuple[str, str]:
    """Two fresh canary secrets (unique per test, so tests sharing a gateway cannot mix them up)."""
    tag = uuid.uuid4().hex[:10]
    return f"canary-A-{tag}", f"canary-B-{tag}"


async def test_concurrent_sessions_of_two_sandboxes_never_see_the_other_canary(
    gateway: RunningGateway, canaries: tuple[str, str]
) -> None:
    canary_a, canary_b = canaries
    a = create(gateway, {"canary": {"token": canary_a}})
    b = create(gateway, {"canary": {"token": canary_b}})

    seen_a, seen_b = await run_both(gateway, a["mcp_token"], b["mcp_token"])

    for text in seen_a:
        assert canary_b not in text and canary_a not in text
    for text in seen_b:
        assert canary_a not in text and canary_b not in text
    # Each sandbox's own secret came back (redacted): its server holds its own value.
    assert any("[REDACTED:canary.token]" in t for t in seen_a)
    assert any("[REDACTED:canary.token]" in t for t in seen_b)

    # Child environments: each canary server holds exactly its own sandbox's secret. (Runtime
    # wrappers such as bwrap carry the same environment; the servers are the fixture processes.)
    holders = {"a": 0, "b": 0}
    for pid, environ in child_environments(gateway).items():
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        if not Path(argv[0].decode()).name.startswith("python"):
            continue
        has_a, has_b = canary_a.encode() in environ, canary_b.encode() in environ
        assert not (has_a and has_b)
        holders["a"] += has_a
        holders["b"] += has_b
    assert holders == {"a": 1, "b": 1}  # one process per sandbox, shared by its sessions

    with gateway.admin() as admin:
        listing = admin.get("/admin/sandboxes").text
    logs = all_logs(gateway)
    for canary in (canary_a, canary_b):
        assert canary not in listing
        assert canary not in logs


async def test_without_redaction_each_session_gets_its_own_sandbox_secret(
    raw_gateway: RunningGateway, canaries: tuple[str, str]
) -> None:
    gateway = raw_gateway
    canary_a, canary_b = canaries
    a = create(gateway, {"canary": {"token": canary_a}})
    b = create(gateway, {"canary": {"token": canary_b}})

    async def secret_calls(token: str, mode: str) -> list[str]:
        async with gateway.client(token, mode=mode) as client:
            calls = [client.call_tool("canary__secret_echo", {"name": "CANARY_TOKEN"}) for _ in range(10)]
            return [text_of(r) for r in await asyncio.gather(*calls)]

    jobs = [secret_calls(t, m) for t in (a["mcp_token"], b["mcp_token"]) for m in ("legacy", "2026-07-28")]
    got = await asyncio.gather(*jobs)
    assert got[0] == got[1] == [canary_a] * 10
    assert got[2] == got[3] == [canary_b] * 10


async def test_nothing_in_the_request_switches_the_sandbox(
    raw_gateway: RunningGateway, canaries: tuple[str, str]
) -> None:
    gateway = raw_gateway
    canary_a, canary_b = canaries
    a = create(gateway, {"canary": {"token": canary_a}})
    b = create(gateway, {"canary": {"token": canary_b}})
    meta = {"sandbox": b["id"], "sub": b["id"], "mcp-gateway/sandbox": b["id"]}
    headers = {"X-Sandbox": b["id"], "X-Sandbox-Id": b["id"], "Mcp-Sandbox": b["id"]}
    async with gateway.client(a["mcp_token"]) as client:
        result = await client.call_tool("canary__secret_echo", {"name": "CANARY_TOKEN"}, meta=meta)
    assert text_of(result) == canary_a
    # Query string and extra headers on the raw endpoint.
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
    }
    common = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    with httpx.Client(timeout=30) as http:
        init = http.post(
            f"{gateway.url}?sandbox={b['id']}",
            json=body,
            headers={**common, **headers, "Authorization": f"Bearer {a['mcp_token']}"},
        )
        assert init.status_code == 200
        session = init.headers["mcp-session-id"]
        session_headers = {
            **common,
            **headers,
            "Authorization": f"Bearer {a['mcp_token']}",
            "Mcp-Session-Id": session,
            "Mcp-Protocol-Version": "2025-11-25",
        }
        http.post(gateway.url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=session_headers)
        call = {
            "jsonrpc": "2.0",
            "id": 2,
            "method": "tools/call",
            "params": {"name": "canary__secret_echo", "arguments": {"name": "CANARY_TOKEN"}, "_meta": meta},
        }
        answer = http.post(f"{gateway.url}?sandbox={b['id']}&sub={b['id']}", json=call, headers=session_headers)
    assert answer.status_code == 200
    assert canary_a in answer.text and canary_b not in answer.text


def test_a_session_opened_by_one_sandbox_is_refused_with_another_token(gateway: RunningGateway) -> None:
    a = create(gateway, {"plain": {}})
    b = create(gateway, {"plain": {}})
    common = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
    }
    with httpx.Client(timeout=30) as http:
        init = http.post(gateway.url, json=body, headers={**common, "Authorization": f"Bearer {a['mcp_token']}"})
        session = init.headers["mcp-session-id"]
        hijack = {
            **common,
            "Authorization": f"Bearer {b['mcp_token']}",
            "Mcp-Session-Id": session,
            "Mcp-Protocol-Version": "2025-11-25",
        }
        listed = http.post(gateway.url, json={"jsonrpc": "2.0", "id": 2, "method": "tools/list"}, headers=hijack)
        assert listed.status_code == 404
        closed = http.delete(gateway.url, headers=hijack)
        assert closed.status_code == 404
        # The session still works for its owner.
        owner = {**hijack, "Authorization": f"Bearer {a['mcp_token']}"}
        http.post(gateway.url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=owner)
        still = http.post(gateway.url, json={"jsonrpc": "2.0", "id": 3, "method": "tools/list"}, headers=owner)
        assert still.status_code == 200 and "plain__echo" in still.text


def narrowed_token(gateway: RunningGateway, sandbox_id: str, **claims: list[str]) -> str:
    with gateway.admin() as admin:
        response = admin.post(f"/admin/sandboxes/{sandbox_id}/token", json=claims)
    assert response.status_code == 200, response.text
    return str(response.json()["mcp_token"])


async def test_servers_claim_narrows_tools_list_and_calls(gateway: RunningGateway, canaries: tuple[str, str]) -> None:
    canary_a = canaries[0]
    sandbox = create(gateway, {"canary": {"token": canary_a}, "plain": {}})
    token = narrowed_token(gateway, sandbox["id"], servers=["plain"])
    async with gateway.client(token) as client:
        names = {t.name for t in (await client.list_tools()).tools}
        assert "plain__echo" in names
        assert not any(n.startswith("canary__") for n in names)
        with pytest.raises(MCPError) as caught:
            await client.call_tool("canary__secret_echo", {"name": "CANARY_TOKEN"})
        assert caught.value.error.code == -32602
        with pytest.raises(MCPError) as unknown:
            await client.call_tool("nosuch__tool", {})
        assert unknown.value.error.code == -32602
        assert "canary__secret_echo" in caught.value.error.message
        assert (await client.call_tool("plain__echo", {"text": "hi"})).is_error is False


async def test_tools_claim_narrows_tools_list_and_calls(gateway: RunningGateway, canaries: tuple[str, str]) -> None:
    canary_a = canaries[0]
    sandbox = create(gateway, {"canary": {"token": canary_a}, "plain": {}})
    token = narrowed_token(gateway, sandbox["id"], tools=["canary__echo", "plain__a*"])
    async with gateway.client(token, mode="2026-07-28") as client:
        names = {t.name for t in (await client.list_tools()).tools}
        assert names == {"canary__echo", "plain__add", "plain__alloc"}
        with pytest.raises(MCPError) as caught:
            await client.call_tool("canary__secret_echo", {"name": "CANARY_TOKEN"})
        assert caught.value.error.code == -32602
        assert text_of(await client.call_tool("canary__echo", {"text": "ok"})) == "ok"


async def test_a_sandbox_sees_only_its_own_servers(gateway: RunningGateway, canaries: tuple[str, str]) -> None:
    canary_a = canaries[0]
    a = create(gateway, {"canary": {"token": canary_a}})
    b = create(gateway, {"plain": {}})
    async with gateway.client(b["mcp_token"]) as client:
        names = {t.name for t in (await client.list_tools()).tools}
        assert names and all(n.startswith("plain__") for n in names)
        with pytest.raises(MCPError) as caught:
            await client.call_tool("canary__secret_echo", {"name": "CANARY_TOKEN"})
        assert caught.value.error.code == -32602
    assert a["id"] != b["id"]
