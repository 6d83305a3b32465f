"""The fixture MCP server behaves as the rest of the test suite expects (raw JSON-RPC over stdio)."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from mcp import Client, types
from mcp.client.stdio import StdioServerParameters

from tests.fixtures import FIXTURE_SERVER, fixture_command

TIMEOUT = 20.0  # generous: every wait in these tests is bounded by this
JsonObj = dict[str, Any]

BUILTIN_TOOLS = {
    "echo",
    "env",
    "add",
    "fail",
    "rpc_error",
    "sleep",
    "progress",
    "log",
    "crash",
    "big",
    "sample",
    "elicit",
    "change_tools",
    "change_description",
    "whoami",
    "meta",
    "write_file",
    "read_file",
    "connect",
    "alloc",
    "secret_echo",
}


class RawClient:
    """A minimal JSON-RPC client over the fixture's stdio: responses by id, everything else queued."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.next_id = 0
        self.responses: dict[Any, asyncio.Future[JsonObj]] = {}
        self.arrivals: list[Any] = []  # ids of responses, in the order they arrived
        self.notifications: asyncio.Queue[JsonObj] = asyncio.Queue()
        self.server_requests: asyncio.Queue[JsonObj] = asyncio.Queue()
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            message = json.loads(line)
            if "method" in message and "id" in message:
                await self.server_requests.put(message)
            elif "method" in message:
                await self.notifications.put(message)
            else:
                self.arrivals.append(message["id"])
                self._future(message["id"]).set_result(message)

    def _future(self, request_id: Any) -> asyncio.Future[JsonObj]:
        if request_id not in self.responses:
            self.responses[request_id] = asyncio.get_running_loop().create_future()
        return self.responses[request_id]

    async def send(self, message: JsonObj) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"jsonrpc": "2.0", **message}).encode() + b"\n")
        await self.proc.stdin.drain()

    async def start_request(self, method: str, params: JsonObj | None = None) -> int:
        self.next_id += 1
        message: JsonObj = {"id": self.next_id, "method": method}
        if params is not None:
            message["params"] = params
        self._future(self.next_id)
        await self.send(message)
        return self.next_id

    async def response(self, request_id: Any) -> JsonObj:
        return await asyncio.wait_for(asyncio.shield(self._future(request_id)), TIMEOUT)

    async def request(self, method: str, params: JsonObj | None = None) -> JsonObj:
        return await self.response(await self.start_request(method, params))

    async def call(self, tool: str, **arguments: Any) -> JsonObj:
        reply = await self.request("tools/call", {"name": tool, "arguments": arguments})
        return reply["result"]

    async def initialize(self, version: str = "2025-11-25") -> JsonObj:
        params = {"protocolVersion": version, "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}
        reply = await self.request("initialize", params)
        await self.send({"method": "notifications/initialized"})
        return reply["result"]

    async def notification(self) -> JsonObj:
        return await asyncio.wait_for(self.notifications.get(), TIMEOUT)

    async def stderr_line(self) -> str:
        assert self.proc.stderr is not None
        return (await asyncio.wait_for(self.proc.stderr.readline(), TIMEOUT)).decode()

    async def exit_code(self) -> int:
        return await asyncio.wait_for(self.proc.wait(), TIMEOUT)


async def spawn(*flags: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *fixture_command(*flags),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        limit=64 * 1024 * 1024,
    )


Starter = Callable[..., Awaitable[RawClient]]


@pytest.fixture
async def start() -> AsyncIterator[Starter]:
    """Start fixture servers (already initialized unless init=False); kill whatever is left."""
    clients: list[RawClient] = []

    async def _start(*flags: str, init: bool = True) -> RawClient:
        client = RawClient(await spawn(*flags))
        clients.append(client)
        if init:
            await client.initialize()
        return client

    yield _start
    for client in clients:
        if client.proc.returncode is None:
            client.proc.kill()
            await client.proc.wait()
        client.reader.cancel()


def text_of(result: JsonObj) -> str:
    return result["content"][0]["text"]


# ---- handshake and listing


async def test_initialize_answers_the_requested_supported_version(start: Starter) -> None:
    client = await start("--name", "alpha", init=False)
    result = await client.initialize("2025-06-18")
    assert result["protocolVersion"] == "2025-06-18"
    assert result["serverInfo"]["name"] == "alpha"
    assert result["capabilities"]["tools"] == {"listChanged": True}


async def test_initialize_falls_back_to_latest_version_for_unknown_one(start: Starter) -> None:
    client = await start(init=False)
    assert (await client.initialize("1999-01-01"))["protocolVersion"] == "2025-11-25"


async def test_tools_list_has_every_builtin_tool_with_a_schema(start: Starter) -> None:
    client = await start()
    tools = (await client.request("tools/list"))["result"]["tools"]
    assert {t["name"] for t in tools} == BUILTIN_TOOLS
    assert all(t["inputSchema"]["type"] == "object" and t["description"] for t in tools)


async def test_generated_tools_are_listed_with_distinct_descriptions(start: Starter) -> None:
    client = await start("--tools", "300")
    tools = (await client.request("tools/list"))["result"]["tools"]
    generated = [t for t in tools if t["name"].startswith("tool_")]
    assert len(tools) >= 303 and len(generated) == 300
    assert len({t["description"] for t in generated}) == 300
    assert text_of(await client.call("tool_0000", city="Paris")) == 'tool_0000 called with {"city": "Paris"}'


# ---- tool calls


async def test_echo_returns_text_and_structured_content(start: Starter) -> None:
    client = await start()
    result = await client.call("echo", text="hi")
    assert result["content"] == [{"type": "text", "text": "hi"}]
    assert result["structuredContent"] == {"text": "hi"}
    assert result["isError"] is False


async def test_unknown_tool_is_a_tool_error(start: Starter) -> None:
    client = await start()
    result = await client.call("no_such_tool")
    assert result["isError"] is True


async def test_unknown_method_is_jsonrpc_method_not_found(start: Starter) -> None:
    client = await start()
    assert (await client.request("no/such/method"))["error"]["code"] == -32601


async def test_rpc_error_tool_answers_a_jsonrpc_error(start: Starter) -> None:
    client = await start()
    reply = await client.request("tools/call", {"name": "rpc_error", "arguments": {"code": -32000, "message": "boom"}})
    assert reply["error"] == {"code": -32000, "message": "boom"}


async def test_a_sleeping_call_does_not_block_another(start: Starter) -> None:
    client = await start()
    sleep_id = await client.start_request("tools/call", {"name": "sleep", "arguments": {"seconds": 2}})
    echo_id = await client.start_request("tools/call", {"name": "echo", "arguments": {"text": "fast"}})
    await client.response(sleep_id)
    assert client.arrivals[-2:] == [echo_id, sleep_id]


async def test_progress_notifications_carry_the_token(start: Starter) -> None:
    client = await start()
    params = {"name": "progress", "arguments": {"steps": 3}, "_meta": {"progressToken": "tok-1"}}
    reply = await client.request("tools/call", params)
    assert text_of(reply["result"]) == "done"
    notes = [await client.notification() for _ in range(3)]
    assert [n["params"]["progress"] for n in notes] == [1, 2, 3]
    assert all(n["method"] == "notifications/progress" and n["params"]["progressToken"] == "tok-1" for n in notes)
    assert notes[0]["params"]["total"] == 3 and notes[0]["params"]["message"] == "step 1"


async def test_cancelled_call_is_never_answered(start: Starter) -> None:
    client = await start()
    sleep_id = await client.start_request("tools/call", {"name": "sleep", "arguments": {"seconds": 60}})
    await client.request("ping")  # requests start in order: the sleep is now running
    await client.send({"method": "notifications/cancelled", "params": {"requestId": sleep_id}})
    assert await client.stderr_line() == f"cancelled {sleep_id}\n"
    await client.request("ping")
    assert sleep_id not in client.arrivals


async def test_crash_exits_with_code_3(start: Starter) -> None:
    client = await start()
    await client.start_request("tools/call", {"name": "crash", "arguments": {}})
    assert await client.exit_code() == 3


async def test_big_result_of_20_mb_arrives_intact(start: Starter) -> None:
    client = await start()
    size = 20 * 1024 * 1024
    assert text_of(await client.call("big", size=size)) == "x" * size


async def test_input_line_of_30_mb_is_accepted(start: Starter) -> None:
    client = await start()
    text = "y" * (30 * 1024 * 1024)
    assert text_of(await client.call("echo", text=text)) == text


async def test_change_tools_sends_list_changed_and_adds_extra(start: Starter) -> None:
    client = await start()
    assert text_of(await client.call("change_tools")) == "changed"
    assert (await client.notification())["method"] == "notifications/tools/list_changed"
    names = {t["name"] for t in (await client.request("tools/list"))["result"]["tools"]}
    assert "extra" in names
    assert text_of(await client.call("extra")) == "extra"


async def test_sample_round_trips_through_the_client(start: Starter) -> None:
    client = await start()
    call_id = await client.start_request("tools/call", {"name": "sample", "arguments": {"prompt": "q"}})
    request = await asyncio.wait_for(client.server_requests.get(), TIMEOUT)
    assert request["method"] == "sampling/createMessage"
    answer = {"role": "assistant", "content": {"type": "text", "text": "a"}, "model": "m"}
    await client.send({"id": request["id"], "result": answer})
    assert text_of((await client.response(call_id))["result"]) == "sampled: a"


async def test_cancelled_before_it_starts_is_never_answered(start: Starter) -> None:
    client = await start()
    call = {
        "jsonrpc": "2.0",
        "id": 99,
        "method": "tools/call",
        "params": {"name": "sleep", "arguments": {"seconds": 60}},
    }
    cancel = {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 99}}
    assert client.proc.stdin is not None
    client.proc.stdin.write((json.dumps(call) + "\n" + json.dumps(cancel) + "\n").encode())  # one read
    assert await client.stderr_line() == "cancelled 99\n"
    await client.request("ping")
    assert 99 not in client.arrivals


