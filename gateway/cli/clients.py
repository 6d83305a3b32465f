"""Where each MCP client keeps its servers, and the entry that points it at the gateway.

Formats (each client's own documentation):

- ``claude-code``: ``~/.claude.json``, ``mcpServers.NAME = {type: http, url, headers}``.
- ``claude-desktop``: ``claude_desktop_config.json`` (macOS ``~/Library/Application Support/Claude``,
  Windows ``%APPDATA%\\Claude``, elsewhere ``$XDG_CONFIG_HOME/Claude`` or ``~/.config/Claude``),
  ``mcpServers.NAME = {command, args, env}``: it starts stdio servers only, so the entry runs
  ``mcp-gateway stdio`` with the token in its environment (never in its arguments).
- ``cursor``: ``~/.cursor/mcp.json``, ``mcpServers.NAME = {url, headers}``.
- ``vscode``: the user ``mcp.json`` (``Code/User/`` in the same per-OS place as Claude Desktop's),
  ``servers.NAME = {type: http, url, headers}``.
- ``gemini``: ``~/.gemini/settings.json``, ``mcpServers.NAME = {httpUrl, headers}``.
- ``codex``: ``$CODEX_HOME/config.toml`` (default ``~/.codex/config.toml``),
  ``[mcp_servers.NAME]`` with ``url`` and ``http_headers``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Client:
    name: str
    title: str
    path: Callable[[], Path]
    servers_key: str  # the top-level key holding the servers (JSON) or table (TOML)
    entry: Callable[[str, str], dict[str, Any]]  # (mcp url, token) -> the server entry
    toml: bool = False

    def owns(self, entry: Any, url: str) -> bool:
        """Whether an existing entry is this gateway's (so connecting again updates it)."""
        if not isinstance(entry, dict):
            return False
        if entry.get("url") == url or entry.get("httpUrl") == url:
            return True
        env = entry.get("env") if isinstance(entry.get("env"), dict) else {}
        args = entry.get("args") if isinstance(entry.get("args"), list) else []
        return "stdio" in args and env.get("MCP_GATEWAY_URL") == url


def app_config_dir() -> Path:
    """The per-user application config folder (Electron apps keep their files under it)."""
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support"
    if sys.platform == "win32":
        return Path(os.environ.get("APPDATA") or Path.home() / "AppData" / "Roaming")
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def stdio_command() -> list[str]:
    """How a client starts the stdio bridge: this interpreter, so no PATH is needed."""
    return [sys.executable, "-m", "gateway", "stdio"]


def desktop_entry(url: str, token: str) -> dict[str, Any]:
    command, *args = stdio_command()
    return {"command": command, "args": args, "env": {"MCP_GATEWAY_URL": url, "MCP_GATEWAY_TOKEN": token}}


CLIENTS: dict[str, Client] = {
    client.name: client
    for client in (
        Client(
            "claude-code",
            "Claude Code",
            lambda: Path.home() / ".claude.json",
            "mcpServers",
            lambda url, token: {"type": "http", "url": url, "headers": bearer(token)},
        ),
        Client(
            "claude-desktop",
            "Claude Desktop",
            lambda: app_config_dir() / "Claude" / "claude_desktop_config.json",
            "mcpServers",
            desktop_entry,
        ),
        Client(
            "cursor",
            "Cursor",
            lambda: Path.home() / ".cursor" / "mcp.json",
            "mcpServers",
            lambda url, token: {"url": url, "headers": bearer(token)},
        ),
        Client(
            "vscode",
            "VS Code",
            lambda: app_config_dir() / "Code" / "User" / "mcp.json",
            "servers",
            lambda url, token: {"type": "http", "url": url, "headers": bearer(token)},
        ),
        Client(
            "gemini",
            "Gemini CLI",
            lambda: Path.home() / ".gemini" / "settings.json",
            "mcpServers",
            lambda url, token: {"httpUrl": url, "headers": bearer(token)},
        ),
        Client(
            "codex",
            "Codex",
            lambda: Path(os.environ.get("CODEX_HOME") or Path.home() / ".codex") / "config.toml",
            "mcp_servers",
            lambda url, token: {"url": url, "http_headers": bearer(token)},
            toml=True,
        ),
    )
}
