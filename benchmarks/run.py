"""Run the MCP gateway benchmarks side by side and print a table (issue 7).

    python benchmarks/run.py                       # every target it can run, full scenarios
    python benchmarks/run.py --quick               # short loops, 200 idle sessions
    python benchmarks/run.py --targets stdio,http,mcp-proxy --scenarios latency,throughput

Targets (all in front of / made of the same echo server, ``benchmarks/echo_server.py``):

  stdio      direct stdio, no HTTP: one echo process per session, driven over its pipes
  http       the echo server serving streamable HTTP itself (mcp SDK, default SSE responses)
  http-json  the same with the SDK's JSON responses (``json_response=True``)
  mcp-proxy  mcp-proxy 0.13 (PyPI, own venv in .bench/) proxying the stdio echo server
  gateway    ``python -m gateway serve`` with the echo server from a catalog overlay

Scenarios: latency (1 session), throughput (8 and 16 sessions), big (1 MB results),
idle (N idle sessions held: RSS), coldstart (gateway only: first tools/list with 5 servers).

Everything is bounded: every loop has a duration, every wait a timeout, every process started
here is stopped (process groups, try/finally), and nothing listens beyond 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import loadgen  # noqa: E402
from loadgen import IdleResult, LoadResult, WorkerSpec, descendants, proc_rss_kb, run_idle, run_load  # noqa: E402

ECHO = str(HERE / "echo_server.py")
PYTHON = sys.executable
BENCH_DIR = ROOT / ".bench"
MCP_PROXY_VENV = BENCH_DIR / "venv-mcp-proxy"
MCP_PROXY_REQ = "mcp-proxy==0.13.0"
ALL_TARGETS = ["stdio", "http", "http-json", "mcp-proxy", "gateway"]
ALL_SCENARIOS = ["latency", "throughput", "big", "idle", "coldstart"]
BIG_SIZE = 1_000_000
COLD_DELAYS = [0.1, 0.2, 0.3, 0.4, 0.5]  # start delays of the 5 cold-start servers (s)


class Skip(Exception):
    """A target cannot run here (reason in the message)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_get_status(url: str, timeout: float = 2.0) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return 0


def stop_process(proc: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """SIGTERM, wait ``grace`` seconds, then SIGKILL the whole process group."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # leftovers in the group (its servers)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)


# --------------------------------------------------------------------------- targets


@dataclass
class Target:
    """Something to benchmark. HTTP targets are one server process (the "front") at ``url``."""

    name: str
    description: str
    tool_prefix: str = ""
    url: str | None = None
    token: str | None = None
    stdio_command: list[str] | None = None
    proc: subprocess.Popen[bytes] | None = None
    workdir: Path | None = None
    log_path: Path | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def front_pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def tool(self, name: str) -> str:
        return f"{self.tool_prefix}{name}"

    def start(self) -> None:
        """Start the target's processes; returns once it serves."""

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def cpu_groups(self, worker_pids: list[int]) -> dict[str, list[int]]:
        """Processes whose CPU is measured: ``front`` (the process the client talks to) and
        ``upstream`` (the echo server(s) behind it)."""
        if self.stdio_command:
            return {"front": worker_pids}
        assert self.front_pid is not None
        groups = {"front": [self.front_pid]}
        if kids := descendants(self.front_pid):
            groups["upstream"] = kids
        return groups

    def spec(self, **kw: Any) -> WorkerSpec:
        return WorkerSpec(mode="load", url=self.url, token=self.token, stdio_command=self.stdio_command, **kw)

    def _spawn(
        self, argv: list[str], health_url: str, timeout: float = 60.0, env: dict[str, str] | None = None
    ) -> None:
        self.workdir = self.workdir or Path(tempfile.mkdtemp(prefix=f"mcp-bench-{self.name}-"))
        self.log_path = self.workdir / "server.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env
            )
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}: {self.log_tail()}")
            if http_get_status(health_url, 1.0) == 200:
                return
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} not healthy within {timeout:.0f} s: {self.log_tail()}")

    def log_tail(self, n: int = 15) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return " | ".join(self.log_path.read_text(errors="replace").splitlines()[-n:])


