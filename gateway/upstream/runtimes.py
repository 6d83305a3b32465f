"""Where a server process runs: on the host, in a bubblewrap sandbox, or in a container.

Choice per catalog entry (see CONTRACT.md "Runtimes"):

- an entry with ``image`` runs in a container (docker or podman, ``--container-engine`` or
  whichever answers ``info``). An entry that also has a host ``command`` (github-official) falls
  back to the gateway's default runtime when no engine works or the image is not present locally
  (``--pull never``), unless ``--runtime container`` was asked for;
- every other entry runs per ``--runtime``: ``host`` (a plain subprocess), ``bwrap``, or
  ``auto`` = bwrap where it works, else host. ``--runtime container`` for an entry without an
  image is refused: there is no image to run.

Every runtime starts from the same environment (``launch.server_environment``). Secret values
never go on a command line: bwrap inherits the environment of its own process (no ``--setenv``),
and the container engine CLI gets ``-e NAME`` with the value only in the CLI's environment.

Limits (catalog ``limits: {memory: 512m, cpus: 0.5, pids: 256}``, defaults 2g / 1 / 512) are
enforced by the engine for containers, and for bwrap by a cgroup of their own when the gateway
may create one (cgroup v1 controllers, or a delegated cgroup v2 subtree); without cgroups a bwrap
server runs without limits and ``mcp-gateway doctor`` says so. A server killed by the kernel's
OOM killer under its memory limit is reported as ``killed: out of memory (limit ...)`` through
its stderr, which the gateway keeps as the server's ``last_error``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import re
import secrets
import shutil
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.catalog.config import ServerSettings
from gateway.catalog.entries import CatalogEntry, CatalogError
from gateway.catalog.paths import PathValue, path_values
from gateway.upstream.binds import Bind, bwrap_argv, command_paths
from gateway.upstream.errors import SERVER_UNAVAILABLE, UpstreamError
from gateway.upstream.launch import (
    CONFIG_REF,
    LaunchSpec,
    fill_config,
    host_launch,
    secret_environment,
    server_environment,
)

logger = logging.getLogger("gateway.runtimes")

RUNTIMES = ("auto", "host", "bwrap", "container")
ENGINES = ("docker", "podman")
PROBE_TIMEOUT = 20.0

DEFAULT_MEMORY = "2g"
DEFAULT_CPUS = 1.0
DEFAULT_PIDS = 512

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

# Runs a bwrap server inside its cgroups: join them, run, and name an OOM kill on stderr.
LIMIT_SHIM = r"""
n=$1; shift
while [ "$n" -gt 0 ]; do echo $$ > "$1" || { echo "could not join cgroup $1" >&2; exit 125; }; shift; n=$((n-1)); done
oom=$1; limit=$2; shift 2
"$@"
rc=$?
if [ "$rc" -eq 137 ] && grep -qs '^oom_kill [1-9]' "$oom"; then
  echo "killed: out of memory (limit $limit)" >&2
fi
exit $rc
"""
# Runs the container engine CLI: the engine cannot say after --rm whether the kernel's OOM
# killer ended the container, so an exit by SIGKILL is reported with the memory limit.
ENGINE_SHIM = r"""
limit=$1; shift
"$@"
rc=$?
if [ "$rc" -eq 137 ]; then echo "killed: out of memory (SIGKILL under the memory limit $limit)" >&2; fi
exit $rc
"""
# Cleans up a bwrap server's cgroups: kill what is left in them, then remove them.
CGROUP_CLEANUP = r"""
for d in "$@"; do
  i=0
  while [ -d "$d" ] && [ $i -lt 50 ]; do
    for p in $(cat "$d/cgroup.procs" 2>/dev/null); do kill -9 "$p" 2>/dev/null; done
    rmdir "$d" 2>/dev/null && break
    sleep 0.1; i=$((i+1))
  done
