"""Which runtimes work on this machine, and why not: ``mcp-gateway doctor``.

The same probes the gateway uses to choose a runtime (``gateway.upstream.runtimes``), run once
and reported: bubblewrap (and whether its servers get memory/CPU/pids limits through cgroups),
each container engine, and what ``--runtime auto`` would pick.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from gateway.upstream.runtimes import ENGINES, Runtimes


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


@dataclass
class Report:
    checks: list[Check] = field(default_factory=list)
    auto: str = "host"
    auto_why: str = ""
    engine: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "runtimes": [asdict(c) for c in self.checks],
            "auto": {"runtime": self.auto, "why": self.auto_why},
            "container_engine": self.engine,
        }

    def lines(self) -> list[str]:
        width = max(len(c.name) for c in self.checks)
        out = [f"{'ok' if c.ok else '--'}  {c.name:<{width}}  {c.detail}" for c in self.checks]
        out.append(f"--runtime auto runs entries without an image with: {self.auto} ({self.auto_why})")
        out.append(f"entries with an image run with: {self.engine or 'nothing (no container engine works)'}")
        return out


async def diagnose(engine: str | None = None, data_dir: Path | None = None) -> Report:
    runtimes = Runtimes("auto", engine, data_dir or Path("."))
    report = Report()
    host = await runtimes.host.probe()
    report.checks.append(Check("host", host.ok, host.detail))
    bwrap = await runtimes.bwrap.probe()
    report.checks.append(Check("bwrap", bwrap.ok, bwrap.detail))
    if bwrap.ok:
        cgroups = runtimes.bwrap.cgroups()
        detail = (
            f"memory/cpus/pids limits through {cgroups.detail}"
            if cgroups.available
            else f"no limits for bwrap servers: {cgroups.detail}"
        )
        report.checks.append(Check("bwrap limits", cgroups.available, detail))
    for name in [engine] if engine else list(ENGINES):
        probe = (await runtimes.container.engines())[name]
        report.checks.append(Check(f"container ({name})", probe.ok, probe.detail))
    auto, report.auto_why = await runtimes.default_runtime()
    report.auto = auto.name
    report.engine = await runtimes.container.engine()
    return report
