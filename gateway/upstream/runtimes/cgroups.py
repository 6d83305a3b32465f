"""Resource limits for bwrap servers: a cgroup of their own per server start.

Made when the gateway may create cgroups (cgroup v1 controllers, or a delegated cgroup v2
subtree); without them a bwrap server runs without limits and ``mcp-gateway doctor`` says so.
A server killed by the kernel's OOM killer under its memory limit is reported as
``killed: out of memory (limit ...)`` on its stderr, which the gateway keeps as its last_error.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from gateway.upstream.runtimes.base import Limits

# Kills what is left in cgroup dir $d, then removes it (retrying while the kernel lets go of it).
_REMOVE = r"""
  i=0
  while [ -d "$d" ] && [ $i -lt 50 ]; do
    for p in $(cat "$d/cgroup.procs" 2>/dev/null); do kill -9 "$p" 2>/dev/null; done
    rmdir "$d" 2>/dev/null && break
    sleep 0.1; i=$((i+1))
  done
"""
# Runs a bwrap server inside its cgroups: join them, run, name an OOM kill on stderr, then
# (when the server has ended by itself: a crash, a kill) step out of them and remove them.
LIMIT_SHIM = (
    r"""
n=$1; shift; dirs=""
while [ "$n" -gt 0 ]; do
  echo $$ > "$1/cgroup.procs" || { echo "could not join cgroup $1" >&2; exit 125; }
  dirs="$dirs $1"; shift; n=$((n-1))
done
oom=$1; limit=$2; shift 2
"$@"
rc=$?
if [ "$rc" -eq 137 ] && grep -qs '^oom_kill [1-9]' "$oom"; then
  echo "killed: out of memory (limit $limit)" >&2
fi
for d in $dirs; do
  echo $$ > "${d%/*}/cgroup.procs" 2>/dev/null || continue
"""
    + _REMOVE
    + r"""