async def test_add_returns_the_sum(start: Starter) -> None:
    client = await start()
    result = await client.call("add", a=2, b=0.5)
    assert text_of(result) == "2.5" and result["structuredContent"] == {"sum": 2.5}


async def test_fail_is_a_tool_error_with_the_message(start: Starter) -> None:
    client = await start()
    result = await client.call("fail", message="nope")
    assert result["isError"] is True and text_of(result) == "nope"


async def test_wrong_argument_type_is_a_tool_error(start: Starter) -> None:
    client = await start()
    assert (await client.call("add", a="1", b=2))["isError"] is True


async def test_log_sends_a_message_notification(start: Starter) -> None:
    client = await start()
    assert text_of(await client.call("log", level="warning", message="careful")) == "logged"
    note = await client.notification()
    assert note["method"] == "notifications/message"
    assert note["params"] == {"level": "warning", "logger": "fixture", "data": "careful"}


async def test_elicit_returns_the_client_answer(start: Starter) -> None:
    client = await start()
    call_id = await client.start_request("tools/call", {"name": "elicit", "arguments": {"message": "name?"}})
    request = await asyncio.wait_for(client.server_requests.get(), TIMEOUT)
    assert request["method"] == "elicitation/create" and request["params"]["message"] == "name?"
    answer = {"action": "accept", "content": {"answer": "Ada"}}
    await client.send({"id": request["id"], "result": answer})
    assert json.loads(text_of((await client.response(call_id))["result"])) == answer


