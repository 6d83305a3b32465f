"""Tool integrity: a tool whose definition changes after it was first seen is held back.

The first time the gateway sees a server's tool it records a hash of its name, description
and schemas (``<data-dir>/tool-hashes.json``). If the server later offers a different
definition under the same name (a "rug pull": new instructions hidden in a description, a
widened schema), the change is logged and, unless ``--accept-tool-changes`` is set, the tool
is withheld from every sandbox until an operator accepts it with
``POST /admin/tools/accept {"server": NAME}``. ``GET /admin/tools/changes`` lists what waits.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.store.datadir import write_private
from gateway.web.access import admin_denied

if TYPE_CHECKING:
    from gateway.core.gateway import Gateway

logger = logging.getLogger("gateway.integrity")

HASHED_FIELDS = ("name", "title", "description", "inputSchema", "outputSchema", "annotations")


def definition_hash(definition: dict[str, Any]) -> str:
    material = {k: definition.get(k) for k in HASHED_FIELDS if definition.get(k) is not None}
    return hashlib.sha256(json.dumps(material, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class ToolLedger:
    """Known tool hashes per server, and the changes waiting for an operator."""

    def __init__(self, path: Path, accept_changes: bool) -> None:
        self.path = path
        self.accept_changes = accept_changes
        self._lock = threading.Lock()
        self.known: dict[str, dict[str, str]] = self._load()
        self.pending: dict[str, dict[str, dict[str, Any]]] = {}  # server -> tool -> {"hash", "description"}

    def _load(self) -> dict[str, dict[str, str]]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _save(self) -> None:
        write_private(self.path, json.dumps(self.known, indent=1, sort_keys=True))

    def admit(self, sandbox: str, server: str, kind: str, definition: dict[str, Any]) -> bool:
        if kind != "tool":
            return True
        name = str(definition.get("name"))
        digest = definition_hash(definition)
        with self._lock:
            known = self.known.setdefault(server, {})
            previous = known.get(name)
            if previous is None or previous == digest:
                if previous is None:
                    known[name] = digest
                    self._save()
                return True
            if self.accept_changes:
                logger.warning(
                    "server %s changed the definition of tool %s; accepted (--accept-tool-changes)", server, name
                )
                known[name] = digest
                self._save()
                return True
            waiting = self.pending.setdefault(server, {})
            if waiting.get(name, {}).get("hash") != digest:
                logger.warning(
                    "server %s changed the definition of tool %s (sandbox %s); it is withheld until an operator"
                    " accepts it: POST /admin/tools/accept",
                    server,
                    name,
                    sandbox,
                )
            waiting[name] = {"hash": digest, "description": str(definition.get("description", ""))[:500]}
            return False

    def accept(self, server: str, tools: list[str] | None) -> list[str]:
        with self._lock:
            waiting = self.pending.get(server, {})
            names = [n for n in waiting if tools is None or n in tools]
            for name in names:
                self.known.setdefault(server, {})[name] = waiting.pop(name)["hash"]
            if not waiting:
                self.pending.pop(server, None)
            if names:
                self._save()
            return names


def install(gateway: Gateway) -> None:
    ledger = ToolLedger(gateway.data.path / "tool-hashes.json", gateway.settings.accept_tool_changes)
    gateway.tool_ledger = ledger  # type: ignore[attr-defined]
    gateway.tool_admission = ledger.admit


def routes(gateway: Gateway) -> list[Route]:
    ledger: ToolLedger = gateway.tool_ledger  # type: ignore[attr-defined]

    def refused(request: Request) -> Response | None:
        return admin_denied(request, gateway)

    async def changes(request: Request) -> Response:
        if (response := refused(request)) is not None:
            return response
        listing = [
            {"server": server, "tool": tool, "description": info["description"]}
            for server, tools in sorted(ledger.pending.items())
            for tool, info in sorted(tools.items())
        ]
        return JSONResponse({"changes": listing})

    async def accept(request: Request) -> Response:
        if (response := refused(request)) is not None:
            return response
        try:
            body = json.loads(await request.body() or b"{}")
        except ValueError:
            return JSONResponse({"error": "bad_json", "message": "the body is not valid JSON"}, status_code=400)
        server = body.get("server") if isinstance(body, dict) else None
        tools = body.get("tools") if isinstance(body, dict) else None
        if not isinstance(server, str) or (tools is not None and not isinstance(tools, list)):
            return JSONResponse(
                {"error": "bad_request", "message": 'expected {"server": NAME, "tools"?: [NAME, ...]}'}, status_code=400
            )
        accepted = ledger.accept(server, tools)
        for sandbox, router in list(gateway.live_routers().items()):
            if server in router.servers:
                router.invalidate()
                await gateway.notify_list_changed(sandbox, "tools")
        return JSONResponse({"accepted": accepted})

    return [
        Route("/admin/tools/changes", changes, methods=["GET"]),
        Route("/admin/tools/accept", accept, methods=["POST"]),
    ]