class StdioTarget(Target):
    def __init__(self) -> None:
        super().__init__("stdio", "direct stdio, no HTTP (one echo process per session)")
        self.stdio_command = [PYTHON, ECHO]


class EchoHttpTarget(Target):
    def __init__(self, json_response: bool) -> None:
        name = "http-json" if json_response else "http"
        kind = "JSON" if json_response else "SSE (SDK default)"
        super().__init__(name, f"echo server serving streamable HTTP itself, mcp SDK, {kind} responses")
        self.json_response = json_response

    def start(self) -> None:
        port = free_port()
        argv = [PYTHON, ECHO, "--http", str(port)] + (["--json-response"] if self.json_response else [])
        self._spawn(argv, f"http://127.0.0.1:{port}/healthz")
        self.url = f"http://127.0.0.1:{port}/mcp"


def ensure_mcp_proxy() -> Path:
    """mcp-proxy's executable in the benchmark's own venv, installed on first use."""
    exe = MCP_PROXY_VENV / "bin" / "mcp-proxy"
    if exe.exists():
        return exe
    print(f"installing {MCP_PROXY_REQ} into {MCP_PROXY_VENV} ...", flush=True)
    BENCH_DIR.mkdir(exist_ok=True)
    try:
        base = shutil.which("python3.11") or shutil.which("python3") or PYTHON
        subprocess.run([base, "-m", "venv", str(MCP_PROXY_VENV)], check=True, timeout=120)
        pip = [str(MCP_PROXY_VENV / "bin" / "pip"), "install", "-q", MCP_PROXY_REQ]
        subprocess.run(pip, check=True, timeout=600, stdout=subprocess.DEVNULL)
    except (subprocess.SubprocessError, OSError) as exc:
        raise Skip(f"could not install {MCP_PROXY_REQ}: {exc}") from exc
    return exe


class McpProxyTarget(Target):
    def __init__(self) -> None:
        super().__init__(
            "mcp-proxy",
            "mcp-proxy 0.13 (PyPI) -> stdio echo server; stateful sessions, JSON responses (hard-wired in 0.13)",
        )

    def start(self) -> None:
        exe = ensure_mcp_proxy()
        port = free_port()
        argv = [str(exe), "--host", "127.0.0.1", "--port", str(port), "--log-level", "WARNING", "--", PYTHON, ECHO]
        self._spawn(argv, f"http://127.0.0.1:{port}/status")
        self.url = f"http://127.0.0.1:{port}/mcp"


def gateway_available() -> tuple[bool, str]:
    """Whether ``python -m gateway serve --help`` works in this interpreter."""
    try:
        r = subprocess.run([PYTHON, "-m", "gateway", "serve", "--help"], capture_output=True, timeout=60, cwd=str(ROOT))
    except (subprocess.SubprocessError, OSError) as exc:
        return False, str(exc)
    if r.returncode != 0:
        last = (r.stderr or r.stdout).decode(errors="replace").strip().splitlines()
        return False, last[-1] if last else f"exit {r.returncode}"
    return True, ""


def write_catalog(path: Path, entries: dict[str, list[str]]) -> None:
    """A catalog overlay (JSON is valid YAML) with one host-command entry per server."""
    registry = {
        name: {"title": f"bench {name}", "description": "benchmark echo server", "command": cmd}
        for name, cmd in entries.items()
    }
    path.write_text(json.dumps({"registry": registry}, indent=2))


