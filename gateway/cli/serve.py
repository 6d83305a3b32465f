"""``mcp-gateway serve``: validate everything up front, then run the HTTP server until a signal."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import uvicorn

from gateway.catalog.config import ServerSettings, parse_mcp_config, read_config_argument
from gateway.catalog.entries import Catalog
from gateway.catalog.paths import check_paths
from gateway.cli.listen import listen_socket
from gateway.core.auth import TokenService
from gateway.core.gateway import Gateway
from gateway.downstream.http_limits import limited_protocol
from gateway.downstream.modern_listen import close_all as close_listen_streams
from gateway.downstream.relay import active_requests
from gateway.logs import configure_logging
from gateway.settings import Settings
from gateway.store.datadir import DataDir, DataDirBusy, write_private
from gateway.store.sandboxes import DEFAULT_SANDBOX, Sandbox, SandboxStore
from gateway.web.app import create_app, is_loopback_host

logger = logging.getLogger("gateway")

DEFAULT_TOKEN_TTL = 30 * 24 * 3600


class ServeError(ValueError):
    pass


def settings_from_args(args: argparse.Namespace) -> Settings:
    return Settings(
        host=args.host,
        port=args.port,
        public_url=args.public_url,
        no_auth=args.no_auth,
        admin_key=args.admin_key,
        runtime=args.runtime,
        container_engine=args.container_engine,
        allow_origins=tuple(args.allow_origin),
        redact=not args.no_redact,
        accept_tool_changes=args.accept_tool_changes,
        issuer=args.issuer,
        jwt_public_key=args.jwt_public_key,
        jwks_url=args.jwks_url,
        metrics_port=args.metrics_port,
        log_format=args.log_format,
        log_level=args.log_level,
        discovery=args.discovery,
        discovery_limit=args.discovery_limit,
        prestart=args.prestart,
        call_timeout=args.call_timeout,
        idle_timeout=args.idle_timeout,
        max_inflight_per_sandbox=args.max_concurrent_requests,
        max_sessions=args.max_sessions,
        max_sessions_per_sandbox=args.max_sessions_per_sandbox,
        grace_period=args.grace_period,
        catalog_files=tuple(Path(f) for f in args.catalog),
        header_timeout=args.header_timeout,
        max_header_bytes=args.max_header_bytes,
    )


def default_servers(catalog: Catalog, args: argparse.Namespace) -> dict[str, ServerSettings]:
    config = read_config_argument(args.config) if args.config else None
    return parse_mcp_config(catalog, config, args.servers)


def ensure_pulled(catalog: Catalog, data: DataDir, names: list[str]) -> None:
    """Servers named for the default sandbox are installed now, so the first call does not wait."""
    from gateway.catalog.pull import is_pulled, pull

    missing = [catalog.get(n) for n in names if not is_pulled(catalog.get(n), data.path)]
    for entry in missing:
        asyncio.run(pull(entry, data.path, lambda line: print(line, file=sys.stderr, flush=True)))


def admin_key(settings: Settings, data: DataDir) -> str:
    return settings.admin_key or os.environ.get("MCP_GATEWAY_ADMIN_KEY") or data.admin_key()


def build_gateway(settings: Settings, data: DataDir, catalog: Catalog) -> Gateway:
    store = SandboxStore(data.database, data.secrets_key())
    tokens = TokenService(
        data.signing_key(),
        settings.mcp_url,
        issuer=settings.issuer,
        public_key_file=settings.jwt_public_key,
        jwks_url=settings.jwks_url,
        access_token=os.environ.get("GATEWAY_ACCESS_TOKEN"),
    )
    gateway = Gateway(settings, catalog, data, store, tokens)
    gateway.admin_key = admin_key(settings, data)
    return gateway


# Feature modules: each may define ``install(gateway)`` (observers, services) and ``routes(gateway)``.
FEATURES = (
    "gateway.web.admin",
    "gateway.web.status",
    "gateway.web.observe",
    "gateway.features.toolcache",
    "gateway.features.discovery",
    "gateway.features.pinning",
    "gateway.features.lifecycle",
)


def install_features(gateway: Gateway) -> list[Any]:
    """Let each feature module hook into the gateway; return the HTTP routes they add."""
    routes: list[Any] = []
    for module_name in FEATURES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue
        if hasattr(module, "install"):
            module.install(gateway)
        if hasattr(module, "routes"):
            routes.extend(module.routes(gateway))
    return routes


# Of the grace period, this share (at most STOP_RESERVE_MAX seconds) is kept for stopping servers.
STOP_RESERVE_SHARE = 0.25
STOP_RESERVE_MAX = 2.5


def call_grace(grace_period: float) -> float:
    """The part of the grace period in-flight calls may use; the rest is for stopping servers."""
    return max(0.0, grace_period - min(STOP_RESERVE_MAX, grace_period * STOP_RESERVE_SHARE))


class GatewayUvicorn(uvicorn.Server):
    """uvicorn, with a graceful shutdown that fits a gateway (through uvicorn's public hooks only).

    On SIGTERM/SIGINT plain uvicorn stops accepting connections, then waits for every open
    connection to close. An MCP client's event stream (a GET stream, a ``subscriptions/listen``)
    never closes by itself, so that wait would always last the whole grace period. Here the
    signal first starts a drain, run from uvicorn's tick (``on_tick``) before uvicorn's own
    shutdown begins: it lasts until no upstream-bound request (a tool call, a prompt, a resource
    read) is in progress, or until the grace period (less the time kept to stop the servers) is
    over, when the calls still running are failed with a clear error. Then the event streams are
    ended (a stream still waiting for a call's answer gets it first), and uvicorn's shutdown finds
    only connections that are about to close. The lifespan's shutdown then stops every server. A
    second SIGINT still forces the exit. Unlike plain uvicorn, the caught signal is not raised
    again on the way out: a graceful stop exits 0.
    """

    def __init__(self, config: uvicorn.Config, gateway: Gateway, on_ready: Callable[[], None] | None = None) -> None:
        super().__init__(config)
        self.gateway = gateway
        self.on_ready = on_ready
        self.endpoint = getattr(getattr(config.app, "state", None), "mcp", None)  # McpEndpoint
        self.drained = False

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        """uvicorn's start-up; then (serving, the lifespan done) the ready lines."""
        await super().startup(sockets=sockets)
        if self.started and not self.should_exit and self.on_ready is not None:
            self.on_ready()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """As uvicorn's, without keeping the signal to raise again after the graceful stop (exit 0)."""
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True  # a second Ctrl-C: stop now
        else:
            self.should_exit = True

    async def on_tick(self, counter: int) -> bool:
        """uvicorn's tick; once it says stop, drain the gateway before uvicorn's shutdown starts."""
        should_exit = await super().on_tick(counter)
        if should_exit and not self.drained and not self.force_exit:
            self.drained = True
            await self.drain()
        return should_exit

    def busy(self) -> bool:
        upstream = sum(
            server.connection.in_flight
            for router in list(self.gateway.live_routers().values())
            for server in router.servers.values()
            if server.connection is not None and not server.connection.closed
        )
        handshake = self.endpoint.active_requests() if self.endpoint is not None else 0
        return upstream > 0 or active_requests(self.gateway) > 0 or handshake > 0

    def abort_calls(self) -> None:
        for router in list(self.gateway.live_routers().values()):
            for server in router.servers.values():
                server.abort_calls("the gateway is shutting down (grace period over)")

    async def drain(self) -> None:
        """Wait for the calls in flight; when the grace for calls is over, fail them with a clear error.

        The failed calls are answered (an error, not a cut stream) before the servers are stopped;
        then every event stream ends. uvicorn's own timeout (a little longer) stays the backstop.
        """
        for server in self.servers:  # stop accepting connections at once, as uvicorn's shutdown would
            server.close()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + call_grace(self.gateway.settings.grace_period)
        idle_polls = 0
        if self.busy():
            logger.info("shutting down: waiting for calls in progress to finish")
        try:
            while not self.force_exit and idle_polls < 2:  # idle twice in a row: answers are written
                if loop.time() >= deadline:
                    logger.warning("shutting down: grace period over, failing the calls still in progress")
                    self.abort_calls()
                    deadline = float("inf")
                idle_polls = idle_polls + 1 if not self.busy() else 0
                await asyncio.sleep(0.1)
        finally:
            if self.endpoint is not None:  # end the idle event streams (GET /mcp) too
                self.endpoint.end_streams()
            close_listen_streams()


def serve(args: argparse.Namespace) -> int:
    """Check everything, bind the port, lock the data dir; only then write to it and serve.

    A taken port or a data dir another gateway holds ends the start with one line, and the
    data dir exactly as it was.
    """
    settings = settings_from_args(args)
    if settings.no_auth and not is_loopback_host(settings.host):
        raise ServeError(f"--no-auth is only allowed on a loopback host (127.0.0.1, ::1), not {settings.host}")
    configure_logging(settings.log_format, settings.log_level)
    catalog = Catalog.load(settings.catalog_files)
    servers = default_servers(catalog, args)
    data = DataDir.locate(args.data_dir)
    check_paths(catalog.entries, servers, data.path)
    if data.is_locked():  # checked first so the message names the other gateway, whatever the port
        raise ServeError(str(DataDirBusy(data.path, data.lock_owner())))
    sock = listen_socket(settings.host, settings.port)
    try:
        return run_locked(settings, args, DataDir.open(args.data_dir), catalog, servers, sock)
    finally:
        sock.close()


def run_locked(
    settings: Settings,
    args: argparse.Namespace,
    data: DataDir,
    catalog: Catalog,
    servers: dict[str, ServerSettings],
    sock: socket.socket,
) -> int:
    try:
        lock = data.lock({"pid": os.getpid(), "host": settings.host, "port": settings.port})
    except DataDirBusy as exc:
        raise ServeError(str(exc)) from None
    try:
        ensure_pulled(catalog, data, sorted(servers))
        gateway = build_gateway(settings, data, catalog)
        try:
            return run_gateway(settings, args, data, gateway, servers, sock)
        finally:
            gateway.store.close()
    finally:
        os.close(lock)


def run_gateway(
    settings: Settings,
    args: argparse.Namespace,
    data: DataDir,
    gateway: Gateway,
    servers: dict[str, ServerSettings],
    sock: socket.socket,
) -> int:
    previous = gateway.store.get(DEFAULT_SANDBOX)
    created = previous.created_at if previous else time.time()
    pinned = tuple(args.pin_tools or ())
    default = gateway.store.put(  # an update keeps its generation: earlier tokens stay valid
        Sandbox(DEFAULT_SANDBOX, servers, created_at=created, discovery=settings.discovery, pinned=pinned)
    )
    data.write_state({"public_url": settings.mcp_url, "host": settings.host, "port": settings.port, "pid": os.getpid()})
    token = None if gateway.tokens.external else gateway.mint_token(default, ttl=DEFAULT_TOKEN_TTL)
    if token:
        write_private(data.token_file, token + "\n")

    app = create_app(gateway, install_features(gateway))
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        # a backstop only (GatewayUvicorn answers calls past the grace itself); a float is fine here
        timeout_graceful_shutdown=call_grace(settings.grace_period) + 1.0,  # type: ignore[arg-type]
        lifespan="on",
        loop="auto",
        http=limited_protocol(settings.header_timeout, settings.max_header_bytes),
        ws="none",
    )
    server = GatewayUvicorn(config, gateway, on_ready=lambda: print_ready(settings, data, servers, token))
    server.run(sockets=[sock])
    if not server.started:
        raise ServeError("the gateway failed to start (see the log above)")
    return 0


HIDE_TOKEN_ENV = "MCP_GATEWAY_HIDE_TOKEN"


def print_ready(settings: Settings, data: DataDir, servers: dict[str, ServerSettings], token: str | None) -> None:
    out = sys.stdout
    print(f"MCP endpoint: {settings.mcp_url}", file=out)
    if servers:
        print(f"Servers: {', '.join(sorted(servers))}", file=out)
    else:
        print("Servers: none yet. Add some with --servers time,everything or --config @FILE", file=out)
    if settings.no_auth:
        print("WARNING: --no-auth: anyone who can reach this port acts as the default sandbox", file=out)
        print(f"Ready: claude mcp add --transport http mcp-gateway {settings.mcp_url}", file=out)
    elif token:
        print(f"Token written to {data.token_file}", file=out)
        # $MCP_GATEWAY_HIDE_TOKEN=1 (the container image): the log names the file, never the token.
        shown = f"$(cat {data.token_file})" if os.environ.get(HIDE_TOKEN_ENV) == "1" else token
        header = f'--header "Authorization: Bearer {shown}"'
        print(f"Ready: claude mcp add --transport http mcp-gateway {settings.mcp_url} {header}", file=out)
    else:
        print(f"Ready: {settings.mcp_url} (tokens of the external issuer)", file=out)
    out.flush()
