"""Servers in a bubblewrap sandbox: what they can see, write and reach, their limits, and cleanup."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from mcp.shared.exceptions import MCPError

from gateway.upstream.runtimes import detect_cgroups, instance_label, probe_bwrap
from tests.support import REPO, RunningGateway, fixture_entry, pid_alive, process_tree

BWRAP = asyncio.run(probe_bwrap())
pytestmark = pytest.mark.skipif(not BWRAP.ok, reason=BWRAP.detail)

SECRET = "bwrap-secret-value-3b7e"
CANARY = "gateway-env-canary-bwrap"


def entry(*flags: str, **extra: object) -> dict[str, object]:
    return fixture_entry(
        "--name",
        "fix",
        *flags,
        env=[{"name": "FIX_MODE", "value": "sandboxed"}],
        secrets=[{"name": "fix.api_key", "env": "FIX_API_KEY", "required": False}],
        **extra,
    )


def start(
    factory: Callable[..., RunningGateway],
    tmp_path: Path,
    catalog_entry: dict[str, object],
    runtime: str = "bwrap",
) -> RunningGateway:
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"fix": {"apiKey": SECRET}}))
    return factory(
        ["--runtime", runtime, "--config", f"@{config}"],
        catalog={"fix": catalog_entry},
        env={"MCP_GATEWAY_CANARY": CANARY, "SHELL": "/bin/canary"},
    )


async def call(gateway: RunningGateway, tool: str, args: dict[str, object] | None = None) -> tuple[str, bool]:
    async with gateway.client() as client:
        result = await client.call_tool(f"fix__{tool}", args or {})
    text = result.content[0].text if result.content else ""  # type: ignore[union-attr]
    return text, bool(result.is_error)


async def call_failure(gateway: RunningGateway, tool: str, args: dict[str, object]) -> str:
    """Call a tool that must fail with a JSON-RPC error; its message."""
    async with gateway.client() as client:
        with pytest.raises(MCPError) as failure:
            await client.call_tool(f"fix__{tool}", args)
    return str(failure.value)


def server_status(gateway: RunningGateway) -> dict[str, object]:
    with gateway.admin() as admin:
        status = admin.get("/admin/status").json()
    return next(s for box in status["sandboxes"] for s in box["servers"] if s["name"] == "fix")


@pytest.fixture
def listener() -> Iterator[int]:
    """A TCP port on loopback that accepts connections."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield sock.getsockname()[1]


async def test_auto_runtime_runs_servers_in_bwrap(
    gateway_factory: Callable[..., RunningGateway], tmp_path: Path
) -> None:
    gateway = start(gateway_factory, tmp_path, entry(), runtime="auto")
    info, _ = await call(gateway, "whoami")
    assert json.loads(info)["pid"] == 2  # pid 1 of its own pid namespace is bwrap's init
    assert "runs with bwrap" in gateway.output()


async def test_environment_holds_only_the_base_its_env_and_its_secret(
    gateway_factory: Callable[..., RunningGateway], tmp_path: Path
) -> None:
    gateway = start(gateway_factory, tmp_path, entry())
    text, _ = await call(gateway, "env")
    env = json.loads(text)
    assert set(env) == {"PATH", "HOME", "LANG", "FIX_MODE", "FIX_API_KEY"}
    assert env["FIX_API_KEY"] == "[REDACTED:fix.api_key]"  # it was there (and redacted on the way out)
    assert CANARY not in text


async def test_secret_is_in_no_command_line(gateway_factory: Callable[..., RunningGateway], tmp_path: Path) -> None:
    gateway = start(gateway_factory, tmp_path, entry())
    await call(gateway, "echo", {"text": "up"})
    pids = process_tree(gateway.process.pid)
    assert pids
    for pid in pids:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        assert SECRET.encode() not in cmdline


