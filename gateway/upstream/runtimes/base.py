"""What every runtime shares: the :class:`Runtime` interface, probes, resource limits.

A runtime turns one start of a catalog entry (a :class:`LaunchRequest`) into a
:class:`~gateway.upstream.launch.LaunchSpec`: the argv, environment and cleanup commands of the
process the gateway spawns. ``host`` runs the server as a plain subprocess, ``bwrap`` inside a
bubblewrap sandbox, ``container`` with docker or podman; which one an entry gets is decided in
``gateway.upstream.runtimes.select``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
import shutil
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from gateway.catalog.config import ServerSettings
from gateway.catalog.entries import CatalogEntry, CatalogError
from gateway.catalog.paths import PathValue
from gateway.upstream.launch import LaunchSpec

PROBE_TIMEOUT = 20.0
DEFAULT_MEMORY = "2g"
DEFAULT_CPUS = 1.0
DEFAULT_PIDS = 512


@dataclass(frozen=True, slots=True)
class Limits:
    memory_bytes: int
    memory: str  # as written, for messages and the engine flag
    cpus: float
    pids: int


def parse_memory(value: Any) -> int:
    """``2g``, ``512m``, ``64MiB``, ``1048576`` -> bytes."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*", str(value), re.IGNORECASE)
    if not match:
        raise CatalogError(f"memory limit {value!r} is not a size like 512m or 2g")
    scale = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}[match.group(2).lower()]
    size = int(float(match.group(1)) * scale)
    if size < 4 << 20:
        raise CatalogError(f"memory limit {value!r} is below the 4m minimum")
    return size


def limits_for(entry: CatalogEntry) -> Limits:
    raw = entry.limits
    memory = raw.get("memory", DEFAULT_MEMORY)
    try:
        cpus = float(raw.get("cpus", DEFAULT_CPUS))
        pids = int(raw.get("pids", DEFAULT_PIDS))
    except (TypeError, ValueError):
        raise CatalogError(f"server {entry.name!r}: limits.cpus must be a number, limits.pids a whole number") from None
    if cpus <= 0 or pids <= 0:
        raise CatalogError(f"server {entry.name!r}: limits.cpus and limits.pids must be positive")
    return Limits(parse_memory(memory), str(memory), cpus, pids)


@dataclass(frozen=True, slots=True)
class Probe:
    ok: bool
    detail: str  # what works, or why not


async def run_short(
    argv: list[str],
    timeout: float = PROBE_TIMEOUT,
    env: Mapping[str, str] | None = None,
) -> tuple[int, str]:
    """Run a short command; (exit status, its last line of stderr, else of stdout). 127: cannot run."""
    try:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=dict(env) if env is not None else None,
        )
    except OSError as exc:
        return 127, exc.strerror or str(exc)
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
        return 124, f"no answer within {timeout:g} s"
    lines = [line.strip() for data in (out, err) for line in data.decode("utf-8", "replace").splitlines()]
    errors = [line for line in err.decode("utf-8", "replace").splitlines() if line.strip()]
    return process.returncode or 0, (errors or [line for line in lines if line] or [""])[-1][:300]


@dataclass(frozen=True, slots=True)
class LaunchRequest:
    """One start of a server, as every runtime gets it."""

    entry: CatalogEntry
    settings: ServerSettings
    sandbox: str
    home: Path  # the server's private home dir (<data-dir>/home/<sandbox>/<server>)
    command: Callable[[], list[str]]  # the host argv, config templates unfilled; raises CatalogError
    limits: Limits
    paths: Sequence[PathValue] = field(default_factory=tuple)  # declared path parameters, checked


class Runtime(ABC):
    """Where a server process runs. One instance per gateway (data dir) and runtime."""

    name: ClassVar[str]
    isolates: ClassVar[bool] = True  # the server sees only what it is shown (path parameters apply)

    @abstractmethod
    async def probe(self) -> Probe:
        """Can this runtime run servers here? Cached after the first answer that says yes or no."""

    @abstractmethod
    async def prepare(self, request: LaunchRequest) -> LaunchSpec:
        """The LaunchSpec of one start. Raises CatalogError for a bad entry or config."""

    async def sweep(self) -> None:  # noqa: B027  (optional: most runtimes leave nothing behind)
        """Remove what an earlier run of this gateway (same data dir) left behind after a crash."""


class SharedProbes:
    """Runs each probe once for all who ask while it runs: the servers of a sandbox launch together,
    and five launches must not start five identical probes. Caching the result is the caller's."""

    def __init__(self) -> None:
        self._tasks: dict[str, asyncio.Task[Any]] = {}

    async def run(self, key: str, probe: Callable[[], Awaitable[Any]]) -> Any:
        loop = asyncio.get_running_loop()
        task = self._tasks.get(key)
        if task is None or task.get_loop() is not loop:
            task = self._tasks[key] = loop.create_task(probe())

            def forget(done: asyncio.Task[Any]) -> None:
                if self._tasks.get(key) is done:
                    del self._tasks[key]

            task.add_done_callback(forget)
        return await asyncio.shield(task)


def with_parent_death(argv: list[str]) -> list[str]:
    """Make the wrapper die with the gateway (bwrap's --die-with-parent then takes the rest)."""
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "KILL", "--", *argv] if setpriv else argv


def instance_label(data_dir: Path) -> str:
    """Names the gateway (its data dir) on its containers and cgroups, so leftovers of a crash can be found."""
    return hashlib.sha256(str(Path(data_dir).resolve()).encode()).hexdigest()[:12]