class GatewayTarget(Target):
    def __init__(
        self, extra_args: list[str], servers: dict[str, list[str]] | None = None, name: str = "gateway"
    ) -> None:
        super().__init__(name, "the gateway (python -m gateway serve) -> stdio echo server", tool_prefix="echo__")
        self.extra_args = extra_args
        self.servers = servers or {"echo": [PYTHON, ECHO]}

    def start(self) -> None:
        ok, why = gateway_available()
        if not ok:
            raise Skip(f"pending: `python -m gateway serve --help` fails ({why})")
        self.workdir = Path(tempfile.mkdtemp(prefix="mcp-bench-gateway-"))
        data = self.workdir / "data"
        catalog = self.workdir / "bench-catalog.yaml"
        write_catalog(catalog, self.servers)
        port = free_port()
        argv = [
            PYTHON,
            "-m",
            "gateway",
            "serve",
            "--port",
            str(port),
            "--data-dir",
            str(data),
            "--catalog",
            str(catalog),
            "--servers",
            ",".join(self.servers),
            *self.extra_args,
        ]
        env = {k: v for k, v in os.environ.items() if k not in ("MCP_GATEWAY_HOME", "GATEWAY_ACCESS_TOKEN")}
        self._spawn(argv, f"http://127.0.0.1:{port}/healthz", env=env)
        token_file = data / "token"
        end = time.monotonic() + 10
        while not token_file.exists() and time.monotonic() < end:
            time.sleep(0.05)
        if not token_file.exists():
            raise RuntimeError(f"gateway healthy but {token_file} missing")
        self.token = token_file.read_text().strip()
        self.url = f"http://127.0.0.1:{port}/mcp"


def make_targets(names: list[str], gateway_args: list[str]) -> list[Target]:
    factories: dict[str, Callable[[], Target]] = {
        "stdio": StdioTarget,
        "http": lambda: EchoHttpTarget(json_response=False),
        "http-json": lambda: EchoHttpTarget(json_response=True),
        "mcp-proxy": McpProxyTarget,
        "gateway": lambda: GatewayTarget(gateway_args),
    }
    return [factories[n]() for n in names]


# --------------------------------------------------------------------------- correctness check


async def _sdk_check(target: Target) -> None:
    """initialize + tools/list + tools/call echo with the real ``mcp`` client."""
    from mcp import Client, StdioServerParameters
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared._httpx_utils import create_mcp_http_client

    if target.stdio_command:
        server: Any = StdioServerParameters(command=target.stdio_command[0], args=target.stdio_command[1:])
    else:
        assert target.url is not None
        headers = {"Authorization": f"Bearer {target.token}"} if target.token else None
        server = streamable_http_client(target.url, http_client=create_mcp_http_client(headers=headers))
    async with Client(server, mode="legacy") as client:
        names = {t.name for t in (await client.list_tools()).tools}
        for tool in ("echo", "big"):
            if target.tool(tool) not in names:
                raise RuntimeError(f"tool {target.tool(tool)!r} not listed; got {sorted(names)}")
        result = await client.call_tool(target.tool("echo"), {"text": "check ✓"})
        text = getattr(result.content[0], "text", None)
        if result.is_error or text != "check ✓":
            raise RuntimeError(f"echo through the mcp client returned {result!r}")


def sdk_check(target: Target) -> None:
    asyncio.run(asyncio.wait_for(_sdk_check(target), 60))


# --------------------------------------------------------------------------- cold start


def single_start_seconds(cmd: list[str]) -> float:
    """Spawn a stdio server and time it to its initialize response."""
    init = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": loadgen.PROTOCOL_VERSION, "capabilities": {}, "clientInfo": loadgen.CLIENT_INFO},
    }
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(json.dumps(init).encode() + b"\n")
        proc.stdin.flush()
        line = proc.stdout.readline()  # bounded: the process is killed below in any case
        elapsed = time.perf_counter() - t0
        if b'"result"' not in line:
            raise RuntimeError(f"bad initialize reply from {cmd}: {line[:200]!r}")
        return elapsed
    finally:
        proc.kill()
        proc.wait(timeout=5)


async def _first_list(url: str, token: str | None) -> tuple[float, float, int]:
    s = loadgen.HttpSession(url, token)
    try:
        t0 = time.perf_counter()
        await s.connect()
        await s.initialize()
        t1 = time.perf_counter()
        tools = (await s.rpc("tools/list"))["tools"]
        t2 = time.perf_counter()
        return t2 - t0, t2 - t1, len(tools)
    finally:
        await s.delete()
        await s.aclose()


