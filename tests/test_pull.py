"""``pull``: real installs from PyPI/npm into a data dir, then offline launches of what it installed.

The real pulls of ``time`` (PyPI) and ``everything`` (npm) happen once per test session into a
temporary data dir; the offline launches run the resolved command with a minimal environment
(no proxy variables) and, where user namespaces allow, inside a network namespace of its own.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters

from gateway.catalog.entries import Catalog, CatalogEntry, CatalogError, parse_entry
from gateway.catalog.pull import (
    MARKER,
    PullError,
    _first_error_line,
    catalog_rows,
    is_pulled,
    pull,
    pulled_tools,
    resolve_command,
    server_dir,
    smoke_log,
    smoke_start,
)
from gateway.upstream.launch import fill_config
from tests.fixtures import FIXTURE_SERVER
from tests.servers_cache import pulled_data_dir, run_sync

TIMEOUT = 60.0  # generous: every wait on a server is bounded by this
PULLED = ["time", "everything"]


@dataclasses.dataclass
class Pulled:
    data_dir: Path
    before: dict[str, bool]
    reports: list[str]


@pytest.fixture(scope="session")
def catalog() -> Catalog:
    return Catalog.load()


@pytest.fixture(scope="session")
def pulled(catalog: Catalog, tmp_path_factory: pytest.TempPathFactory) -> Pulled:
    """``time`` and ``everything`` pulled for real, once per session, into a fresh data dir."""
    data_dir = tmp_path_factory.mktemp("pull-data")
    before = {name: is_pulled(catalog.get(name), data_dir) for name in PULLED}
    reports: list[str] = []

    async def pull_all() -> None:
        await asyncio.gather(*(pull(catalog.get(name), data_dir, reports.append) for name in PULLED))

    run_sync(pull_all)
    return Pulled(data_dir, before, reports)


def _can_unshare_network() -> bool:
    unshare = shutil.which("unshare")
    if unshare is None:
        return False
    return subprocess.run([unshare, "-rn", "true"], capture_output=True, check=False).returncode == 0


def offline_params(entry: CatalogEntry, data_dir: Path, home: Path) -> StdioServerParameters:
    """The resolved command with a minimal environment, in its own network namespace if possible."""
    argv = [fill_config(arg, entry, {}) for arg in resolve_command(entry, data_dir)]
    if _can_unshare_network():
        argv = ["unshare", "-rn", *argv]
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8"}
    return StdioServerParameters(command=argv[0], args=argv[1:], env=env, cwd=home)


def _entry(name: str, **raw: Any) -> CatalogEntry:
    return parse_entry(name, raw, "test")


# ---- real pulls


def test_servers_are_not_pulled_before_pull(pulled: Pulled) -> None:
    assert pulled.before == {"time": False, "everything": False}


@pytest.mark.parametrize("name", PULLED)
def test_servers_are_pulled_after_pull(pulled: Pulled, catalog: Catalog, name: str) -> None:
    assert is_pulled(catalog.get(name), pulled.data_dir)


def test_pull_reports_one_line_per_step(pulled: Pulled) -> None:
    assert "pulling time: installing mcp-server-time==2026.10.19 (pypi)" in pulled.reports
    assert "pulling everything: installing @modelcontextprotocol/server-everything@2026.8.31 (npm)" in pulled.reports
    assert any(line.startswith("pulling time: ready: 2 tools") for line in pulled.reports)
    assert any(line.startswith("pulling everything: ready: ") for line in pulled.reports)
    assert all("\n" not in line for line in pulled.reports)


def test_pull_installs_pypi_servers_in_a_venv(pulled: Pulled, catalog: Catalog) -> None:
    argv = resolve_command(catalog.get("time"), pulled.data_dir)
    assert argv == [str(server_dir(pulled.data_dir, "time") / "venv" / "bin" / "mcp-server-time")]


def test_pull_installs_npm_servers_in_a_prefix(pulled: Pulled, catalog: Catalog) -> None:
    argv = resolve_command(catalog.get("everything"), pulled.data_dir)
    bins = server_dir(pulled.data_dir, "everything") / "node_modules" / ".bin"
    assert argv == [str(bins / "mcp-server-everything"), "stdio"]


def test_pull_records_the_tool_list(pulled: Pulled, catalog: Catalog) -> None:
    tools = pulled_tools(catalog.get("time"), pulled.data_dir)
    assert tools is not None
    assert {t["name"] for t in tools} == {"get_current_time", "convert_time"}
    record = json.loads((server_dir(pulled.data_dir, "time") / "tools.json").read_text())
    assert record["install"] == {"pypi": "mcp-server-time==2026.10.19"}


async def test_pull_of_a_pulled_server_is_a_no_op(pulled: Pulled, catalog: Catalog) -> None:
    reports: list[str] = []
    await pull(catalog.get("time"), pulled.data_dir, reports.append)
    assert reports == ["time: already pulled (mcp-server-time==2026.10.19, 2 tools)"]


def test_changed_pin_reads_as_not_pulled(pulled: Pulled, catalog: Catalog) -> None:
    entry = dataclasses.replace(catalog.get("time"), install={"pypi": "mcp-server-time==2025.9.25"})
    assert not is_pulled(entry, pulled.data_dir)
    with pytest.raises(CatalogError, match=r"^server 'time' is not pulled; run: mcp-gateway pull time$"):
        resolve_command(entry, pulled.data_dir)


async def test_pulled_time_answers_offline(pulled: Pulled, catalog: Catalog, tmp_path: Path) -> None:
    params = offline_params(catalog.get("time"), pulled.data_dir, tmp_path)
    async with asyncio.timeout(TIMEOUT), Client(params, mode="legacy") as client:
        tools = await client.list_tools()
        assert "get_current_time" in {t.name for t in tools.tools}
        result = await client.call_tool("get_current_time", {"timezone": "UTC"})
        assert result.is_error is False
        assert "UTC" in json.dumps(result.model_dump(mode="json"))


async def test_pulled_everything_answers_offline(pulled: Pulled, catalog: Catalog, tmp_path: Path) -> None:
    params = offline_params(catalog.get("everything"), pulled.data_dir, tmp_path)
    async with asyncio.timeout(TIMEOUT), Client(params, mode="legacy") as client:
        tools = await client.list_tools()
        assert "echo" in {t.name for t in tools.tools}
        result = await client.call_tool("echo", {"message": "offline"})
        assert result.is_error is False
        assert "offline" in json.dumps(result.model_dump(mode="json"))


def test_catalog_rows_show_what_is_pulled(pulled: Pulled, catalog: Catalog) -> None:
    rows = {row["name"]: row for row in catalog_rows(catalog, pulled.data_dir)}
    assert set(rows) == set(catalog.entries)
    assert rows["time"] == {
        "name": "time",
        "title": catalog.get("time").title,
        "pulled": True,
        "install": "pypi:mcp-server-time==2026.10.19",
        "runtime": "host",
        "image": "",
        "secrets": [],
    }
    assert rows["everything"]["pulled"] is True
    assert rows["git"]["pulled"] is False
    assert rows["github-official"]["secrets"] == ["github.personal_access_token"]
    assert rows["github-official"]["image"] == "ghcr.io/github/github-mcp-server"


def test_shared_cache_returns_a_data_dir_with_the_servers_pulled(catalog: Catalog) -> None:
    data_dir = pulled_data_dir(["time"])
    assert is_pulled(catalog.get("time"), data_dir)
    assert data_dir == pulled_data_dir(["time"])


# ---- failures


async def test_unknown_pypi_version_is_a_clear_pull_error(tmp_path: Path) -> None:
    entry = _entry("time", install={"pypi": "mcp-server-time==0.0.0"}, command=["mcp-server-time"])
    with pytest.raises(PullError) as info:
        await pull(entry, tmp_path, lambda line: None)
    message = str(info.value)
    assert message.startswith("pulling time failed: pypi install mcp-server-time==0.0.0: ")
    assert "mcp-server-time==0.0.0" in message and "\n" not in message
    assert not is_pulled(entry, tmp_path)
    assert not server_dir(tmp_path, "time").exists()


async def test_unknown_npm_version_is_a_clear_pull_error(tmp_path: Path) -> None:
    spec = "@modelcontextprotocol/server-everything@0.0.1"
    entry = _entry("everything", install={"npm": spec}, command=["mcp-server-everything"])
    with pytest.raises(PullError) as info:
        await pull(entry, tmp_path, lambda line: None)
    message = str(info.value)
    assert message.startswith(f"pulling everything failed: npm install {spec}: ")
    assert "notarget" in message and "\n" not in message


async def test_unknown_npm_package_is_a_clear_pull_error(tmp_path: Path) -> None:
    spec = "@modelcontextprotocol/no-such-server-mcp-sandbox-gateway@1.0.0"
    entry = _entry("nope", install={"npm": spec}, command=["nope"])
    with pytest.raises(PullError) as info:
        await pull(entry, tmp_path, lambda line: None)
    message = str(info.value)
    assert message.startswith(f"pulling nope failed: npm install {spec}: ")
    assert "404" in message and "\n" not in message


def _fake_install(data_dir: Path, name: str, script: str) -> CatalogEntry:
    """An entry whose "installed" executable is a shell script (no registry involved)."""
    entry = _entry(name, install={"pypi": f"{name}==1.0"}, command=[name])
    bins = server_dir(data_dir, name) / "venv" / "bin"
    bins.mkdir(parents=True)
    (bins / name).write_text("#!/bin/sh\n" + script + "\n")
    (bins / name).chmod(0o755)
    return entry


async def test_smoke_start_of_a_server_that_exits_is_a_clear_pull_error(tmp_path: Path) -> None:
    entry = _fake_install(tmp_path, "broken", "echo 'cannot start: boom' >&2; exit 3")
    with pytest.raises(PullError) as info:
        await smoke_start(entry, tmp_path, lambda line: None)
    message = str(info.value)
    assert message.startswith("pulling broken failed: smoke start: the server exited (code 3) during initialize")
    assert "\n" not in message
    assert "cannot start: boom" in smoke_log(tmp_path, "broken").read_text()


async def test_smoke_start_records_tools_and_runs_warm_calls(tmp_path: Path) -> None:
    entry = _fake_install(tmp_path, "fixture", f"exec {sys.executable} {FIXTURE_SERVER}")
    entry = dataclasses.replace(entry, warm=('echo {"text": "warm"}',))
    reports: list[str] = []
    tools = await smoke_start(entry, tmp_path, reports.append)
    assert "echo" in {t["name"] for t in tools}
    assert pulled_tools(entry, tmp_path) == tools
    assert reports == ["pulling fixture: warming with a call to echo"]


# ---- resolving commands (no network)


def test_entry_without_install_is_pulled(tmp_path: Path) -> None:
    assert is_pulled(_entry("plain", command=["some-server"]), tmp_path)


def test_not_pulled_entry_names_the_pull_command(tmp_path: Path) -> None:
    entry = _entry("time", install={"pypi": "mcp-server-time==2026.10.19"}, command=["mcp-server-time"])
    with pytest.raises(CatalogError, match=r"^server 'time' is not pulled; run: mcp-gateway pull time$"):
        resolve_command(entry, tmp_path)


def test_marker_with_the_same_pin_reads_as_pulled(tmp_path: Path) -> None:
    entry = _entry("time", install={"pypi": "mcp-server-time==2026.10.19"}, command=["mcp-server-time"])
    target = server_dir(tmp_path, "time")
    (target / "venv" / "bin").mkdir(parents=True)
    (target / "venv" / "bin" / "mcp-server-time").touch()
    (target / MARKER).write_text(json.dumps({"install": {"pypi": "mcp-server-time==2026.10.19"}}))
    assert is_pulled(entry, tmp_path)
    assert resolve_command(entry, tmp_path) == [str(target / "venv" / "bin" / "mcp-server-time")]


def test_marker_without_the_executable_reads_as_not_pulled(tmp_path: Path) -> None:
    entry = _entry("time", install={"pypi": "mcp-server-time==2026.10.19"}, command=["mcp-server-time"])
    target = server_dir(tmp_path, "time")
    target.mkdir(parents=True)
    (target / MARKER).write_text(json.dumps({"install": {"pypi": "mcp-server-time==2026.10.19"}}))
    assert not is_pulled(entry, tmp_path)


def test_python_resolves_to_the_gateway_interpreter(tmp_path: Path) -> None:
    for head in ("python", "python3"):
        assert resolve_command(_entry("py", command=[head, "-V"]), tmp_path) == [sys.executable, "-V"]


def test_relative_program_path_is_a_clear_catalog_error(tmp_path: Path) -> None:
    entry = _entry("fixture", command=["tests/fixtures/fixture_server.py", "--x"])
    with pytest.raises(CatalogError, match="relative path; name the program by absolute path"):
        resolve_command(entry, tmp_path)


def test_plain_command_is_left_to_path(tmp_path: Path) -> None:
    assert resolve_command(_entry("plain", command=["node", "server.js"]), tmp_path) == ["node", "server.js"]


def test_installer_error_line_prefers_the_telling_line() -> None:
    output = "\n".join(
        [
            "WARNING: Location 'file:///x' is ignored",
            "ERROR: Could not find a version that satisfies the requirement x==0 (from versions: 1)",
            "ERROR: No matching distribution found for x==0",
        ]
    )
    assert _first_error_line(output) == "ERROR: No matching distribution found for x==0"
