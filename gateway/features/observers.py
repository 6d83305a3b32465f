"""Call observers as pipeline middleware: every tools/call becomes a :class:`CallRecord` for them.

Metrics and the audit log (``gateway/web/observe.py`` installs them) see names and sizes, never
values: which tool of which server, the argument names, the outcome, how long it took in all
and upstream, and how big the result was. Discovery's own tools (``gateway__*``) are answered
before this middleware and are not recorded.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson

from gateway.core.gateway import CallRecord
from gateway.upstream.errors import INVALID_PARAMS, UpstreamError

if TYPE_CHECKING:
    from gateway.core.gateway import Gateway
    from gateway.core.pipeline import Call, Handler

logger = logging.getLogger("gateway.observers")

Observer = Callable[[CallRecord], None]


class ObserveCalls:
    """Middleware: time and classify each tools/call, then hand the record to every observer."""

    def __init__(self, gateway: Gateway, observers: list[Observer] | None = None) -> None:
        self.gateway = gateway
        self.observers: list[Observer] = observers if observers is not None else []

    async def __call__(self, call: Call, call_next: Handler) -> dict[str, Any]:
        if call.method != "tools/call" or not self.observers:
            return await call_next(call)
        params = call.params
        name = params.get("name")
        arguments = params.get("arguments")
        caller = call.caller
        record = CallRecord(
            time=time.time(),
            sandbox=caller.sandbox,
            session=caller.session.id if caller.session is not None else None,
            tool=name if isinstance(name, str) else "",
            args=sorted(arguments) if isinstance(arguments, dict) else [],
        )
        started = time.perf_counter()
        try:
            result = await call_next(call)
        except UpstreamError as exc:
            unknown = exc.code == INVALID_PARAMS
            record.outcome = "unknown_tool" if unknown else "error"
            record.error = "UnknownTool" if unknown else type(exc).__name__
            raise
        except BaseException as exc:
            record.outcome = "cancelled" if isinstance(exc, asyncio.CancelledError) else "error"
            record.error = type(exc).__name__
            raise
        else:
            record.outcome = "tool_error" if result.get("isError") else "ok"
            record.result_bytes = len(orjson.dumps(result))
            return result
        finally:
            finished = time.perf_counter()
            record.duration_ms = (finished - started) * 1000
            if call.upstream_started is not None:
                record.upstream_ms = (finished - call.upstream_started) * 1000
            router = self.gateway.live_routers().get(caller.sandbox)
            route = router.tool_routes().get(record.tool) if router is not None else None
            record.server = route.server if route else None
            for observer in self.observers:
                try:
                    observer(record)
                except Exception:
                    logger.exception("a call observer failed")