def _gateway_first_list(gateway_args: list[str], servers: dict[str, list[str]], name: str) -> tuple[float, float, int]:
    target = GatewayTarget(gateway_args, servers=servers, name=name)
    try:
        target.start()
        assert target.url is not None
        return asyncio.run(asyncio.wait_for(_first_list(target.url, target.token), 120))
    finally:
        target.stop()


def run_coldstart(gateway_args: list[str], repeat: int = 1) -> dict[str, Any]:
    """The first tools/list of a fresh gateway with 5 never-seen servers, against two references.

    The issue's reference is the slowest server's own start, spawned directly (no sandbox). The
    second is that same server alone behind a fresh gateway with the same runtime (bwrap adds its
    own start cost to every server, one or five): the ratio to it is what aggregating five
    servers costs. Each number is the median of ``repeat`` runs.
    """
    servers = {f"cold{i + 1}": [PYTHON, ECHO, "--start-delay", str(d)] for i, d in enumerate(COLD_DELAYS)}
    slowest_name = f"cold{len(COLD_DELAYS)}"
    runs: list[dict[str, Any]] = []
    for _ in range(max(1, repeat)):
        singles = {name: single_start_seconds(cmd) for name, cmd in servers.items()}
        total, list_only, n_tools = _gateway_first_list(gateway_args, servers, "gateway-coldstart")
        alone, _, _ = _gateway_first_list(gateway_args, {slowest_name: servers[slowest_name]}, "gateway-alone")
        slowest = max(singles.values())
        runs.append(
            {
                "slowest_single_s": slowest,
                "singles_s": singles,
                "alone_s": alone,
                "init_plus_list_s": total,
                "list_s": list_only,
                "tools": n_tools,
                "ratio": total / slowest,
                "ratio_alone": total / alone,
            }
        )
    middle = sorted(runs, key=lambda r: r["ratio"])[len(runs) // 2]
    return {**middle, "runs": runs, "ratio_alone": statistics.median(r["ratio_alone"] for r in runs)}


# --------------------------------------------------------------------------- driver


@dataclass
class TargetResult:
    name: str
    description: str
    status: str = "ok"
    rss_rest_kb: int = 0
    load: dict[str, LoadResult] = field(default_factory=dict)
    idle: IdleResult | None = None


def describe(exc: BaseException) -> str:
    """``Type: message`` of the first leaf exception (task groups wrap the real cause)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}"


def bench_target(target: Target, args: argparse.Namespace, scenarios: set[str]) -> TargetResult:
    res = TargetResult(target.name, target.description)
    d = args.duration
    try:
        target.start()
        sdk_check(target)
        time.sleep(0.5)
        if target.front_pid:
            res.rss_rest_kb = proc_rss_kb(target.front_pid)
        plan: list[tuple[str, int, dict[str, Any]]] = []
        if "latency" in scenarios:
            plan.append(("s1", 1, {}))
        if "throughput" in scenarios:
            plan += [("s8", 8, {}), ("s16", 16, {})]
        if "big" in scenarios:
            plan.append(
                (
                    "big",
                    1,
                    {"tool": target.tool("big"), "arguments": {"size": BIG_SIZE}, "expect_text": None, "warmup": 3},
                )
            )
        for key, sessions, extra in plan:
            kw: dict[str, Any] = {"sessions": sessions, "tool": target.tool("echo"), "duration": d, **extra}
            if key == "big":
                kw["duration"] = args.big_duration
            print(f"  {target.name}: {key} ({kw['sessions']} sessions, {kw['duration']:g} s) ...", flush=True)
            workers = 1 if sessions == 1 else args.workers
            runs = [run_load(target.spec(**kw), workers, target.cpu_groups) for _ in range(args.repeat)]
            res.load[key] = sorted(runs, key=lambda r: r.calls_per_s)[len(runs) // 2]  # the median run
        if "idle" in scenarios and not target.stdio_command and target.front_pid:
            print(f"  {target.name}: idle ({args.idle_sessions} sessions) ...", flush=True)
            spec = target.spec(sessions=args.idle_sessions)
            res.idle = run_idle(spec, args.workers, target.front_pid)
    except Skip as exc:
        res.status = str(exc)
    except Exception as exc:
        res.status = f"failed: {describe(exc)}"
        tail = target.log_tail()
        if tail:
            res.status += f" [log: {tail[-600:]}]"
    finally:
        target.stop()
    return res


# --------------------------------------------------------------------------- report


def fmt(x: float | None, digits: int = 2) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    return f"{x:.{digits}f}"


def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    line = "| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |"
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    body = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in rows]
    return "\n".join([line, sep, *body])


def report(results: list[TargetResult], cold: dict[str, Any] | None, args: argparse.Namespace) -> str:
    out: list[str] = []
    rows = []
    for r in results:
        if r.status != "ok":
            rows.append([r.name, r.status[:110], *["" for _ in range(9)]])
            continue
        s1, s8, s16 = r.load.get("s1"), r.load.get("s8"), r.load.get("s16")
        cpu_src = s16 or s1
        errors = sum(x.errors for x in r.load.values())
        rows.append(
            [
                r.name,
                fmt(s1.p50_ms) if s1 else "-",
                fmt(s1.p99_ms) if s1 else "-",
                fmt(s1.calls_per_s) if s1 else "-",
                fmt(s8.calls_per_s) if s8 else "-",
                fmt(s16.calls_per_s) if s16 else "-",
                fmt(s16.p99_ms / s16.p50_ms, 1) if s16 else "-",
                fmt(cpu_src.cpu_ms_per_call("front"), 3) if cpu_src else "-",
                fmt(cpu_src.cpu_ms_per_call("upstream"), 3) if cpu_src and "upstream" in cpu_src.cpu else "-",
                fmt(cpu_src.cpu_ms_per_call("client"), 3) if cpu_src else "-",
                str(errors),
            ]
        )
    out.append(
        table(
            [
                "target",
                "p50 ms 1s",
                "p99 ms 1s",
                "calls/s 1s",
                "calls/s 8s",
                "calls/s 16s",
                "p99/p50 16s",
                "server CPU ms/call",
                "upstream CPU ms/call",
                "client CPU ms/call",
                "errors",
            ],
            rows,
        )
    )
    out.append(
        "\nserver CPU = utime+stime of the process the client talks to (stdio: the echo processes; gateway: "
        "the gateway process only), over the 16-session loop (1-session if throughput was not run), per call;\n"
        "upstream = the echo server behind a proxy; client = the load generator's own processes."
    )

    big_rows = [
        [
            r.name,
            fmt(b.p50_ms),
            fmt(b.calls_per_s, 1),
            fmt(b.cpu_ms_per_call("front")),
            fmt(b.cpu_ms_per_call("upstream")) if "upstream" in b.cpu else "-",
            str(b.errors),
        ]
        for r in results
        if r.status == "ok" and (b := r.load.get("big"))
    ]
    if big_rows:
        out.append(f"\n1 MB results (big, size={BIG_SIZE:,}), 1 session:\n")
        out.append(
            table(["target", "p50 ms", "calls/s", "server CPU ms/call", "upstream CPU ms/call", "errors"], big_rows)
        )
    idle_rows = [
        [
            r.name,
            fmt(r.rss_rest_kb / 1024, 1),
            str(i.sessions),
            f"{i.ok}/{i.sessions}",
            fmt(i.open_s, 1),
            fmt(i.rss_after_kb / 1024, 1),
            fmt(i.per_session_kb, 1),
        ]
        for r in results
        if r.status == "ok" and (i := r.idle)
    ]
    if idle_rows:
        out.append("\nIdle sessions held (server process RSS, VmRSS):\n")
        out.append(
            table(
                ["target", "RSS at rest MB", "sessions", "alive (ping)", "open s", "RSS held MB", "KB/idle session"],
                idle_rows,
            )
        )
        out += [f"  {r.name}: ping failed: {e[:200]}" for r in results if r.idle for e in r.idle.errors]
    if cold:
        out.append(
            "\nCold start, gateway with 5 servers (start delays " + ", ".join(f"{x:g}" for x in COLD_DELAYS) + " s):\n"
        )
        out.append(
            table(
                [
                    "slowest single start s",
                    "slowest alone via gateway s",
                    "initialize+first tools/list s",
                    "tools/list alone s",
                    "tools",
                    "ratio",
                    "ratio to alone via gateway",
                ],
                [
                    [
                        fmt(run["slowest_single_s"], 3),
                        fmt(run["alone_s"], 3),
                        fmt(run["init_plus_list_s"], 3),
                        fmt(run["list_s"], 3),
                        str(run["tools"]),
                        fmt(run["ratio"]),
                        fmt(run["ratio_alone"]),
                    ]
                    for run in cold["runs"]
                ],
            )
        )
    out.append("\n" + "\n".join(check_targets(results, cold)))
    return "\n".join(out)


def check_targets(results: list[TargetResult], cold: dict[str, Any] | None) -> list[str]:
    """Issue 7's targets for the gateway, against the other rows of the same run."""
    by = {r.name: r for r in results if r.status == "ok"}
    gw = by.get("gateway")
    if gw is None:
        return ["Issue 7 targets: gateway not measured in this run."]
    lines = ["Issue 7 targets (gateway, this run):"]

    def check(ok: bool | None, text: str) -> None:
        lines.append(f"  [{'n/a' if ok is None else 'PASS' if ok else 'FAIL'}] {text}")

    px = by.get("mcp-proxy")
    g16, p16 = gw.load.get("s16"), px.load.get("s16") if px else None
    if g16:
        cpu = g16.cpu_ms_per_call("front")
        check(cpu <= 0.4, f"gateway CPU per echo call {cpu:.3f} ms <= 0.4 ms")
        if p16:
            pcpu = p16.cpu_ms_per_call("front")
            check(cpu <= pcpu / 3, f"gateway CPU per call {cpu:.3f} ms <= 1/3 of mcp-proxy's {pcpu:.3f} ms")
            check(
                g16.calls_per_s >= 1.5 * p16.calls_per_s,
                f"16 sessions: {g16.calls_per_s:.0f} calls/s >= 1.5 x mcp-proxy's {p16.calls_per_s:.0f}",
            )
        check(g16.p99_ms <= 3 * g16.p50_ms, f"16 sessions: p99 {g16.p99_ms:.2f} ms <= 3 x p50 {g16.p50_ms:.2f} ms")
    base = [by[n].load["s1"].p50_ms for n in ("http", "http-json") if n in by and "s1" in by[n].load]
    if gw.load.get("s1") and base:
        added = gw.load["s1"].p50_ms - min(base)
        check(added <= 1.0, f"added p50, 1 session: {added:.2f} ms <= 1 ms over the echo server serving HTTP itself")
    if big := gw.load.get("big"):
        c = big.cpu_ms_per_call("front")
        check(c <= 5.0, f"1 MB result: gateway CPU {c:.2f} ms/call <= 5 ms")
    if gw.idle:
        check(gw.rss_rest_kb <= 80 * 1024, f"RSS at rest {gw.rss_rest_kb / 1024:.1f} MB <= 80 MB")
        check(
            gw.idle.per_session_kb <= 40 and gw.idle.failed == 0,
            f"{gw.idle.sessions} idle sessions: {gw.idle.per_session_kb:.1f} KB each <= 40 KB, {gw.idle.ok} alive",
        )
    if cold:
        n = len(cold["runs"])
        check(
            cold["ratio"] <= 1.2,
            f"first tools/list with 5 servers: {cold['ratio']:.2f} x the slowest direct start <= 1.2 (median of {n})",
        )
        lines.append(
            f"         and {cold['ratio_alone']:.2f} x the slowest server alone behind the gateway, same runtime"
        )
    return lines


def machine_line() -> str:
    try:
        model = next(ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name"))
    except (OSError, StopIteration):
        model = "?"
    return f"{os.cpu_count()} CPUs ({model}), Python {sys.version.split()[0]}, load average {load_avg()}"


def load_avg() -> str:
    """The 1/5/15-minute load averages: other work on the machine skews every number here."""
    try:
        return " ".join(open("/proc/loadavg").read().split()[:3])
    except OSError:
        return "?"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--targets", default=",".join(ALL_TARGETS), help=f"comma list of {ALL_TARGETS}")
    parser.add_argument("--scenarios", default=",".join(ALL_SCENARIOS), help=f"comma list of {ALL_SCENARIOS}")
    parser.add_argument("--quick", action="store_true", help="2 s loops, 200 idle sessions")
    parser.add_argument("--duration", type=float, help="seconds per load loop (default 5, quick 2)")
    parser.add_argument("--big-duration", type=float, help="seconds of the 1 MB loop (default 3, quick 1.5)")
    parser.add_argument("--idle-sessions", type=int, help="idle sessions to hold (default 1000, quick 200)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per load scenario; the median run is kept")
    parser.add_argument("--workers", type=int, default=2, help="load generator processes for >1 session (default 2)")
    parser.add_argument(
        "--gateway-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra argument for `gateway serve` (repeatable), e.g. --gateway-arg=--runtime=host",
    )
    parser.add_argument("--json", metavar="FILE", help="also write the raw results as JSON")
    args = parser.parse_args(argv)
    args.duration = args.duration or (2.0 if args.quick else 5.0)
    args.big_duration = args.big_duration or (1.5 if args.quick else 3.0)
    args.idle_sessions = args.idle_sessions or (200 if args.quick else 1000)
    names = [t.strip() for t in args.targets.split(",") if t.strip()]
    scenarios = {s.strip() for s in args.scenarios.split(",") if s.strip()}
    bad = [n for n in names if n not in ALL_TARGETS] + [s for s in scenarios if s not in ALL_SCENARIOS]
    if bad:
        parser.error(f"unknown target/scenario {bad}; targets: {ALL_TARGETS}, scenarios: {ALL_SCENARIOS}")

    def on_term(signum: int, frame: Any) -> None:
        # Once only: a second signal must not interrupt the cleanup the first one started.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    loadgen._raise_nofile()  # servers started from here inherit the raised limit (idle sessions)
    print(f"machine: {machine_line()}; loops {args.duration:g} s, {args.workers} load workers", flush=True)
    results: list[TargetResult] = []
    cold: dict[str, Any] | None = None
    try:
        for target in make_targets(names, args.gateway_arg):
            print(f"{target.name}: {target.description}", flush=True)
            results.append(bench_target(target, args, scenarios))
            if results[-1].status != "ok":
                print(f"  {target.name}: {results[-1].status}", flush=True)
        if "gateway" in names and "coldstart" in scenarios and gateway_available()[0]:
            print("gateway: coldstart ...", flush=True)
            try:
                cold = run_coldstart(args.gateway_arg, args.repeat)
            except Exception as exc:
                print(f"  coldstart failed: {describe(exc)}", flush=True)
    except KeyboardInterrupt:
        print("interrupted: every process started here has been stopped", file=sys.stderr)
        return 130
    print(
        f"\nload average after the run: {load_avg()} (on {os.cpu_count()} CPUs; above that, other work skews "
        "these numbers)\n"
    )
    print(report(results, cold, args))
    if args.json:
        raw = {
            "machine": machine_line(),
            "args": vars(args),
            "coldstart": cold,
            "targets": [
                {
                    "name": r.name,
                    "status": r.status,
                    "rss_rest_kb": r.rss_rest_kb,
                    "load": {
                        k: {**v.__dict__, "cpu_ms_per_call": {g: v.cpu_ms_per_call(g) for g in v.cpu}}
                        for k, v in r.load.items()
                    },
                    "idle": r.idle.__dict__ if r.idle else None,
                }
                for r in results
            ],
        }
        Path(args.json).write_text(json.dumps(raw, indent=2))
    return 0 if all(r.status == "ok" or r.status.startswith("pending") for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
