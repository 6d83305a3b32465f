"""What an upstream sends back during a call, as the client that made the call gets it.

Shared by every client-facing path (both protocol eras), so progress, log messages and relayed
server requests look the same whichever path served the call.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from typing import Any

from gateway.features.redaction import Redactor

LOG_LEVELS = ("debug", "info", "notice", "warning", "error", "critical", "alert", "emergency")
# Server-to-client requests an upstream may send during a call -> the client capability they need.
RELAYED_REQUESTS = {"sampling/createMessage": "sampling", "elicitation/create": "elicitation", "roots/list": "roots"}


def relay_refusal(method: str, params: Mapping[str, Any], capabilities: Mapping[str, Any]) -> str | None:
    """Why a server-to-client request cannot go to this client (None: it may).

    ``capabilities`` is what the client declared. A client declaring ``elicitation: {}`` (or only
    ``form``) supports form mode alone (MCP 2025-11-25), so a URL-mode ``elicitation/create`` needs
    an ``elicitation.url`` key, even though the gateway itself declares URL mode upstream.
    """
    needed = RELAYED_REQUESTS.get(method)
    if needed is None:
        return f"{method} is not relayed to clients"
    declared = capabilities.get(needed)
    if declared is None:
        return f"the client did not declare the {needed} capability"
    if method == "elicitation/create" and params.get("mode") == "url":
        if not isinstance(declared, Mapping) or declared.get("url") is None:
            return "the client did not declare URL-mode elicitation"
    return None


def progress_message(params: dict[str, Any], token: Any, redactor: Redactor) -> dict[str, Any]:
    """An upstream ``notifications/progress`` as the client gets it: its own token, a redacted message."""
    forwarded = {k: v for k, v in params.items() if k in ("progress", "total", "message")}
    if isinstance(forwarded.get("message"), str):
        forwarded["message"] = redactor.text(forwarded["message"])
    forwarded["progressToken"] = token
    return forwarded


def log_message(params: dict[str, Any], allowed: frozenset[str], redactor: Redactor) -> dict[str, Any] | None:
    """What of an upstream ``notifications/message`` reaches the client (None: not wanted, dropped).

    ``allowed`` is the levels the client asked for.
    """
    level = params.get("level")
    if level not in LOG_LEVELS or level not in allowed:
        return None
    forwarded: dict[str, Any] = {"level": level, "data": redactor.value(params.get("data"))}
    if isinstance(params.get("logger"), str):
        forwarded["logger"] = params["logger"]
    return forwarded


# Requests being served that go upstream (tools/call, prompts/get, resources/read), per gateway,
# including calls parked for a 2026-07-28 client's input: a graceful shutdown waits for these,
# not for idle event streams.
_active: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()


def active_requests(gateway: Any) -> int:
    """Upstream-bound requests in progress on ``gateway``."""
    return _active.get(gateway, 0)


class Active:
    """Counts the block as an upstream-bound request of ``gateway`` (see :func:`active_requests`)."""

    __slots__ = ("_gateway",)

    def __init__(self, gateway: Any) -> None:
        self._gateway = gateway

    def __enter__(self) -> None:
        _active[self._gateway] = _active.get(self._gateway, 0) + 1

    def __exit__(self, *exc: object) -> None:
        _active[self._gateway] = _active.get(self._gateway, 1) - 1
