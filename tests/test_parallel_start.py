"""A sandbox's servers start together: all launches are prepared, then all servers spawned,
and only then is any of them asked to initialize.

Observed without timing: the order of the gateway's own launch steps, and from the servers' side
(each test server, when its ``initialize`` arrives, lists the processes that run the test servers
of this test, by a marker on their command line, and writes what it saw to a file).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

import gateway.upstream.server as server_module
from gateway.core.router import SandboxRouter
from gateway.features.redaction import NO_REDACTION
from gateway.upstream.launch import LaunchSpec, attach, spawn
from gateway.upstream.server import ServerLimits, UpstreamServer
from tests.support import FIXTURE_SERVER, RunningGateway

NAMES = ("s1", "s2", "s3", "s4", "s5")

# A minimal stdio MCP server: on initialize, record which servers of this test exist right now.
SERVER = r"""
import json, os, sys

marker, name, out = sys.argv[1], sys.argv[2], sys.argv[3]


def running() -> list[str]:
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                argv = handle.read().split(b"\0")
        except OSError:
            continue
        if marker.encode() in argv:
            found.append(argv[argv.index(marker.encode()) + 1].decode())
    return sorted(found)


def reply(message_id, result):
    sys.stdout.write(json.dumps({"jsonrpc": "2.0", "id": message_id, "result": result}) + "\n")
    sys.stdout.flush()


for line in sys.stdin:
    message = json.loads(line)
    method, message_id = message.get("method"), message.get("id")
    if method == "initialize":
        with open(os.path.join(out, name + ".json"), "w") as handle:
            json.dump(running(), handle)
        info = {"name": name, "version": "1"}
        reply(message_id, {"protocolVersion": "2025-11-25", "capabilities": {"tools": {}}, "serverInfo": info})
    elif method == "tools/list":
        reply(message_id, {"tools": [{"name": "ping", "inputSchema": {"type": "object"}}]})
    elif message_id is not None:
        reply(message_id, {})
"""


async def test_every_server_of_a_sandbox_is_spawned_before_any_is_initialized(
    gateway_factory: Callable[..., RunningGateway], tmp_path: Path
) -> None:
    script = tmp_path / "seen_server.py"
    script.write_text(SERVER)
    out = tmp_path / "seen"
    out.mkdir()
    marker = f"--parallel-start-marker-{os.getpid()}"
    catalog = {name: {"command": [sys.executable, str(script), marker, name, str(out)]} for name in NAMES}
    gw = gateway_factory(["--runtime", "host", "--servers", ",".join(NAMES)], catalog=catalog)
    async with gw.client() as client:
        tools = {t.name for t in (await client.list_tools()).tools}
    assert tools == {f"{name}__ping" for name in NAMES}
    seen = {name: json.loads((out / f"{name}.json").read_text()) for name in NAMES}
    assert seen == {name: list(NAMES) for name in NAMES}


async def test_all_launches_are_prepared_before_any_server_is_spawned(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[tuple[str, str]] = []
    real_spawn = server_module.spawn

    def recording_spawn(spec: LaunchSpec) -> subprocess.Popen[bytes]:
        events.append(("spawn", spec.argv[-1]))
        return real_spawn(spec)

    monkeypatch.setattr(server_module, "spawn", recording_spawn)

    def launcher(name: str) -> Callable[[], Awaitable[LaunchSpec]]:
        async def launch() -> LaunchSpec:
            events.append(("prepare", name))
            return LaunchSpec(argv=[sys.executable, str(FIXTURE_SERVER), "--name", name], env={"PATH": "/usr/bin:/bin"})

        return launch

    servers = {n: UpstreamServer(n, "sbx", launcher(n), tmp_path / f"{n}.log", ServerLimits(60, 10)) for n in NAMES}
    router = SandboxRouter("sbx", servers, {n: n for n in NAMES}, NO_REDACTION)
    try:
        await router.ensure_started(servers.values())
        assert {s.state for s in servers.values()} == {"running"}
        assert [step for step, _ in events] == ["prepare"] * len(NAMES) + ["spawn"] * len(NAMES)
        assert {name for _, name in events} == set(NAMES)
    finally:
        await router.stop()


@pytest.mark.parametrize("pidfd", [True, False], ids=["pidfd", "waiter-thread"])
async def test_spawned_process_exit_status_is_reported_and_reaped(pidfd: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    if not pidfd:
        monkeypatch.delattr(os, "pidfd_open", raising=False)  # kernels and platforms without pidfds
    spec = LaunchSpec(argv=[sys.executable, "-c", "import sys; sys.stdin.readline(); sys.exit(7)"], env={})
    process = await attach(spawn(spec), limit=1024)
    assert process.returncode is None
    process.stdin.write(b"go\n")
    await process.stdin.drain()
    assert await asyncio.wait_for(process.wait(), 30) == 7
    assert process.returncode == 7
    with pytest.raises(ChildProcessError):  # already reaped: no zombie left behind
        os.waitpid(process.pid, os.WNOHANG)
    assert await process.stdout.read() == b""
    process.stdin.close()
