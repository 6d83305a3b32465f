"""A sandbox's own secret values never leave the gateway: results, errors, prompts, log lines."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import pytest
from mcp.shared.exceptions import MCPError
from mcp_types import CallToolResult

from tests.sandbox_helpers import CATALOG, all_logs, create, dump, text_of, wait_until
from tests.support import RunningGateway, start_gateway

SECRET = "redact-me-SECRET-71c0de"
MARK = "[REDACTED:canary.token]"


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    gateway = start_gateway(workdir=tmp_path_factory.mktemp("redact"), catalog=CATALOG)
    yield gateway
    gateway.stop()


@pytest.fixture(scope="module")
def sandbox(gateway: RunningGateway) -> dict[str, str]:
    return create(gateway, {"canary": {"token": SECRET}})


async def call(gateway: RunningGateway, token: str, tool: str, args: dict[str, object]) -> CallToolResult:
    async with gateway.client(token) as client:
        return await client.call_tool(tool, args)


async def test_text_results_are_redacted(gateway: RunningGateway, sandbox: dict[str, str]) -> None:
    result = await call(gateway, sandbox["mcp_token"], "canary__secret_echo", {"name": "CANARY_TOKEN"})
    assert text_of(result) == MARK


async def test_structured_content_is_redacted(gateway: RunningGateway, sandbox: dict[str, str]) -> None:
    result = await call(gateway, sandbox["mcp_token"], "canary__env", {})
    assert result.structured_content["env"]["CANARY_TOKEN"] == MARK
    assert SECRET not in dump(result)


async def test_nested_json_in_text_and_arguments_echoed_back_are_redacted(
    gateway: RunningGateway, sandbox: dict[str, str]
) -> None:
    payload = json.dumps({"deep": [{"key": f"Bearer {SECRET}"}]})
    result = await call(gateway, sandbox["mcp_token"], "canary__echo", {"text": payload})
    assert SECRET not in dump(result)
    assert json.loads(text_of(result)) == {"deep": [{"key": f"Bearer {MARK}"}]}
    assert result.structured_content == {"text": text_of(result)}


async def test_tool_error_results_are_redacted(gateway: RunningGateway, sandbox: dict[str, str]) -> None:
    result = await call(gateway, sandbox["mcp_token"], "canary__fail", {"message": f"bad token {SECRET}"})
    assert result.is_error
    assert text_of(result) == f"bad token {MARK}"


async def test_json_rpc_error_messages_are_redacted(gateway: RunningGateway, sandbox: dict[str, str]) -> None:
    async with gateway.client(sandbox["mcp_token"]) as client:
        with pytest.raises(MCPError) as caught:
            await client.call_tool("canary__rpc_error", {"code": -32000, "message": f"no: {SECRET}"})
    assert SECRET not in str(caught.value.error.model_dump())
    assert MARK in caught.value.error.message


async def test_prompts_are_redacted(gateway: RunningGateway, sandbox: dict[str, str]) -> None:
    async with gateway.client(sandbox["mcp_token"]) as client:
        prompt = await client.get_prompt("canary__greet", {"name": SECRET})
    text = prompt.messages[0].content.text
    assert text == f"Hello, {MARK}!"


async def test_server_stderr_in_its_log_file_is_redacted(gateway: RunningGateway) -> None:
    noisy = create(gateway, {"noisy": {"token": SECRET}})
    result = await call(gateway, noisy["mcp_token"], "noisy__echo", {"text": "hi"})
    assert text_of(result) == "hi"
    log = gateway.data_dir / "logs" / noisy["id"] / "noisy.log"
    assert wait_until(lambda: log.exists() and "starting with token" in log.read_text(), timeout=10)
    assert "starting with token [REDACTED:noisy.token]" in log.read_text()
    assert SECRET not in log.read_text()


async def test_a_failing_server_stderr_in_gateway_logs_is_redacted(gateway: RunningGateway) -> None:
    broken = create(gateway, {"broken": {"token": SECRET}})
    async with gateway.client(broken["mcp_token"]) as client:
        tools = await client.list_tools()
        assert tools.tools == [] or all(not t.name.startswith("broken__") for t in tools.tools)
    assert wait_until(lambda: "[REDACTED:broken.token]" in gateway.output(), timeout=10)
    assert SECRET not in all_logs(gateway)


async def test_no_redact_returns_values_as_they_are(gateway_factory: Callable[..., RunningGateway]) -> None:
    raw = gateway_factory(["--no-redact"], catalog=CATALOG)
    sandbox = create(raw, {"canary": {"token": SECRET}})
    result = await call(raw, sandbox["mcp_token"], "canary__secret_echo", {"name": "CANARY_TOKEN"})
    assert text_of(result) == SECRET


def test_secrets_never_reach_the_gateway_output(gateway: RunningGateway) -> None:
    """Runs last in this module: everything above went through the same gateway."""
    assert SECRET not in all_logs(gateway)
