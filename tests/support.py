"""Helpers for end-to-end tests: start the real gateway as a process and talk to it with the mcp client."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import httpx2
import yaml
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

REPO = Path(__file__).resolve().parent.parent
FIXTURE_SERVER = REPO / "tests" / "fixtures" / "fixture_server.py"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def fixture_entry(*flags: str, **extra: Any) -> dict[str, Any]:
    """A catalog entry that runs the fixture server with ``flags``."""
    return {"command": [sys.executable, str(FIXTURE_SERVER), *flags], **extra}


def write_catalog(path: Path, registry: Mapping[str, Any]) -> Path:
    path.write_text(yaml.safe_dump({"registry": dict(registry)}))
    return path


@dataclass
class RunningGateway:
    process: subprocess.Popen[bytes]
    port: int
    data_dir: Path
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.base_url}/mcp"

    @property
    def token(self) -> str:
        return (self.data_dir / "token").read_text().strip()

    @property
    def admin_key(self) -> str:
        return (self.data_dir / "admin.key").read_text().strip()

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def admin(self) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, headers={"Authorization": f"Bearer {self.admin_key}"}, timeout=60)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        return self.process.returncode

    @contextlib.asynccontextmanager
    async def client(self, token: str | None = None, mode: str = "legacy", **kwargs: Any) -> AsyncIterator[Client]:
        """An mcp ``Client`` over streamable HTTP; ``mode`` "legacy" (2025-11-25) or "2026-07-28"."""
        headers = {"Authorization": f"Bearer {token or self.token}"}
        async with httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(120)) as http:
            transport = streamable_http_client(self.url, http_client=http)
            async with Client(transport, mode=mode, **kwargs) as client:
                yield client


def start_gateway(
    args: Sequence[str] = (),
    *,
    workdir: Path,
    catalog: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    data_dir: Path | None = None,
    port: int | None = None,
    wait: bool = True,
) -> RunningGateway:
    """Start ``python -m gateway serve`` on a free loopback port and wait until /healthz answers."""
    workdir.mkdir(parents=True, exist_ok=True)
    data_dir = data_dir or workdir / "data"
    port = port or free_port()
    argv = [sys.executable, "-m", "gateway", "serve", "--port", str(port), "--data-dir", str(data_dir)]
    if catalog is not None:
        argv += ["--catalog", str(write_catalog(workdir / f"catalog-{port}.yaml", catalog))]
    argv += list(args)
    log_path = workdir / f"gateway-{port}.log"
    full_env = {**os.environ, **(env or {})}
    if "GATEWAY_ACCESS_TOKEN" not in (env or {}):
        full_env.pop("GATEWAY_ACCESS_TOKEN", None)
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=full_env, start_new_session=True
        )
    gateway = RunningGateway(process, port, data_dir, log_path, full_env)
    if wait:
        wait_healthy(gateway)
    return gateway


def wait_healthy(gateway: RunningGateway, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if gateway.process.poll() is not None:
            raise RuntimeError(f"gateway exited with {gateway.process.returncode}:\n{gateway.output()}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(gateway.base_url + "/healthz", timeout=2).status_code == 200:
                return
        time.sleep(0.1)
    gateway.stop()
    raise RuntimeError(f"gateway did not become healthy:\n{gateway.output()}")


def process_tree(root_pid: int) -> set[int]:
    """Every live descendant of ``root_pid`` (by walking /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = (entry / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    found: set[int] = set()
    stack = [root_pid]
    while stack:
        for child in children.get(stack.pop(), []):
            if child not in found:
                found.add(child)
                stack.append(child)
    return found


def pid_alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def sandbox_generation(gateway: RunningGateway, sandbox: str) -> str:
    """The stored generation of a sandbox of a (running) gateway; its tokens carry it as ``gen``."""
    from gateway.store.datadir import DataDir
    from gateway.store.sandboxes import SandboxStore

    data = DataDir.open(gateway.data_dir)
    store = SandboxStore(data.database, data.secrets_key())
    try:
        generation = store.generation(sandbox)
    finally:
        store.close()
    if generation is None:
        raise LookupError(f"no sandbox {sandbox!r} in {gateway.data_dir}")
    return generation


def sandbox_token(gateway: RunningGateway, sandbox: str, ttl: int = 600, **claims: Any) -> str:
    """A token for ``sandbox`` signed with the gateway's key, as ``mcp-gateway token`` mints it."""
    from gateway.core.auth import TokenService
    from gateway.store.datadir import DataDir

    service = TokenService(DataDir.open(gateway.data_dir).signing_key(), gateway.url)
    return service.mint(sandbox, ttl=ttl, generation=sandbox_generation(gateway, sandbox), **claims)
