"""Where a server process runs: on the host, in a bubblewrap sandbox, or in a container.

``base.Runtime`` is the interface (``probe``, ``prepare``, ``sweep``); ``host``, ``bwrap`` and
``container`` implement it; ``select.Runtimes`` chooses one per catalog entry.
"""

from __future__ import annotations

from gateway.upstream.runtimes.base import LaunchRequest, Limits, Probe, Runtime, instance_label, limits_for
from gateway.upstream.runtimes.bwrap import BwrapRuntime, probe_bwrap
from gateway.upstream.runtimes.cgroups import Cgroups, detect_cgroups
from gateway.upstream.runtimes.container import ENGINES, ContainerRuntime, probe_engine
from gateway.upstream.runtimes.host import HostRuntime
from gateway.upstream.runtimes.select import RUNTIMES, Runtimes, runtimes_for

__all__ = [
    "ENGINES",
    "RUNTIMES",
    "BwrapRuntime",
    "Cgroups",
    "ContainerRuntime",
    "HostRuntime",
    "LaunchRequest",
    "Limits",
    "Probe",
    "Runtime",
    "Runtimes",
    "detect_cgroups",
    "instance_label",
    "limits_for",
    "probe_bwrap",
    "probe_engine",
    "runtimes_for",
]
