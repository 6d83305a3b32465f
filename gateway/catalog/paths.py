"""Path parameters: the only way a directory or file of the host reaches an isolated server.

A catalog entry declares which of its config properties name host paths, JSON Schema style::

    config:
      - name: filesystem
        properties:
          root: {type: string, format: path, x-mode: rw}   # x-mode: ro (default) or rw

A sandbox's value for such a property is shown to the server at the same path (bwrap bind,
container bind mount), read-only unless the entry says ``x-mode: rw``. Any other config value
is passed as text and never makes anything visible. A value is refused when the sandbox is
created (admin API, ``sandbox create``, ``serve --config``) unless it is ``~`` or ``~/...`` (the
server's own home) or an absolute path that exists and is neither the gateway's data dir, nor
inside it (keys, pulled servers, every sandbox's home), nor a directory holding it, nor in
``/proc``, ``/sys`` or ``/dev``. It is
checked again, symlinks resolved, each time the server starts.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.catalog.entries import CatalogEntry, CatalogError, to_camel


@dataclass(frozen=True, slots=True)
class PathValue:
    """One path parameter's value as the server sees it (``path``) and where it really is (``source``)."""

    name: str
    path: Path
    source: Path
    writable: bool


def path_parameters(entry: CatalogEntry) -> dict[str, bool]:
    """config property -> writable, for the properties declared ``format: path``."""
    return {
        name: schema.get("x-mode", "ro") == "rw"
        for name, schema in entry.config_properties.items()
        if schema.get("format") == "path"
    }


# Kernel filesystems: the host's would undo the sandbox's own (its processes, devices, cgroups).
KERNEL_DIRS = (Path("/proc"), Path("/sys"), Path("/dev"))


def _clash(path: Path, data_dir: Path) -> str | None:
    """Why ``path`` may not be shown to a server, or None."""
    if any(path == root or root in path.parents for root in KERNEL_DIRS):
        return "is in a kernel filesystem (/proc, /sys, /dev)"
    for private in {data_dir, data_dir.resolve()}:
        if path == private:
            return "is the gateway's data dir"
        if private in path.parents:
            return "is inside the gateway's data dir"
        if path in private.parents:
            return "holds the gateway's data dir"
    return None


def path_values(entry: CatalogEntry, config: Mapping[str, Any], data_dir: Path) -> list[PathValue]:
    """The host paths a server of ``entry`` is shown, checked. Raises :class:`CatalogError`."""
    found: list[PathValue] = []
    for name, writable in path_parameters(entry).items():
        value = config.get(name)
        if value is None or value == "":
            continue  # unset: its default, which may only name the server's own home
        where = f"server {entry.camel_name!r}: config {to_camel(name)!r}"
        if not isinstance(value, str):
            raise CatalogError(f"{where} must be a path (a string)")
        if value == "~" or value.startswith("~/"):
            continue  # inside the server's own home, which it always has
        if not value.startswith("/"):
            raise CatalogError(f"{where} must be an absolute path, or ~ for the server's own home")
        if "\0" in value or len(value) > 4096:
            raise CatalogError(f"{where} is not a valid path")
        path = Path(os.path.normpath(value))
        if not path.exists():
            raise CatalogError(f"{where}: {path} does not exist")
        source = path.resolve()
        why = _clash(path, data_dir) or _clash(source, data_dir)
        if why is not None:
            raise CatalogError(f"{where}: {path} {why}, which no server may see")
        found.append(PathValue(name, path, source, writable))
    return found


def check_paths(catalog_entries: Mapping[str, CatalogEntry], servers: Mapping[str, Any], data_dir: Path) -> None:
    """Check every path parameter of a sandbox's servers (``name -> ServerSettings``)."""
    for name, settings in servers.items():
        entry = catalog_entries.get(name)
        if entry is not None:
            path_values(entry, settings.config, data_dir)
