"""The ``bwrap`` runtime: the server in a bubblewrap sandbox (what it sees: ``binds.py``), with
resource limits through a cgroup of its own where the gateway may make one (``cgroups.py``).

Secret values never go on a command line: bwrap inherits the environment of its own process
(no ``--setenv``).
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import shutil
from pathlib import Path

from gateway.upstream.launch import CONFIG_REF, LaunchSpec, host_launch
from gateway.upstream.runtimes.base import LaunchRequest, Probe, Runtime, SharedProbes, run_short, with_parent_death
from gateway.upstream.runtimes.binds import Bind, bwrap_argv, command_paths
from gateway.upstream.runtimes.cgroups import Cgroups, detect_cgroups, limited, sweep_cgroups

logger = logging.getLogger("gateway.runtimes")


async def probe_bwrap() -> Probe:
    """Can we make the namespaces a bwrap server gets (user, pid, net, ...)?"""
    binary = shutil.which("bwrap")
    if binary is None:
        return Probe(False, "bwrap is not installed (apt-get install bubblewrap)")
    argv = [binary, "--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev", "--unshare-all", "--die-with-parent"]
    argv.append("true")
    code, output = await run_short(argv)
    if code != 0:
        hint = " (unprivileged user namespaces may be disabled: sysctl kernel.unprivileged_userns_clone)"
        return Probe(False, f"bwrap cannot create its namespaces here: {output or f'exit {code}'}{hint}")
    return Probe(True, f"{binary} works")


class BwrapRuntime(Runtime):
    name = "bwrap"

    def __init__(self, data_dir: Path, instance: str) -> None:
        self.data_dir = data_dir
        self.instance = instance  # names this gateway's cgroups, so leftovers can be found
        self._probe: Probe | None = None
        self._shared = SharedProbes()
        self._cgroups: Cgroups | None = None

    async def probe(self) -> Probe:
        if self._probe is None:
            self._probe = await self._shared.run("bwrap", probe_bwrap)
        return self._probe

    def cgroups(self) -> Cgroups:
        if self._cgroups is None:
            self._cgroups = detect_cgroups()
        return self._cgroups

    async def sweep(self) -> None:
        """Remove the cgroups an earlier run of this gateway left behind (it was SIGKILLed: its
        servers died with it, through --die-with-parent, but nobody removed their cgroups)."""
        cgroups = self.cgroups()
        if cgroups.available:
            removed = await asyncio.to_thread(sweep_cgroups, cgroups, f"mcp-gateway-{self.instance}-")
            if removed:
                logger.info("removed %d cgroup(s) left behind by an earlier run", removed)

    async def prepare(self, request: LaunchRequest) -> LaunchSpec:
        entry = request.entry
        command = request.command()
        spec = host_launch(entry, request.settings, command, request.home)
        # Only what the entry wrote itself shows paths; config values do through path parameters.
        literal = [arg for arg in command[1:] if not CONFIG_REF.search(arg)]
        install = self.data_dir / "servers" / entry.name
        argv = bwrap_argv(
            spec.argv,
            spec.env,
            request.home,
            read_only=command_paths(spec.argv, literal, spec.env.get("PATH", ""), self.data_dir),
            data_dir=self.data_dir,
            install_dir=install if install.is_dir() else None,
            binds=[Bind(p.path, p.source, p.writable) for p in request.paths],
            network=not entry.disable_network,
            bwrap=shutil.which("bwrap") or "bwrap",
        )
        cleanup: list[list[str]] = []
        cgroups = self.cgroups()
        if cgroups.available:
            safe = re.sub(r"[^a-zA-Z0-9_.-]", "-", request.sandbox)
            name = f"mcp-gateway-{self.instance}-{safe}-{entry.name}-{secrets.token_hex(4)}"
            try:
                wrapped, cleanup = limited(cgroups, name, request.limits, argv)
            except OSError as exc:
                logger.warning("no cgroup for %s (%s): it runs without limits", entry.name, exc)
            else:
                argv = with_parent_death(wrapped)
        return LaunchSpec(
            argv=argv, env=spec.env, cwd=spec.cwd, runtime="bwrap", secret_env=spec.secret_env, cleanup=cleanup
        )
