"""Gateway memory per session held by the real ``mcp`` client (its GET event stream open).

``run.py``'s idle scenario holds sessions opened by a lean client (initialize + initialized).
Real clients do more: the ``mcp`` SDK client opens the session's event stream (GET /mcp) right
after the handshake and keeps it open, and an agent lists and calls tools. This holds N such
sessions (each: initialize, GET stream, tools/list, one tools/call) on a fresh gateway, once
with clients that declare nothing and once with clients that declare roots and elicitation
(callbacks set), and prints the gateway's RSS growth per session for both.

    python benchmarks/client_sessions.py --sessions 200
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.support import fixture_entry, start_gateway  # noqa: E402


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


async def roots(context: Any) -> Any:
    import mcp_types as types

    return types.ListRootsResult(roots=[])


async def elicit(context: Any, params: Any) -> Any:
    import mcp_types as types

    return types.ElicitResult(action="decline")


async def measure(sessions: int, callbacks: dict[str, Any]) -> tuple[float, float]:
    """(RSS before in MB, KB per held session)."""
    with tempfile.TemporaryDirectory() as workdir:
        gateway = start_gateway(
            ["--servers", "fix", "--runtime", "host"],
            workdir=Path(workdir),
            catalog={"fix": fixture_entry("--name", "fix")},
        )
        try:
            async with gateway.client() as client:  # warm: the server started, its tools recorded
                await client.list_tools()
                await client.call_tool("fix__echo", {"text": "warm"})
            await asyncio.sleep(1.0)
            before = rss_kb(gateway.process.pid)
            async with contextlib.AsyncExitStack() as stack:
                for _ in range(sessions):
                    client = await stack.enter_async_context(gateway.client(**callbacks))
                    await client.list_tools()
                    await client.call_tool("fix__echo", {"text": "x"})
                await asyncio.sleep(3.0)  # the event streams are open; transient buffers settle
                held = rss_kb(gateway.process.pid)
            return before / 1024, (held - before) / sessions
        finally:
            gateway.stop()


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=200)
    args = parser.parse_args()
    print("| client | sessions | RSS at rest MB | KB/session held |")
    print("|---|---|---|---|")
    shapes: dict[str, dict[str, Any]] = {
        "no callbacks": {},
        "roots + elicitation": {"list_roots_callback": roots, "elicitation_callback": elicit},
    }
    for shape, callbacks in shapes.items():
        before, per_session = await measure(args.sessions, callbacks)
        print(f"| {shape} | {args.sessions} | {before:.1f} | {per_session:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
