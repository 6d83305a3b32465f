"""Deadlines and cancellation: a hung call is cut off, cancelled upstream, and blocks nothing else."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable

import anyio
import pytest
from mcp.shared.exceptions import MCPError

from tests.support import RunningGateway, fixture_entry
from tests.upstream_helpers import add_sandbox, eventually, mint_token, server_log


async def test_call_past_its_deadline_fails_clearly_and_is_cancelled_upstream(
    gateway_factory: Callable[..., RunningGateway],
) -> None:
    gw = gateway_factory(
        ["--runtime", "host", "--servers", "fix"], catalog={"fix": fixture_entry(limits={"call_timeout": 1})}
    )
    async with gw.client() as client:
        await client.list_tools()
        started = time.monotonic()
        with pytest.raises(MCPError) as caught:
            await client.call_tool("fix__sleep", {"seconds": 60})
        assert time.monotonic() - started < 5
        assert "server 'fix' did not answer tools/call within 1 s" in caught.value.message
        # The server was told, and is still usable.
        await eventually(lambda: re.search(r"cancelled \d+", server_log(gw, "fix")) is not None, what="cancel")
        assert (await client.call_tool("fix__echo", {"text": "alive"})).structured_content == {"text": "alive"}


async def test_call_timeout_flag_sets_the_default_deadline(gateway_factory: Callable[..., RunningGateway]) -> None:
    gw = gateway_factory(
        ["--runtime", "host", "--servers", "fix", "--call-timeout", "1"], catalog={"fix": fixture_entry()}
    )
    async with gw.client() as client:
        with pytest.raises(MCPError) as caught:
            await client.call_tool("fix__sleep", {"seconds": 60})
    assert "within 1 s" in caught.value.message


async def test_catalog_call_timeout_overrides_the_flag(gateway_factory: Callable[..., RunningGateway]) -> None:
    catalog = {"fix": fixture_entry(limits={"call_timeout": 30})}
    gw = gateway_factory(["--runtime", "host", "--servers", "fix", "--call-timeout", "1"], catalog=catalog)
    async with gw.client() as client:
        result = await client.call_tool("fix__sleep", {"seconds": 2})
    assert result.is_error is False


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
async def test_client_cancellation_is_forwarded_upstream(
    gateway_factory: Callable[..., RunningGateway], mode: str
) -> None:
    gw = gateway_factory(["--runtime", "host", "--servers", "fix"], catalog={"fix": fixture_entry()})
    async with gw.client(mode=mode) as client:
        await client.list_tools()
        with anyio.move_on_after(1):
            await client.call_tool("fix__sleep", {"seconds": 60})
        # The fixture logs "cancelled <id>" when a notifications/cancelled names a running request.
        await eventually(lambda: re.search(r"cancelled \d+", server_log(gw, "fix")) is not None, what="cancel")
        assert (await client.call_tool("fix__echo", {"text": "next"})).structured_content == {"text": "next"}


async def test_hung_server_blocks_no_other_server_session_or_sandbox(
    gateway_factory: Callable[..., RunningGateway], tmp_path: object
) -> None:
    catalog = {"slow": fixture_entry("--name", "slow"), "fast": fixture_entry("--name", "fast")}
    workdir = tmp_path / "gw"  # type: ignore[operator]
    add_sandbox(workdir / "data", "second", {"slow": {}, "fast": {}})
    gw = gateway_factory(["--runtime", "host", "--servers", "slow,fast"], catalog=catalog, workdir=workdir)
    second = mint_token(gw, "second")
    async with gw.client() as caller, gw.client() as other_session, gw.client(token=second) as other_sandbox:
        await caller.list_tools()
        hung = [asyncio.ensure_future(caller.call_tool("slow__sleep", {"seconds": 60})) for _ in range(5)]
        await asyncio.sleep(0.5)
        started = time.monotonic()
        same_session = await caller.call_tool("fast__echo", {"text": "a"})
        same_server = await other_session.call_tool("slow__echo", {"text": "b"})
        other = await other_sandbox.call_tool("slow__echo", {"text": "c"})
        elapsed = time.monotonic() - started
        for task in hung:
            task.cancel()
        await asyncio.gather(*hung, return_exceptions=True)
    assert [r.structured_content for r in (same_session, same_server, other)] == [
        {"text": "a"},
        {"text": "b"},
        {"text": "c"},
    ]
    assert elapsed < 5, f"calls next to a hung one took {elapsed:.1f} s"
