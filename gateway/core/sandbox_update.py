"""The merge rule of a sandbox update (``PATCH /admin/sandboxes/{id}``).

The patch is an E2B-style ``mcp`` mapping, like the one a sandbox is created with, applied to
the sandbox's current servers key by key:

- a server key with an object sets that server's whole settings (secrets and config) to exactly
  that object, as on create: keys left out are not kept from before;
- a server key with ``null`` removes that server from the sandbox;
- servers the patch does not name keep their settings and keep running.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.catalog.config import ServerSettings, parse_mcp_config
from gateway.catalog.entries import Catalog, CatalogError


def merge_servers(catalog: Catalog, current: Mapping[str, ServerSettings], patch: Any) -> dict[str, ServerSettings]:
    """The sandbox's servers after ``patch``. Raises :class:`CatalogError` for a bad patch."""
    if not isinstance(patch, dict):
        raise CatalogError('the MCP config must be a JSON object like {"time": {}, "githubOfficial": null}')
    removed: set[str] = set()
    for key, value in patch.items():
        if value is not None:
            continue
        name = str(key) if str(key) in current else catalog.resolve_name(str(key))
        if name not in current:
            valid = ", ".join(sorted(current)) or "none"
            raise CatalogError(f"server {key!r} is not in the sandbox, so it cannot be removed; its servers: {valid}")
        if name in removed:
            raise CatalogError(f"server {name!r} is configured twice")
        removed.add(name)
    setting = parse_mcp_config(catalog, {k: v for k, v in patch.items() if v is not None})
    twice = removed & set(setting)
    if twice:
        raise CatalogError(f"server {sorted(twice)[0]!r} is configured twice")
    merged = {name: settings for name, settings in current.items() if name not in removed}
    merged.update(setting)
    return merged


def changed_servers(before: Mapping[str, ServerSettings], after: Mapping[str, ServerSettings]) -> list[str]:
    """Names of the servers added, removed or with other settings (those to restart)."""
    return sorted(name for name in set(before) | set(after) if before.get(name) != after.get(name))
