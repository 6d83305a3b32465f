"""Cold start and per-call cost of one server in each runtime: host, bwrap, container (issue 4).

    python benchmarks/runtimes.py                 # 5 cold starts, 300 calls per runtime
    python benchmarks/runtimes.py --starts 3 --calls 100

The server is the fixture server (tests/fixtures/fixture_server.py); in a container it is the
same file in a local image made from the host's Python (tests/images/python_image.py, built on
first use, no registry). Measured in-process at the gateway's upstream layer (runtimes ->
UpstreamServer), so HTTP and the client are not in the numbers:

- cold start: launch + ``initialize`` + ``tools/list`` (what the first call of a sandbox waits for);
- per call: sequential ``tools/call echo`` round trips on a running server; the overhead is the
  difference of the medians against host.

Runtimes that do not work here are reported as skipped, with the reason.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from gateway.catalog.config import ServerSettings  # noqa: E402
from gateway.catalog.entries import parse_entry  # noqa: E402
from gateway.upstream.runtimes import Runtimes  # noqa: E402
from gateway.upstream.server import UpstreamServer  # noqa: E402

FIXTURE = REPO / "tests" / "fixtures" / "fixture_server.py"


async def runtime_available(runtime: str, runtimes: Runtimes) -> str | None:
    """None when the runtime works, else why not."""
    chosen = {"host": runtimes.host, "bwrap": runtimes.bwrap, "container": runtimes.container}[runtime]
    probe = await chosen.probe()
    return None if probe.ok else probe.detail


async def measure(runtime: str, data_dir: Path, starts: int, calls: int) -> dict[str, object]:
    mode = "host" if runtime == "container" else runtime
    runtimes = Runtimes(mode, None, data_dir)
    why = await runtime_available(runtime, runtimes)
    if why:
        return {"runtime": runtime, "skipped": why}
    raw: dict[str, object] = {"command": [sys.executable, str(FIXTURE)], "disableNetwork": True}
    if runtime == "container":
        from tests.images import python_image

        engine = await runtimes.container.engine()
        assert engine is not None
        raw = {"image": python_image.build(engine), "disableNetwork": True}
    entry = parse_entry("bench", raw)
    settings = ServerSettings("bench")
    home = data_dir / "home" / "bench" / runtime

    async def launch():  # type: ignore[no-untyped-def]
        return await runtimes.launch(entry, settings, "bench", home, lambda: list(entry.command))

    cold: list[float] = []
    per_call: list[float] = []
    for attempt in range(starts):
        server = UpstreamServer("bench", "bench", launch, data_dir / "logs" / f"{runtime}.log")
        began = time.perf_counter()
        await server.ensure_running()
        cold.append((time.perf_counter() - began) * 1000)
        if attempt == 0:
            for i in range(20):  # warm up
                await server.call("tools/call", {"name": "echo", "arguments": {"text": str(i)}})
            for i in range(calls):
                t0 = time.perf_counter()
                await server.call("tools/call", {"name": "echo", "arguments": {"text": str(i)}})
                per_call.append((time.perf_counter() - t0) * 1e6)
        await server.stop()
    per_call.sort()
    return {
        "runtime": runtime,
        "cold_start_ms_median": round(statistics.median(cold), 1),
        "cold_start_ms_min": round(min(cold), 1),
        "call_us_median": round(statistics.median(per_call), 1),
        "call_us_p95": round(per_call[int(len(per_call) * 0.95) - 1], 1),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--starts", type=int, default=5)
    parser.add_argument("--calls", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mcp-gw-bench-") as tmp:
        rows = [await measure(r, Path(tmp), args.starts, args.calls) for r in ("host", "bwrap", "container")]
    host = next((r for r in rows if r["runtime"] == "host" and "skipped" not in r), None)
    print(f"{'runtime':<10} {'cold start (median/min)':>24} {'call p50':>10} {'call p95':>10} {'overhead vs host':>17}")
    for row in rows:
        if "skipped" in row:
            print(f"{row['runtime']:<10} skipped: {row['skipped']}")
            continue
        overhead = ""
        if host is not None:
            overhead = f"{float(row['call_us_median']) - float(host['call_us_median']):+.0f} us"  # type: ignore[arg-type]
        cold = f"{row['cold_start_ms_median']} / {row['cold_start_ms_min']} ms"
        print(
            f"{row['runtime']:<10} {cold:>24} {row['call_us_median']:>8} us {row['call_us_p95']:>7} us {overhead:>17}"
        )


if __name__ == "__main__":
    asyncio.run(main())
