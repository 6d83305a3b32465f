"""The catalog: which MCP servers exist, how to run them, and what they need.

Built-in entries live in the repository's ``catalog/*.yaml``; ``--catalog FILE`` overlays are
laid over them, a later entry replacing an earlier one of the same name. The format follows
Docker's MCP catalog (``registry: {name: {...}}``), see docs/reference.md.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

# The built-in catalog: gateway/catalog/builtin/ in an installed wheel; in a source checkout a
# symlink to the repository's catalog/ (where the files are edited), or catalog/ itself where a
# checkout has no symlinks.
_PACKAGED_CATALOG = Path(__file__).resolve().parent / "builtin"
BUILTIN_CATALOG_DIR = (
    _PACKAGED_CATALOG if _PACKAGED_CATALOG.is_dir() else Path(__file__).resolve().parent.parent.parent / "catalog"
).resolve()
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]*$")


class CatalogError(ValueError):
    """A catalog file or a server configuration is invalid; the message is one line for the user."""


@dataclass(frozen=True, slots=True)
class SecretSpec:
    name: str  # dotted, e.g. github.personal_access_token
    env: str  # environment variable the server reads it from
    required: bool = True
    description: str = ""


@dataclass(frozen=True, slots=True)
class EnvSpec:
    name: str
    value: str  # may hold {{server.key}} config references and $NAME secret references


@dataclass(frozen=True, slots=True)
class RemoteSpec:
    url: str
    transport_type: str = "http"  # http (streamable) or sse
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CatalogEntry:
    name: str
    title: str = ""
    description: str = ""
    install: Mapping[str, str] = field(default_factory=dict)  # {"pypi": "pkg==v"} or {"npm": "pkg@v"}
    command: tuple[str, ...] = ()
    image: str | None = None
    env: tuple[EnvSpec, ...] = ()
    secrets: tuple[SecretSpec, ...] = ()
    config_properties: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    required_config: tuple[str, ...] = ()
    disable_network: bool = False
    prefix: str | None = None
    remote: RemoteSpec | None = None
    limits: Mapping[str, Any] = field(default_factory=dict)  # memory, cpus, pids, start_timeout, call_timeout
    warm: tuple[str, ...] = ()  # tools to call once at pull time (e.g. fetch installs jsdom on first call)
    source: str = ""  # the file the entry came from

    @property
    def tool_prefix(self) -> str:
        return self.name if self.prefix is None else self.prefix

    @property
    def camel_name(self) -> str:
        return to_camel(self.name)


def to_camel(name: str) -> str:
    """``github-official`` -> ``githubOfficial``; ``personal_access_token`` -> ``personalAccessToken``."""
    parts = [p for p in re.split(r"[-_.]", name) if p]
    if not parts:
        return name
    return parts[0] + "".join(p[:1].upper() + p[1:] for p in parts[1:])


def _tuple_of_str(value: Any, what: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, list) or not all(isinstance(v, str | int | float) for v in value):
        raise CatalogError(f"{what} must be a list of strings")
    return tuple(str(v) for v in value)


def _check_path_parameter(where: str, name: str, schema: Mapping[str, Any]) -> None:
    """``format: path`` (see gateway/catalog/paths.py) is a string with a mode of ro or rw."""
    if schema.get("format") != "path":
        if "x-mode" in schema:
            raise CatalogError(f"{where}: config {name!r} has x-mode but is not format: path")
        return
    if schema.get("type", "string") != "string":
        raise CatalogError(f"{where}: config {name!r} is format: path, so its type must be string")
    if schema.get("x-mode", "ro") not in ("ro", "rw"):
        raise CatalogError(f"{where}: config {name!r}: x-mode must be ro or rw")


def parse_entry(name: str, raw: Any, source: str = "") -> CatalogEntry:
    """Validate one ``registry`` entry and build a :class:`CatalogEntry`."""
    where = f"catalog entry {name!r}" + (f" in {source}" if source else "")
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise CatalogError(f"{where}: the name must match [a-z0-9-]+")
    if not isinstance(raw, dict):
        raise CatalogError(f"{where}: must be a mapping")
    env: list[EnvSpec] = []
    for item in raw.get("env") or []:
        if not isinstance(item, dict) or "name" not in item:
            raise CatalogError(f"{where}: env items need a name and a value")
        env.append(EnvSpec(name=str(item["name"]), value=str(item.get("value", ""))))
    secrets: list[SecretSpec] = []
    for item in raw.get("secrets") or []:
        if not isinstance(item, dict) or "name" not in item or "env" not in item:
            raise CatalogError(f"{where}: secrets items need a name and an env")
        secrets.append(
            SecretSpec(
                name=str(item["name"]),
                env=str(item["env"]),
                required=bool(item.get("required", True)),
                description=str(item.get("description", "")),
            )
        )
    properties: dict[str, Mapping[str, Any]] = {}
    required_config: list[str] = []
    for block in raw.get("config") or []:
        if not isinstance(block, dict):
            raise CatalogError(f"{where}: config items must be JSON Schema objects")
        for key, schema in (block.get("properties") or {}).items():
            properties[str(key)] = schema if isinstance(schema, dict) else {}
            _check_path_parameter(where, str(key), properties[str(key)])
        required_config.extend(str(k) for k in block.get("required") or [])
    remote = None
    if raw.get("remote") is not None:
        r = raw["remote"]
        if not isinstance(r, dict) or not isinstance(r.get("url"), str):
            raise CatalogError(f"{where}: remote needs a url")
        transport = str(r.get("transport_type", "http"))
        if transport not in ("http", "streamable-http", "sse"):
            raise CatalogError(f"{where}: remote.transport_type must be http or sse")
        remote = RemoteSpec(
            url=r["url"],
            transport_type="sse" if transport == "sse" else "http",
            headers={str(k): str(v) for k, v in (r.get("headers") or {}).items()},
        )
    command = _tuple_of_str(raw.get("command"), f"{where}: command")
    image = raw.get("image")
    if not command and not image and remote is None:
        raise CatalogError(f"{where}: needs a command, an image or a remote")
    install = raw.get("install") or {}
    if not isinstance(install, dict) or not set(install) <= {"pypi", "npm"}:
        raise CatalogError(f"{where}: install must be {{pypi: ...}} or {{npm: ...}}")
    prefix = raw.get("prefix")
    if prefix is not None and (not isinstance(prefix, str) or (prefix and not re.match(r"^[a-zA-Z0-9_-]+$", prefix))):
        raise CatalogError(f"{where}: prefix must match [a-zA-Z0-9_-]* ")
    limits = raw.get("limits") or {}
    if not isinstance(limits, dict):
        raise CatalogError(f"{where}: limits must be a mapping")
    return CatalogEntry(
        name=name,
        title=str(raw.get("title", "")),
        description=str(raw.get("description", "")).strip(),
        install={str(k): str(v) for k, v in install.items()},
        command=command,
        image=str(image) if image else None,
        env=tuple(env),
        secrets=tuple(secrets),
        config_properties=properties,
        required_config=tuple(required_config),
        disable_network=bool(raw.get("disableNetwork", False)),
        prefix=prefix,
        remote=remote,
        limits=dict(limits),
        warm=_tuple_of_str(raw.get("warm"), f"{where}: warm"),
        source=source,
    )


def load_file(path: Path) -> dict[str, CatalogEntry]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CatalogError(f"catalog file not found: {path}") from None
    except (OSError, yaml.YAMLError) as exc:
        raise CatalogError(f"cannot read catalog file {path}: {str(exc).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict) or not isinstance(data.get("registry", {}), dict):
        raise CatalogError(f"catalog file {path}: expected a mapping with a 'registry' key")
    return {name: parse_entry(name, raw, str(path)) for name, raw in (data.get("registry") or {}).items()}


@dataclass
class Catalog:
    entries: dict[str, CatalogEntry]

    @classmethod
    def load(cls, overlays: Iterable[Path | str] = (), builtin_dir: Path | None = BUILTIN_CATALOG_DIR) -> Catalog:
        entries: dict[str, CatalogEntry] = {}
        if builtin_dir is not None and builtin_dir.is_dir():
            for path in sorted(builtin_dir.glob("*.yaml")):
                entries.update(load_file(path))
        for overlay in overlays:
            entries.update(load_file(Path(overlay)))
        return cls(entries)

    def __contains__(self, name: str) -> bool:
        return name in self.entries

    def get(self, name: str) -> CatalogEntry:
        try:
            return self.entries[name]
        except KeyError:
            raise CatalogError(f"unknown server {name!r}; known servers: {', '.join(sorted(self.entries))}") from None

    def resolve_name(self, key: str) -> str:
        """A server key as users write it (catalog name or its camelCase) -> the catalog name."""
        if key in self.entries:
            return key
        for name, entry in self.entries.items():
            if entry.camel_name == key:
                return name
        valid = ", ".join(f"{n} ({e.camel_name})" if e.camel_name != n else n for n, e in sorted(self.entries.items()))
        raise CatalogError(f"unknown server {key!r}; valid servers: {valid}")
