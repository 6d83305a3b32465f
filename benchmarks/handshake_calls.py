"""Gateway CPU per handshake-era ``tools/call`` for each shape of the real ``mcp`` client.

A client that declares roots, sampling or elicitation could be asked something back by an
upstream during a call; one that declares nothing cannot. Both must cost the gateway the same.
This calls ``fix__echo`` N times with the ``mcp`` client (mode "legacy", 2025-11-25) in three
shapes (no callbacks; roots + elicitation callbacks; roots + elicitation + sampling) against one
fresh gateway and prints wall time and gateway CPU per call (the client's own cost is in the
wall time only).

    python benchmarks/handshake_calls.py --calls 500
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.support import fixture_entry, start_gateway  # noqa: E402


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100


async def roots(context: Any) -> Any:
    import mcp_types as types

    return types.ListRootsResult(roots=[])


async def elicit(context: Any, params: Any) -> Any:
    import mcp_types as types

    return types.ElicitResult(action="decline")


async def sample(context: Any, params: Any) -> Any:
    import mcp_types as types

    return types.CreateMessageResult(role="assistant", content=types.TextContent(type="text", text="x"), model="m")


SHAPES: dict[str, dict[str, Any]] = {
    "no callbacks": {},
    "roots + elicitation": {"list_roots_callback": roots, "elicitation_callback": elicit},
    "roots + elicitation + sampling": {
        "list_roots_callback": roots,
        "elicitation_callback": elicit,
        "sampling_callback": sample,
    },
}


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--tools", type=int, default=60)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        gateway = start_gateway(
            ["--servers", "fix", "--runtime", "host"],
            workdir=Path(workdir),
            catalog={"fix": fixture_entry("--name", "fix", "--tools", str(args.tools))},
        )
        try:
            print("| client | calls | wall ms/call | gateway CPU ms/call |")
            print("|---|---|---|---|")
            for shape, callbacks in SHAPES.items():
                async with gateway.client(mode="legacy", **callbacks) as client:
                    await client.list_tools()
                    for _ in range(20):  # warm-up
                        await client.call_tool("fix__echo", {"text": "warm"})
                    cpu0, t0 = cpu_seconds(gateway.process.pid), time.perf_counter()
                    for _ in range(args.calls):
                        await client.call_tool("fix__echo", {"text": "x"})
                    wall, cpu = time.perf_counter() - t0, cpu_seconds(gateway.process.pid) - cpu0
                print(f"| {shape} | {args.calls} | {wall / args.calls * 1000:.2f} | {cpu / args.calls * 1000:.2f} |")
        finally:
            gateway.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
