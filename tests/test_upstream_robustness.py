"""Upstreams that misbehave on the wire: garbage lines, huge messages, endless lines, noisy stderr."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.support import RunningGateway, fixture_entry
from tests.upstream_helpers import live_descendants, server_log, server_status, unlimited_client


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


async def test_non_json_lines_are_logged_and_skipped(gateway_factory: Callable[..., RunningGateway]) -> None:
    gw = gateway_factory(["--runtime", "host", "--servers", "noisy"], catalog={"noisy": fixture_entry("--garbage")})
    async with gw.client() as client:
        assert "noisy__echo" in {t.name for t in (await client.list_tools()).tools}
        for i in range(3):
            result = await client.call_tool("noisy__echo", {"text": f"through {i}"})
            assert result.structured_content == {"text": f"through {i}"}
    assert "not JSON-RPC (skipped)" in gw.output()
    assert server_status(gw, "noisy")["restarts"] == 0


async def test_twenty_megabyte_result_passes_intact(gateway_factory: Callable[..., RunningGateway]) -> None:
    gw = gateway_factory(["--runtime", "host", "--servers", "fix"], catalog={"fix": fixture_entry()})
    size = 20 * 1024 * 1024
    async with unlimited_client(gw) as client:
        result = await client.call_tool("fix__big", {"size": size})
        text = result.content[0].text
        assert len(text) == size and text == "x" * size
        # The connection is still in step afterwards.
        assert (await client.call_tool("fix__echo", {"text": "after"})).structured_content == {"text": "after"}


async def test_endless_line_is_cut_off_with_bounded_memory(gateway_factory: Callable[..., RunningGateway]) -> None:
    catalog = {"endless": fixture_entry("--endless-line"), "ok": fixture_entry()}
    gw = gateway_factory(["--runtime", "host", "--servers", "endless,ok"], catalog=catalog)
    async with gw.client() as client:
        names = {t.name for t in (await client.list_tools()).tools}
        assert "ok__echo" in names and not any(n.startswith("endless__") for n in names)
        assert (await client.call_tool("ok__echo", {"text": "fine"})).structured_content == {"text": "fine"}
    endless = server_status(gw, "endless")
    assert endless["state"] == "failed"
    assert "over the 64 MiB limit" in endless["last_error"]
    # The writer was killed, not left blocked on a full pipe; the gateway's memory stayed bounded.
    assert live_descendants(gw.process.pid) == {server_status(gw, "ok")["pid"]}
    assert peak_rss_mib(gw.process.pid) < 512


async def test_server_stderr_goes_to_its_own_log(gateway_factory: Callable[..., RunningGateway]) -> None:
    gw = gateway_factory(
        ["--runtime", "host", "--servers", "chatty"], catalog={"chatty": fixture_entry("--stderr-noise")}
    )
    async with gw.client() as client:
        await client.list_tools()
    assert "noise 0: starting fixture" in server_log(gw, "chatty")
    assert "noise 0" not in gw.output()
