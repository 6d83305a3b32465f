"""The answer to one handshake-era POST, and the channel back to its client while it is served.

A request is answered ``application/json`` unless something has to reach the client before the
answer: an upstream's progress or log message, or a server-to-client request (sampling,
elicitation, roots). The first of those turns the response into an event stream (SSE) that
carries them in order, then the answer. :class:`PostResponse` is the request's
:class:`~gateway.core.pipeline.ClientChannel`.

A server-to-client request goes out with the gateway's own id (``gw-<n>``, unique within the
session); the client POSTs its JSON-RPC response back on the same session, and
:meth:`LiveSession.resolve` hands it to the waiting upstream call.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson

from gateway.downstream import wire
from gateway.downstream.relay import LOG_LEVELS, progress_message, relay_refusal
from gateway.upstream.errors import METHOD_NOT_FOUND, UpstreamError

if TYPE_CHECKING:
    from starlette.types import Send

    from gateway.core.pipeline import SessionState
    from gateway.features.redaction import Redactor


class LiveSession:
    """What one process holds for a session besides its stored record: nothing of it is shared.

    Its open event stream (GET), the server-to-client requests waiting for the client's answer,
    and the calls in flight (for ``notifications/cancelled``).
    """

    __slots__ = ("__weakref__", "busy", "calls", "cancelled", "ids", "pending", "state", "stop_listening", "stream")

    def __init__(self, state: SessionState) -> None:
        self.state = state
        self.busy = 0  # requests in flight here (an open stream included): the session does not expire
        self.stream: Any = None  # the open GET stream (gateway/downstream/handshake.py), if any
        self.pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self.calls: dict[Any, asyncio.Task[Any]] = {}
        self.cancelled: set[Any] = set()  # request ids the client cancelled, being stopped
        self.ids = itertools.count(1)
        self.stop_listening: Callable[[], None] = _nothing

    async def notify(self, method: str, params: dict[str, Any]) -> None:
        """A notification for this session alone (resources/updated, discovery's tools/list_changed)."""
        self.push(method, params)

    def push(self, method: str, params: dict[str, Any] | None = None) -> None:
        """A notification for this session's event stream; dropped when none is open (as the spec allows)."""
        if self.stream is not None:
            message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
            if params:
                message["params"] = params
            self.stream.push(orjson.dumps(message))

    def resolve(self, message: dict[str, Any]) -> None:
        """The client's answer to a server-to-client request; unknown ids are ignored."""
        request_id = message.get("id")
        future = self.pending.get(request_id) if isinstance(request_id, str) else None
        if future is None or future.done():
            return
        error = message.get("error")
        if isinstance(error, dict):
            code = error.get("code")
            text = error.get("message")
            future.set_exception(
                UpstreamError(
                    text if isinstance(text, str) else "the client refused the request",
                    code if isinstance(code, int) and not isinstance(code, bool) else -32603,
                    error.get("data"),
                )
            )
        else:
            result = message.get("result")
            future.set_result(result if isinstance(result, dict) else {})

    def close(self) -> None:
        """The session ended: its waiting requests fail, its calls stop, its stream ends."""
        for future in self.pending.values():
            if not future.done():
                future.set_exception(UpstreamError("the client's session ended", METHOD_NOT_FOUND))
        for request_id, task in list(self.calls.items()):
            if request_id not in self.cancelled:
                self.cancelled.add(request_id)  # answered "cancelled", as if the client had cancelled it
                task.cancel()
        if self.stream is not None:
            self.stream.end()


class PostResponse:
    """One POST's response: JSON by default, an event stream once something must precede the answer."""

    __slots__ = ("finished", "live", "progress_token", "redactor", "request_id", "send", "streaming")

    def __init__(self, send: Send, live: LiveSession, request_id: Any, progress_token: Any, redactor: Redactor) -> None:
        self.send = send
        self.live = live
        self.request_id = request_id
        self.progress_token = progress_token
        self.redactor = redactor
        self.streaming = False
        self.finished = False

    # -- ClientChannel ---------------------------------------------------------------------

    async def progress(self, params: dict[str, Any]) -> None:
        if self.progress_token is None or self.finished:
            return
        forwarded = progress_message(params, self.progress_token, self.redactor)
        await self._event(orjson.dumps({"jsonrpc": "2.0", "method": "notifications/progress", "params": forwarded}))

    async def log(self, params: dict[str, Any]) -> None:
        if self.finished:
            return
        level = params.get("level")
        if level not in LOG_LEVELS:
            return
        minimum = self.live.state.log_level
        if minimum in LOG_LEVELS and LOG_LEVELS.index(level) < LOG_LEVELS.index(minimum):
            return
        forwarded: dict[str, Any] = {"level": level, "data": self.redactor.value(params.get("data"))}
        if isinstance(params.get("logger"), str):
            forwarded["logger"] = params["logger"]
        await self._event(orjson.dumps({"jsonrpc": "2.0", "method": "notifications/message", "params": forwarded}))

    async def request(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        refusal = relay_refusal(method, params, self.live.state.capabilities)
        if refusal is not None:
            raise UpstreamError(refusal, METHOD_NOT_FOUND)
        if self.finished:
            raise UpstreamError(f"the request that could carry {method} to the client is over", METHOD_NOT_FOUND)
        request_id = f"gw-{next(self.live.ids)}"
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.live.pending[request_id] = future
        try:
            message = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": self.redactor.value(params)}
            await self._event(orjson.dumps(message))
            return await future
        finally:
            self.live.pending.pop(request_id, None)

    # -- the answer ------------------------------------------------------------------------

    async def answer(self, body: bytes) -> None:
        if self.finished:
            return
        if self.streaming:
            await self._event(body, last=True)
            return
        self.finished = True
        await wire.respond(self.send, 200, body, self.live.state.id)

    async def _event(self, data: bytes, last: bool = False) -> None:
        if self.finished:
            return
        if not self.streaming:
            self.streaming = True
            await self.send(wire.sse_start(self.live.state.id))
        if last:
            self.finished = True
        await self.send({"type": "http.response.body", "body": wire.sse_event(data), "more_body": not last})


def _nothing() -> None:
    return None
