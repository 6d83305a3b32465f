"""``mcp-gateway pull``: install catalog servers into the data dir so launches need no network.

Each server with an ``install`` gets its own directory ``<data-dir>/servers/<name>``:

- npm: an npm prefix (``npm install --prefix <dir> <spec>``); executables in ``node_modules/.bin``.
- pypi: a virtual environment ``<dir>/venv``; executables in ``venv/bin``.

After installing, ``pull`` starts the server once over stdio with a minimal environment
(raw JSON-RPC: ``initialize``, ``notifications/initialized``, ``tools/list``), records the
tool list in ``<dir>/tools.json`` and runs the entry's ``warm`` steps, then stops it. Only then
is the marker ``<dir>/pulled.json`` written, holding the pinned spec: a changed pin, or an
install that failed half way, reads as "not pulled".

``warm`` steps (strings) are, in order:

- ``npm-install:<glob> [<pkg@version> ...]``: ``npm install`` (of the given pinned packages,
  else of its package.json) inside each directory of the install matching the glob (relative
  to the server's dir). For packages that fetch their JavaScript dependencies on first use
  (mcp-server-fetch's readabilipy installs jsdom on the first HTML page), so that it happens at
  pull time, with network, instead of inside a running, possibly network-less server.
- ``<tool>`` or ``<tool> <json arguments>``: a ``tools/call`` during the smoke start.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

import gateway
from gateway.catalog.entries import Catalog, CatalogEntry, CatalogError

MARKER = "pulled.json"
TOOLS_FILE = "tools.json"
INSTALL_TIMEOUT = 900.0  # seconds for one npm/pip install
SMOKE_TIMEOUT = 60.0  # seconds for the smoke start's handshake and tools/list
SMOKE_PROTOCOL = "2025-06-18"
STDIO_LINE_LIMIT = 64 * 1024 * 1024  # a tools/list answer is one line and can be large
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

Report = Callable[[str], None]


class PullError(CatalogError):
    """Installing or smoke-starting a server failed; the message is one line for the user."""


# --- where things live ---------------------------------------------------------------------


def server_dir(data_dir: Path, name: str) -> Path:
    return Path(data_dir) / "servers" / name


def install_kind(entry: CatalogEntry) -> str | None:
    """``npm``, ``pypi`` or None (nothing to install)."""
    for kind in ("npm", "pypi"):
        if kind in entry.install:
            return kind
    return None


def install_spec(entry: CatalogEntry) -> str:
    kind = install_kind(entry)
    return entry.install[kind] if kind else ""


def bin_dir(entry: CatalogEntry, data_dir: Path) -> Path | None:
    """The directory holding the installed executables, or None for entries without install."""
    kind = install_kind(entry)
    base = server_dir(data_dir, entry.name)
    if kind == "npm":
        return base / "node_modules" / ".bin"
    if kind == "pypi":
        return base / "venv" / "bin"
    return None


def _read_marker(entry: CatalogEntry, data_dir: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((server_dir(data_dir, entry.name) / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def is_pulled(entry: CatalogEntry, data_dir: Path) -> bool:
    """True when the entry needs no install, or its pinned spec was installed and smoke-started
    (and its executable is still there)."""
    kind = install_kind(entry)
    if kind is None:
        return True
    marker = _read_marker(entry, data_dir)
    if marker is None or marker.get("install") != {kind: install_spec(entry)}:
        return False
    bins = bin_dir(entry, data_dir)
    head = entry.command[0] if entry.command else ""
    return bins is None or not head or "/" in head or (bins / head).exists()


def pulled_tools(entry: CatalogEntry, data_dir: Path) -> list[dict[str, Any]] | None:
    """The tool list recorded at pull time (``tools.json``), or None when there is none."""
    try:
        data = json.loads((server_dir(data_dir, entry.name) / TOOLS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    tools = data.get("tools") if isinstance(data, dict) else None
    return tools if isinstance(tools, list) else None


def resolve_command(entry: CatalogEntry, data_dir: Path) -> list[str]:
    """The argv to launch ``entry`` on the host (config templates in it are not yet filled).

    ``command[0]`` is looked up in the install's bin dir for installed entries; a relative path
    with a slash is refused (a server runs in its private home, so it would name nothing there);
    ``python``/``python3`` mean the gateway's own interpreter; anything else is left to PATH.
    """
    if not entry.command:
        raise CatalogError(f"server {entry.name!r} has no command to run on the host")
    head, rest = entry.command[0], list(entry.command[1:])
    bins = bin_dir(entry, data_dir)
    if bins is not None:
        if not is_pulled(entry, data_dir):
            raise CatalogError(f"server {entry.name!r} is not pulled; run: mcp-gateway pull {entry.name}")
        if "/" not in head and (bins / head).exists():
            return [str(bins / head), *rest]
    if "/" in head and not os.path.isabs(head):
        raise CatalogError(
            f"server {entry.name!r}: command {head!r} is a relative path; name the program by absolute path"
        )
    if head in ("python", "python3"):
        return [sys.executable, *rest]
    return [head, *rest]


def runtime_kind(entry: CatalogEntry) -> str:
    """``remote`` (reached over HTTP), ``container`` (image only) or ``host`` (a subprocess).

    An entry with both an install and an image (github-official) runs on the host from its
    pulled install unless the container runtime is asked for; it counts as ``host`` here.
    """
    if entry.remote is not None:
        return "remote"
    if entry.image and install_kind(entry) is None:
        return "container"
    return "host"


def catalog_rows(catalog: Catalog, data_dir: Path) -> list[dict[str, Any]]:
    """One row per entry for ``catalog list`` (never a secret value: secret names only)."""
    rows: list[dict[str, Any]] = []
    for name in sorted(catalog.entries):
        entry = catalog.entries[name]
        kind = install_kind(entry)
        rows.append(
            {
                "name": name,
                "title": entry.title,
                "pulled": is_pulled(entry, data_dir),
                "install": f"{kind}:{install_spec(entry)}" if kind else "",
                "runtime": runtime_kind(entry),
                "image": entry.image or "",
                "secrets": [s.name for s in entry.secrets],
            }
        )
    return rows


# --- installing ----------------------------------------------------------------------------


def _first_error_line(output: str) -> str:
    """The most telling line of an installer's output, for a one-line message."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    lines = [line for line in lines if not line.startswith("WARNING:") and "npm warn" not in line.lower()]
    for marker in ("npm error 404", "npm error notarget", "ERROR: No matching distribution", "ERROR:", "npm error"):
        for line in lines:
            if line.startswith(marker):
                if line.startswith("npm error 404") and "is not in this registry" not in line:
                    continue
                return _clip(line)
    for line in lines:
        if line.lower().startswith(("npm err", "error")):
            return _clip(line)
    return _clip(lines[-1]) if lines else "no output"


