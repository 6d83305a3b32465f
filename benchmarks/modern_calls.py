"""Gateway CPU per ``tools/call`` for the two protocol eras, with the real ``mcp`` client.

``run.py`` drives handshake-era (2025-11-25) sessions with a lean client. A 2026-07-28 client
has no session: every request carries its own envelope and is served by the gateway's modern
endpoint (``gateway/downstream/modern.py``). This calls ``fix__echo`` N times in one client of each era against a
fresh gateway whose fixture server also offers ``--tools`` generated tools (a bigger list makes
any per-call listing show), and prints wall time and gateway CPU per call. The client's own
cost is in the wall time, not in the CPU column.

    python benchmarks/modern_calls.py --calls 300 --tools 60
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.support import fixture_entry, start_gateway  # noqa: E402


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--tools", type=int, default=60)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        gateway = start_gateway(
            ["--servers", "fix", "--runtime", "host"],
            workdir=Path(workdir),
            catalog={"fix": fixture_entry("--name", "fix", "--tools", str(args.tools))},
        )
        try:
            print("| era | calls | wall ms/call | gateway CPU ms/call |")
            print("|---|---|---|---|")
            for mode in ("legacy", "2026-07-28"):
                async with gateway.client(mode=mode) as client:
                    await client.list_tools()
                    for _ in range(20):  # warm-up
                        await client.call_tool("fix__echo", {"text": "warm"})
                    cpu0, t0 = cpu_seconds(gateway.process.pid), time.perf_counter()
                    for _ in range(args.calls):
                        await client.call_tool("fix__echo", {"text": "x"})
                    wall, cpu = time.perf_counter() - t0, cpu_seconds(gateway.process.pid) - cpu0
                era = "2025-11-25" if mode == "legacy" else mode
                print(f"| {era} | {args.calls} | {wall / args.calls * 1000:.2f} | {cpu / args.calls * 1000:.2f} |")
        finally:
            gateway.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
