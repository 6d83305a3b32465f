"""E2B-style server configuration: ``{"githubOfficial": {"githubPersonalAccessToken": "..."}}``.

Turns what a user writes (``--config``, ``--servers``, the admin API's ``mcp`` body) into
validated per-server settings: the secrets (by dotted secret name) and the config values.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.catalog.entries import Catalog, CatalogEntry, CatalogError, to_camel


@dataclass(frozen=True, slots=True)
class ServerSettings:
    """One enabled server of a sandbox: its catalog name, secret values and config values."""

    name: str
    secrets: Mapping[str, str] = field(default_factory=dict)  # dotted secret name -> value
    config: Mapping[str, Any] = field(default_factory=dict)  # config property -> value

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "secrets": dict(self.secrets), "config": dict(self.config)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ServerSettings:
        return cls(name=data["name"], secrets=dict(data.get("secrets", {})), config=dict(data.get("config", {})))

    def fingerprint(self, key: bytes) -> str:
        """A keyed hash (HMAC-SHA256) of the config and secret values: equal settings give equal
        fingerprints under the same ``key``.

        Only the fingerprint is ever stored (tool record file names, tool ledger keys), never a
        value. It is keyed (``DataDir.fingerprint_key``) so that whoever can read those names
        cannot confirm a guessed short secret by hashing it.
        """
        material = json.dumps({"secrets": dict(self.secrets), "config": dict(self.config)}, sort_keys=True, default=str)
        return hmac.new(key, material.encode(), hashlib.sha256).hexdigest()[:32]


def entry_key(entry: CatalogEntry) -> str:
    """What makes two runs of an entry the same server: its command, install, image, remote and env."""
    what = {
        "command": list(entry.command),
        "install": dict(entry.install),
        "image": entry.image,
        "remote": entry.remote.url if entry.remote else None,
        "env": [[e.name, e.value] for e in entry.env],
    }
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:32]


def settings_key(entry: CatalogEntry, settings: ServerSettings, key: bytes) -> str:
    """The effective settings of one server in one sandbox: catalog entry + that sandbox's values
    (hashed with ``key``, see :meth:`ServerSettings.fingerprint`)."""
    return f"{entry_key(entry)}.{settings.fingerprint(key)}"


def secret_key_aliases(entry: CatalogEntry, secret_name: str) -> list[str]:
    """Every key a user may write for a secret; the first is the canonical E2B-style key."""
    camel = to_camel(secret_name)
    head, _, tail = secret_name.partition(".")
    aliases: list[str] = []
    if tail and to_camel(head) == entry.camel_name:
        aliases.append(to_camel(tail))  # notion.internal_integration_token -> internalIntegrationToken
    aliases += [camel, secret_name]
    if tail:
        aliases += [tail, to_camel(tail)]
    return list(dict.fromkeys(aliases))


def _key_table(entry: CatalogEntry) -> tuple[dict[str, tuple[str, str]], list[str]]:
    """key -> ("secret"|"config", canonical name), and the canonical keys to show in errors."""
    table: dict[str, tuple[str, str]] = {}
    shown: list[str] = []
    for secret in entry.secrets:
        aliases = secret_key_aliases(entry, secret.name)
        shown.append(aliases[0])
        for alias in aliases:
            table.setdefault(alias, ("secret", secret.name))
    for prop in entry.config_properties:
        shown.append(to_camel(prop))
        for alias in (prop, to_camel(prop)):
            table.setdefault(alias, ("config", prop))
    return table, shown


def _check_config_value(entry: CatalogEntry, prop: str, value: Any) -> Any:
    expected = entry.config_properties.get(prop, {}).get("type")
    checks: dict[str, tuple[type, ...]] = {
        "string": (str,),
        "integer": (int,),
        "number": (int, float),
        "boolean": (bool,),
        "array": (list,),
        "object": (dict,),
    }
    ok = checks.get(str(expected))
    if ok and (not isinstance(value, ok) or (expected in ("integer", "number") and isinstance(value, bool))):
        raise CatalogError(f"server {entry.name!r}: config {prop!r} must be a {expected}")
    if not ok and not isinstance(value, str | int | float | bool):
        raise CatalogError(f"server {entry.name!r}: config {prop!r} must be a string, number or boolean")
    return value


def settings_for(entry: CatalogEntry, raw: Any) -> ServerSettings:
    """Validate one server's E2B-style settings object."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise CatalogError(f"server {entry.camel_name!r}: its settings must be a JSON object")
    table, shown = _key_table(entry)
    secrets: dict[str, str] = {}
    config: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in table:
            valid = ", ".join(shown) if shown else "none (this server takes no settings)"
            raise CatalogError(f"server {entry.camel_name!r}: unknown key {key!r}; valid keys: {valid}")
        kind, name = table[key]
        if kind == "secret":
            if not isinstance(value, str) or not value:
                raise CatalogError(f"server {entry.camel_name!r}: secret {key!r} must be a non-empty string")
            secrets[name] = value
        else:
            config[name] = _check_config_value(entry, name, value)
    for secret in entry.secrets:
        if secret.required and secret.name not in secrets:
            key = secret_key_aliases(entry, secret.name)[0]
            raise CatalogError(
                f"server {entry.camel_name!r} needs the secret {key!r} ({secret.name}); "
                f'pass it as {{{json.dumps(entry.camel_name)}: {{{json.dumps(key)}: "..."}}}}'
            )
    for prop in entry.required_config:
        if prop not in config:
            raise CatalogError(f"server {entry.camel_name!r} needs the config value {to_camel(prop)!r}")
    return ServerSettings(name=entry.name, secrets=secrets, config=config)


def parse_mcp_config(catalog: Catalog, config: Any, servers: list[str] | None = None) -> dict[str, ServerSettings]:
    """The servers a sandbox enables: from an E2B-style mapping plus plain names (``--servers``)."""
    if config is None:
        config = {}
    if not isinstance(config, dict):
        raise CatalogError('the MCP config must be a JSON object like {"time": {}, "githubOfficial": {...}}')
    result: dict[str, ServerSettings] = {}
    for key, raw in config.items():
        name = catalog.resolve_name(str(key))
        if name in result:
            raise CatalogError(f"server {name!r} is configured twice")
        result[name] = settings_for(catalog.get(name), raw)
    for key in servers or []:
        name = catalog.resolve_name(key)
        if name not in result:
            result[name] = settings_for(catalog.get(name), {})
    return result


def read_config_argument(value: str) -> Any:
    """``--config`` takes JSON, ``@FILE`` or ``-`` (standard input)."""
    if value == "-":
        text = sys.stdin.read()
        source = "standard input"
    elif value.startswith("@"):
        path = Path(value[1:]).expanduser()
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise CatalogError(f"cannot read config file {path}: {exc.strerror}") from None
        source = str(path)
    else:
        text, source = value, "--config"
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        # Never echo the text: it may hold secrets.
        raise CatalogError(f"{source} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
