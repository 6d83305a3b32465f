"""Which runtime a catalog entry gets, decided in one place (see docs/reference.md, Runtimes).

- an entry with ``image`` runs in a container (docker or podman, ``--container-engine`` or
  whichever answers ``info``). An entry that also has a host ``command`` (github-official) falls
  back to the gateway's default runtime when no engine works or the image is not present locally
  (``--pull never``), unless ``--runtime container`` was asked for;
- every other entry runs per ``--runtime``: ``host`` (a plain subprocess), ``bwrap``, or
  ``auto`` = bwrap where it works, else host. ``--runtime container`` for an entry without an
  image is refused: there is no image to run.

Every runtime starts from the same environment (``launch.server_environment``). Limits (catalog
``limits: {memory: 512m, cpus: 0.5, pids: 256}``, defaults 2g / 1 / 512) are enforced by the
engine for containers and by cgroups for bwrap (``cgroups.py``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from gateway.catalog.config import ServerSettings
from gateway.catalog.entries import CatalogEntry, CatalogError
from gateway.catalog.paths import path_values
from gateway.upstream.errors import SERVER_UNAVAILABLE, UpstreamError
from gateway.upstream.launch import LaunchSpec
from gateway.upstream.runtimes.base import LaunchRequest, Probe, Runtime, instance_label, limits_for
from gateway.upstream.runtimes.bwrap import BwrapRuntime
from gateway.upstream.runtimes.container import ContainerRuntime
from gateway.upstream.runtimes.host import HostRuntime

logger = logging.getLogger("gateway.runtimes")

RUNTIMES = ("auto", "host", "bwrap", "container")


class Runtimes:
    """One gateway's runtimes and its choice among them: probes run once, then every launch is
    prepared by the runtime its entry gets."""

    def __init__(self, runtime: str, engine: str | None, data_dir: Path) -> None:
        if runtime not in RUNTIMES:
            raise ValueError(f"unknown runtime {runtime!r}; valid: {', '.join(RUNTIMES)}")
        self.runtime = runtime
        self.data_dir = Path(data_dir)
        self.instance = instance_label(self.data_dir)
        self.host = HostRuntime()
        self.bwrap = BwrapRuntime(self.data_dir, self.instance)
        self.container = ContainerRuntime(engine, self.instance, self.data_dir)
        self._warned: set[str] = set()

    async def default_runtime(self) -> tuple[Runtime, str]:
        """(the runtime of entries without an image, why)."""
        if self.runtime == "auto":
            probe = await self.bwrap.probe()
            if probe.ok:
                return self.bwrap, "auto: bubblewrap works here"
            return self.host, f"auto: {probe.detail}"
        chosen = {"host": self.host, "bwrap": self.bwrap, "container": self.container}[self.runtime]
        return chosen, f"--runtime {self.runtime}"

    async def choose(self, entry: CatalogEntry) -> tuple[Runtime, str]:
        """(runtime, why) for one entry; raises UpstreamError when the runtime it needs cannot run here."""
        runtime, why = await self._choose(entry)
        if runtime is self.bwrap:
            probe = await self.bwrap.probe()
            if not probe.ok:
                raise UpstreamError(f"server {entry.name!r} needs bwrap: {probe.detail}", SERVER_UNAVAILABLE)
        return runtime, why

    async def _choose(self, entry: CatalogEntry) -> tuple[Runtime, str]:
        if entry.image:
            fallback = bool(entry.command) and self.runtime != "container"
            probe: Probe = await self.container.probe()
            if not probe.ok:
                if not fallback:
                    raise UpstreamError(
                        f"server {entry.name!r} runs in a container, but no container engine works: {probe.detail}",
                        SERVER_UNAVAILABLE,
                    )
                runtime, _ = await self.default_runtime()
                return runtime, f"no container engine works ({probe.detail}); its command runs instead"
            engine = await self.container.engine()
            if not await self.container.image_present(entry.image):
                if not fallback:
                    raise UpstreamError(
                        f"server {entry.name!r}: image {entry.image} is not present in {engine}"
                        f" (the gateway never pulls at start); run: mcp-gateway pull {entry.name}",
                        SERVER_UNAVAILABLE,
                    )
                runtime, _ = await self.default_runtime()
                return runtime, f"image {entry.image} is not pulled; its command runs instead"
            return self.container, f"image {entry.image} with {engine}"
        if self.runtime == "container":
            raise UpstreamError(
                f"server {entry.name!r} has no image, so it cannot run with --runtime container;"
                " use --runtime bwrap, host or auto",
                SERVER_UNAVAILABLE,
            )
        return await self.default_runtime()

    async def launch(
        self,
        entry: CatalogEntry,
        settings: ServerSettings,
        sandbox: str,
        home: Path,
        command: Callable[[], list[str]],
    ) -> LaunchSpec:
        """Build the LaunchSpec for one start of ``entry``. ``command()`` gives the host argv."""
        runtime, why = await self.choose(entry)
        key = f"{sandbox}/{entry.name}/{runtime.name}"
        if key not in self._warned:
            self._warned.add(key)
            logger.info("server %s of sandbox %s runs with %s (%s)", entry.name, sandbox, runtime.name, why)
        try:
            # Path parameters are checked again at each start: a path may have become a link since.
            paths = path_values(entry, settings.config, self.data_dir) if runtime.isolates else []
            request = LaunchRequest(entry, settings, sandbox, home, command, limits_for(entry), paths)
            return await runtime.prepare(request)
        except CatalogError as exc:
            raise UpstreamError(str(exc), SERVER_UNAVAILABLE) from None

    async def sweep(self) -> None:
        """At the gateway's start: remove what a crashed earlier run left (its cgroups, and its
        containers if it ran any: the engines are not asked otherwise)."""
        await self.bwrap.sweep()
        await self.container.sweep_if_used()

    async def describe(self) -> str:
        """One line for ``serve``: which runtime entries get, and the container engine."""
        runtime, why = await self.default_runtime()
        engine = await self.container.engine()
        return f"runtime: {runtime.name} ({why}); images: {engine or 'no container engine'}"


_MANAGERS: dict[tuple[str, str | None, str], Runtimes] = {}


def runtimes_for(runtime: str, engine: str | None, data_dir: Path) -> Runtimes:
    """The (cached) :class:`Runtimes` of a gateway's settings and data dir."""
    key = (runtime, engine, str(data_dir))
    manager = _MANAGERS.get(key)
    if manager is None:
        manager = _MANAGERS[key] = Runtimes(runtime, engine, data_dir)
    return manager