async def test_server_cannot_write_outside_its_home_and_tmp(
    gateway_factory: Callable[..., RunningGateway], tmp_path: Path
) -> None:
    gateway = start(gateway_factory, tmp_path, entry())
    home = gateway.data_dir / "home" / "default" / "fix"
    for path in (REPO / "tests" / "escape.txt", Path("/etc/escape"), Path("/usr/escape"), Path("/escape")):
        text, is_error = await call(gateway, "write_file", {"path": str(path), "content": "x"})
        assert is_error, f"{path} was writable: {text}"
        assert not path.exists()
    # The data dir is not in the sandbox: a write there stays in the sandbox's private /tmp.
    await call(gateway, "write_file", {"path": str(gateway.data_dir / "escape.txt"), "content": "x"})
    assert not (gateway.data_dir / "escape.txt").exists()
    _, is_error = await call(gateway, "write_file", {"path": str(home / "note.txt"), "content": "kept"})
    assert not is_error
    assert (home / "note.txt").read_text() == "kept"
    _, is_error = await call(gateway, "write_file", {"path": "/tmp/scratch.txt", "content": "private"})
    assert not is_error
    assert not Path("/tmp/scratch.txt").exists()


async def test_server_cannot_read_the_gateways_keys(
    gateway_factory: Callable[..., RunningGateway], tmp_path: Path
) -> None:
    gateway = start(gateway_factory, tmp_path, entry())
    for name in ("signing.key", "secrets.key", "admin.key", "token"):
        _text, is_error = await call(gateway, "read_file", {"path": str(gateway.data_dir / name)})
        assert is_error, f"{name} was readable"


async def test_no_network_when_the_entry_disables_it(
    gateway_factory: Callable[..., RunningGateway], tmp_path: Path, listener: int
) -> None:
    gateway = start(gateway_factory, tmp_path, entry(disableNetwork=True))
    text, is_error = await call(gateway, "connect", {"host": "127.0.0.1", "port": listener})
    assert is_error, text


async def test_network_when_the_entry_needs_it(
    gateway_factory: Callable[..., RunningGateway], tmp_path: Path, listener: int
) -> None:
    gateway = start(gateway_factory, tmp_path, entry(disableNetwork=False))
    text, is_error = await call(gateway, "connect", {"host": "127.0.0.1", "port": listener})
    assert not is_error, text


CGROUPS = detect_cgroups()


@pytest.mark.skipif(not CGROUPS.available, reason=f"no cgroups for bwrap limits: {CGROUPS.detail}")
async def test_memory_limit_kills_the_server_and_the_next_call_restarts_it(
    gateway_factory: Callable[..., RunningGateway], tmp_path: Path
) -> None:
    gateway = start(gateway_factory, tmp_path, entry(limits={"memory": "64m"}))
    await call(gateway, "echo", {"text": "up"})
    await call_failure(gateway, "alloc", {"mb": 256})
    status = server_status(gateway)
    assert status["state"] == "crashed"
    assert "killed: out of memory (limit 64m)" in str(status["last_error"])
    text, is_error = await call(gateway, "echo", {"text": "back"})
    assert (text, is_error) == ("back", False)
    assert server_status(gateway)["restarts"] == 1


@pytest.mark.skipif(not CGROUPS.available, reason=f"no cgroups for bwrap limits: {CGROUPS.detail}")
async def test_allocation_under_the_limit_is_fine(
    gateway_factory: Callable[..., RunningGateway], tmp_path: Path
) -> None:
    gateway = start(gateway_factory, tmp_path, entry(limits={"memory": "256m"}))
    assert await call(gateway, "alloc", {"mb": 64}) == ("allocated", False)


def cgroups_of(gateway: RunningGateway) -> list[Path]:
    """The per-server cgroups this gateway made (named after its data dir)."""
    instance = instance_label(gateway.data_dir)
    return [p for parent in CGROUPS.parents.values() for p in parent.glob(f"mcp-gateway-{instance}-*")]


async def test_nothing_is_left_after_the_gateway_exits(
    gateway_factory: Callable[..., RunningGateway], tmp_path: Path
) -> None:
    gateway = start(gateway_factory, tmp_path, entry())
    await call(gateway, "echo", {"text": "up"})
    pids = process_tree(gateway.process.pid)
    assert len(pids) >= 2  # the wrapper, bwrap and the server
    if CGROUPS.available:
        assert cgroups_of(gateway)
    assert gateway.stop() == 0
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(pid_alive(p) for p in pids):
        await asyncio.sleep(0.1)
    assert not [p for p in pids if pid_alive(p)]
    assert not cgroups_of(gateway)


def test_doctor_reports_bwrap_and_what_auto_picks() -> None:
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "gateway", "doctor", "--json"], capture_output=True, text=True, timeout=120, cwd=REPO
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    bwrap = next(check for check in report["runtimes"] if check["name"] == "bwrap")
    assert bwrap["ok"] is True
    assert report["auto"]["runtime"] == "bwrap"
