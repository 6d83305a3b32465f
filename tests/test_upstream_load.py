"""Bounded load: 200 concurrent sessions over two sandboxes, every call answered, no cross-talk.

Each sandbox runs its own fixture server whose environment carries the sandbox's tag (a config
value), so a session that reached the other sandbox's process would read the wrong tag. Every
session also echoes a text only it knows. Both protocol eras take part.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

from tests.support import RunningGateway, fixture_entry
from tests.upstream_helpers import add_sandbox, live_descendants, mint_token

SESSIONS = 200
CATALOG = {
    "fix": fixture_entry(
        env=[{"name": "SANDBOX_TAG", "value": "{{fix.tag}}"}],
        config=[{"name": "fix", "properties": {"tag": {"type": "string"}}}],
    )
}


async def one_session(gw: RunningGateway, token: str, tag: str, index: int) -> tuple[str, ...]:
    mode = "legacy" if index % 2 else "2026-07-28"
    async with gw.client(token=token, mode=mode) as client:
        seen = (await client.call_tool("fix__secret_echo", {"name": "SANDBOX_TAG"})).content[0].text
        text = f"session {index} of {tag}"
        echoed = (await client.call_tool("fix__echo", {"text": text})).structured_content
        progress: list[float] = []

        async def on_progress(value: float, total: float | None, message: str | None) -> None:
            progress.append(value)

        await client.call_tool("fix__progress", {"steps": 2, "delay": 0.01}, progress_callback=on_progress)
    return seen, json.dumps(echoed), json.dumps(progress), text


async def test_200_concurrent_sessions_over_two_sandboxes(
    gateway_factory: Callable[..., RunningGateway], tmp_path: Any
) -> None:
    workdir = tmp_path / "gw"
    add_sandbox(workdir / "data", "beta", {"fix": {"tag": "beta"}})
    gw = gateway_factory(
        ["--runtime", "host", "--config", json.dumps({"fix": {"tag": "alpha"}}), "--max-concurrent-requests", "1000"],
        catalog=CATALOG,
        workdir=workdir,
    )
    tokens = {"alpha": gw.token, "beta": mint_token(gw, "beta")}
    started = time.monotonic()
    results = await asyncio.wait_for(
        asyncio.gather(
            *(one_session(gw, tokens[tag], tag, i) for i in range(SESSIONS) for tag in [("alpha", "beta")[i % 2]]),
            return_exceptions=True,
        ),
        120,
    )
    elapsed = time.monotonic() - started
    failures = [r for r in results if isinstance(r, BaseException)]
    assert not failures, f"{len(failures)} sessions failed, first: {failures[0]!r}"
    for i, (seen, echoed, progress, text) in enumerate(results):  # type: ignore[misc]
        assert seen == ("alpha", "beta")[i % 2]
        assert json.loads(echoed) == {"text": text}
        assert json.loads(progress) == [1.0, 2.0]
    # One server process per sandbox served them all.
    assert len(live_descendants(gw.process.pid)) == 2
    print(f"\n{SESSIONS} sessions x 3 calls in {elapsed:.1f} s")