async def test_sample_error_from_the_client_is_a_tool_error(start: Starter) -> None:
    client = await start()
    call_id = await client.start_request("tools/call", {"name": "sample", "arguments": {"prompt": "q"}})
    request = await asyncio.wait_for(client.server_requests.get(), TIMEOUT)
    await client.send({"id": request["id"], "error": {"code": -1, "message": "sampling refused"}})
    result = (await client.response(call_id))["result"]
    assert result["isError"] is True and text_of(result) == "sampling refused"


async def test_change_description_changes_echo(start: Starter) -> None:
    client = await start()
    await client.call("change_description")
    assert (await client.notification())["method"] == "notifications/tools/list_changed"
    tools = {t["name"]: t for t in (await client.request("tools/list"))["result"]["tools"]}
    assert tools["echo"]["description"] == "CHANGED"


async def test_write_file_then_read_file(start: Starter, tmp_path: Path) -> None:
    client = await start()
    path = str(tmp_path / "f.txt")
    assert text_of(await client.call("write_file", path=path, content="data")) == "ok"
    assert text_of(await client.call("read_file", path=path)) == "data"
    assert (await client.call("read_file", path=str(tmp_path / "missing")))["isError"] is True


async def test_connect_reports_success_and_refusal(start: Starter) -> None:
    server = await asyncio.start_server(lambda _r, w: w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = await start()
    assert text_of(await client.call("connect", host="127.0.0.1", port=port)) == "connected"
    server.close()
    await server.wait_closed()
    assert (await client.call("connect", host="127.0.0.1", port=port))["isError"] is True


async def test_whoami_describes_the_process(start: Starter) -> None:
    client = await start("--name", "who")
    info = (await client.call("whoami"))["structuredContent"]
    assert info["pid"] == client.proc.pid and info["argv"][-2:] == ["--name", "who"]
    assert {"cwd", "uid"} <= info.keys()


async def test_secret_echo_returns_the_variable(start: Starter, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FIXTURE_TEST_SECRET", "s3cr3t")
    client = await start()
    assert text_of(await client.call("secret_echo", name="FIXTURE_TEST_SECRET")) == "s3cr3t"


async def test_alloc_holds_memory(start: Starter) -> None:
    client = await start()
    assert text_of(await client.call("alloc", mb=16)) == "allocated"


# ---- flags


async def test_exit_at_start_exits_2_with_a_message(start: Starter) -> None:
    client = await start("--exit-at-start", init=False)
    assert await client.exit_code() == 2
    assert await client.stderr_line() == "fatal: configured to exit\n"


async def test_exits_0_when_stdin_closes(start: Starter) -> None:
    client = await start()
    assert client.proc.stdin is not None
    client.proc.stdin.close()
    assert await client.exit_code() == 0


async def test_prompts_flag_serves_greet(start: Starter) -> None:
    client = await start("--prompts")
    reply = await client.request("prompts/get", {"name": "greet", "arguments": {"name": "Ada"}})
    assert reply["result"]["messages"][0]["content"] == {"type": "text", "text": "Hello, Ada!"}


async def test_resources_flag_serves_static_and_templated_resources(start: Starter) -> None:
    client = await start("--resources", "--name", "beta")
    read = await client.request("resources/read", {"uri": "fixture://static/env-name"})
    assert read["result"]["contents"][0]["text"] == "beta"
    item = await client.request("resources/read", {"uri": "fixture://items/7"})
    assert item["result"]["contents"][0]["text"] == "item 7"


async def test_reading_an_unknown_resource_is_error_32002(start: Starter) -> None:
    client = await start("--resources")
    assert (await client.request("resources/read", {"uri": "fixture://nope"}))["error"]["code"] == -32002


async def test_hang_on_initialize_never_answers(start: Starter) -> None:
    client = await start("--hang-on-initialize", init=False)
    init_id = await client.start_request("initialize", {"protocolVersion": "2025-11-25", "capabilities": {}})
    await client.request("ping")
    await asyncio.sleep(0.3)
    assert init_id not in client.arrivals


async def test_start_delay_delays_initialize(start: Starter) -> None:
    client = await start("--start-delay", "0.5", init=False)
    began = time.monotonic()
    await client.initialize()
    assert time.monotonic() - began >= 0.5


async def test_stderr_noise_writes_lines_at_start(start: Starter) -> None:
    client = await start("--stderr-noise")
    assert (await client.stderr_line()).startswith("noise 0")


async def test_endless_line_floods_stdout_on_tools_list() -> None:
    proc = await spawn("--endless-line")
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(b'{"jsonrpc":"2.0","id":1,"method":"tools/list"}\n')
    chunk = await asyncio.wait_for(proc.stdout.readexactly(1024 * 1024), TIMEOUT)
    assert chunk == b"a" * len(chunk)
    proc.kill()
    await proc.wait()


async def test_garbage_flag_prints_a_non_json_line_before_each_response() -> None:
    proc = await spawn("--garbage")
    out, _ = await asyncio.wait_for(proc.communicate(b'{"jsonrpc":"2.0","id":1,"method":"ping"}\n'), TIMEOUT)
    assert out.decode().splitlines() == ["garbage: not json", '{"jsonrpc":"2.0","id":1,"result":{}}']


# ---- the real SDK client


async def test_mcp_sdk_client_can_list_and_call_tools() -> None:
    params = StdioServerParameters(command=sys.executable, args=[str(FIXTURE_SERVER)])
    async with Client(params, mode="legacy") as client:
        tools = await client.list_tools()
        assert BUILTIN_TOOLS <= {t.name for t in tools.tools}
        result = await client.call_tool("echo", {"text": "hi"})
        assert result.structured_content == {"text": "hi"}
        assert result.is_error is False
        assert isinstance(result.content[0], types.TextContent) and result.content[0].text == "hi"
