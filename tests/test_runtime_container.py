"""Servers with an ``image`` run in a container: hardening, environment, network, memory, cleanup.

The image is built locally from the host's Python (tests/images/python_image.py) with no
registry access; it runs the fixture server.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from mcp.shared.exceptions import MCPError

from gateway.upstream.runtimes import ENGINES, instance_label, probe_engine
from gateway.upstream.runtimes.container import PODMAN_ULIMITS
from tests.images import python_image
from tests.support import RunningGateway, process_tree


def _working_engine() -> tuple[str | None, str]:
    reasons = []
    for engine in ENGINES:
        probe = asyncio.run(probe_engine(engine))
        if probe.ok:
            return engine, probe.detail
        reasons.append(probe.detail)
    return None, "; ".join(reasons)


ENGINE, WHY = _working_engine()
pytestmark = pytest.mark.skipif(ENGINE is None, reason=f"no container engine: {WHY}")

SECRET = "container-secret-value-81c4"
CANARY = "gateway-env-canary-container"


@pytest.fixture(scope="module")
def image() -> str:
    assert ENGINE is not None
    return python_image.build(ENGINE)


def entry(image: str, **extra: object) -> dict[str, object]:
    return {
        "image": image,
        "env": [{"name": "FIX_MODE", "value": "contained"}],
        "secrets": [{"name": "fix.api_key", "env": "FIX_API_KEY", "required": False}],
        "disableNetwork": True,
        **extra,
    }


def start(
    factory: Callable[..., RunningGateway], tmp_path: Path, catalog_entry: dict[str, object], **kwargs: object
) -> RunningGateway:
    assert ENGINE is not None
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"fix": {"apiKey": SECRET}}))
    return factory(
        ["--container-engine", ENGINE, "--config", f"@{config}"],
        catalog={"fix": catalog_entry},
        env={"MCP_GATEWAY_CANARY": CANARY, "SHELL": "/bin/canary"},
        **kwargs,
    )


async def call(gateway: RunningGateway, tool: str, args: dict[str, object] | None = None) -> tuple[str, bool]:
    async with gateway.client() as client:
        result = await client.call_tool(f"fix__{tool}", args or {})
    text = result.content[0].text if result.content else ""  # type: ignore[union-attr]
    return text, bool(result.is_error)


def server_status(gateway: RunningGateway) -> dict[str, object]:
    with gateway.admin() as admin:
        status = admin.get("/admin/status").json()
    return next(s for box in status["sandboxes"] for s in box["servers"] if s["name"] == "fix")


def containers_of(gateway: RunningGateway) -> list[str]:
    assert ENGINE is not None
    label = f"label=mcp-gateway.gateway={instance_label(gateway.data_dir)}"
    out = subprocess.run([ENGINE, "ps", "-aq", "--filter", label], capture_output=True, text=True, timeout=60)
    return out.stdout.split()


async def test_server_runs_in_a_hardened_labelled_container(
    gateway_factory: Callable[..., RunningGateway], tmp_path: Path, image: str
) -> None:
    assert ENGINE is not None
    gateway = start(gateway_factory, tmp_path, entry(image))
    await call(gateway, "echo", {"text": "up"})
    ids = containers_of(gateway)
    assert len(ids) == 1
    info = json.loads(subprocess.run([ENGINE, "inspect", ids[0]], capture_output=True, text=True, timeout=60).stdout)[0]
    labels = info["Config"]["Labels"]
    assert labels["mcp-gateway.server"] == "fix" and labels["mcp-gateway.sandbox"] == "default"
    host = info["HostConfig"]
    assert host["Memory"] == 2 * 1024**3
    assert host["PidsLimit"] == 512
    assert host["NanoCpus"] == 1_000_000_000
    assert "ALL" in (host.get("CapDrop") or []) or not info.get("EffectiveCaps")
    assert any("no-new-privileges" in opt for opt in host.get("SecurityOpt") or [])
    assert host["NetworkMode"] == "none"


async def test_environment_holds_only_the_contract_and_the_images_own(
    gateway_factory: Callable[..., RunningGateway], tmp_path: Path, image: str
) -> None:
    gateway = start(gateway_factory, tmp_path, entry(image))
    text, _ = await call(gateway, "env")
    env = json.loads(text)
    ours = {"LANG", "FIX_MODE", "FIX_API_KEY"}
    image_own = {"PATH", "IMAGE_VAR"}  # set by the image (python_image.py)
    engine_own = {"HOSTNAME", "HOME", "container", "TERM"}  # set by docker/podman in every container
    assert ours <= set(env)
    assert set(env) <= ours | image_own | engine_own, set(env)
    assert env["IMAGE_VAR"] == "from-image"
    assert env["FIX_API_KEY"] == "[REDACTED:fix.api_key]"  # there, and redacted on the way out
    assert CANARY not in text and "canary" not in text


async def test_secret_is_in_no_command_line(
    gateway_factory: Callable[..., RunningGateway], tmp_path: Path, image: str
) -> None:
    gateway = start(gateway_factory, tmp_path, entry(image))
    await call(gateway, "echo", {"text": "up"})
    pids = process_tree(gateway.process.pid)
    assert pids
    for pid in pids:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        assert SECRET.encode() not in cmdline


async def test_no_network_when_the_entry_disables_it(
    gateway_factory: Callable[..., RunningGateway], tmp_path: Path, image: str
) -> None:
    gateway = start(gateway_factory, tmp_path, entry(image))
    text, is_error = await call(gateway, "read_file", {"path": "/proc/net/dev"})
    assert not is_error, text
    interfaces = {line.split(":", 1)[0].strip() for line in text.splitlines() if ":" in line}
    assert interfaces == {"lo"}


async def test_memory_limit_kills_the_server_and_the_next_call_restarts_it(
    gateway_factory: Callable[..., RunningGateway], tmp_path: Path, image: str
) -> None:
    gateway = start(gateway_factory, tmp_path, entry(image, limits={"memory": "64m"}))
    await call(gateway, "echo", {"text": "up"})
    async with gateway.client() as client:
        with pytest.raises(MCPError):
            await client.call_tool("fix__alloc", {"mb": 256})
    status = server_status(gateway)
    assert status["state"] == "crashed"
    assert "out of memory" in str(status["last_error"]) and "64m" in str(status["last_error"])
    assert await call(gateway, "echo", {"text": "back"}) == ("back", False)


async def test_missing_image_is_reported_not_pulled(
    gateway_factory: Callable[..., RunningGateway], tmp_path: Path
) -> None:
    gateway = start(gateway_factory, tmp_path, entry("localhost/mcp-gateway-test/absent:0"))
    async with gateway.client() as client:
        tools = await client.list_tools()
    assert tools.tools == []
    assert "mcp-gateway pull fix" in str(server_status(gateway)["last_error"])


async def test_no_container_or_process_is_left_after_the_gateway_exits(
    gateway_factory: Callable[..., RunningGateway], tmp_path: Path, image: str
) -> None:
    gateway = start(gateway_factory, tmp_path, entry(image))
    await call(gateway, "echo", {"text": "up"})
    assert containers_of(gateway)
    pids = process_tree(gateway.process.pid)
    assert gateway.stop() == 0
    assert containers_of(gateway) == []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() for p in pids):
        await asyncio.sleep(0.1)
    assert not [p for p in pids if Path(f"/proc/{p}").exists()]


async def test_containers_a_killed_gateway_left_are_removed_at_its_next_start(
    gateway_factory: Callable[..., RunningGateway], tmp_path: Path, image: str
) -> None:
    import signal

    assert ENGINE is not None
    data_dir = tmp_path / "data"
    gateway = start(gateway_factory, tmp_path, entry(image), data_dir=data_dir)
    await call(gateway, "echo", {"text": "up"})
    gateway.stop(signal.SIGKILL)
    # A server that outlived it (one that ignores the end of its input), labelled as the gateway's.
    label = f"mcp-gateway.gateway={instance_label(data_dir)}"
    sleeper = [ENGINE, "run", "-d", "--rm", *PODMAN_ULIMITS, "--label", label, image, "/usr/local/bin/python3", "-c"]
    run = subprocess.run([*sleeper, "import time; time.sleep(600)"], check=True, capture_output=True, timeout=120)
    try:
        assert containers_of(gateway)
        again = start(gateway_factory, tmp_path, entry(image), data_dir=data_dir)  # no call: nothing started
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and containers_of(again):
            await asyncio.sleep(0.5)
        assert containers_of(again) == []
    finally:
        subprocess.run([ENGINE, "rm", "-f", run.stdout.decode().strip()], capture_output=True, timeout=60)


async def test_a_path_parameter_is_mounted_read_only(
    gateway_factory: Callable[..., RunningGateway], tmp_path: Path, image: str
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "input.txt").write_text("from the host")
    config = [{"name": "fix", "properties": {"dir": {"type": "string", "format": "path"}}}]
    gateway = start(gateway_factory, tmp_path, entry(image, config=config))
    with gateway.admin() as admin:
        created = admin.post("/admin/sandboxes", json={"mcp": {"fix": {"dir": str(shared)}}})
    assert created.status_code == 201, created.text
    token = created.json()["mcp_token"]
    async with gateway.client(token=token) as client:
        read = await client.call_tool("fix__read_file", {"path": str(shared / "input.txt")})
        write = await client.call_tool("fix__write_file", {"path": str(shared / "out.txt"), "content": "x"})
    assert (read.content[0].text, read.is_error) == ("from the host", False)  # type: ignore[union-attr]
    assert write.is_error
    assert not (shared / "out.txt").exists()
