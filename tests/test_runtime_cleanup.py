"""A bwrap server's whole process tree and its cgroups go when it stops, is killed or the gateway
dies; what a SIGKILLed gateway left behind is removed at its next start."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gateway.upstream.runtimes import detect_cgroups, instance_label, probe_bwrap
from tests.support import RunningGateway, pid_alive, process_tree

BWRAP = asyncio.run(probe_bwrap())
pytestmark = pytest.mark.skipif(not BWRAP.ok, reason=BWRAP.detail)
CGROUPS = detect_cgroups()
MARK = b"TREE_MARK=1"  # in the environment of every process of the tree server

# A stdio MCP server that starts a child, which starts a grandchild in a session of its own
# (out of the server's process group), before it answers.
TREE_SERVER = r"""
import json, subprocess, sys
grandchild = "import subprocess, time; subprocess.Popen(['sleep', '1000'], start_new_session=True); time.sleep(1000)"
subprocess.Popen([sys.executable, "-c", grandchild])
for line in sys.stdin:
    request = json.loads(line)
    if "id" not in request:
        continue
    method = request["method"]
    if method == "initialize":
        result = {"protocolVersion": request["params"]["protocolVersion"], "capabilities": {"tools": {}},
                  "serverInfo": {"name": "tree", "version": "1"}}
    elif method == "tools/list":
        result = {"tools": [{"name": "ping", "inputSchema": {"type": "object", "properties": {}}}]}
    elif method == "tools/call":
        result = {"content": [{"type": "text", "text": "pong"}]}
    else:
        result = {}
    print(json.dumps({"jsonrpc": "2.0", "id": request["id"], "result": result}), flush=True)
"""


@pytest.fixture(autouse=True)
def no_sleeper_survives() -> Iterator[None]:
    """Whatever a test asserts, the grandchildren it made do not outlive it."""
    yield
    for pid in sleepers(set(map(int, filter(str.isdigit, os.listdir("/proc"))))):
        with contextlib.suppress(OSError):
            if MARK in Path(f"/proc/{pid}/environ").read_bytes():
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def server(tmp_path: Path) -> Path:
    directory = tmp_path / "tree-server"
    directory.mkdir()
    path = directory / "server.py"
    path.write_text(TREE_SERVER)
    return path


def start(factory: Callable[..., RunningGateway], server: Path, **kwargs: object) -> RunningGateway:
    catalog = {"tree": {"command": [sys.executable, str(server)], "env": [{"name": "TREE_MARK", "value": "1"}]}}
    return factory(["--runtime", "bwrap", "--servers", "tree"], catalog=catalog, **kwargs)


async def ping(gateway: RunningGateway) -> None:
    async with gateway.client() as client:
        result = await client.call_tool("tree__ping", {})
    assert result.content[0].text == "pong"  # type: ignore[union-attr]


def cgroups_of(data_dir: Path) -> list[Path]:
    instance = instance_label(data_dir)
    return [p for parent in CGROUPS.parents.values() for p in parent.glob(f"mcp-gateway-{instance}-*")]


def sleepers(pids: set[int]) -> set[int]:
    """The grandchildren (``sleep 1000``) among ``pids``."""
    found = set()
    for pid in pids:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if cmdline[:2] == [b"sleep", b"1000"]:
            found.add(pid)
    return found


def wait_until(condition: Callable[[], bool], timeout: float = 15) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


def server_pid(gateway: RunningGateway, server: Path) -> int:
    """The host pid of the server's own process (python running its script)."""
    for pid in process_tree(gateway.process.pid):
        with_script = False
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            with_script = cmdline[-2:-1] == [str(server).encode()] and b"-c" not in cmdline
        except OSError:
            continue
        if with_script and Path(cmdline[0].decode()).name.startswith("python"):
            return pid
    raise AssertionError("the server's process was not found")


async def test_stopping_a_server_ends_its_whole_tree_and_cgroups(
    gateway_factory: Callable[..., RunningGateway], server: Path
) -> None:
    gateway = start(gateway_factory, server)
    await ping(gateway)
    assert wait_until(lambda: bool(sleepers(process_tree(gateway.process.pid))))
    pids = process_tree(gateway.process.pid)
    with gateway.admin() as admin:
        assert admin.delete("/admin/sandboxes/default").status_code == 204
    assert wait_until(lambda: not [p for p in pids if pid_alive(p)])
    assert wait_until(lambda: not cgroups_of(gateway.data_dir))


async def test_a_killed_server_leaves_no_descendant_nor_cgroup(
    gateway_factory: Callable[..., RunningGateway], server: Path
) -> None:
    gateway = start(gateway_factory, server)
    await ping(gateway)
    pid = server_pid(gateway, server)
    assert wait_until(lambda: bool(sleepers(process_tree(gateway.process.pid))))
    tree = process_tree(gateway.process.pid)
    os.kill(pid, signal.SIGKILL)
    assert wait_until(lambda: not [p for p in tree if pid_alive(p)])
    assert wait_until(lambda: not cgroups_of(gateway.data_dir))
    assert not process_tree(gateway.process.pid)


@pytest.mark.skipif(not CGROUPS.available, reason=f"no cgroups for bwrap limits: {CGROUPS.detail}")
async def test_cgroups_a_killed_gateway_left_are_removed_at_its_next_start(
    gateway_factory: Callable[..., RunningGateway], server: Path, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    gateway = start(gateway_factory, server, data_dir=data_dir)
    await ping(gateway)
    pids = process_tree(gateway.process.pid)
    gateway.stop(signal.SIGKILL)
    assert wait_until(lambda: not [p for p in pids if pid_alive(p)])  # they die with the gateway
    left = cgroups_of(data_dir)
    assert left  # nobody was left to remove them
    start(gateway_factory, server, data_dir=data_dir)
    assert wait_until(lambda: not any(p.exists() for p in left))