def _clip(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


async def _run(argv: list[str], what: str, cwd: Path | None = None, timeout: float = INSTALL_TIMEOUT) -> None:
    """Run an installer step with the user's environment (registry settings, proxies)."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            cwd=str(cwd) if cwd else None,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
    except FileNotFoundError:
        raise PullError(f"{what}: {argv[0]} is not installed") from None
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise PullError(f"{what}: timed out after {timeout:.0f} s") from None
    if proc.returncode != 0:
        raise PullError(f"{what}: {_first_error_line(out.decode('utf-8', 'replace'))}")


async def _install(entry: CatalogEntry, target: Path) -> None:
    kind, spec = install_kind(entry), install_spec(entry)
    what = f"pulling {entry.name} failed: {kind} install {spec}"
    if kind == "npm":
        npm = shutil.which("npm")
        if npm is None:
            raise PullError(f"{what}: npm is not installed (server {entry.name!r} needs Node.js)")
        await _run([npm, "install", "--prefix", str(target), "--no-audit", "--no-fund", "--no-save", spec], what)
    else:
        venv = target / "venv"
        if importlib.util.find_spec("pip") is not None:
            # Seeding a venv with its own pip (ensurepip) is the slow part; the gateway's pip
            # installs into the bare venv just as well (console scripts get the venv's python).
            await _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], what)
            pip = [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python")]
        else:
            await _run([sys.executable, "-m", "venv", str(venv)], what)
            pip = [str(venv / "bin" / "python"), "-m", "pip"]
        await _run([*pip, "install", "--quiet", "--disable-pip-version-check", spec], what)


async def _npm_install_in(entry: CatalogEntry, target: Path, step: str) -> int:
    pattern, *specs = step.split()
    npm = shutil.which("npm")
    if npm is None:
        raise PullError(f"pulling {entry.name} failed: warm step npm-install needs npm (Node.js)")
    dirs = [p for p in sorted(target.glob(pattern)) if (p / "package.json").is_file()]
    if not dirs:
        raise PullError(f"pulling {entry.name} failed: warm step npm-install:{pattern} matched no package.json")
    for path in dirs:
        what = f"pulling {entry.name} failed: npm install in {path.relative_to(target)}"
        await _run([npm, "install", "--no-audit", "--no-fund", "--omit=dev", *specs], what, cwd=path)
    return len(dirs)


# --- the smoke start -----------------------------------------------------------------------


def smoke_environment(home: Path) -> dict[str, str]:
    """The minimal base every server gets (see docs/reference.md): PATH, a private HOME, LANG."""
    (home / "tmp").mkdir(parents=True, exist_ok=True)
    return {
        "PATH": os.environ.get("PATH") or DEFAULT_PATH,
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "TMPDIR": str(home / "tmp"),
    }


def _placeholder_env(entry: CatalogEntry, home: Path) -> dict[str, str]:
    """The server's declared env with config defaults filled and dummy secrets (no real values)."""
    from gateway.upstream.launch import fill_config, fill_secrets

    secrets = {s.env: f"placeholder-{s.env.lower()}" for s in entry.secrets}
    env = smoke_environment(home)
    for item in entry.env:
        value = fill_secrets(fill_config(item.value, entry, {}), {"HOME": str(home), **secrets})
        if value:
            env[item.name] = value
    env.update(secrets)
    return env


class StdioSession:
    """A bare JSON-RPC client over a child's stdio, enough for a smoke start."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self._next_id = 0

    async def _send(self, message: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps(message).encode() + b"\n")
            await self.proc.stdin.drain()
        except (ConnectionError, BrokenPipeError):
            method = message.get("method", "a reply")
            raise PullError(f"the server exited (code {await self.proc.wait()}) during {method}") from None

    async def notify(self, method: str, params: dict[str, Any] | None = None) -> None:
        await self._send({"jsonrpc": "2.0", "method": method, **({"params": params} if params is not None else {})})

    async def request(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        self._next_id += 1
        rid = self._next_id
        await self._send({"jsonrpc": "2.0", "id": rid, "method": method, "params": params or {}})
        assert self.proc.stdout is not None
        while True:
            line = await self.proc.stdout.readline()
            if not line:
                raise PullError(f"the server exited (code {await self.proc.wait()}) during {method}")
            try:
                message = json.loads(line)
            except ValueError:
                continue  # stray output on stdout; servers should not, some do
            if not isinstance(message, dict):
                continue
            if "method" in message and "id" in message:  # a request from the server: decline it
                await self._send(
                    {"jsonrpc": "2.0", "id": message["id"], "error": {"code": -32601, "message": "not supported"}}
                )
                continue
            if message.get("id") != rid:
                continue
            if "error" in message:
                error = message["error"] if isinstance(message["error"], dict) else {}
                raise PullError(f"{method} failed: {_clip(str(error.get('message', error)))}")
            result = message.get("result")
            return result if isinstance(result, dict) else {}


@contextlib.asynccontextmanager
async def stdio_session(
    argv: list[str], env: Mapping[str, str], cwd: Path, stderr: Path
) -> AsyncIterator[StdioSession]:
    """Start ``argv``, yield a session, and stop the process (close stdin, then terminate/kill)."""
    with stderr.open("ab") as err:
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                env=dict(env),
                cwd=str(cwd),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=err,
                limit=STDIO_LINE_LIMIT,
                start_new_session=True,
            )
        except OSError as exc:
            raise PullError(f"cannot start {argv[0]}: {exc.strerror}") from None
    try:
        yield StdioSession(proc)
    finally:
        await _stop(proc)


async def _stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is not None:
        return
    if proc.stdin is not None:
        with contextlib.suppress(Exception):
            proc.stdin.close()
    for signal_step in (None, "terminate", "kill"):
        if signal_step == "terminate":
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
        elif signal_step == "kill":
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        try:
            await asyncio.wait_for(proc.wait(), 3.0)
            return
        except TimeoutError:
            continue


async def list_tools(session: StdioSession) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """initialize + initialized + every page of tools/list -> (initialize result, tools)."""
    init = await session.request(
        "initialize",
        {
            "protocolVersion": SMOKE_PROTOCOL,
            "capabilities": {},
            "clientInfo": {"name": "mcp-gateway-pull", "version": gateway.__version__},
        },
    )
    await session.notify("notifications/initialized")
    tools: list[dict[str, Any]] = []
    cursor: str | None = None
    for _ in range(100):
        page = await session.request("tools/list", {"cursor": cursor} if cursor else {})
        tools.extend(t for t in page.get("tools") or [] if isinstance(t, dict))
        cursor = page.get("nextCursor")
        if not cursor:
            break
    return init, tools


def _parse_warm_call(step: str) -> tuple[str, dict[str, Any]]:
    name, _, rest = step.strip().partition(" ")
    try:
        args = json.loads(rest) if rest.strip() else {}
    except ValueError:
        raise PullError(f"warm step {step!r}: the arguments are not JSON") from None
    if not isinstance(args, dict):
        raise PullError(f"warm step {step!r}: the arguments must be a JSON object")
    return name, args


async def smoke_start(entry: CatalogEntry, data_dir: Path, report: Report) -> list[dict[str, Any]]:
    """Launch the installed server offline-style, record its tools, run ``warm`` tool calls."""
    from gateway.upstream.launch import fill_config

    target = server_dir(data_dir, entry.name)
    calls = [_parse_warm_call(s) for s in entry.warm if not s.startswith("npm-install:")]
    timeout = float(entry.limits.get("start_timeout", SMOKE_TIMEOUT))
    with tempfile.TemporaryDirectory(prefix=f"mcp-pull-{entry.name}-") as tmp:
        home = Path(tmp)
        argv = [fill_config(arg, entry, {}) for arg in _resolve_installed(entry, data_dir)]
        env = _placeholder_env(entry, home)
        stderr = smoke_log(data_dir, entry.name)
        stderr.unlink(missing_ok=True)
        try:
            async with asyncio.timeout(timeout), stdio_session(argv, env, home, stderr) as session:
                init, tools = await list_tools(session)
                for name, args in calls:
                    report(f"pulling {entry.name}: warming with a call to {name}")
                    result = await session.request("tools/call", {"name": name, "arguments": args})
                    if result.get("isError"):
                        report(f"pulling {entry.name}: warm call {name} answered with an error (ignored)")
        except TimeoutError:
            raise PullError(
                f"pulling {entry.name} failed: the server did not answer initialize/tools/list within "
                f"{timeout:.0f} s; see {stderr}"
            ) from None
        except PullError as exc:
            raise PullError(f"pulling {entry.name} failed: smoke start: {exc}; see {stderr}") from None
    record = {
        "server": entry.name,
        "install": dict(entry.install),
        "protocolVersion": init.get("protocolVersion"),
        "serverInfo": init.get("serverInfo"),
        "tools": tools,
    }
    (target / TOOLS_FILE).write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    return tools


def smoke_log(data_dir: Path, name: str) -> Path:
    """The smoke start's stderr; beside the server's dir so it outlives a failed pull."""
    return Path(data_dir) / "servers" / f"{name}.pull.log"


def _resolve_installed(entry: CatalogEntry, data_dir: Path) -> list[str]:
    """Like :func:`resolve_command`, before the marker exists (we are in the middle of pulling)."""
    bins = bin_dir(entry, data_dir)
    head = entry.command[0]
    if bins is None or "/" in head or not (bins / head).exists():
        raise PullError(
            f"pulling {entry.name} failed: the install has no executable {head!r}"
            + (f" in {bins}" if bins is not None else "")
        )
    return [str(bins / head), *entry.command[1:]]


# --- pull ----------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def _locked(path: Path) -> AsyncIterator[None]:
    """An exclusive lock across processes, so two pulls of one server never interleave.

    The wait happens in a thread so the event loop keeps running; closing the file releases it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        await asyncio.to_thread(fcntl.flock, fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


async def pull(entry: CatalogEntry, data_dir: Path, report: Report, *, force: bool = False) -> None:
    """Install ``entry`` into ``<data-dir>/servers/<name>`` and smoke-start it.

    Entries without ``install`` need nothing (reported as such). An entry already pulled at the
    same pin is left alone unless ``force``. Raises :class:`PullError` with a one-line message.
    """
    kind = install_kind(entry)
    if kind is None:
        if entry.remote is not None:
            report(f"{entry.name}: a remote server, nothing to pull")
        elif entry.image:
            report(f"{entry.name}: runs from image {entry.image}; pull it with the container runtime")
        else:
            report(f"{entry.name}: runs {entry.command[0] if entry.command else '?'} as is, nothing to pull")
        return
    if not entry.command:
        raise PullError(f"pulling {entry.name} failed: the entry has an install but no command")
    spec = install_spec(entry)
    target = server_dir(data_dir, entry.name)
    lock = Path(data_dir) / "servers" / f".{entry.name}.lock"
    async with _locked(lock):
        if is_pulled(entry, data_dir) and not force:
            tools = pulled_tools(entry, data_dir)
            report(f"{entry.name}: already pulled ({spec}, {len(tools or [])} tools)")
            return
        started = time.monotonic()
        if target.exists():
            shutil.rmtree(target)
        target.mkdir(parents=True)
        try:
            report(f"pulling {entry.name}: installing {spec} ({kind})")
            await _install(entry, target)
            for step in entry.warm:
                if step.startswith("npm-install:"):
                    step = step.removeprefix("npm-install:").strip()
                    report(f"pulling {entry.name}: warming: npm install in {step.split()[0]}")
                    await _npm_install_in(entry, target, step)
            report(f"pulling {entry.name}: smoke start (initialize, tools/list)")
            tools = await smoke_start(entry, data_dir, report)
            marker = {"install": {kind: spec}, "pulled_at": int(time.time())}
            (target / MARKER).write_text(json.dumps(marker) + "\n", encoding="utf-8")
        except BaseException:
            shutil.rmtree(target, ignore_errors=True)
            raise
        report(f"pulling {entry.name}: ready: {len(tools)} tools ({time.monotonic() - started:.1f} s)")


async def pull_many(entries: list[CatalogEntry], data_dir: Path, report: Report, *, force: bool = False) -> None:
    """Pull several servers one after another (installers compete for the same cache and CPU)."""
    for entry in entries:
        await pull(entry, data_dir, report, force=force)


async def pull_image(entry: CatalogEntry, engine: str, report: Report) -> None:
    """``<engine> pull <image>`` for the container runtime.

    TODO(runtime): the container runtime helper wires this into ``mcp-gateway pull`` when the
    container runtime is chosen (no image registry is reachable in this workplace).
    """
    if not entry.image:
        return
    exe = shutil.which(engine)
    if exe is None:
        raise PullError(f"pulling image {entry.image} failed: {engine} is not installed")
    report(f"pulling {entry.name}: {engine} pull {entry.image}")
    await _run([exe, "pull", entry.image], f"pulling image {entry.image} failed ({engine} pull)", timeout=1800.0)
