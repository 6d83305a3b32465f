"""Observability feature: metrics, the audit log and the status page.

``install(gateway)`` adds the metrics and audit call observers and, with ``--metrics-port``,
prometheus_client's own exporter on a loopback port, serving the metrics without a key. ``routes(gateway)`` adds
``GET /metrics`` and ``GET /admin/audit`` (admin key) and ``GET /admin/`` (the status page,
which asks for the admin key itself and sends it only in ``Authorization`` headers).
"""

from __future__ import annotations

import asyncio
import html
import logging
import threading
from collections.abc import Callable
from importlib import resources
from typing import Any
from wsgiref.simple_server import WSGIServer

from prometheus_client import CONTENT_TYPE_LATEST, start_http_server
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from gateway.core.gateway import Gateway
from gateway.features.audit import DEFAULT_LIMIT, MAX_LIMIT, AuditLog, parse_time
from gateway.features.metrics import Metrics, activate
from gateway.features.observers import ObserveCalls
from gateway.web.access import admin_denied as shared_admin_denied

logger = logging.getLogger("gateway.observe")

AUDIT_FILE = "audit.log"
STATIC_FILES = {
    "admin.js": "text/javascript; charset=utf-8",
    "admin.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}

# What install() built, per gateway, for routes() to use.
_state: dict[int, tuple[Metrics, AuditLog]] = {}


def install(gateway: Gateway) -> None:
    metrics = Metrics(gateway)
    activate(metrics)
    audit = AuditLog(gateway.data.path / AUDIT_FILE)
    gateway.middleware.append(ObserveCalls(gateway, [metrics.observe, audit.observe]))
    gateway.deletion_hooks.append(metrics.forget_sandbox)
    _state[id(gateway)] = (metrics, audit)
    gateway.services.append(_AuditCloser(audit))
    port = gateway.settings.metrics_port
    if port is not None:
        gateway.services.append(MetricsListener(metrics, "127.0.0.1", port))


def parts(gateway: Gateway) -> tuple[Metrics, AuditLog]:
    if id(gateway) not in _state:
        install(gateway)
    return _state[id(gateway)]


def routes(gateway: Gateway) -> list[BaseRoute]:
    metrics, audit = parts(gateway)

    def admin_denied(request: Request) -> Response | None:
        return shared_admin_denied(request, gateway)

    async def get_metrics(request: Request) -> Response:
        denied = admin_denied(request)
        if denied is not None:
            return denied
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    async def get_audit(request: Request) -> Response:
        denied = admin_denied(request)
        if denied is not None:
            return denied
        try:
            sandbox, since, limit = _audit_query(request.query_params)
        except ValueError as exc:
            return JSONResponse({"error": "bad_request", "message": str(exc)}, status_code=400)
        entries = await asyncio.to_thread(audit.read, sandbox, since, limit)
        return JSONResponse({"entries": entries})

    page = _page(gateway.settings.mcp_url)

    async def admin_page(request: Request) -> Response:
        return Response(page, media_type="text/html; charset=utf-8", headers=PAGE_HEADERS)

    async def admin_redirect(request: Request) -> Response:
        return RedirectResponse("/admin/", status_code=308)

    def static(name: str) -> Callable[[Request], Any]:
        body = _static_text(name)

        async def endpoint(request: Request) -> Response:
            return Response(body, media_type=STATIC_FILES[name], headers=PAGE_HEADERS)

        return endpoint

    return [
        Route("/metrics", endpoint=get_metrics, methods=["GET"]),
        Route("/admin/audit", endpoint=get_audit, methods=["GET"]),
        Route("/admin/", endpoint=admin_page, methods=["GET"]),
        Route("/admin", endpoint=admin_redirect, methods=["GET"]),
        *(Route(f"/admin/{name}", endpoint=static(name), methods=["GET"]) for name in STATIC_FILES),
        # Browsers ask for /favicon.ico whatever the page says; an answer keeps their console clean.
        Route("/favicon.ico", endpoint=static("favicon.svg"), methods=["GET"]),
    ]


def _audit_query(params: Any) -> tuple[str | None, float | None, int]:
    sandbox = params.get("sandbox") or None
    since: float | None = None
    if params.get("since"):
        try:
            since = parse_time(params["since"])
        except (ValueError, OverflowError):
            raise ValueError("since must be epoch seconds or an ISO 8601 time (2025-01-31T12:00:00Z)") from None
    limit = DEFAULT_LIMIT
    if params.get("limit"):
        try:
            limit = int(params["limit"])
        except ValueError:
            raise ValueError(f"limit must be a whole number from 1 to {MAX_LIMIT}") from None
        if not 1 <= limit <= MAX_LIMIT:
            raise ValueError(f"limit must be a whole number from 1 to {MAX_LIMIT}")
    return sandbox, since, limit


def _static_text(name: str) -> str:
    return resources.files("gateway.web").joinpath("static", name).read_text(encoding="utf-8")


def _page(mcp_url: str) -> str:
    return _static_text("admin.html").replace("{{MCP_URL}}", html.escape(mcp_url, quote=True))


class _AuditCloser:
    """Closes the audit file when the gateway stops."""

    def __init__(self, audit: AuditLog) -> None:
        self.audit = audit

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        self.audit.close()


# -- the --metrics-port listener -----------------------------------------------------------------


class MetricsListener:
    """The gateway's registry on a loopback port without a key, served by prometheus_client's own server.

    ``start_http_server`` runs a small threaded WSGI server in a daemon thread (not a second uvicorn):
    it stays out of the main server's signal handling and event loop, so a slow scrape never delays a
    tool call. Like any prometheus_client exporter it answers every GET path with the metrics.
    """

    def __init__(self, metrics: Metrics, host: str, port: int) -> None:
        self.metrics = metrics
        self.host = host
        self.port = port
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    async def start(self) -> None:
        try:
            self._server, self._thread = start_http_server(self.port, addr=self.host, registry=self.metrics.registry)
        except OSError as exc:
            raise RuntimeError(f"cannot serve metrics on {self.host}:{self.port}: {exc.strerror or exc}") from None
        logger.info("metrics on http://%s:%d/metrics", self.host, self.port)

    async def stop(self) -> None:
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None:
            await asyncio.to_thread(server.shutdown)
            server.server_close()
        if thread is not None:
            await asyncio.to_thread(thread.join, 5)
