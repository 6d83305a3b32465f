"""What an upstream sends during a call reaches the client that made it: progress, logs, sampling,
elicitation (both protocol eras); list_changed refreshes the server's entries for every session."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import mcp_types as types
import pytest

from tests.support import RunningGateway, fixture_entry
from tests.upstream_helpers import eventually

MODES = ["legacy", "2026-07-28"]


@pytest.fixture
def gw(gateway_factory: Callable[..., RunningGateway]) -> RunningGateway:
    return gateway_factory(["--runtime", "host", "--servers", "fix"], catalog={"fix": fixture_entry("--name", "fix")})


def sampler(answer: str) -> Any:
    async def sampling(ctx: Any, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
        prompt = params.messages[0].content.text  # type: ignore[union-attr]
        return types.CreateMessageResult(
            role="assistant", content=types.TextContent(type="text", text=f"{answer}:{prompt}"), model="test"
        )

    return sampling


async def elicitation(ctx: Any, params: Any) -> types.ElicitResult:
    return types.ElicitResult(action="accept", content={"answer": f"re: {params.message}"})


@pytest.mark.parametrize("mode", MODES)
async def test_progress_reaches_the_caller_with_its_own_token(gw: RunningGateway, mode: str) -> None:
    seen: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total, message))

    async with gw.client(mode=mode) as client:
        result = await client.call_tool("fix__progress", {"steps": 4, "delay": 0.05}, progress_callback=on_progress)
    assert result.content[0].text == "done"
    assert seen == [(float(i), 4.0, f"step {i}") for i in range(1, 5)]


async def test_progress_goes_only_to_the_session_that_made_the_call(gw: RunningGateway) -> None:
    mine: list[float] = []
    theirs: list[Any] = []

    async def on_mine(progress: float, total: float | None, message: str | None) -> None:
        mine.append(progress)

    async def on_any(message: Any) -> None:
        theirs.append(message)

    async with gw.client() as caller, gw.client(message_handler=on_any) as bystander:
        await bystander.list_tools()
        theirs.clear()
        calls = [
            caller.call_tool("fix__progress", {"steps": 5, "delay": 0.02}, progress_callback=on_mine),
            bystander.call_tool("fix__sleep", {"seconds": 0.5}),
        ]
        await asyncio.gather(*calls)
    assert mine == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert not any("progress" in type(m).__name__.lower() for m in theirs)


@pytest.mark.parametrize("mode", MODES)
async def test_log_message_reaches_the_caller(gw: RunningGateway, mode: str) -> None:
    logs: list[types.LoggingMessageNotificationParams] = []

    async def on_log(params: types.LoggingMessageNotificationParams) -> None:
        logs.append(params)

    extra: dict[str, Any] = {"log_level": "debug"} if mode != "legacy" else {}
    async with gw.client(mode=mode, logging_callback=on_log, **extra) as client:
        await client.call_tool("fix__log", {"level": "warning", "message": "disk almost full"})
    assert [(m.level, m.logger, m.data) for m in logs] == [("warning", "fixture", "disk almost full")]


@pytest.mark.filterwarnings("ignore:The logging capability is deprecated")
async def test_log_level_set_by_the_client_filters_relayed_messages(gw: RunningGateway) -> None:
    logs: list[str] = []

    async def on_log(params: types.LoggingMessageNotificationParams) -> None:
        logs.append(params.data)

    async with gw.client(logging_callback=on_log) as client:
        await client.set_logging_level("error")
        await client.call_tool("fix__log", {"level": "info", "message": "chatter"})
        await client.call_tool("fix__log", {"level": "error", "message": "important"})
    assert logs == ["important"]


async def test_2026_client_without_log_opt_in_gets_no_log_messages(gw: RunningGateway) -> None:
    logs: list[Any] = []

    async def on_log(params: types.LoggingMessageNotificationParams) -> None:
        logs.append(params)

    async with gw.client(mode="2026-07-28", logging_callback=on_log) as client:
        result = await client.call_tool("fix__log", {"level": "error", "message": "x"})
    assert result.content[0].text == "logged"
    assert logs == []


@pytest.mark.parametrize("mode", MODES)
async def test_sampling_request_is_answered_by_the_calling_client(gw: RunningGateway, mode: str) -> None:
    async with gw.client(mode=mode, sampling_callback=sampler("model")) as client:
        result = await client.call_tool("fix__sample", {"prompt": "hello"})
    assert result.is_error is False
    assert result.content[0].text == "sampled: model:hello"


@pytest.mark.parametrize("mode", MODES)
async def test_elicitation_request_is_answered_by_the_calling_client(gw: RunningGateway, mode: str) -> None:
    async with gw.client(mode=mode, elicitation_callback=elicitation) as client:
        result = await client.call_tool("fix__elicit", {"message": "your name?"})
    assert result.is_error is False
    assert json.loads(result.content[0].text) == {"action": "accept", "content": {"answer": "re: your name?"}}


@pytest.mark.parametrize("mode", MODES)
async def test_sampling_goes_to_the_session_whose_call_caused_it(gw: RunningGateway, mode: str) -> None:
    async with (
        gw.client(mode=mode, sampling_callback=sampler("first")) as first,
        gw.client(mode=mode, sampling_callback=sampler("second")) as second,
    ):
        texts = []
        for i in range(3):
            for client in (first, second):
                # Several calls of one session in flight at once are fine: they share one client.
                results = await asyncio.gather(*(client.call_tool("fix__sample", {"prompt": f"{i}{j}"}) for j in "ab"))
                texts += [r.content[0].text for r in results]
    assert texts == [f"sampled: {who}:{i}{j}" for i in range(3) for who in ("first", "second") for j in "ab"]


async def test_sampling_is_refused_when_calls_of_several_sessions_are_in_flight(gw: RunningGateway) -> None:
    asked: list[str] = []

    def recording(who: str) -> Any:
        inner = sampler(who)

        async def sampling(ctx: Any, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
            asked.append(who)
            return await inner(ctx, params)

        return sampling

    async with (
        gw.client(sampling_callback=recording("first")) as first,
        gw.client(sampling_callback=recording("second")) as second,
    ):
        busy = asyncio.ensure_future(second.call_tool("fix__sleep", {"seconds": 1.5}))
        await asyncio.sleep(0.3)
        result = await first.call_tool("fix__sample", {"prompt": "private"})
        await busy
    # Stdio does not say which call asked: rather than guess (and maybe show one session's data to
    # another), the gateway refuses, and says why.
    assert result.is_error is True
    assert "cannot tell which of several client sessions" in result.content[0].text
    assert asked == []


@pytest.mark.parametrize("mode", MODES)
async def test_sampling_is_refused_clearly_when_the_client_lacks_the_capability(gw: RunningGateway, mode: str) -> None:
    async with gw.client(mode=mode) as client:
        result = await client.call_tool("fix__sample", {"prompt": "hello"})
    assert result.is_error is True
    assert "did not declare the sampling capability" in result.content[0].text


async def test_list_changed_refreshes_tools_and_notifies_every_session(gw: RunningGateway) -> None:
    notified: list[str] = []

    async def on_message(message: Any) -> None:
        if isinstance(message, types.ToolListChangedNotification):
            notified.append("tools")

    async with gw.client() as caller, gw.client(message_handler=on_message) as watcher:
        await watcher.list_tools()
        before = {t.name for t in (await caller.list_tools()).tools}
        assert "fix__extra" not in before
        await caller.call_tool("fix__change_tools", {})
        await eventually(lambda: bool(notified), what="tools/list_changed at the other session")
        after = {t.name for t in (await watcher.list_tools()).tools}
        assert "fix__extra" in after
        assert (await caller.call_tool("fix__extra", {})).content[0].text == "extra"
