"""Sandbox scale benchmark (issue 3): memory with many sandboxes, time to a sandbox's first call.

    python benchmarks/sandboxes.py                     # 100 registered, 20 active
    python benchmarks/sandboxes.py --registered 200 --active 50 --runtime host --json

What it does, against a real ``python -m gateway serve`` on a free loopback port:

1. measures the idle gateway's RSS;
2. registers ``registered - active`` sandboxes through the admin API (each with its own secret,
   the echo server of ``benchmarks/echo_server.py``), never used;
3. for each of ``active`` more sandboxes, one after the other: ``POST /admin/sandboxes``, open an
   MCP session with the returned token, ``tools/call echo``. The time from before the POST to the
   first successful result is "creation to first call" (it includes starting the sandbox's
   server process). The sessions stay open;
4. measures RSS again: the gateway process alone, and the gateway plus every process it started
   (RSS summed; PSS too, which counts shared pages once).

Every process started here is stopped at the end (the gateway stops its servers on SIGTERM).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from tests.support import RunningGateway, process_tree, start_gateway  # noqa: E402

CATALOG = {
    "bench": {
        "command": [sys.executable, str(ROOT / "benchmarks" / "echo_server.py")],
        "secrets": [{"name": "bench.token", "env": "BENCH_TOKEN"}],
    }
}


def status_kb(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def pss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def memory(gateway: RunningGateway) -> dict[str, Any]:
    pid = gateway.process.pid
    children = process_tree(pid)
    return {
        "gateway_rss_mb": status_kb(pid, "VmRSS") / 1024,
        "total_rss_mb": (status_kb(pid, "VmRSS") + sum(status_kb(p, "VmRSS") for p in children)) / 1024,
        "total_pss_mb": (pss_kb(pid) + sum(pss_kb(p) for p in children)) / 1024,
        "processes": len(children),
    }


def create(admin: httpx.Client, index: int) -> dict[str, Any]:
    response = admin.post("/admin/sandboxes", json={"mcp": {"bench": {"token": f"bench-secret-{index:05d}-x"}}})
    response.raise_for_status()
    return dict(response.json())


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


async def run(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="bench-sandboxes-"))
    extra = ["--runtime", args.runtime] if args.runtime else []
    gateway = start_gateway(extra, workdir=workdir, catalog=CATALOG)
    try:
        await asyncio.sleep(1.0)
        idle = memory(gateway)
        create_ms: list[float] = []
        with gateway.admin() as admin:
            for i in range(args.registered - args.active):
                started = time.perf_counter()
                create(admin, i)
                create_ms.append((time.perf_counter() - started) * 1000)
        registered = memory(gateway)

        first_call_ms: list[float] = []
        async with contextlib.AsyncExitStack() as stack:
            with gateway.admin() as admin:
                for i in range(args.active):
                    started = time.perf_counter()
                    sandbox = create(admin, args.registered + i)
                    client = await stack.enter_async_context(gateway.client(sandbox["mcp_token"]))
                    result = await client.call_tool("bench__echo", {"text": "hi"})
                    assert not result.is_error
                    first_call_ms.append((time.perf_counter() - started) * 1000)
            await asyncio.sleep(1.0)
            active = memory(gateway)
            with gateway.admin() as admin:
                count = len(admin.get("/admin/sandboxes").json()["sandboxes"]) - 1  # minus "default"
    finally:
        gateway.stop()
    return {
        "registered": count,
        "active": args.active,
        "runtime": args.runtime or "auto",
        "memory_idle": idle,
        "memory_registered": registered,
        "memory_active": active,
        "create_ms": {"p50": statistics.median(create_ms), "p95": percentile(create_ms, 0.95)} if create_ms else {},
        "creation_to_first_call_ms": {
            "p50": statistics.median(first_call_ms),
            "p95": percentile(first_call_ms, 0.95),
            "min": min(first_call_ms),
            "max": max(first_call_ms),
        },
    }


def report(result: dict[str, Any]) -> None:
    print(f"sandboxes: {result['registered']} registered, {result['active']} active (runtime {result['runtime']})")
    for label, key in (
        ("idle gateway", "memory_idle"),
        ("registered", "memory_registered"),
        ("active", "memory_active"),
    ):
        m = result[key]
        print(
            f"  {label:<13} gateway RSS {m['gateway_rss_mb']:7.1f} MB   with servers RSS {m['total_rss_mb']:7.1f} MB"
            f"   PSS {m['total_pss_mb']:7.1f} MB   ({m['processes']} child processes)"
        )
    if result["create_ms"]:
        c = result["create_ms"]
        print(f"  POST /admin/sandboxes       p50 {c['p50']:6.1f} ms   p95 {c['p95']:6.1f} ms")
    f = result["creation_to_first_call_ms"]
    print(
        f"  creation -> first tools/call p50 {f['p50']:6.1f} ms   p95 {f['p95']:6.1f} ms"
        f"   min {f['min']:6.1f} ms   max {f['max']:6.1f} ms"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--registered", type=int, default=100)
    parser.add_argument("--active", type=int, default=20)
    parser.add_argument("--runtime", choices=["auto", "host", "bwrap"], help="passed to serve (default: auto)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    if not 0 < args.active <= args.registered:
        parser.error("need 0 < --active <= --registered")
    result = asyncio.run(run(args))
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        report(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
