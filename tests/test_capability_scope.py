"""A token's ``tools`` claim narrows prompts, resources, templates and completions too, not only tools.

A server's non-tool capabilities are visible to a token only when at least one of that server's tools
matches the token's ``tools`` globs (and its ``servers`` claim allows the server). What a token may not
reach answers exactly like a name that does not exist.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from mcp.shared.exceptions import MCPError
from mcp.types import PromptReference, ResourceTemplateReference

from tests.support import RunningGateway, fixture_entry, sandbox_token

CATALOG = {
    "alpha": fixture_entry("--name", "alpha", "--prompts", "--resources"),
    "beta": fixture_entry("--name", "beta", "--prompts", "--resources"),
}
MODES = ["legacy", "2026-07-28"]


@pytest.fixture
def gateway(gateway_factory: Callable[..., RunningGateway]) -> RunningGateway:
    return gateway_factory(["--servers", "alpha,beta", "--runtime", "host"], catalog=CATALOG)


@pytest.mark.parametrize("mode", MODES)
async def test_prompts_list_shows_only_servers_with_an_allowed_tool(gateway: RunningGateway, mode: str) -> None:
    token = sandbox_token(gateway, "default", tools=["beta__*"])
    async with gateway.client(token, mode=mode) as client:
        names = {p.name for p in (await client.list_prompts()).prompts}
    assert names == {"beta__greet", "beta__plain"}


@pytest.mark.parametrize("mode", MODES)
async def test_prompt_of_a_server_without_allowed_tools_is_unknown(gateway: RunningGateway, mode: str) -> None:
    token = sandbox_token(gateway, "default", tools=["beta__echo"])
    async with gateway.client(token, mode=mode) as client:
        allowed = await client.get_prompt("beta__greet", {"name": "Ann"})
        assert "Hello, Ann!" in str(allowed.messages[0].content)
        with pytest.raises(MCPError) as forbidden:
            await client.get_prompt("alpha__greet", {"name": "Ann"})
        with pytest.raises(MCPError) as missing:
            await client.get_prompt("alpha__nonexistent", {})
    assert forbidden.value.error.message == "Unknown prompt: alpha__greet"
    assert forbidden.value.error.code == missing.value.error.code


@pytest.mark.parametrize("mode", MODES)
async def test_resources_and_templates_list_only_allowed_servers(gateway: RunningGateway, mode: str) -> None:
    narrow = sandbox_token(gateway, "default", tools=["beta__*"])
    async with gateway.client(mode=mode) as client:
        all_resources = (await client.list_resources()).resources
        all_templates = (await client.list_resource_templates()).resource_templates
    async with gateway.client(narrow, mode=mode) as client:
        resources = (await client.list_resources()).resources
        templates = (await client.list_resource_templates()).resource_templates
    assert len(all_resources) == 4 and len(all_templates) == 2
    assert len(resources) == 2 and len(templates) == 1


@pytest.mark.parametrize("mode", MODES)
async def test_resource_read_goes_to_the_allowed_server(gateway: RunningGateway, mode: str) -> None:
    # Both servers serve this uri (its text is the server's name); only beta's is the token's.
    token = sandbox_token(gateway, "default", tools=["beta__*"])
    async with gateway.client(token, mode=mode) as client:
        result = await client.read_resource("fixture://static/env-name")
    assert [c.text for c in result.contents] == ["beta"]


@pytest.mark.parametrize("mode", MODES)
async def test_token_matching_no_tool_reaches_no_resource(gateway: RunningGateway, mode: str) -> None:
    token = sandbox_token(gateway, "default", tools=["gamma__*"])
    async with gateway.client(token, mode=mode) as client:
        assert (await client.list_resources()).resources == []
        assert (await client.list_resource_templates()).resource_templates == []
        assert (await client.list_prompts()).prompts == []
        with pytest.raises(MCPError) as forbidden:
            await client.read_resource("fixture://static/hello")
        with pytest.raises(MCPError) as missing:
            await client.read_resource("fixture://nowhere/x")
    assert forbidden.value.error.message == "Resource not found: fixture://static/hello"
    assert forbidden.value.error.code == missing.value.error.code


@pytest.mark.parametrize("mode", MODES)
async def test_completion_of_a_forbidden_prompt_is_unknown(gateway: RunningGateway, mode: str) -> None:
    token = sandbox_token(gateway, "default", tools=["beta__*"])
    async with gateway.client(token, mode=mode) as client:
        allowed = await client.complete(PromptReference(name="beta__greet"), {"name": "nm", "value": "A"})
        assert allowed.completion.values == []
        with pytest.raises(MCPError) as forbidden:
            await client.complete(PromptReference(name="alpha__greet"), {"name": "nm", "value": "A"})
    assert forbidden.value.error.message == "Unknown prompt: alpha__greet"


async def test_completion_of_a_template_without_allowed_server_is_not_found(gateway: RunningGateway) -> None:
    token = sandbox_token(gateway, "default", tools=["gamma__*"])
    ref = ResourceTemplateReference(uri="fixture://items/{id}")
    async with gateway.client(token) as client:
        with pytest.raises(MCPError) as forbidden:
            await client.complete(ref, {"name": "id", "value": "1"})
    assert "Resource not found" in forbidden.value.error.message


async def test_servers_claim_alone_still_limits_capabilities(gateway: RunningGateway) -> None:
    token = sandbox_token(gateway, "default", servers=["alpha"])
    async with gateway.client(token) as client:
        names = {p.name for p in (await client.list_prompts()).prompts}
        result = await client.read_resource("fixture://static/env-name")
    assert names == {"alpha__greet", "alpha__plain"}
    assert [c.text for c in result.contents] == ["alpha"]
