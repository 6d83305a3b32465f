"""``mcp-gateway connect | disconnect CLIENT``: each client's own config file, in a temporary HOME."""

from __future__ import annotations

import json
import logging
import os
import stat
import subprocess
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gateway.cli.main import main
from tests.support import REPO

URL = "http://127.0.0.1:8899/mcp"
TOKEN = "tok.en-123"
AUTH = {"Authorization": f"Bearer {TOKEN}"}

FILES = {
    "claude-code": ".claude.json",
    "claude-desktop": ".config/Claude/claude_desktop_config.json",
    "cursor": ".cursor/mcp.json",
    "vscode": ".config/Code/User/mcp.json",
    "gemini": ".gemini/settings.json",
    "codex": ".codex/config.toml",
}
SERVERS_KEY = {"vscode": "servers", "codex": "mcp_servers"}
CLIENTS = sorted(FILES)


def expected_entry(client: str, url: str = URL, token: str = TOKEN) -> dict[str, Any]:
    auth = {"Authorization": f"Bearer {token}"}
    return {
        "claude-code": {"type": "http", "url": url, "headers": auth},
        "claude-desktop": {
            "command": sys.executable,
            "args": ["-m", "gateway", "stdio"],
            "env": {"MCP_GATEWAY_URL": url, "MCP_GATEWAY_TOKEN": token},
        },
        "cursor": {"url": url, "headers": auth},
        "vscode": {"type": "http", "url": url, "headers": auth},
        "gemini": {"httpUrl": url, "headers": auth},
        "codex": {"url": url, "http_headers": auth},
    }[client]


DROPPED = ("XDG_CONFIG_HOME", "CODEX_HOME", "APPDATA")


def subprocess_cli(home: Path, *args: str, url: str = URL, token: str = TOKEN) -> subprocess.CompletedProcess[str]:
    """The command as a user runs it (a new process)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCP_GATEWAY_") and k not in DROPPED}
    env.update(HOME=str(home), MCP_GATEWAY_URL=url, MCP_GATEWAY_TOKEN=token)
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args], capture_output=True, text=True, cwd=REPO, env=env, timeout=60
    )


Cli = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Cli:
    """Run the command line's ``main`` in this process (the same code, seconds faster per call than a process)."""

    def run(home: Path, *args: str, url: str = URL, token: str = TOKEN) -> subprocess.CompletedProcess[str]:
        for name in list(os.environ):
            if name.startswith("MCP_GATEWAY_") or name in DROPPED:
                monkeypatch.delenv(name)
        monkeypatch.setattr(logging, "shutdown", lambda: None)  # main's last step; the test process goes on
        monkeypatch.setenv("HOME", str(home))
        monkeypatch.setenv("MCP_GATEWAY_URL", url)
        monkeypatch.setenv("MCP_GATEWAY_TOKEN", token)
        capsys.readouterr()
        try:
            code = main(list(args))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 2
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(["mcp-gateway", *args], code, out, err)

    return run


def read(home: Path, client: str) -> dict[str, Any]:
    text = (home / FILES[client]).read_text()
    return tomllib.loads(text) if client == "codex" else json.loads(text)


def servers(home: Path, client: str) -> dict[str, Any]:
    return read(home, client)[SERVERS_KEY.get(client, "mcpServers")]


def seed(home: Path, client: str, entries: dict[str, Any], extra: str = "") -> None:
    """A config file the user already has: other servers, another setting."""
    path = home / FILES[client]
    path.parent.mkdir(parents=True, exist_ok=True)
    if client == "codex":
        lines = ['model = "o3"  # the user\'s own setting', ""]
        for name, entry in entries.items():
            lines.append(f"[mcp_servers.{name}]")
            lines += [f"{k} = {json.dumps(v)}" for k, v in entry.items()]
            lines.append("")
        path.write_text("\n".join(lines) + extra)
    else:
        path.write_text(json.dumps({"theme": "dark", SERVERS_KEY.get(client, "mcpServers"): entries}, indent=4))


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


@pytest.mark.parametrize("client", CLIENTS)
def test_connect_creates_the_client_s_file(cli: Cli, home: Path, client: str) -> None:
    result = cli(home, "connect", client)
    assert result.returncode == 0, result.stderr
    assert servers(home, client) == {"mcp-gateway": expected_entry(client)}
    assert stat.S_IMODE((home / FILES[client]).stat().st_mode) == 0o600
    assert TOKEN not in result.stdout + result.stderr


