"""Instant tool lists and discovery (issue 9): a cold sandbox's first tools/list, with and without a record.

    python benchmarks/discovery.py                    # 5 servers x 200 tools, 5 rounds
    python benchmarks/discovery.py --servers 5 --tools 200 --start-delay 1 --rounds 10 --json

One gateway (``python -m gateway serve``, fixture servers from a catalog overlay) in a temporary
data dir. Each round creates fresh sandboxes through the admin API (a new sandbox has no router
and no running server: cold) and times, over HTTP with the mcp client:

  start      first tools/list with no tool record: every server starts (the old behaviour)
  record     first tools/list with the record warm: answered without starting anything
  discovery  the same with ``"discovery": "on"`` (the list holds the two gateway__ tools), and
             one gateway__find_tools call

and, for comparison, a second tools/list in the same session (the cost of the list itself:
serialization, HTTP, the client's parsing), which the first list cannot beat.

``--start-delay`` makes each fixture server sleep before answering initialize, to stand in for
servers that take seconds to start (npx, uvx, containers). Target: record <= 50 ms.
Everything started here is stopped (try/finally); the gateway listens on 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.support import RunningGateway, fixture_entry, process_tree, start_gateway  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--servers", type=int, default=5, help="servers per sandbox (default 5)")
    parser.add_argument("--tools", type=int, default=200, help="generated tools per server (default 200)")
    parser.add_argument("--start-delay", type=float, default=0.0, help="seconds each server sleeps at start")
    parser.add_argument("--rounds", type=int, default=5, help="cold sandboxes per measurement (default 5)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    return parser.parse_args(argv)


class Bench:
    def __init__(self, gateway: RunningGateway, names: list[str]) -> None:
        self.gateway = gateway
        self.names = names

    def create(self, discovery: str = "off") -> dict[str, Any]:
        with self.gateway.admin() as admin:
            response = admin.post("/admin/sandboxes", json={"mcp": {n: {} for n in self.names}, "discovery": discovery})
        response.raise_for_status()
        return response.json()

    def delete(self, sandbox_id: str) -> None:
        with self.gateway.admin() as admin:
            admin.delete(f"/admin/sandboxes/{sandbox_id}")

    async def first_list(self, discovery: str = "off", find: bool = False) -> dict[str, float]:
        created = self.create(discovery)
        try:
            opened = time.perf_counter()
            async with self.gateway.client(created["mcp_token"]) as client:
                started = time.perf_counter()
                tools = (await client.list_tools()).tools
                listed = time.perf_counter()
                sample = {"list_ms": (listed - started) * 1000, "session_ms": (listed - opened) * 1000}
                sample["tools"] = len(tools)
                sample["running"] = len(process_tree(self.gateway.process.pid))
                before = time.perf_counter()
                await client.list_tools(cache_mode="bypass")
                sample["relist_ms"] = (time.perf_counter() - before) * 1000
                if find:
                    before = time.perf_counter()
                    await client.call_tool("gateway__find_tools", {"query": "weather forecast for a city"})
                    sample["find_ms"] = (time.perf_counter() - before) * 1000
            return sample
        finally:
            self.delete(created["id"])


def summary(samples: list[dict[str, float]], key: str) -> dict[str, float]:
    values = [s[key] for s in samples if key in s]
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


async def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    names = [f"srv{i}" for i in range(args.servers)]
    flags = ["--tools", str(args.tools)] + (["--start-delay", str(args.start_delay)] if args.start_delay else [])
    catalog = {name: fixture_entry("--name", name, *flags) for name in names}
    gateway = start_gateway(["--log-level", "warning"], workdir=workdir, catalog=catalog)
    bench = Bench(gateway, names)
    records = gateway.data_dir / "toolcache"
    try:
        await bench.first_list()  # warm the gateway process itself (imports, first requests)
        results: dict[str, list[dict[str, float]]] = {"start": [], "record": [], "discovery": []}
        for _ in range(args.rounds):
            shutil.rmtree(records, ignore_errors=True)
            results["start"].append(await bench.first_list())
            results["record"].append(await bench.first_list())
            results["discovery"].append(await bench.first_list("on", find=True))
    finally:
        gateway.stop()
    out: dict[str, Any] = {
        "servers": args.servers,
        "tools_per_server": args.tools,
        "start_delay_s": args.start_delay,
        "rounds": args.rounds,
    }
    for name, samples in results.items():
        out[name] = {
            "list_ms": summary(samples, "list_ms"),
            "session_ms": summary(samples, "session_ms"),
            "relist_ms": summary(samples, "relist_ms"),
            "tools_listed": samples[0]["tools"],
            "processes_after_list": samples[0]["running"],
        }
        if name == "discovery":
            out[name]["find_ms"] = summary(samples, "find_ms")
    return out


def print_table(result: dict[str, Any]) -> None:
    print(
        f"{result['servers']} servers x {result['tools_per_server']} tools, start delay {result['start_delay_s']:g} s,"
        f" {result['rounds']} cold sandboxes each (median [min-max] ms)"
    )
    print(f"{'':<10} {'first list':>22} {'init+first list':>22} {'second list':>22} {'tools':>6} {'procs':>8}")
    for name in ("start", "record", "discovery"):
        row = result[name]
        keys = ("list_ms", "session_ms", "relist_ms")
        cells = [f"{row[k]['median']:.1f} [{row[k]['min']:.1f}-{row[k]['max']:.1f}]" for k in keys]
        counts = f"{row['tools_listed']:>6} {row['processes_after_list']:>8}"
        print(f"{name:<10} {cells[0]:>22} {cells[1]:>22} {cells[2]:>22} {counts}")
    find = result["discovery"]["find_ms"]
    print(f"gateway__find_tools: {find['median']:.1f} ms median [{find['min']:.1f}-{find['max']:.1f}]")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="gw-discovery-bench-") as tmp:
        result = asyncio.run(run(args, Path(tmp)))
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_table(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
