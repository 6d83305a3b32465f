"""Host directories reach a bwrap server only through declared path parameters (``format: path``),
read-only unless ``x-mode: rw``; a value that is, holds or lies inside the data dir is refused."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gateway.upstream.runtimes import probe_bwrap
from tests.support import REPO, RunningGateway, fixture_entry, free_port

BWRAP = asyncio.run(probe_bwrap())
pytestmark = pytest.mark.skipif(not BWRAP.ok, reason=BWRAP.detail)


def entry(mode: str | None = None) -> dict[str, Any]:
    """The fixture server with a path parameter ``dir`` and a plain string ``label`` (its --name)."""
    schema: dict[str, Any] = {"type": "string", "format": "path"}
    if mode:
        schema["x-mode"] = mode
    properties = {"dir": schema, "label": {"type": "string", "default": "fix"}}
    return fixture_entry("--name", "{{fix.label}}", config=[{"name": "fix", "properties": properties}])


def start(factory: Callable[..., RunningGateway], mode: str | None = None) -> RunningGateway:
    return factory(["--runtime", "bwrap"], catalog={"fix": entry(mode)})


def create(gateway: RunningGateway, settings: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    with gateway.admin() as admin:
        response = admin.post("/admin/sandboxes", json={"mcp": {"fix": settings}})
    return response.status_code, response.json()


async def call(gateway: RunningGateway, token: str, tool: str, args: dict[str, Any]) -> tuple[str, bool]:
    async with gateway.client(token=token) as client:
        result = await client.call_tool(f"fix__{tool}", args)
    return result.content[0].text, bool(result.is_error)  # type: ignore[union-attr]


@pytest.fixture
def shared(tmp_path: Path) -> Path:
    directory = tmp_path / "shared"
    directory.mkdir()
    (directory / "input.txt").write_text("from the host")
    return directory


async def test_a_path_parameter_is_readable_but_not_writable(
    gateway_factory: Callable[..., RunningGateway], shared: Path
) -> None:
    gateway = start(gateway_factory)
    status, body = create(gateway, {"dir": str(shared)})
    assert status == 201, body
    token = body["mcp_token"]
    assert await call(gateway, token, "read_file", {"path": str(shared / "input.txt")}) == ("from the host", False)
    _, is_error = await call(gateway, token, "write_file", {"path": str(shared / "out.txt"), "content": "x"})
    assert is_error
    assert not (shared / "out.txt").exists()


async def test_a_read_write_path_parameter_is_writable(
    gateway_factory: Callable[..., RunningGateway], shared: Path
) -> None:
    gateway = start(gateway_factory, mode="rw")
    status, body = create(gateway, {"dir": str(shared)})
    assert status == 201, body
    args = {"path": str(shared / "out.txt"), "content": "written by the server"}
    assert await call(gateway, body["mcp_token"], "write_file", args) == ("ok", False)
    assert (shared / "out.txt").read_text() == "written by the server"


async def test_a_plain_config_value_naming_the_data_dir_shows_nothing(
    gateway_factory: Callable[..., RunningGateway],
) -> None:
    gateway = start(gateway_factory)
    status, body = create(gateway, {"label": str(gateway.data_dir)})  # lands on the server's command line
    assert status == 201, body
    token = body["mcp_token"]
    text, is_error = await call(gateway, token, "read_file", {"path": str(gateway.data_dir / "signing.key")})
    assert is_error, f"the signing key was readable: {text}"
    _, is_error = await call(gateway, token, "write_file", {"path": str(gateway.data_dir / "x"), "content": "x"})
    assert not (gateway.data_dir / "x").exists()


@pytest.mark.parametrize(
    ("where", "why"),
    [
        ("data", "is the gateway's data dir"),
        ("parent", "holds the gateway's data dir"),
        ("other home", "is inside the gateway's data dir"),
        ("link", "is the gateway's data dir"),
    ],
)
def test_a_path_parameter_touching_the_data_dir_is_refused(
    gateway_factory: Callable[..., RunningGateway], tmp_path: Path, where: str, why: str
) -> None:
    gateway = start(gateway_factory)
    other_home = gateway.data_dir / "home" / "other" / "fix"
    other_home.mkdir(parents=True)
    link = tmp_path / "innocent"
    link.symlink_to(gateway.data_dir)
    value = {"data": gateway.data_dir, "parent": gateway.data_dir.parent, "other home": other_home, "link": link}
    status, body = create(gateway, {"dir": str(value[where])})
    assert status == 400, body
    assert body["error"] == "invalid_config"
    assert "config 'dir'" in body["message"] and why in body["message"], body["message"]


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("relative/dir", "must be an absolute path"),
        ("/no/such", "does not exist"),
        ("/proc", "is in a kernel filesystem"),
        ("/sys/fs", "is in a kernel filesystem"),
    ],
)
def test_a_path_parameter_must_be_an_existing_absolute_path_outside_kernel_filesystems(
    gateway_factory: Callable[..., RunningGateway], value: str, why: str
) -> None:
    gateway = start(gateway_factory)
    status, body = create(gateway, {"dir": value})
    assert status == 400, body
    assert "config 'dir'" in body["message"] and why in body["message"], body["message"]


def one_line_error(result: subprocess.CompletedProcess[str], *words: str) -> None:
    assert result.returncode != 0, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in lines[0], lines[0]


def test_sandbox_create_refuses_the_data_dir_in_one_line(
    gateway_factory: Callable[..., RunningGateway], tmp_path: Path
) -> None:
    gateway = start(gateway_factory)
    config = tmp_path / "config.json"
    config.write_text(f'{{"fix": {{"dir": "{gateway.data_dir}"}}}}')
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCP_GATEWAY_")}
    argv = [sys.executable, "-m", "gateway", "sandbox", "create", "--config", f"@{config}"]
    argv += ["--url", gateway.base_url, "--admin-key", gateway.admin_key]
    result = subprocess.run(argv, capture_output=True, text=True, cwd=REPO, env=env, timeout=60)
    one_line_error(result, "config 'dir'", "is the gateway's data dir")


def test_serve_refuses_the_data_dir_in_its_config_in_one_line(tmp_path: Path) -> None:
    from tests.support import write_catalog

    data = tmp_path / "data"
    catalog = write_catalog(tmp_path / "catalog.yaml", {"fix": entry()})
    argv = [sys.executable, "-m", "gateway", "serve", "--port", str(free_port()), "--data-dir", str(data)]
    argv += ["--catalog", str(catalog), "--config", f'{{"fix": {{"dir": "{tmp_path}"}}}}']
    result = subprocess.run(argv, capture_output=True, text=True, cwd=REPO, timeout=60)
    one_line_error(result, "config 'dir'", "holds the gateway's data dir")


@pytest.mark.parametrize(
    ("schema", "why"),
    [
        ({"type": "integer", "format": "path"}, "its type must be string"),
        ({"type": "string", "format": "path", "x-mode": "write"}, "x-mode must be ro or rw"),
        ({"type": "string", "x-mode": "rw"}, "has x-mode but is not format: path"),
    ],
)
def test_a_bad_path_parameter_declaration_is_a_catalog_error(tmp_path: Path, schema: dict[str, Any], why: str) -> None:
    from gateway.catalog.entries import Catalog, CatalogError
    from tests.support import write_catalog

    bad = {"command": ["x"], "config": [{"name": "bad", "properties": {"dir": schema}}]}
    path = write_catalog(tmp_path / "catalog.yaml", {"bad": bad})
    with pytest.raises(CatalogError, match=why):
        Catalog.load([path])


def test_the_filesystem_root_is_a_read_write_path_parameter() -> None:
    from gateway.catalog.entries import Catalog
    from gateway.catalog.paths import path_parameters

    assert path_parameters(Catalog.load().get("filesystem")) == {"root": True}


async def test_a_path_swapped_for_a_link_to_the_data_dir_fails_the_next_start(
    gateway_factory: Callable[..., RunningGateway], tmp_path: Path
) -> None:
    import shutil

    from mcp.shared.exceptions import MCPError

    gateway = start(gateway_factory)
    shared = tmp_path / "swapped"
    shared.mkdir()
    status, body = create(gateway, {"dir": str(shared)})
    assert status == 201, body
    shutil.rmtree(shared)
    shared.symlink_to(gateway.data_dir)  # after the check at creation, before the server starts
    async with gateway.client(token=body["mcp_token"]) as client:
        with pytest.raises(MCPError):
            await client.call_tool("fix__read_file", {"path": str(shared / "signing.key")})
    with gateway.admin() as admin:
        box = admin.get(f"/admin/status?sandbox={body['id']}").json()
    servers = [s for b in box["sandboxes"] if b["id"] == body["id"] for s in b["servers"]]
    assert "config 'dir'" in str(servers[0]["last_error"]) and "is the gateway's data dir" in str(
        servers[0]["last_error"]
    )
