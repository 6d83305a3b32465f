"""``GET /admin/status``: every sandbox's servers, their state, pid, uptime, restarts, last error, calls.

Cheap by design (no upstream is contacted): it reads what each :class:`UpstreamServer` already
knows. Sandboxes whose servers have not been started yet are listed with those servers
``stopped``, so the page shows what exists, not only what runs.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.web.access import admin_denied

if TYPE_CHECKING:
    from gateway.core.gateway import Gateway

logger = logging.getLogger("gateway.status")


def _stopped(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "state": "stopped",
        "pid": None,
        "uptime_s": None,
        "restarts": 0,
        "last_error": None,
        "calls": 0,
    }


def snapshot(gateway: Gateway) -> dict[str, Any]:
    """The status document of the contract: ``{"sandboxes": [{"id", "servers": [...]}]}``."""
    sandboxes: dict[str, list[dict[str, Any]]] = {}
    for sandbox_id, router in list(gateway.live_routers().items()):
        sandboxes[sandbox_id] = [server.status() for server in router.servers.values()]
    try:
        stored = gateway.store.all()
    except Exception as exc:  # a store problem must not hide what is running
        logger.warning("status: could not read the sandbox store: %s", exc)
        stored = []
    for sandbox in stored:
        if sandbox.id not in sandboxes and not sandbox.expired:
            sandboxes[sandbox.id] = [_stopped(name) for name in sorted(sandbox.servers)]
    return {"sandboxes": [{"id": sid, "servers": servers} for sid, servers in sorted(sandboxes.items())]}


def routes(gateway: Gateway) -> list[Route]:
    async def status(request: Request) -> Response:
        denied = admin_denied(request, gateway)
        if denied is not None:
            return denied
        return JSONResponse(snapshot(gateway))

    return [Route("/admin/status", endpoint=status, methods=["GET"])]
