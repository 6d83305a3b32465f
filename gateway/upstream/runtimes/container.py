"""The ``container`` runtime: the server in a docker or podman container of its image.

Hardened like Docker's MCP gateway (``--rm -i --init --pull never --security-opt
no-new-privileges --cap-drop ALL``, memory/cpus/pids limits, no network when the entry disables
it), labelled ``mcp-gateway.gateway/server/sandbox`` so the containers a crashed gateway left are
removed at its next start. Secret values never go on a command line: the engine CLI gets
``-e NAME`` with the value only in the CLI's environment. Declared path parameters are bind
mounts at the same path.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import secrets
import shutil
from collections.abc import Sequence
from pathlib import Path

from gateway.catalog.config import ServerSettings
from gateway.catalog.entries import CatalogEntry, CatalogError
from gateway.catalog.paths import PathValue
from gateway.upstream.launch import LaunchSpec, fill_config, secret_environment, server_environment
from gateway.upstream.runtimes.base import (
    LaunchRequest,
    Limits,
    Probe,
    Runtime,
    SharedProbes,
    run_short,
    with_parent_death,
)

logger = logging.getLogger("gateway.runtimes")

ENGINES = ("docker", "podman")

# The engine CLI's own environment: what docker/podman need to find their daemon, config and
# helpers. It reaches the CLI only; the container gets just the names passed with ``-e``.
ENGINE_ENV = (
    "PATH",
    "HOME",
    "TMPDIR",
    "XDG_RUNTIME_DIR",
    "XDG_CONFIG_HOME",
    "XDG_DATA_HOME",
    "DOCKER_HOST",
    "DOCKER_CONTEXT",
    "DOCKER_CONFIG",
    "DOCKER_CERT_PATH",
    "DOCKER_TLS_VERIFY",
    "CONTAINER_HOST",
    "CONTAINER_CONNECTION",
    "CONTAINERS_CONF",
    "CONTAINERS_STORAGE_CONF",
    "REGISTRIES_CONFIG_PATH",
)
# Rootful podman copies the host's maximum rlimits into the container, which runc may not set
# ("error setting rlimits ... operation not permitted"): give explicit ones. nproc counts every
# process of the uid on the host (root, without capabilities), so it is not 1024.
PODMAN_ULIMITS = ("--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096")

# Runs the container engine CLI: the engine cannot say after --rm whether the kernel's OOM
# killer ended the container, so an exit by SIGKILL is reported with the memory limit.
ENGINE_SHIM = r"""
limit=$1; shift
"$@"
rc=$?
if [ "$rc" -eq 137 ]; then echo "killed: out of memory (SIGKILL under the memory limit $limit)" >&2; fi
exit $rc
"""


def engine_environment() -> dict[str, str]:
    return {name: os.environ[name] for name in ENGINE_ENV if name in os.environ}


async def probe_engine(engine: str) -> Probe:
    binary = shutil.which(engine)
    if binary is None:
        return Probe(False, f"{engine} is not installed")
    code, output = await run_short([binary, "info", "--format", "{{json .}}"], env=engine_environment())
    if code != 0:
        return Probe(False, f"{engine} does not answer 'info': {output or f'exit {code}'}")
    return Probe(True, f"{binary} answers")


def container_name(sandbox: str, server: str) -> str:
    safe = re.sub(r"[^a-zA-Z0-9_.-]", "-", f"{sandbox}-{server}")[:80]
    return f"mcp-gateway-{safe}-{secrets.token_hex(4)}"


def container_argv(
    engine: str,
    entry: CatalogEntry,
    settings: ServerSettings,
    env_names: list[str],
    limits: Limits,
    name: str,
    sandbox: str,
    instance: str,
    mounts: Sequence[PathValue] = (),
) -> list[str]:
    argv = [engine, "run", "--rm", "-i", "--init", "--pull", "never"]
    argv += ["--security-opt", "no-new-privileges", "--cap-drop", "ALL"]
    argv += ["--memory", limits.memory, "--cpus", f"{limits.cpus:g}", "--pids-limit", str(limits.pids)]
    if Path(engine).name == "podman":
        argv += list(PODMAN_ULIMITS)
    argv += ["--log-driver", "none"]  # the engine must not keep a copy of the server's output
    argv += ["--label", f"mcp-gateway.gateway={instance}"]
    argv += ["--label", f"mcp-gateway.server={entry.name}", "--label", f"mcp-gateway.sandbox={sandbox}"]
    argv += ["--name", name]
    if entry.disable_network:
        argv += ["--network", "none"]
    for env_name in env_names:
        argv += ["-e", env_name]
    for mount in mounts:  # declared path parameters (gateway/catalog/paths.py)
        if "," in str(mount.source) or "," in str(mount.path):
            raise CatalogError(f"server {entry.name!r}: config {mount.name!r}: a path with a comma cannot be mounted")
        spec = f"type=bind,source={mount.source},target={mount.path}"
        argv += ["--mount", spec if mount.writable else f"{spec},readonly"]
    assert entry.image is not None
    argv.append(entry.image)
    return argv + [fill_config(arg, entry, settings.config) for arg in entry.command]


class ContainerRuntime(Runtime):
    """Containers of one engine: ``--container-engine``, else the first of docker, podman that answers."""

    name = "container"

    def __init__(self, engine_choice: str | None, instance: str, data_dir: Path) -> None:
        self.engine_choice = engine_choice
        self.instance = instance
        # Present while this gateway may have containers: a start after a crash sweeps only then
        # (the engines are not asked at every start).
        self.marker = data_dir / "containers-in-use"
        self._engines: dict[str, Probe] = {}
        self._images: dict[str, bool] = {}
        self._shared = SharedProbes()
        self._swept = False
        self._lock = asyncio.Lock()

    async def engines(self) -> dict[str, Probe]:
        """The probe of each engine that may be used (only ``--container-engine`` when given)."""
        names = [self.engine_choice] if self.engine_choice else list(ENGINES)
        for name in names:
            if name not in self._engines:
                self._engines[name] = await self._shared.run(f"engine {name}", lambda name=name: probe_engine(name))
        return {name: self._engines[name] for name in names}

    async def engine(self) -> str | None:
        for name, probe in (await self.engines()).items():
            if probe.ok:
                return name
        return None

    async def probe(self) -> Probe:
        probes = await self.engines()
        for probe in probes.values():
            if probe.ok:
                return probe
        return Probe(False, "; ".join(p.detail for p in probes.values()))

    async def image_present(self, image: str) -> bool:
        """Is the image there? Only a yes is remembered: it may be pulled while we run."""
        engine = await self.engine()
        if engine is None:
            return False
        if not self._images.get(image):
            inspect = [engine, "image", "inspect", image]
            code, _ = await self._shared.run(
                f"image {engine} {image}", lambda: run_short(inspect, env=engine_environment())
            )
            self._images[image] = code == 0
        return self._images[image]

    async def sweep(self) -> None:
        """Remove containers a previous run of this gateway (same data dir) left behind."""
        engine = await self.engine()
        if engine is None:
            return
        async with self._lock:
            if self._swept:
                return
            self._swept = True
            filter_ = f"label=mcp-gateway.gateway={self.instance}"
            process = await asyncio.create_subprocess_exec(
                engine, "ps", "-aq", "--filter", filter_,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL, env=engine_environment(),
            )  # fmt: skip
            out, _ = await process.communicate()
            ids = out.decode().split()
            if ids:
                logger.info("removing %d container(s) left behind by an earlier run", len(ids))
                await run_short([engine, "rm", "-f", *ids], timeout=60, env=engine_environment())
            self.marker.unlink(missing_ok=True)  # under the lock: a launch marks it again after this

    async def sweep_if_used(self) -> None:
        """At the gateway's start: remove what an earlier run left, if it ever ran a container."""
        if self.marker.exists():
            await self.sweep()

    async def prepare(self, request: LaunchRequest) -> LaunchSpec:
        entry, settings, home = request.entry, request.settings, request.home
        engine = await self.engine()
        if engine is None:
            raise CatalogError(f"server {entry.name!r} runs in a container, but no container engine works")
        await self.sweep()
        self.marker.touch()
        binary = shutil.which(engine) or engine
        home.mkdir(parents=True, exist_ok=True)
        server_env = server_environment(entry, settings, home)
        # The image brings its own PATH and HOME (its filesystem is private to it).
        container_env = {k: v for k, v in server_env.items() if k not in ("PATH", "HOME")}
        cli_env = engine_environment()
        clashes = sorted(set(container_env) & set(cli_env))
        if clashes:
            raise CatalogError(
                f"server {entry.name!r} declares {', '.join(clashes)}, which the container engine itself reads;"
                " rename the variable"
            )
        name = container_name(request.sandbox, entry.name)
        argv = container_argv(
            binary, entry, settings, sorted(container_env), request.limits, name, request.sandbox, self.instance,
            request.paths,
        )  # fmt: skip
        shim = with_parent_death(["/bin/sh", "-c", ENGINE_SHIM, "mcp-gateway-engine", request.limits.memory, *argv])
        return LaunchSpec(
            argv=shim,
            env={**cli_env, **container_env},
            cwd=str(home),
            runtime="container",
            secret_env=frozenset(secret_environment(entry, settings)),
            cleanup=[[binary, "rm", "-f", name]],
        )