done
"""


# -- limits ----------------------------------------------------------------------------------


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


# -- probes ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Probe:
    ok: bool
    detail: str  # what works, or why not


async def _run(
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


async def probe_bwrap() -> Probe:
    """Can we make the namespaces a bwrap server gets (user, pid, net, ...)?"""
    binary = shutil.which("bwrap")
    if binary is None:
        return Probe(False, "bwrap is not installed (apt-get install bubblewrap)")
    argv = [binary, "--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev", "--unshare-all", "--die-with-parent"]
    argv.append("true")
    code, output = await _run(argv)
    if code != 0:
        hint = " (unprivileged user namespaces may be disabled: sysctl kernel.unprivileged_userns_clone)"
        return Probe(False, f"bwrap cannot create its namespaces here: {output or f'exit {code}'}{hint}")
    return Probe(True, f"{binary} works")


def engine_environment() -> dict[str, str]:
    return {name: os.environ[name] for name in ENGINE_ENV if name in os.environ}


async def probe_engine(engine: str) -> Probe:
    binary = shutil.which(engine)
    if binary is None:
        return Probe(False, f"{engine} is not installed")
    code, output = await _run([binary, "info", "--format", "{{json .}}"], env=engine_environment())
    if code != 0:
        return Probe(False, f"{engine} does not answer 'info': {output or f'exit {code}'}")
    return Probe(True, f"{binary} answers")


# -- cgroups for bwrap -------------------------------------------------------------------------


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


# -- containers --------------------------------------------------------------------------------


def instance_label(data_dir: Path) -> str:
    """Names the gateway (its data dir) on its containers, so leftovers of a crash can be found."""
    return hashlib.sha256(str(Path(data_dir).resolve()).encode()).hexdigest()[:12]


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


# -- choosing and launching --------------------------------------------------------------------


class Runtimes:
    """One gateway's runtime decisions: probes run once, then every launch is built from them."""

    def __init__(self, runtime: str, engine: str | None, data_dir: Path) -> None:
        if runtime not in RUNTIMES:
            raise ValueError(f"unknown runtime {runtime!r}; valid: {', '.join(RUNTIMES)}")
        self.runtime = runtime
        self.engine_choice = engine
        self.data_dir = Path(data_dir)
        self.instance = instance_label(self.data_dir)
        self._bwrap: Probe | None = None
        self._engines: dict[str, Probe] = {}
        self._cgroups: Cgroups | None = None
        self._images: dict[str, bool] = {}
        self._probing: dict[str, asyncio.Task[Any]] = {}  # probes in flight, shared by concurrent launches
        self._swept = False
        self._lock = asyncio.Lock()
        self._warned: set[str] = set()

    # -- probes, cached ------------------------------------------------------------------

    async def _shared(self, key: str, probe: Callable[[], Awaitable[Any]]) -> Any:
        """Run ``probe`` once for all who ask while it runs: the servers of a sandbox launch
        together, and five launches must not start five identical probes. Its result is cached
        (or not) by the caller."""
        loop = asyncio.get_running_loop()
        task = self._probing.get(key)
        if task is None or task.get_loop() is not loop:
            task = self._probing[key] = loop.create_task(probe())

            def forget(done: asyncio.Task[Any]) -> None:
                if self._probing.get(key) is done:
                    del self._probing[key]

            task.add_done_callback(forget)
        return await asyncio.shield(task)

    async def bwrap(self) -> Probe:
        if self._bwrap is None:
            self._bwrap = await self._shared("bwrap", probe_bwrap)
        return self._bwrap

    async def engines(self) -> dict[str, Probe]:
        """The probe of each engine that may be used (only ``--container-engine`` when given)."""
        names = [self.engine_choice] if self.engine_choice else list(ENGINES)
        for name in names:
            if name not in self._engines:
                self._engines[name] = await self._shared(f"engine {name}", lambda name=name: probe_engine(name))
        return {name: self._engines[name] for name in names}

    async def engine(self) -> str | None:
        for name, probe in (await self.engines()).items():
            if probe.ok:
                return name
        return None

    def cgroups(self) -> Cgroups:
        if self._cgroups is None:
            self._cgroups = detect_cgroups()
        return self._cgroups

    async def default_runtime(self) -> tuple[str, str]:
        """(runtime for entries without an image, why)."""
        if self.runtime == "auto":
            probe = await self.bwrap()
            if probe.ok:
                return "bwrap", "auto: bubblewrap works here"
            return "host", f"auto: {probe.detail}"
        return self.runtime, f"--runtime {self.runtime}"

    async def _image_present(self, engine: str, image: str) -> bool:
        """Is the image there? Only a yes is remembered: it may be pulled while we run."""
        if not self._images.get(image):
            inspect = [engine, "image", "inspect", image]
            code, _ = await self._shared(f"image {engine} {image}", lambda: _run(inspect, env=engine_environment()))
            self._images[image] = code == 0
        return self._images[image]

    async def choose(self, entry: CatalogEntry) -> tuple[str, str]:
        """(runtime, why) for one entry: host, bwrap or container."""
        runtime, why = await self._choose(entry)
        if runtime == "bwrap":
            probe = await self.bwrap()
            if not probe.ok:
                raise UpstreamError(f"server {entry.name!r} needs bwrap: {probe.detail}", SERVER_UNAVAILABLE)
        return runtime, why

    async def _choose(self, entry: CatalogEntry) -> tuple[str, str]:
        if entry.image:
            engine = await self.engine()
            fallback = bool(entry.command) and self.runtime != "container"
            if engine is None:
                probes = "; ".join(p.detail for p in (await self.engines()).values())
                if not fallback:
                    raise UpstreamError(
                        f"server {entry.name!r} runs in a container, but no container engine works: {probes}",
                        SERVER_UNAVAILABLE,
                    )
                runtime, _ = await self.default_runtime()
                return runtime, f"no container engine works ({probes}); its command runs instead"
            if not await self._image_present(engine, entry.image):
                if not fallback:
                    raise UpstreamError(
                        f"server {entry.name!r}: image {entry.image} is not present in {engine}"
                        f" (the gateway never pulls at start); run: mcp-gateway pull {entry.name}",
                        SERVER_UNAVAILABLE,
                    )
                runtime, _ = await self.default_runtime()
                return runtime, f"image {entry.image} is not pulled; its command runs instead"
            return "container", f"image {entry.image} with {engine}"
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
        key = f"{sandbox}/{entry.name}/{runtime}"
        if key not in self._warned:
            self._warned.add(key)
            logger.info("server %s of sandbox %s runs with %s (%s)", entry.name, sandbox, runtime, why)
        try:
            limits = limits_for(entry)
            # Checked again at each start: a path may have been replaced (by a link) since.
            paths = [] if runtime == "host" else path_values(entry, settings.config, self.data_dir)
            if runtime == "container":
                return await self._container(entry, settings, sandbox, home, limits, paths)
            argv = command()
        except CatalogError as exc:
            raise UpstreamError(str(exc), SERVER_UNAVAILABLE) from None
        spec = host_launch(entry, settings, argv, home)
        if runtime == "host":
            return spec
        literal = [arg for arg in argv[1:] if not CONFIG_REF.search(arg)]
        binds = [Bind(p.path, p.source, p.writable) for p in paths]
        return self._bwrap_spec(entry, sandbox, home, spec, limits, literal, binds)

    def _bwrap_spec(
        self,
        entry: CatalogEntry,
        sandbox: str,
        home: Path,
        spec: LaunchSpec,
        limits: Limits,
        literal: list[str],
        binds: list[Bind],
    ) -> LaunchSpec:
        install = self.data_dir / "servers" / entry.name
        search_path = spec.env.get("PATH", "")
        argv = bwrap_argv(
            spec.argv,
            spec.env,
            home,
            read_only=command_paths(spec.argv, literal, search_path),
            data_dir=self.data_dir,
            install_dir=install if install.is_dir() else None,
            binds=binds,
            network=not entry.disable_network,
            bwrap=shutil.which("bwrap") or "bwrap",
        )
        cleanup: list[list[str]] = []
        cgroups = self.cgroups()
        if cgroups.available:
            safe = re.sub(r"[^a-zA-Z0-9_.-]", "-", sandbox)
            name = f"mcp-gateway-{self.instance}-{safe}-{entry.name}-{secrets.token_hex(4)}"
            try:
                dirs, oom_file = make_cgroups(cgroups, name, limits)
            except OSError as exc:
                logger.warning("no cgroup for %s (%s): it runs without limits", entry.name, exc)
            else:
                shim = ["/bin/sh", "-c", LIMIT_SHIM, "mcp-gateway-limits", str(len(dirs))]
                shim += [str(d / "cgroup.procs") for d in dirs] + [str(oom_file), limits.memory]
                argv = _with_parent_death(shim + argv)
                cleanup.append(["/bin/sh", "-c", CGROUP_CLEANUP, "mcp-gateway-cleanup", *map(str, dirs)])
        return LaunchSpec(
            argv=argv, env=spec.env, cwd=spec.cwd, runtime="bwrap", secret_env=spec.secret_env, cleanup=cleanup
        )

    async def _sweep(self, engine: str) -> None:
        """Remove containers a previous run of this gateway (same data dir) left behind."""
        async with self._lock:
            if self._swept:
                return
            self._swept = True
            process = await asyncio.create_subprocess_exec(
                engine, "ps", "-aq", "--filter", f"label=mcp-gateway.gateway={self.instance}",
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL, env=engine_environment(),
            )  # fmt: skip
            out, _ = await process.communicate()
            ids = out.decode().split()
            if ids:
                logger.info("removing %d container(s) left behind by an earlier run", len(ids))
                await _run([engine, "rm", "-f", *ids], timeout=60, env=engine_environment())

    async def _container(
        self,
        entry: CatalogEntry,
        settings: ServerSettings,
        sandbox: str,
        home: Path,
        limits: Limits,
        mounts: list[PathValue],
    ) -> LaunchSpec:
        engine = await self.engine()
        assert engine is not None
        await self._sweep(engine)
        binary = shutil.which(engine) or engine
        home.mkdir(parents=True, exist_ok=True)
        server_env = server_environment(entry, settings, home)
        # The image brings its own PATH and HOME (its filesystem is private to it).
        container_env = {k: v for k, v in server_env.items() if k not in ("PATH", "HOME")}
        cli_env = engine_environment()
        clashes = sorted(set(container_env) & set(cli_env))
        if clashes:
            raise UpstreamError(
                f"server {entry.name!r} declares {', '.join(clashes)}, which the container engine itself reads;"
                " rename the variable",
                SERVER_UNAVAILABLE,
            )
        name = container_name(sandbox, entry.name)
        argv = container_argv(
            binary, entry, settings, sorted(container_env), limits, name, sandbox, self.instance, mounts
        )
        shim = _with_parent_death(["/bin/sh", "-c", ENGINE_SHIM, "mcp-gateway-engine", limits.memory, *argv])
        return LaunchSpec(
            argv=shim,
            env={**cli_env, **container_env},
            cwd=str(home),
            runtime="container",
            secret_env=frozenset(secret_environment(entry, settings)),
            cleanup=[[binary, "rm", "-f", name]],
        )

    async def describe(self) -> str:
        """One line for ``serve``: which runtime entries get, and the container engine."""
        runtime, why = await self.default_runtime()
        engine = await self.engine()
        return f"runtime: {runtime} ({why}); images: {engine or 'no container engine'}"


def _with_parent_death(argv: list[str]) -> list[str]:
    """Make the wrapper die with the gateway (bwrap's --die-with-parent then takes the rest)."""
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "KILL", "--", *argv] if setpriv else argv


_MANAGERS: dict[tuple[str, str | None, str], Runtimes] = {}


def runtimes_for(runtime: str, engine: str | None, data_dir: Path) -> Runtimes:
    """The (cached) :class:`Runtimes` of a gateway's settings and data dir."""
    key = (runtime, engine, str(data_dir))
    manager = _MANAGERS.get(key)
    if manager is None:
        manager = _MANAGERS[key] = Runtimes(runtime, engine, data_dir)
    return manager
