"""The tool record: every catalog server's last known tools, prompts and resources, in the data dir.

Why: answering a sandbox's first ``tools/list`` by starting all its servers takes seconds (npm,
uvx, containers) and clients time out; most sessions never call most servers anyway. So the
gateway remembers what each server offered the last time it ran, and answers from that record
without starting anything. Servers then start on their first call (or in the background with
``--prestart``).

- File: ``<data-dir>/toolcache/<server>/<key>.json``
  ``{"version": 1, "key": ..., "updated_at": ..., "tools": [...], "prompts": [...],
  "resources": [...], "resource_templates": [...]}``. ``key`` is a hash of the catalog entry's
  ``command``/``install``/``image``/``remote``/``env`` and a hash of the sandbox's config and secret
  values for the server, keyed with a key derived from the data dir's ``secrets.key`` so a short
  secret cannot be guessed from the name (:func:`gateway.catalog.config.settings_key`). A server's
  tools may depend on its configuration, so there is one record per effective configuration:
  sandboxes with the same settings share it (a new sandbox is answered at once), a sandbox with
  other config or secrets never sees another's tools. A changed entry or changed values read as
  "never seen", and so do records keyed the older, unkeyed way and records of older versions
  (``toolcache/<server>.json``, one per server).
  Without a record, the tool list that ``pull`` wrote (``servers/<name>/tools.json``) is used.
- Written whenever a server (re)starts or sends a list_changed, with the sandbox's secret values
  replaced first (no secret value is ever kept in a record; the key holds only a hash).
- When a started server's live lists differ from what the sandbox was shown (the record), its
  sessions get ``notifications/<kind>/list_changed``.
- A server never seen is started to learn its tools, for at most :data:`LIST_DEADLINE` seconds;
  when it finishes later, sessions that were answered without it get list_changed.

It hooks into the gateway from :func:`install` (``Gateway.router_hooks`` seeds each new router's
servers and observes their starts; ``Gateway.tool_lister`` answers tools/list from the record),
so the core modules need no knowledge of it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.catalog.config import entry_key
from gateway.catalog.entries import CatalogEntry, CatalogError
from gateway.features.redaction import NO_REDACTION, Redactor

if TYPE_CHECKING:
    from gateway.core.auth import Principal
    from gateway.core.gateway import Gateway
    from gateway.core.router import SandboxRouter
    from gateway.upstream.server import UpstreamServer

logger = logging.getLogger("gateway.toolcache")

RECORD_VERSION = 1
LIST_DEADLINE = 10.0  # seconds a tools/list waits for servers it has never seen
KINDS = ("tools", "prompts", "resources", "resource_templates")
NOTIFY_KIND = {"tools": "tools", "prompts": "prompts", "resources": "resources", "resource_templates": "resources"}
CAPABILITY = {"tools": "tools", "prompts": "prompts", "resources": "resources", "resource_templates": "resources"}

Lists = dict[str, list[dict[str, Any]]]


@dataclass(slots=True)
class Record:
    key: str
    lists: Lists  # only the kinds that are known (a pull-time record holds tools only)


@dataclass
class _RouterState:
    """What the toolcache tracks for one live sandbox router."""

    redactor: Redactor
    entries: dict[str, CatalogEntry] = field(default_factory=dict)
    keys: dict[str, str] = field(default_factory=dict)  # server -> record key (entry + this sandbox's settings)
    presented: dict[str, Lists] = field(default_factory=dict)  # server -> lists the sandbox was shown
    seen_starts: dict[str, int] = field(default_factory=dict)
    partial: set[str] = field(default_factory=set)  # never-seen servers a tools/list was answered without

    def known(self, server: str) -> bool:
        return "tools" in self.presented.get(server, {})


class ToolCache:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.directory = gateway.data.path / "toolcache"
        self._records: dict[tuple[str, str], tuple[float, Record]] = {}  # (name, key) -> (mtime, record)
        self._routers: weakref.WeakKeyDictionary[SandboxRouter, _RouterState] = weakref.WeakKeyDictionary()

    # -- the record files ----------------------------------------------------------------

    def path(self, name: str, key: str) -> Path:
        return self.directory / name / f"{key}.json"

    def load(self, entry: CatalogEntry, key: str) -> Record | None:
        """The record of the entry run with settings ``key``, else the pull-time tool list."""
        path = self.path(entry.name, key)
        try:
            mtime = path.stat().st_mtime
        except OSError:
            mtime = None
        record: Record | None = None
        if mtime is not None:
            cached = self._records.get((entry.name, key))
            if cached is not None and cached[0] == mtime:
                record = cached[1]
            else:
                record = self._read(path)
                if record is not None:
                    self._records[(entry.name, key)] = (mtime, record)
        if record is not None and record.key == key:
            return record
        return self._pulled(entry, key)

    @staticmethod
    def _read(path: Path) -> Record | None:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(data, dict) or data.get("version") != RECORD_VERSION or not isinstance(data.get("key"), str):
            return None
        lists = {kind: data[kind] for kind in KINDS if isinstance(data.get(kind), list)}
        return Record(data["key"], lists) if "tools" in lists else None

    def _pulled(self, entry: CatalogEntry, key: str) -> Record | None:
        try:
            from gateway.catalog.pull import install_kind, is_pulled, pulled_tools
        except ImportError:  # pragma: no cover - pull.py is optional for this module
            return None
        if install_kind(entry) is None or not is_pulled(entry, self.gateway.data.path):
            return None
        tools = pulled_tools(entry, self.gateway.data.path)
        return Record(key, {"tools": tools}) if tools is not None else None

    def save(self, entry: CatalogEntry, key: str, lists: Lists) -> None:
        """Write the record atomically (readers never see half a file), only when it changed."""
        path = self.path(entry.name, key)
        cached = self._records.get((entry.name, key))
        if cached is not None and cached[1].key == key and cached[1].lists == lists:
            try:
                if path.stat().st_mtime == cached[0]:
                    return
            except OSError:
                pass
        data = {"version": RECORD_VERSION, "key": key, "server": entry.name, "updated_at": time.time(), **lists}
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(data, handle, separators=(",", ":"))
            os.replace(tmp, path)
            self._records[(entry.name, key)] = (path.stat().st_mtime, Record(key, lists))
        except OSError as exc:
            logger.warning("could not write the tool record of %s: %s", entry.name, exc.strerror or exc)

    # -- routers -------------------------------------------------------------------------

    def attach(self, router: SandboxRouter) -> _RouterState:
        """Seed a new router's servers with their records and observe their starts and changes."""
        state = self._routers.get(router)
        if state is not None:
            return state
        sandbox = self.gateway.sandbox(router.sandbox)
        state = _RouterState(Redactor(sandbox.secret_values()) if sandbox is not None else NO_REDACTION)
        self._routers[router] = state
        for name, server in router.servers.items():
            try:
                entry = self.gateway.catalog.get(name)
            except CatalogError:
                continue
            state.entries[name] = entry
            state.keys[name] = router.fingerprints.get(name) or entry_key(entry)
            record = self.load(entry, state.keys[name])
            if record is not None and server.state != "running":
                for kind, items in record.lists.items():
                    setattr(server, kind, list(items))  # the router copies each item it exposes
                state.presented[name] = record.lists
            self._observe_starts(router, server, state)
        self._observe_changes(router, state)
        router.invalidate()
        return state

    def _observe_starts(self, router: SandboxRouter, server: UpstreamServer, state: _RouterState) -> None:
        original: Callable[[], Awaitable[Any]] = server.ensure_running

        async def ensure_running() -> Any:
            connection = await original()
            if state.seen_starts.get(server.name) != server.starts:
                state.seen_starts[server.name] = server.starts
                self._learned(router, server, state, notify=True)
            return connection

        server.ensure_running = ensure_running  # type: ignore[method-assign]

    def _observe_changes(self, router: SandboxRouter, state: _RouterState) -> None:
        original = router.server_lists_changed

        async def server_lists_changed(server: UpstreamServer, kind: str) -> None:
            self._learned(router, server, state, notify=False)  # the router notifies the sessions itself
            await original(server, kind)

        router.server_lists_changed = server_lists_changed  # type: ignore[method-assign]

    def _learned(self, router: SandboxRouter, server: UpstreamServer, state: _RouterState, notify: bool) -> None:
        """A server (re)started or changed a list: record what it offers, tell sessions what differs."""
        for kind in KINDS:  # clear what the record seeded but the live server no longer declares
            if server.capabilities.get(CAPABILITY[kind]) is None:
                setattr(server, kind, [])
        live: Lists = {kind: state.redactor.value(getattr(server, kind)) for kind in KINDS}
        before = state.presented.get(server.name)
        state.presented[server.name] = live
        entry = state.entries.get(server.name)
        if entry is not None:
            self.save(entry, state.keys.get(server.name) or entry_key(entry), live)
        if before is None:
            changed = {"tools"} if server.name in state.partial and live["tools"] else set()
        else:
            changed = {NOTIFY_KIND[kind] for kind in KINDS if kind in before and before[kind] != live[kind]}
        state.partial.discard(server.name)
        if changed:
            router.invalidate()
            if notify:
                for kind in sorted(changed):
                    logger.info("sandbox %s: %s of %s differ from the record", router.sandbox, kind, server.name)
                    self.gateway.spawn(self.gateway.notify_list_changed(router.sandbox, kind))

    # -- tools/list ----------------------------------------------------------------------

    def warm(self, principal: Principal, router: SandboxRouter) -> None:
        """A session opened: start now the servers its first tools/list will have to start anyway (never seen)."""
        state = self.attach(router)
        unseen = [
            s
            for s in router.visible_servers(principal)
            if not state.known(s.name) and s.state not in ("running", "starting")
        ]
        if unseen:
            self.gateway.spawn(router.ensure_started(unseen))

    async def list_tools(self, principal: Principal, router: SandboxRouter) -> list[dict[str, Any]]:
        """The token's tools, from the record where there is one; servers never seen start now."""
        state = self.attach(router)
        servers = router.visible_servers(principal)
        if self.gateway.settings.prestart:
            idle = [s for s in servers if s.state not in ("running", "starting")]
            if idle:
                self.gateway.spawn(router.ensure_started(idle))
        unseen = [s for s in servers if not state.known(s.name) and s.state != "running"]
        if unseen:
            task = self.gateway.spawn(router.ensure_started(unseen))
            if all(s.name in state.partial for s in unseen):
                # Each was already waited for once: keep starting it, but answer at once from now on.
                return await router.list_tools(principal, start=False)
            deadline = min(LIST_DEADLINE, max(s.limits.start_timeout for s in unseen) + 1.0)
            done, _ = await asyncio.wait({task}, timeout=deadline)
            if not done:
                waiting = [s.name for s in unseen if not state.known(s.name)]
                state.partial.update(waiting)
                logger.info(
                    "sandbox %s: answering tools/list without %s (still starting after %g s)",
                    router.sandbox,
                    ", ".join(waiting),
                    deadline,
                )
        return await router.list_tools(principal, start=False)


_installed: weakref.WeakKeyDictionary[Gateway, ToolCache] = weakref.WeakKeyDictionary()


def install(gateway: Gateway) -> ToolCache:
    """Hook the tool record into a gateway (idempotent): every router it builds is seeded and observed."""
    cache = _installed.get(gateway)
    if cache is not None:
        return cache
    cache = ToolCache(gateway)
    _installed[gateway] = cache
    gateway.router_hooks.append(cache.attach)
    gateway.tool_lister = cache.list_tools
    for router in list(gateway.live_routers().values()):
        cache.attach(router)
    return cache


def installed(gateway: Gateway) -> ToolCache | None:
    return _installed.get(gateway)


def warm(gateway: Gateway, principal: Principal) -> None:
    """Start a sandbox's never-seen servers when a session opens (no-op without the tool record)."""
    cache = _installed.get(gateway)
    if cache is not None:
        cache.warm(principal, gateway.router(principal.sandbox))
