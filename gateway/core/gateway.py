"""The running gateway: its catalog, sandbox store, tokens and the live routers of its sandboxes.

Everything the HTTP layer needs goes through one :class:`Gateway`. A sandbox's router (and
with it its server processes) is built on first use from the store and torn down when the
sandbox is deleted, expires or the gateway stops.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from gateway.catalog.config import ServerSettings, parse_mcp_config, settings_key
from gateway.catalog.entries import Catalog, CatalogEntry, CatalogError
from gateway.catalog.paths import check_paths
from gateway.core.auth import AuthError, Principal, TokenService
from gateway.core.router import SandboxRouter
from gateway.core.sandbox_update import changed_servers, merge_servers
from gateway.features.redaction import NO_REDACTION, Redactor
from gateway.settings import Settings
from gateway.store.datadir import DataDir
from gateway.store.sandboxes import (
    DEFAULT_SANDBOX,
    Revocation,
    Sandbox,
    SandboxStore,
    check_sandbox_id,
    is_sandbox_id,
    new_sandbox_id,
)
from gateway.upstream.errors import INVALID_PARAMS, UpstreamError
from gateway.upstream.launch import LaunchSpec
from gateway.upstream.server import ServerLimits, UpstreamServer

if TYPE_CHECKING:
    from gateway.core.pipeline import Middleware

logger = logging.getLogger("gateway")


@dataclass(slots=True)
class CallRecord:
    """One tools/call as observers (metrics, audit) see it: names and sizes, never values."""

    time: float
    sandbox: str
    session: str | None
    tool: str
    args: list[str]
    server: str | None = None
    outcome: str = "ok"  # ok, tool_error, error, unknown_tool, cancelled
    error: str | None = None
    duration_ms: float = 0.0
    result_bytes: int = 0
    upstream_ms: float | None = None  # time in the upstream call itself; None when it never got there


# A client-facing stream of a sandbox (a 2025 GET stream, a 2026 subscriptions/listen): it gets
# every sandbox-wide notification as (method, params).
Listener = Callable[[str, dict[str, Any]], Awaitable[None]]


class Service(Protocol):
    """Something that runs alongside the gateway (a reaper, a metrics listener)."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class Gateway:
    def __init__(
        self, settings: Settings, catalog: Catalog, data: DataDir, store: SandboxStore, tokens: TokenService
    ) -> None:
        self.settings = settings
        self.catalog = catalog
        self.data = data
        self.store = store
        self.tokens = tokens
        self._fingerprint_key = data.fingerprint_key()  # keys settings fingerprints
        self.started_at = time.time()
        self._routers: dict[str, SandboxRouter] = {}
        self._listeners: dict[str, set[Listener]] = {}
        self._session_listeners: dict[str, Listener] = {}  # session id -> its client-facing channel
        # Sessions per sandbox, from the client-facing session store (set where the app is assembled).
        self.session_counts: Callable[[], dict[str, int]] | None = None
        self._last_used: dict[str, float] = {}
        self._expires: dict[str, float | None] = {}  # live routers' sandbox expiry
        self._generations: dict[str, str] = {}  # live routers' sandbox generation
        self._reuse: dict[str, dict[str, UpstreamServer]] = {}  # running servers an update carries over
        # (sandbox, jti) of revoked tokens, checked on every request (see revoke_token)
        self._revoked: frozenset[tuple[str, str]] = self._load_revocations()
        self._background: set[asyncio.Task[Any]] = set()
        self.default_sandbox = DEFAULT_SANDBOX
        self.admin_key = ""
        self.deletion_hooks: list[Callable[[str], None]] = []  # told the id of each deleted sandbox
        self.services: list[Service] = []
        # Features on the call path (gateway/core/pipeline.py), outermost first; added by install().
        self.middleware: list[Middleware] = []
        # Called with each sandbox router right after it is built (the tool record seeds it).
        self.router_hooks: list[Callable[[SandboxRouter], None]] = []
        # tools/list of a principal before any per-session narrowing; None: ask the servers.
        self.tool_lister: Callable[[Principal, SandboxRouter], Awaitable[list[dict[str, Any]]]] | None = None
        # (sandbox, server, kind, definition, settings fingerprint) -> offer it? Set by the integrity feature.
        self.tool_admission: Callable[[str, str, str, dict[str, Any], str], bool] | None = None

    # -- sandboxes -----------------------------------------------------------------------

    def sandbox(self, sandbox_id: str) -> Sandbox | None:
        sandbox = self.store.get(sandbox_id)
        if sandbox is None or sandbox.expired:
            return None
        return sandbox

    def authenticate(self, token: str) -> Principal:
        """Verify a sandbox token and that its sandbox still exists."""
        principal = self.tokens.verify(token)
        self.check_sandbox(principal)
        return principal

    def check_sandbox(self, principal: Principal) -> None:
        """Raise :class:`AuthError` unless the principal's sandbox still exists, is the incarnation
        the token was minted for, and the token is not revoked. Checked on every request (cheap for
        a sandbox whose router is live: dictionary lookups only)."""
        sandbox_id = principal.sandbox
        if sandbox_id in self._routers:
            expires_at = self._expires.get(sandbox_id)
            if expires_at is not None and time.time() >= expires_at:
                raise AuthError("the token's sandbox has expired")
            generation = self._generations.get(sandbox_id, "")
        else:
            found = self.store.liveness(sandbox_id)
            if found is None or (found[1] is not None and time.time() >= found[1]):
                raise AuthError("the token's sandbox does not exist (deleted or expired)")
            generation = found[0]
        if principal.generation is not None and principal.generation != generation:
            raise AuthError("the token's sandbox does not exist (deleted or expired)")
        if principal.token_id is not None and (sandbox_id, principal.token_id) in self._revoked:
            raise AuthError("the token has been revoked")

    def mint_token(self, sandbox: Sandbox, ttl: int | None, **claims: Any) -> str:
        """A token for this incarnation of ``sandbox`` (its generation signed in as ``gen``)."""
        return self.tokens.mint(sandbox.id, ttl=ttl, generation=sandbox.generation, **claims)

    # -- revoked tokens ------------------------------------------------------------------

    def _load_revocations(self) -> frozenset[tuple[str, str]]:
        return frozenset((r.sandbox, r.jti) for r in self.store.revocations())

    def revoke_token(self, sandbox_id: str, jti: str, expires_at: float | None) -> None:
        """Refuse the token ``jti`` of ``sandbox_id`` from now on; kept (in the store, so across
        restarts) until ``expires_at``, after which the token is refused for its age anyway."""
        self.store.revoke(Revocation(sandbox_id, jti, expires_at))
        self._revoked = self._load_revocations()  # also drops the entries past their expiry

    def is_revoked(self, sandbox_id: str, jti: str) -> bool:
        return (sandbox_id, jti) in self._revoked

    def create_sandbox(
        self,
        mcp: Any,
        sandbox_id: str | None = None,
        ttl: float | None = None,
        discovery: str | None = None,
        pinned: list[str] | None = None,
    ) -> Sandbox:
        """Validate an E2B-style ``mcp`` config against the catalog and store a new sandbox.

        Raises :class:`CatalogError` (bad config) or :class:`SandboxError` (bad or taken id).
        """
        servers = parse_mcp_config(self.catalog, mcp)
        check_paths(self.catalog.entries, servers, self.data.path)
        sandbox_id = check_sandbox_id(sandbox_id) if sandbox_id is not None else new_sandbox_id()
        existing = self.store.get(sandbox_id)
        if existing is not None and existing.expired:
            self.store.delete(sandbox_id)  # the reaper has not got to it yet
            self._forget_router(sandbox_id)  # nor to its router, which serves the old incarnation
        now = time.time()
        sandbox = Sandbox(
            sandbox_id,
            servers,
            created_at=now,
            expires_at=now + ttl if ttl else None,
            discovery=discovery or self.settings.discovery,
            pinned=tuple(pinned or ()),
        )
        self.store.create(sandbox)
        return sandbox

    async def update_sandbox(self, sandbox_id: str, mcp: Any) -> tuple[Sandbox, list[str]] | None:
        """Apply an ``mcp`` patch (see :mod:`gateway.core.sandbox_update`) to a stored sandbox.

        Returns the sandbox as stored and the names of the servers that changed, or None when
        there is no such sandbox. The generation stays, so its tokens keep working. With a live
        router, a new router takes over at once: it carries over the running servers whose
        settings did not change (same process), and the changed or removed ones are stopped
        (a changed one starts again, with its new settings, on its next use).
        Raises :class:`CatalogError` for a bad patch, :class:`SandboxError` from the store.
        """
        current = self.sandbox(sandbox_id)
        if current is None:
            return None
        servers = merge_servers(self.catalog, current.servers, mcp)
        check_paths(self.catalog.entries, servers, self.data.path)
        changed = changed_servers(current.servers, servers)
        if not changed:
            return current, []
        updated = self.store.put(replace(current, servers=servers))
        old = self._routers.get(sandbox_id)
        if old is None:
            return updated, changed
        self._reuse[sandbox_id] = {n: s for n, s in old.servers.items() if n in servers and n not in changed}
        try:
            router = self._build_router(updated)
        finally:
            self._reuse.pop(sandbox_id, None)
        self._routers[sandbox_id] = router
        kept = {id(server) for server in router.servers.values()}
        stale = [server for server in old.servers.values() if id(server) not in kept]
        await asyncio.gather(*(s.stop() for s in stale), return_exceptions=True)
        for kind in ("tools", "prompts", "resources"):
            await self.notify_list_changed(sandbox_id, kind)
        return updated, changed

    def router(self, sandbox_id: str) -> SandboxRouter:
        self._last_used[sandbox_id] = time.monotonic()
        router = self._routers.get(sandbox_id)
        if router is not None:
            return router
        sandbox = self.sandbox(sandbox_id)
        if sandbox is None:
            raise UpstreamError("this sandbox no longer exists", INVALID_PARAMS)
        router = self._build_router(sandbox)
        for hook in self.router_hooks:
            try:
                hook(router)
            except Exception:  # a feature's optimisation: the sandbox works without it
                logger.exception("a router hook failed for sandbox %s", sandbox_id)
        self._routers[sandbox_id] = router
        self._expires[sandbox_id] = sandbox.expires_at
        self._generations[sandbox_id] = sandbox.generation
        return router

    def _build_router(self, sandbox: Sandbox) -> SandboxRouter:
        redactor = Redactor(sandbox.secret_values()) if self.settings.redact else NO_REDACTION
        servers: dict[str, UpstreamServer] = {}
        prefixes: dict[str, str] = {}
        fingerprints: dict[str, str] = {}
        router_ref: list[SandboxRouter] = []
        reuse = self._reuse.get(sandbox.id, {})

        def owner(server: UpstreamServer) -> SandboxRouter | None:
            """The router serving ``server`` now: a newer one after an update carried it over."""
            live = self._routers.get(sandbox.id)
            if live is not None and live.servers.get(server.name) is server:
                return live
            return router_ref[0] if router_ref else None

        async def list_changed(server: UpstreamServer, kind: str) -> None:
            router = owner(server)
            if router is not None:
                await router.server_lists_changed(server, kind)

        async def server_notification(server: UpstreamServer, method: str, params: dict[str, Any]) -> None:
            router = owner(server)
            if router is not None:
                await router.server_notification(server, method, params)

        for name, server_settings in sandbox.servers.items():
            try:
                entry = self.catalog.get(name)
            except CatalogError:
                logger.warning("sandbox %s enables %s, which is no longer in the catalog", sandbox.id, name)
                continue
            prefixes[name] = entry.tool_prefix
            fingerprints[name] = settings_key(entry, server_settings, self._fingerprint_key)
            if name in reuse:  # an update left its settings alone: the running server carries over
                servers[name] = reuse[name]
                servers[name].redactor = redactor
                continue
            if entry.remote is not None:  # reached over HTTP, not spawned
                from gateway.upstream.remote import RemoteServer

                servers[name] = RemoteServer(  # type: ignore[assignment]
                    name,
                    sandbox.id,
                    entry,
                    server_settings,
                    self._limits(entry),
                    redactor,
                    list_changed,
                    server_notification,
                )
                continue
            servers[name] = UpstreamServer(
                name=name,
                sandbox=sandbox.id,
                launcher=self._launcher(entry, server_settings, sandbox.id),
                log_file=self.data.logs_dir / sandbox.id / f"{name}.log",
                limits=self._limits(entry),
                redactor=redactor,
                on_list_changed=list_changed,
                on_notification=server_notification,
            )

        async def notify_sessions(kind: str) -> None:
            await self.notify_list_changed(sandbox.id, kind)

        router = SandboxRouter(sandbox.id, servers, prefixes, redactor, on_list_changed=notify_sessions)
        router.notify_session = self.notify_session
        router.fingerprints = fingerprints
        if self.tool_admission is not None:
            admission = self.tool_admission
            router.admit = lambda server, kind, definition: admission(
                sandbox.id, server, kind, definition, fingerprints.get(server, "")
            )
        router_ref.append(router)
        return router

    def _limits(self, entry: CatalogEntry) -> ServerLimits:
        limits = entry.limits
        return ServerLimits(
            start_timeout=float(limits.get("start_timeout", self.settings.start_timeout)),
            call_timeout=float(limits.get("call_timeout", self.settings.call_timeout)),
        )

    def _launcher(self, entry: CatalogEntry, server_settings: ServerSettings, sandbox_id: str) -> Any:
        async def launch() -> LaunchSpec:
            from gateway.catalog.pull import resolve_command
            from gateway.upstream.runtimes import runtimes_for

            def command() -> list[str]:  # raises CatalogError (not pulled, no command)
                return resolve_command(entry, self.data.path)

            home = self.data.path / "home" / sandbox_id / entry.name
            runtimes = runtimes_for(self.settings.runtime, self.settings.container_engine, self.data.path)
            return await runtimes.launch(entry, server_settings, sandbox_id, home, command)

        return launch

    async def drop_router(self, sandbox_id: str) -> None:
        router = self._forget(sandbox_id)
        if router is not None:
            await router.stop()

    def _forget(self, sandbox_id: str) -> SandboxRouter | None:
        router = self._routers.pop(sandbox_id, None)
        self._expires.pop(sandbox_id, None)
        self._generations.pop(sandbox_id, None)
        self._last_used.pop(sandbox_id, None)
        return router

    def _forget_router(self, sandbox_id: str) -> None:
        """:meth:`drop_router` from synchronous code: forgotten now, its servers stopped in the background."""
        router = self._forget(sandbox_id)
        if router is not None:
            self.spawn(router.stop())

    async def delete_sandbox(self, sandbox_id: str) -> bool:
        """Erase the sandbox first (so no request can rebuild its router), then stop its servers.

        An id that is not a valid sandbox id, or names no stored sandbox, touches nothing.
        """
        if not is_sandbox_id(sandbox_id) or not self.store.delete(sandbox_id):
            return False
        await self.drop_router(sandbox_id)
        for hook in self.deletion_hooks:
            try:
                hook(sandbox_id)
            except Exception:
                logger.exception("a sandbox deletion hook failed")
        home = self.sandbox_home(sandbox_id)
        if home is not None and home.is_dir():
            await asyncio.to_thread(shutil.rmtree, home, True)
        return True

    def sandbox_home(self, sandbox_id: str) -> Path | None:
        """``<data dir>/home/<id>``, or None unless it resolves to a directory strictly inside ``home/``."""
        homes = (self.data.path / "home").resolve()
        home = (homes / sandbox_id).resolve()
        return home if home.parent == homes else None

    def last_used(self, sandbox_id: str) -> float | None:
        """When (``time.monotonic()``) a request last reached the sandbox's router."""
        return self._last_used.get(sandbox_id)

    def live_routers(self) -> Mapping[str, SandboxRouter]:
        return self._routers

    def open_sessions(self) -> dict[str, int]:
        """Handshake-era MCP sessions per sandbox (from the client-facing session store)."""
        return dict(self.session_counts()) if self.session_counts is not None else {}

    # -- sessions ------------------------------------------------------------------------

    def listen(self, sandbox_id: str, listener: Listener) -> Callable[[], None]:
        """Register a stream for the sandbox's notifications; returns the function that removes it."""
        listeners = self._listeners.setdefault(sandbox_id, set())
        listeners.add(listener)

        def remove() -> None:
            listeners.discard(listener)
            if not listeners and self._listeners.get(sandbox_id) is listeners:
                del self._listeners[sandbox_id]

        return remove

    def listen_session(self, session_id: str, listener: Listener) -> Callable[[], None]:
        """Register the channel of one client session (its notifications); returns the function that removes it."""
        self._session_listeners[session_id] = listener

        def remove() -> None:
            if self._session_listeners.get(session_id) is listener:
                del self._session_listeners[session_id]

        return remove

    async def notify_session(self, session_id: str, method: str, params: dict[str, Any]) -> None:
        """A notification for one client session (dropped when it is not connected to this process)."""
        listener = self._session_listeners.get(session_id)
        if listener is None:
            return
        try:
            await listener(method, params)
        except Exception:
            logger.debug("could not notify session %s", session_id, exc_info=True)

    async def notify_listeners(self, sandbox_id: str, method: str, params: dict[str, Any]) -> None:
        for listener in list(self._listeners.get(sandbox_id, ())):
            try:
                await listener(method, params)
            except Exception:
                logger.debug("could not notify a stream of sandbox %s", sandbox_id, exc_info=True)

    async def notify_list_changed(self, sandbox_id: str, kind: str) -> None:
        """Tell every connected session and stream of the sandbox that a list changed."""
        await self.notify_listeners(sandbox_id, f"notifications/{kind}/list_changed", {})

    # -- calls ---------------------------------------------------------------------------

    async def list_tools(self, principal: Principal, router: SandboxRouter) -> list[dict[str, Any]]:
        """The principal's tools (from the tool record when the toolcache feature is on)."""
        if self.tool_lister is not None:
            return await self.tool_lister(principal, router)
        return await router.list_tools(principal)

    # -- lifecycle -----------------------------------------------------------------------

    async def startup(self) -> None:
        """Called once the HTTP server is up. With ``--prestart`` the default sandbox starts now."""
        for service in self.services:
            await service.start()
        if self.settings.prestart and self.sandbox(self.default_sandbox) is not None:
            self.spawn(self.start_sandbox(self.default_sandbox))
        self.spawn(self._report_runtime())

    async def _report_runtime(self) -> None:
        """Say once where servers without an image will run, after removing the cgroups a crashed
        earlier run left. Only bwrap is probed (a ~10 ms child, and none with ``--runtime host``);
        container engines are probed when an image is first needed, or at once to remove the
        containers of an earlier run that used them."""
        from gateway.upstream.runtimes import runtimes_for

        try:
            runtimes = runtimes_for(self.settings.runtime, self.settings.container_engine, self.data.path)
            await runtimes.sweep()
            runtime, why = await runtimes.default_runtime()
            line = f"Runtime: {runtime.name} ({why})"
        except Exception as exc:
            line = f"Runtime: could not probe ({exc})"
        print(line, flush=True)

    def spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    async def start_sandbox(self, sandbox_id: str) -> None:
        router = self.router(sandbox_id)
        await router.ensure_started(router.servers.values())

    async def aclose(self) -> None:
        for service in reversed(self.services):
            try:
                await service.stop()
            except Exception:
                logger.exception("stopping a service failed")
        for task in list(self._background):
            task.cancel()
        routers = list(self._routers.values())
        self._routers.clear()
        await asyncio.gather(*(r.stop() for r in routers), return_exceptions=True)
