"""How to start one server process: its argv, its environment, its working directory.

The environment is built from nothing: a minimal base (PATH, a private HOME, LANG), the
entry's declared ``env`` (config values and references to its own secrets filled in) and its
declared secrets. Nothing else of the gateway's environment reaches a server. Secret values
never go on a command line.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.catalog import CatalogEntry
from gateway.server_config import ServerSettings

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
CONFIG_REF = re.compile(r"\{\{\s*([a-zA-Z0-9_-]+)\.([a-zA-Z0-9_.-]+)\s*\}\}")
SECRET_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)")


@dataclass(frozen=True, slots=True)
class LaunchSpec:
    """What to exec. ``env`` is the complete environment of the process that is started."""

    argv: list[str]
    env: dict[str, str]
    cwd: str | None = None
    runtime: str = "host"
    secret_env: frozenset[str] = field(default_factory=frozenset)  # names in env whose values are secret
    cleanup: list[list[str]] = field(default_factory=list)  # commands to run after the process ends


def fill_config(template: str, entry: CatalogEntry, config: Mapping[str, Any]) -> str:
    """Replace ``{{server.key}}`` with the sandbox's config value (empty when unset)."""

    def sub(match: re.Match[str]) -> str:
        server, key = match.group(1), match.group(2)
        if server not in (entry.name, entry.camel_name):
            return ""
        value = config.get(key)
        if value is None:
            value = entry.config_properties.get(key, {}).get("default")
        if isinstance(value, bool):
            return "true" if value else "false"
        return "" if value is None else str(value)

    return CONFIG_REF.sub(sub, template)


def fill_secrets(template: str, secret_env: Mapping[str, str]) -> str:
    """Replace ``$NAME`` / ``${NAME}`` with the value of the entry's own secret of that env name (or HOME)."""

    def sub(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        return secret_env.get(name, match.group(0))

    return SECRET_REF.sub(sub, template)


def secret_environment(entry: CatalogEntry, settings: ServerSettings) -> dict[str, str]:
    """env name -> value for the secrets the sandbox set."""
    return {s.env: settings.secrets[s.name] for s in entry.secrets if s.name in settings.secrets}


def server_environment(entry: CatalogEntry, settings: ServerSettings, home: Path) -> dict[str, str]:
    """The whole environment of a server process, before any runtime wrapping."""
    env = {
        "PATH": os.environ.get("PATH") or DEFAULT_PATH,
        "HOME": str(home),
        "LANG": "C.UTF-8",
    }
    secrets = secret_environment(entry, settings)
    for item in entry.env:
        # $HOME may be referenced too (memory keeps its file there); other names are the entry's own secrets.
        value = fill_secrets(fill_config(item.value, entry, settings.config), {"HOME": str(home), **secrets})
        if value != "":
            env[item.name] = value
    env.update(secrets)
    return env


def host_launch(entry: CatalogEntry, settings: ServerSettings, command: list[str], home: Path) -> LaunchSpec:
    """A plain subprocess: the server's command with the built environment, in its private HOME."""
    (home / "tmp").mkdir(parents=True, exist_ok=True)
    argv = [fill_config(arg, entry, settings.config) for arg in command]
    env = server_environment(entry, settings, home)
    return LaunchSpec(
        argv=argv, env=env, cwd=str(home), runtime="host", secret_env=frozenset(secret_environment(entry, settings))
    )
