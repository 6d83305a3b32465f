"""Tool integrity: a tool whose definition changes after it was first seen is held back.

The first time the gateway sees a server's tool it records a hash of its name, description
and schemas (``<data-dir>/tool-hashes.json``). If the server later offers a different
definition under the same name (a "rug pull": new instructions hidden in a description, a
widened schema), the change is logged and, unless ``--accept-tool-changes`` is set, the tool
is withheld until an operator accepts it with ``POST /admin/tools/accept {"server": NAME}``
(optionally ``"sandbox": ID``). ``GET /admin/tools/changes`` lists what waits.

The ledger is kept per sandbox and per server settings (catalog entry, the sandbox's config and
secret values, hashed): a server whose tools depend on its configuration has one ledger per
configuration, so one sandbox's tools never count as a change of another's. Ledgers written by
older versions (keyed by server alone) are ignored: their tools read as never seen.
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


def ledger_key(sandbox: str, server: str, fingerprint: str) -> str:
    return f"{sandbox}/{server}/{fingerprint}"


def split_key(key: str) -> tuple[str, str]:
    """(sandbox, server) of a ledger key."""
    sandbox, server, _ = key.split("/", 2)
    return sandbox, server


class ToolLedger:
    """Known tool hashes per (sandbox, server, settings fingerprint), and the changes waiting for an operator."""

    def __init__(self, path: Path, accept_changes: bool) -> None:
        self.path = path
        self.accept_changes = accept_changes
        self._lock = threading.Lock()
        self.known: dict[str, dict[str, str]] = self._load()
        self.pending: dict[str, dict[str, dict[str, Any]]] = {}  # ledger key -> tool -> {"hash", "description"}

    def _load(self) -> dict[str, dict[str, str]]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        if not isinstance(data, dict):
            return {}
        # Keys of older versions (a bare server name) are dropped: those tools read as never seen.
        return {k: v for k, v in data.items() if isinstance(v, dict) and k.count("/") >= 2}

    def _save(self) -> None:
        write_private(self.path, json.dumps(self.known, indent=1, sort_keys=True))

    def admit(self, sandbox: str, server: str, kind: str, definition: dict[str, Any], fingerprint: str = "") -> bool:
        if kind != "tool":
            return True
        name = str(definition.get("name"))
        digest = definition_hash(definition)
        key = ledger_key(sandbox, server, fingerprint)
        with self._lock:
            known = self.known.setdefault(key, {})
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
            waiting = self.pending.setdefault(key, {})
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

    def accept(self, server: str, tools: list[str] | None, sandbox: str | None = None) -> list[str]:
        """Accept the waiting changes of ``server`` (in every sandbox, or only ``sandbox``); the names accepted."""
        accepted: list[str] = []
        with self._lock:
            for key in list(self.pending):
                key_sandbox, key_server = split_key(key)
                if key_server != server or (sandbox is not None and key_sandbox != sandbox):
                    continue
                waiting = self.pending[key]
                names = [n for n in waiting if tools is None or n in tools]
                for name in names:
                    self.known.setdefault(key, {})[name] = waiting.pop(name)["hash"]
                if not waiting:
                    self.pending.pop(key, None)
                accepted += names
            if accepted:
                self._save()
        return sorted(set(accepted))


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
            {
                "server": split_key(key)[1],
                "sandbox": split_key(key)[0],
                "tool": tool,
                "description": info["description"],
            }
            for key, tools in sorted(ledger.pending.items())
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
        only = body.get("sandbox") if isinstance(body, dict) else None
        if (
            not isinstance(server, str)
            or (tools is not None and not isinstance(tools, list))
            or (only is not None and not isinstance(only, str))
        ):
            message = 'expected {"server": NAME, "tools"?: [NAME, ...], "sandbox"?: ID}'
            return JSONResponse({"error": "bad_request", "message": message}, status_code=400)
        accepted = ledger.accept(server, tools, only)
        for sandbox, router in list(gateway.live_routers().items()):
            if server in router.servers and (only is None or sandbox == only):
                router.invalidate()
                await gateway.notify_list_changed(sandbox, "tools")
        return JSONResponse({"accepted": accepted})

    return [
        Route("/admin/tools/changes", changes, methods=["GET"]),
        Route("/admin/tools/accept", accept, methods=["POST"]),
    ]
