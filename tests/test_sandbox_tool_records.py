"""Tool records and the tool ledger are kept per sandbox and per server settings.

The same catalog server run with different config values can offer different tools (here: how
many generated tools, and the echo tool's description). Each sandbox sees its own, and one
sandbox's definitions never count as a change of another's.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gateway.catalog.config import ServerSettings
from gateway.features.pinning import ToolLedger
from gateway.store.datadir import DataDir
from tests.sandbox_helpers import create
from tests.support import RunningGateway, fixture_entry

CATALOG: dict[str, Any] = {
    "var": fixture_entry(
        "--name",
        "var",
        "--tools",
        "{{var.count}}",
        "--echo-description",
        "{{var.flavor}}",
        config=[{"name": "var", "properties": {"count": {"type": "string"}, "flavor": {"type": "string"}}}],
    ),
}


@pytest.fixture
def gateway(gateway_factory: Callable[..., RunningGateway]) -> RunningGateway:
    return gateway_factory(["--runtime", "host"], catalog=CATALOG)


async def tools_of(gateway: RunningGateway, token: str) -> dict[str, str]:
    async with gateway.client(token) as client:
        return {t.name: t.description or "" for t in (await client.list_tools()).tools}


async def test_each_sandbox_lists_the_tools_of_its_own_config(gateway: RunningGateway) -> None:
    two = create(gateway, {"var": {"count": "2", "flavor": "two"}})
    three = create(gateway, {"var": {"count": "3", "flavor": "three"}})
    first = await tools_of(gateway, two["mcp_token"])
    second = await tools_of(gateway, three["mcp_token"])
    assert {n for n in first if n.startswith("var__tool_")} == {"var__tool_0000", "var__tool_0001"}
    assert {n for n in second if n.startswith("var__tool_")} == {"var__tool_0000", "var__tool_0001", "var__tool_0002"}


async def test_each_configuration_has_its_own_record(gateway: RunningGateway) -> None:
    two = create(gateway, {"var": {"count": "2", "flavor": "secret-flavor-value"}})
    three = create(gateway, {"var": {"count": "3", "flavor": "other"}})
    await tools_of(gateway, two["mcp_token"])
    await tools_of(gateway, three["mcp_token"])
    records = [json.loads(p.read_text()) for p in (gateway.data_dir / "toolcache" / "var").glob("*.json")]
    generated = sorted(sum(t["name"].startswith("tool_") for t in r["tools"]) for r in records)
    assert generated == [2, 3]
    assert records[0]["key"] != records[1]["key"]
    assert all("secret-flavor-value" not in r["key"] for r in records)


async def test_sandboxes_with_the_same_settings_share_a_record(gateway: RunningGateway) -> None:
    first = create(gateway, {"var": {"count": "1", "flavor": "same"}})
    second = create(gateway, {"var": {"count": "1", "flavor": "same"}})
    assert await tools_of(gateway, first["mcp_token"]) == await tools_of(gateway, second["mcp_token"])
    assert len(list((gateway.data_dir / "toolcache" / "var").glob("*.json"))) == 1


async def test_definitions_differing_by_config_are_not_a_change(gateway: RunningGateway) -> None:
    plain = create(gateway, {"var": {"count": "0", "flavor": "Echo, the plain way"}})
    fancy = create(gateway, {"var": {"count": "0", "flavor": "Echo, the fancy way"}})
    assert (await tools_of(gateway, plain["mcp_token"]))["var__echo"] == "Echo, the plain way"
    assert (await tools_of(gateway, fancy["mcp_token"]))["var__echo"] == "Echo, the fancy way"
    with gateway.admin() as admin:
        assert admin.get("/admin/tools/changes").json()["changes"] == []


async def test_a_change_in_one_sandbox_withholds_only_its_own_tool(gateway: RunningGateway) -> None:
    changing = create(gateway, {"var": {"count": "0", "flavor": "Echo"}})
    steady = create(gateway, {"var": {"count": "0", "flavor": "Echo"}})
    await tools_of(gateway, changing["mcp_token"])
    await tools_of(gateway, steady["mcp_token"])
    async with gateway.client(changing["mcp_token"]) as client:
        await client.call_tool("var__change_description", {})
    assert "var__echo" not in await tools_of(gateway, changing["mcp_token"])
    assert (await tools_of(gateway, steady["mcp_token"]))["var__echo"] == "Echo"
    with gateway.admin() as admin:
        changes = admin.get("/admin/tools/changes").json()["changes"]
        assert [(c["sandbox"], c["server"], c["tool"]) for c in changes] == [(changing["id"], "var", "echo")]
        elsewhere = admin.post("/admin/tools/accept", json={"server": "var", "sandbox": steady["id"]}).json()
        accepted = admin.post("/admin/tools/accept", json={"server": "var", "sandbox": changing["id"]}).json()
    assert elsewhere == {"accepted": []} and accepted == {"accepted": ["echo"]}
    assert (await tools_of(gateway, changing["mcp_token"]))["var__echo"] == "CHANGED"


def test_ledger_of_an_older_version_reads_as_never_seen(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "tool-hashes.json"
    path.write_text(json.dumps({"srv": {"t": "0" * 64}}))  # keyed by server alone
    tool = {"name": "t", "description": "one", "inputSchema": {"type": "object"}}
    assert ToolLedger(path, accept_changes=False).admit("s", "srv", "tool", tool, "fp")
    assert "srv" not in json.loads(path.read_text())


def test_ledger_keeps_each_settings_fingerprint_apart(tmp_path) -> None:  # type: ignore[no-untyped-def]
    ledger = ToolLedger(tmp_path / "tool-hashes.json", accept_changes=False)
    tool = {"name": "t", "description": "one", "inputSchema": {"type": "object"}}
    assert ledger.admit("s", "srv", "tool", tool, "fp1")
    assert ledger.admit("s", "srv", "tool", {**tool, "description": "two"}, "fp2")
    assert not ledger.admit("s", "srv", "tool", {**tool, "description": "two"}, "fp1")


async def test_record_names_hold_a_settings_fingerprint_keyed_per_data_dir(
    gateway: RunningGateway, tmp_path: Path
) -> None:
    sandbox = create(gateway, {"var": {"count": "2", "flavor": "abc"}})
    await tools_of(gateway, sandbox["mcp_token"])
    [name] = [p.stem for p in (gateway.data_dir / "toolcache" / "var").glob("*.json")]
    fingerprint = name.rsplit(".", 1)[1]
    settings = ServerSettings(name="var", config={"count": "2", "flavor": "abc"})
    material = json.dumps({"secrets": {}, "config": dict(settings.config)}, sort_keys=True)
    assert fingerprint != hashlib.sha256(material.encode()).hexdigest()[:32]  # not the unkeyed hash
    assert fingerprint == settings.fingerprint(DataDir.locate(gateway.data_dir).fingerprint_key())
    other = DataDir.open(tmp_path / "other-data").fingerprint_key()
    assert settings.fingerprint(other) != fingerprint
