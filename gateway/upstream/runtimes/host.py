"""The ``host`` runtime: the server as a plain subprocess, in its private home dir (no isolation)."""

from __future__ import annotations

from gateway.upstream.launch import LaunchSpec, host_launch
from gateway.upstream.runtimes.base import LaunchRequest, Probe, Runtime


class HostRuntime(Runtime):
    name = "host"
    isolates = False

    async def probe(self) -> Probe:
        return Probe(True, "plain subprocess: no isolation (for development)")

    async def prepare(self, request: LaunchRequest) -> LaunchSpec:
        return host_launch(request.entry, request.settings, request.command(), request.home)
