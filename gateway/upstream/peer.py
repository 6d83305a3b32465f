"""Who made an upstream call, so what the server sends back during it reaches that client."""

from __future__ import annotations

import contextvars
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Any

NotificationHandler = Callable[[str, dict[str, Any]], Awaitable[None]]
RequestHandler = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]
ProgressHandler = Callable[[dict[str, Any]], Awaitable[None]]
LogHandler = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class CallOrigin:
    """Who made a call: the client session (``owner``) and where its log messages go.

    The client-facing layer sets :data:`call_origin` around a call, so the layers in between
    (router, server) need not pass it along. A server-to-client request or a log message does
    not say which request caused it; the gateway routes one only when every call in flight on
    that server that could take it comes from the same client session.
    """

    owner: Hashable
    on_log: LogHandler | None = None


call_origin: contextvars.ContextVar[CallOrigin | None] = contextvars.ContextVar("call_origin", default=None)