done
exit $rc
"""
)
# Cleans up a bwrap server's cgroups after it was stopped: kill what is left, remove them.
CGROUP_CLEANUP = 'for d in "$@"; do' + _REMOVE + "done\n"


@dataclass(frozen=True, slots=True)
class Cgroups:
    """Where the gateway may create per-server cgroups."""

    version: int  # 1 or 2; 0 = none
    parents: Mapping[str, Path] = field(default_factory=dict)  # controller -> parent dir (v1); "" -> dir (v2)
    detail: str = ""

    @property
    def available(self) -> bool:
        return self.version in (1, 2)


def _own_cgroups() -> dict[str, str]:
    """controller (or "" for v2) -> our cgroup path, from /proc/self/cgroup."""
    paths: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            parts = line.split(":", 2)
            if len(parts) == 3:
                for controller in parts[1].split(",") if parts[1] else [""]:
                    paths[controller] = parts[2]
    return paths


def _cgroup_mounts() -> dict[str, tuple[Path, str]]:
    """controller (or "" for the v2 hierarchy) -> (mount point, mount root)."""
    mounts: dict[str, tuple[Path, str]] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            left, _, right = line.partition(" - ")
            fields, tail = left.split(), right.split()
            if len(fields) < 5 or len(tail) < 3:
                continue
            fstype, options = tail[0], tail[2].split(",")
            if fstype == "cgroup2":
                mounts.setdefault("", (Path(fields[4]), fields[3]))
            elif fstype == "cgroup":
                for option in options:
                    if option in ("memory", "pids", "cpu"):
                        mounts[option] = (Path(fields[4]), fields[3])
    return mounts


def _join(mount: Path, root: str, path: str) -> Path:
    relative = path[len(root) :] if root != "/" and path.startswith(root) else path
    return mount / relative.lstrip("/")


def detect_cgroups() -> Cgroups:
    own = _own_cgroups()
    mounts = _cgroup_mounts()
    if "memory" in mounts and "memory" in own:
        parents = {}
        for controller in ("memory", "pids", "cpu"):
            if controller in mounts and controller in own:
                mount, root = mounts[controller]
                parents[controller] = _join(mount, root, own[controller])
        if all(os.access(p, os.W_OK) for p in parents.values()):
            return Cgroups(1, parents, f"cgroup v1 ({', '.join(sorted(parents))}) under {parents['memory']}")
        return Cgroups(0, detail=f"cgroup v1, but {parents['memory']} is not writable by the gateway")
    if "" in mounts and "" in own:
        mount, root = mounts[""]
        parent = _join(mount, root, own[""])
        try:
            enabled = (parent / "cgroup.subtree_control").read_text().split()
        except OSError:
            enabled = []
        if "memory" in enabled and os.access(parent, os.W_OK):
            return Cgroups(2, {"": parent}, f"cgroup v2 delegated subtree {parent}")
        why = "no memory controller delegated to" if "memory" not in enabled else "cannot write to"
        return Cgroups(0, detail=f"cgroup v2, but {why} {parent} (run the gateway in a delegated cgroup)")
    return Cgroups(0, detail="no cgroup hierarchy found")


def make_cgroups(cgroups: Cgroups, name: str, limits: Limits) -> tuple[list[Path], Path]:
    """Create the server's cgroup(s) with its limits; (dirs, file whose ``oom_kill`` counts OOM kills)."""
    dirs: list[Path] = []
    try:
        if cgroups.version == 1:
            memory = cgroups.parents["memory"] / name
            memory.mkdir()
            dirs.append(memory)
            (memory / "memory.limit_in_bytes").write_text(str(limits.memory_bytes))
            with contextlib.suppress(OSError):  # no swap accounting: nothing to limit
                (memory / "memory.memsw.limit_in_bytes").write_text(str(limits.memory_bytes))
            if "pids" in cgroups.parents:
                pids = cgroups.parents["pids"] / name
                pids.mkdir()
                dirs.append(pids)
                (pids / "pids.max").write_text(str(limits.pids))
            if "cpu" in cgroups.parents:
                cpu = cgroups.parents["cpu"] / name
                cpu.mkdir()
                dirs.append(cpu)
                (cpu / "cpu.cfs_period_us").write_text("100000")
                (cpu / "cpu.cfs_quota_us").write_text(str(max(1000, int(limits.cpus * 100000))))
            return dirs, memory / "memory.oom_control"
        group = cgroups.parents[""] / name
        group.mkdir()
        dirs.append(group)
        (group / "memory.max").write_text(str(limits.memory_bytes))
        with contextlib.suppress(OSError):
            (group / "memory.swap.max").write_text("0")
        with contextlib.suppress(OSError):
            (group / "pids.max").write_text(str(limits.pids))
        with contextlib.suppress(OSError):
            (group / "cpu.max").write_text(f"{max(1000, int(limits.cpus * 100000))} 100000")
        return dirs, group / "memory.events"
    except OSError:
        for directory in reversed(dirs):
            with contextlib.suppress(OSError):
                directory.rmdir()
        raise


def limited(cgroups: Cgroups, name: str, limits: Limits, argv: list[str]) -> tuple[list[str], list[list[str]]]:
    """``argv`` run inside new cgroups ``name`` with ``limits``, and the cleanup commands that remove
    them. Raises OSError when they cannot be made (the caller runs the server without limits)."""
    dirs, oom_file = make_cgroups(cgroups, name, limits)
    shim = ["/bin/sh", "-c", LIMIT_SHIM, "mcp-gateway-limits", str(len(dirs))]
    shim += [str(d) for d in dirs] + [str(oom_file), limits.memory]
    return shim + argv, [["/bin/sh", "-c", CGROUP_CLEANUP, "mcp-gateway-cleanup", *map(str, dirs)]]


def sweep_cgroups(cgroups: Cgroups, prefix: str) -> int:
    """Remove the cgroups named ``prefix*`` (an earlier run of this gateway left them after a
    SIGKILL), killing what is still in them; how many were removed."""
    removed = 0
    for parent in cgroups.parents.values():
        for directory in parent.glob(f"{prefix}*"):
            for _ in range(50):
                with contextlib.suppress(OSError, ValueError):
                    for pid in (directory / "cgroup.procs").read_text().split():
                        with contextlib.suppress(OSError):
                            os.kill(int(pid), 9)
                try:
                    directory.rmdir()
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.1)
                else:
                    removed += 1
                    break
    return removed
