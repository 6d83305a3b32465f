"""Ordinary local servers under bwrap: each lives in its own directory outside the repository and
needs more than its one script file (a sibling module, its node_modules, its venv)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mcp
import pytest

from gateway.upstream.runtimes import probe_bwrap
from tests.support import FIXTURE_SERVER, REPO, RunningGateway

BWRAP = asyncio.run(probe_bwrap())
pytestmark = pytest.mark.skipif(not BWRAP.ok, reason=BWRAP.detail)

SDK_SERVER = REPO / "tests" / "fixtures" / "sdk_server.py"
# The site-packages that holds `mcp`: a venv made in a test reaches it through a .pth file.
SITE_PACKAGES = Path(mcp.__file__).resolve().parent.parent

NODE_SERVER = r"""
// A minimal stdio MCP server whose one tool answers with a module from its own node_modules.
const readline = require("readline");
const { greet } = require("greeting");
const send = (message) => process.stdout.write(JSON.stringify(message) + "\n");
readline.createInterface({ input: process.stdin }).on("line", (line) => {
  const request = JSON.parse(line);
  if (request.id === undefined) return;
  const answer = (result) => send({ jsonrpc: "2.0", id: request.id, result });
  if (request.method === "initialize") {
    answer({
      protocolVersion: request.params.protocolVersion,
      capabilities: { tools: {} },
      serverInfo: { name: "node-project", version: "1.0.0" },
    });
  } else if (request.method === "tools/list") {
    answer({ tools: [{ name: "greet", inputSchema: { type: "object", properties: {} } }] });
  } else if (request.method === "tools/call") {
    answer({ content: [{ type: "text", text: greet() }] });
  } else if (request.method === "ping") {
    answer({});
  } else {
    send({ jsonrpc: "2.0", id: request.id, error: { code: -32601, message: "no such method" } });
  }
});
"""


def serve(factory: Callable[..., RunningGateway], entry: dict[str, Any], **kwargs: Any) -> RunningGateway:
    return factory(["--runtime", "bwrap", "--servers", "proj"], catalog={"proj": entry}, **kwargs)


async def call(gateway: RunningGateway, tool: str, args: dict[str, Any] | None = None) -> tuple[str, bool]:
    async with gateway.client() as client:
        result = await client.call_tool(f"proj__{tool}", args or {})
    text = result.content[0].text if result.content else ""  # type: ignore[union-attr]
    return text, bool(result.is_error)


async def test_python_server_imports_a_module_next_to_its_script(
    gateway_factory: Callable[..., RunningGateway], tmp_path: Path
) -> None:
    project = tmp_path / "srv"
    project.mkdir()
    shutil.copy(SDK_SERVER, project / "server.py")
    (project / "sdk_sibling.py").write_text('NAME = "sibling next to the script"\n')
    gateway = serve(gateway_factory, {"command": [sys.executable, str(project / "server.py")]})
    assert await call(gateway, "whoami") == ("sibling next to the script", False)


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
async def test_node_server_finds_its_own_node_modules(
    gateway_factory: Callable[..., RunningGateway], tmp_path: Path
) -> None:
    project = tmp_path / "node-project"
    module = project / "node_modules" / "greeting"
    module.mkdir(parents=True)
    (module / "package.json").write_text(json.dumps({"name": "greeting", "version": "1.0.0", "main": "index.js"}))
    (module / "index.js").write_text('exports.greet = () => "hello from node_modules";\n')
    (project / "package.json").write_text(json.dumps({"name": "node-project", "dependencies": {"greeting": "1"}}))
    (project / "dist").mkdir()
    (project / "dist" / "index.js").write_text(NODE_SERVER)
    gateway = serve(gateway_factory, {"command": ["node", str(project / "dist" / "index.js")]})
    assert await call(gateway, "greet") == ("hello from node_modules", False)


async def test_console_script_of_a_venv_runs_with_its_venv(
    gateway_factory: Callable[..., RunningGateway], tmp_path: Path
) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    site = next(venv.glob("lib/python*/site-packages"))
    (site / "shared_deps.pth").write_text(f"{SITE_PACKAGES}\n")  # `mcp` and its dependencies
    shutil.copy(SDK_SERVER, site / "sdk_fixture_server.py")
    (site / "sdk_sibling.py").write_text('NAME = "installed in the venv"\n')
    script = venv / "bin" / "sdk-fixture"
    script.write_text(f"#!{venv / 'bin' / 'python'}\nimport sys\nfrom sdk_fixture_server import server\nserver.run()\n")
    script.chmod(0o755)
    gateway = serve(gateway_factory, {"command": [str(script)]})
    assert await call(gateway, "whoami") == ("installed in the venv", False)


@pytest.mark.skipif(shutil.which("uv") is None, reason="uv is not installed")
async def test_uv_run_directory_project_runs(gateway_factory: Callable[..., RunningGateway], tmp_path: Path) -> None:
    project = tmp_path / "uv-project"
    project.mkdir()
    pyproject = '[project]\nname = "uv-project"\nversion = "0"\nrequires-python = ">=3.11"\n'
    (project / "pyproject.toml").write_text(pyproject)
    shutil.copy(SDK_SERVER, project / "server.py")
    (project / "sdk_sibling.py").write_text('NAME = "uv project"\n')
    uv = shutil.which("uv")
    assert uv is not None
    subprocess.run([uv, "venv", "--python", sys.executable, str(project / ".venv")], check=True, timeout=120)
    site = next((project / ".venv").glob("lib/python*/site-packages"))
    (site / "shared_deps.pth").write_text(f"{SITE_PACKAGES}\n")
    command = [uv, "run", "--frozen", "--no-sync", "--directory", str(project), "python", "server.py"]
    gateway = serve(gateway_factory, {"command": command, "env": [{"name": "UV_NO_CACHE", "value": "1"}]})
    assert await call(gateway, "whoami") == ("uv project", False)


async def test_project_directory_is_read_only_and_hides_a_data_dir_inside_it(
    gateway_factory: Callable[..., RunningGateway], tmp_path: Path
) -> None:
    project = tmp_path / "proj"
    (project / "srv").mkdir(parents=True)
    (project / "pyproject.toml").write_text('[project]\nname = "proj"\n')
    shutil.copy(FIXTURE_SERVER, project / "srv" / "server.py")
    data_dir = project / "data"
    entry = {"command": [sys.executable, str(project / "srv" / "server.py")]}
    gateway = serve(gateway_factory, entry, data_dir=data_dir)
    assert await call(gateway, "read_file", {"path": str(project / "pyproject.toml")}) == (
        '[project]\nname = "proj"\n',
        False,
    )
    _, is_error = await call(gateway, "write_file", {"path": str(project / "srv" / "new.py"), "content": "x"})
    assert is_error
    assert not (project / "srv" / "new.py").exists()
    for name in ("signing.key", "secrets.key", "admin.key", "token"):
        assert (data_dir / name).exists()
        text, is_error = await call(gateway, "read_file", {"path": str(data_dir / name)})
        assert is_error, f"{name} was readable: {text}"
    home = data_dir / "home" / "default" / "proj"
    assert await call(gateway, "write_file", {"path": str(home / "note.txt"), "content": "kept"}) == ("ok", False)
    assert (home / "note.txt").read_text() == "kept"
    assert os.stat(home).st_uid == os.getuid()