@pytest.mark.parametrize("client", CLIENTS)
def test_connect_keeps_the_other_entries_and_keys(cli: Cli, home: Path, client: str) -> None:
    other = {"command": "npx", "args": ["-y", "some-server"]}
    seed(home, client, {"other": other})
    assert cli(home, "connect", client).returncode == 0
    assert servers(home, client) == {"other": other, "mcp-gateway": expected_entry(client)}
    document = read(home, client)
    assert document.get("theme", document.get("model")) in ("dark", "o3")
    if client == "codex":
        assert "# the user's own setting" in (home / FILES[client]).read_text()


@pytest.mark.parametrize("client", CLIENTS)
def test_connect_again_updates_its_entry(cli: Cli, home: Path, client: str) -> None:
    assert cli(home, "connect", client, token="old-token").returncode == 0
    result = cli(home, "connect", client, token="new-token")
    assert result.returncode == 0, result.stderr
    assert "Updated" in result.stdout
    assert servers(home, client) == {"mcp-gateway": expected_entry(client, token="new-token")}


@pytest.mark.parametrize("client", CLIENTS)
def test_a_name_taken_by_another_server_gets_a_suffix(cli: Cli, home: Path, client: str) -> None:
    theirs = {"url": "https://elsewhere.example/mcp"}
    seed(home, client, {"mcp-gateway": theirs})
    assert cli(home, "connect", client).returncode == 0
    assert servers(home, client) == {"mcp-gateway": theirs, "mcp-gateway-2": expected_entry(client)}


@pytest.mark.parametrize("client", CLIENTS)
def test_disconnect_removes_only_its_entry(cli: Cli, home: Path, client: str) -> None:
    other = {"url": "https://elsewhere.example/mcp"}
    seed(home, client, {"other": other})
    assert cli(home, "connect", client, "--name", "gw").returncode == 0
    result = cli(home, "disconnect", client, "--name", "gw")
    assert result.returncode == 0, result.stderr
    assert servers(home, client) == {"other": other}


@pytest.mark.parametrize("client", CLIENTS)
def test_print_shows_the_entry_and_writes_nothing(cli: Cli, home: Path, client: str) -> None:
    result = cli(home, "connect", client, "--print")
    assert result.returncode == 0, result.stderr
    printed = tomllib.loads(result.stdout) if client == "codex" else json.loads(result.stdout)
    assert printed[SERVERS_KEY.get(client, "mcpServers")] == {"mcp-gateway": expected_entry(client)}
    assert list(home.iterdir()) == []


def test_disconnect_of_a_missing_entry_is_one_line(cli: Cli, home: Path) -> None:
    result = cli(home, "disconnect", "cursor")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"mcp-gateway: no entry 'mcp-gateway' in Cursor's {home / FILES['cursor']}"
    ]


def test_a_file_that_is_not_json_is_left_alone(cli: Cli, home: Path) -> None:
    path = home / FILES["vscode"]
    path.parent.mkdir(parents=True)
    path.write_text('{\n  // my servers\n  "servers": {}\n}\n')
    result = cli(home, "connect", "vscode")
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1 and "not valid JSON" in result.stderr
    assert path.read_text() == '{\n  // my servers\n  "servers": {}\n}\n'


def test_a_bad_name_is_one_line(cli: Cli, home: Path) -> None:
    result = cli(home, "connect", "cursor", "--name", "a b")
    assert result.returncode == 1 and "--name" in result.stderr
    assert list(home.iterdir()) == []


def test_connect_without_a_token_says_where_to_get_one(cli: Cli, home: Path) -> None:
    result = cli(home, "connect", "cursor", "--data-dir", str(home / "nothing"), token="")
    assert result.returncode == 1
    assert "no token" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_the_flags_win_over_the_environment(cli: Cli, home: Path) -> None:
    result = cli(home, "connect", "gemini", "--url", "http://127.0.0.1:9999", "--token", "flag-token")
    assert result.returncode == 0, result.stderr
    assert servers(home, "gemini")["mcp-gateway"] == expected_entry(
        "gemini", url="http://127.0.0.1:9999/mcp", token="flag-token"
    )


def test_a_symlinked_config_file_is_updated_in_place(cli: Cli, home: Path, tmp_path: Path) -> None:
    real = tmp_path / "dotfiles" / "claude.json"
    real.parent.mkdir()
    real.write_text('{"numStartups": 3}')
    (home / ".claude.json").symlink_to(real)
    assert cli(home, "connect", "claude-code").returncode == 0
    assert (home / ".claude.json").is_symlink()
    assert json.loads(real.read_text())["numStartups"] == 3
    assert AUTH == json.loads(real.read_text())["mcpServers"]["mcp-gateway"]["headers"]


def test_connect_as_a_separate_process(home: Path) -> None:
    result = subprocess_cli(home, "connect", "claude-code")
    assert result.returncode == 0, result.stderr
    assert servers(home, "claude-code") == {"mcp-gateway": expected_entry("claude-code")}
