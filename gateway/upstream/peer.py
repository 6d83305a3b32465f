"""The JSON-RPC side of one upstream connection, whatever carries its bytes (stdio or HTTP).

One :class:`Peer` owns what the gateway hides from clients and servers alike: the gateway's own
request ids (a client's ids never go upstream), deadlines, cancellation, progress routing, and
the server-to-client requests (sampling, elicitation, roots) that must reach the client session
whose call caused them. A :class:`Transport` only moves messages: ``send`` one, ``receive``
them, ``close``. Messages are plain dicts parsed once with orjson.

A malformed message fails only the call it concerns, with a clear error, or is logged and
dropped when it concerns none; the read loop never stops for one.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.upstream.errors import (
    AMBIGUOUS_CALLER,
    INTERNAL_ERROR,
    METHOD_NOT_FOUND,
    REQUEST_TIMEOUT,
    SERVER_UNAVAILABLE,
    ConnectionClosed,
    ErrorReply,
    UpstreamError,
)
from gateway.upstream.transport import Received, Transport, TransportClosed, preview, sniff_response_id

logger = logging.getLogger("gateway.upstream")

NotificationHandler = Callable[[str, dict[str, Any]], Awaitable[None]]
RequestHandler = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]
ProgressHandler = Callable[[dict[str, Any]], Awaitable[None]]
LogHandler = Callable[[dict[str, Any]], Awaitable[None]]

# How long a finished call waits for its progress and log messages to reach the client.
DELIVERY_FLUSH_SECONDS = 5.0

CLIENT_PROTOCOL_VERSION = "2025-11-25"
# Every client capability the gateway can route to the client that made a call. Roots do not
# declare listChanged: one server process serves several clients whose roots differ, so the
# server must ask (roots/list, answered by the calling client) instead of caching one answer.
CLIENT_CAPABILITIES: dict[str, Any] = {
    "roots": {"listChanged": False},
    "sampling": {},
    "elicitation": {"form": {}, "url": {}},
}
CLIENT_INFO = {"name": "mcp-sandbox-gateway", "version": "0.1.0"}


@dataclass(frozen=True, slots=True)
class CallOrigin:
    """Who made a call: the client session (``owner``) and where its log messages go.

    The client-facing layer sets :data:`call_origin` around a call, so the layers in between
    (router, server) need not pass it along. A server-to-client request or a log message that
    does not say which request caused it is routed only when every call in flight on that
    server that could take it comes from the same client session.
    """

    owner: Hashable
    on_log: LogHandler | None = None


call_origin: contextvars.ContextVar[CallOrigin | None] = contextvars.ContextVar("call_origin", default=None)


@dataclass(slots=True)
class PendingCall:
    method: str
    future: asyncio.Future[dict[str, Any]]
    on_progress: ProgressHandler | None = None
    on_request: RequestHandler | None = None
    origin: CallOrigin | None = None
    # The last of this call's progress/log deliveries: each waits for the one before, so the
    # client sees them in the order the server sent them, and all before the call's result.
    delivery: asyncio.Task[None] | None = None


class Peer:
    """The gateway as the client of one upstream connection."""

    def __init__(
        self,
        server: str,
        transport: Transport,
        on_notification: NotificationHandler | None = None,
        on_closed: Callable[[], Awaitable[str]] | None = None,
    ) -> None:
        self.server = server
        self.transport = transport
        self._on_notification = on_notification
        self._on_closed = on_closed
        self._next_id = 0
        self._pending: dict[int, PendingCall] = {}
        self._closed_reason: str | None = None
        self._read_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    def start(self) -> None:
        self._read_task = asyncio.create_task(self._read_loop(), name=f"upstream-read-{self.server}")

    @property
    def closed(self) -> bool:
        return self._closed_reason is not None

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    # -- sending -------------------------------------------------------------------------

    async def _send(self, message: dict[str, Any]) -> None:
        if self._closed_reason is not None:
            raise ConnectionClosed(f"server {self.server!r} is not running ({self._closed_reason})")
        try:
            await self.transport.send(message)
        except TransportClosed as exc:
            raise ConnectionClosed(f"server {self.server!r} is not connected ({exc})") from None

    async def notify(self, method: str, params: dict[str, Any] | None = None) -> None:
        message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            message["params"] = params
        await self._send(message)

    async def initialize(self, timeout: float | None) -> dict[str, Any]:
        """The MCP handshake; returns the server's ``initialize`` result."""
        params = {
            "protocolVersion": CLIENT_PROTOCOL_VERSION,
            "capabilities": CLIENT_CAPABILITIES,
            "clientInfo": CLIENT_INFO,
        }
        result = await self.request("initialize", params, timeout=timeout)
        self.transport.protocol_version = str(result.get("protocolVersion") or CLIENT_PROTOCOL_VERSION)
        await self.notify("notifications/initialized")
        return result

    async def request(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        timeout: float | None = 60.0,
        on_progress: ProgressHandler | None = None,
        on_request: RequestHandler | None = None,
    ) -> dict[str, Any]:
        """Send a request and wait for its result; raise :class:`UpstreamError` on error or timeout.

        If the caller is cancelled or the deadline passes, ``notifications/cancelled`` is sent
        upstream for this request so the server can stop working on it.
        """
        self._next_id += 1
        request_id = self._next_id
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
        if params is not None:
            if on_progress is not None:
                params = {**params, "_meta": {**(params.get("_meta") or {}), "progressToken": request_id}}
            message["params"] = params
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        pending = PendingCall(method, future, on_progress, on_request, call_origin.get())
        self._pending[request_id] = pending
        try:
            await self._send(message)
            try:
                result = await asyncio.wait_for(future, timeout)
            except UpstreamError:
                await self._flush_deliveries(pending)  # progress sent before an error still arrives first
                raise
            await self._flush_deliveries(pending)
            return result
        except TimeoutError:
            await self._cancel_upstream(request_id, "timeout")
            raise UpstreamError(
                f"server {self.server!r} did not answer {method} within {timeout:g} s", REQUEST_TIMEOUT
            ) from None
        except asyncio.CancelledError:
            await self._cancel_upstream(request_id, "cancelled by the client")
            raise
        finally:
            self._pending.pop(request_id, None)
            self.transport.finished(request_id)

    @staticmethod
    async def _flush_deliveries(pending: PendingCall) -> None:
        """Let the call's progress and log messages reach the client before its result does."""
        if pending.delivery is not None and not pending.delivery.done():
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(pending.delivery), DELIVERY_FLUSH_SECONDS)

    async def _cancel_upstream(self, request_id: int, reason: str) -> None:
        if self._closed_reason is None and request_id in self._pending:
            with contextlib.suppress(UpstreamError):
                await self.notify("notifications/cancelled", {"requestId": request_id, "reason": reason})

    # -- receiving -----------------------------------------------------------------------

    async def _read_loop(self) -> None:
        try:
            async for item in self.transport.receive():
                try:
                    self._dispatch(item)
                except Exception:  # a bug must not stop the connection; the call concerned times out
                    logger.exception("handling a message from %s failed", self.server)
        except Exception as exc:
            logger.debug("reading from %s failed: %s", self.server, exc)
        broken = self.transport.broken
        if broken is not None:
            logger.warning("server %s: %s", self.server, broken)
            self.close(broken)  # fail the calls now; the owner finds out what became of the server
        reason = broken or "its output closed"
        if self._on_closed is not None:
            try:
                found = await self._on_closed()
                reason = broken or found
            except Exception:
                logger.exception("handling the end of %s failed", self.server)
        self.close(reason)

    def _fail(self, request_id: int | None, problem: str) -> bool:
        """Fail the call ``request_id`` with ``problem``; False when no such call is waiting."""
        pending = self._pending.get(request_id) if request_id is not None else None
        if pending is None or pending.future.done():
            return False
        pending.future.set_exception(
            UpstreamError(f"server {self.server!r} {problem} (answering {pending.method})", INTERNAL_ERROR)
        )
        return True

    def _dispatch(self, item: Received) -> None:
        if item.data is None:
            if item.problem is not None:
                if not self._fail(item.concerns, item.problem):
                    logger.warning("server %s: %s", self.server, item.problem)
            else:
                self._fail(item.concerns, "ended its answer without a JSON-RPC response")
            return
        try:
            message = orjson.loads(item.data)
        except orjson.JSONDecodeError:
            concerns = item.concerns if item.concerns is not None else sniff_response_id(item.data)
            if not self._fail(concerns, f"sent a message that is not valid JSON ({len(item.data)} bytes)"):
                logger.warning(
                    "server %s wrote a line that is not JSON-RPC (skipped): %r", self.server, preview(item.data)
                )
            return
        if isinstance(message, list):  # a JSON-RPC batch (protocol 2025-03-26)
            for each in message:
                self._dispatch_message(each, item.concerns)
        else:
            self._dispatch_message(message, item.concerns)

    def _dispatch_message(self, message: Any, concerns: int | None) -> None:
        if not isinstance(message, dict):
            if not self._fail(concerns, f"sent a JSON {type(message).__name__} instead of a JSON-RPC message"):
                logger.warning("server %s wrote a JSON value that is not a message (skipped)", self.server)
            return
        method = message.get("method")
        if isinstance(method, str):
            if message.get("id") is not None:
                self._spawn(self._answer_server_request(message, concerns))
            elif not self._route_to_call(message, concerns):
                self._spawn(self._handle_notification(message))
            return
        request_id = message.get("id")
        pending = self._pending.get(request_id) if type(request_id) is int else None
        if pending is None:
            late = type(request_id) is int and 0 < request_id <= self._next_id
            log = logger.debug if late else logger.warning
            log("server %s answered a request that is not waiting (id %r): dropped", self.server, request_id)
            return
        if pending.future.done():
            return
        if method is not None:
            pending.future.set_exception(self._malformed(pending.method, "a message whose method is not a string"))
        elif "error" in message:
            pending.future.set_exception(self._error_reply(pending.method, message["error"]))
        elif "result" in message:
            result = message["result"]
            if isinstance(result, dict):
                pending.future.set_result(result)
            else:
                kind = type(result).__name__ if result is not None else "null"
                pending.future.set_exception(self._malformed(pending.method, f"a {kind} result instead of an object"))
        else:
            pending.future.set_exception(self._malformed(pending.method, "neither a result nor an error"))

    def _malformed(self, method: str, what: str) -> UpstreamError:
        return UpstreamError(f"server {self.server!r} answered {method} with {what}", INTERNAL_ERROR)

    def _error_reply(self, method: str, error: Any) -> UpstreamError:
        """The server's error reply, or a clear error of ours when the reply itself is malformed."""
        if not isinstance(error, dict):
            return self._malformed(method, "an error that is not an object")
        code, text = error.get("code"), error.get("message")
        if type(code) is int:
            return ErrorReply.of(error)
        said = f": {str(text)[:500]}" if text is not None else ""
        return self._malformed(method, f"a malformed error (code {orjson.dumps(code).decode()[:40]}){said}")

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _route_to_call(self, message: dict[str, Any], concerns: int | None) -> bool:
        """Queue a progress or log message for the call it belongs to; False if it is not one of those.

        Done synchronously while reading, so the call is still in flight (its result, read
        later, cannot overtake it). Progress is matched by its token (the request id we sent);
        a log message by the request whose answer carried it, else :meth:`_caller` decides.
        """
        method = message["method"]
        params = message.get("params") if isinstance(message.get("params"), dict) else {}
        handler: Callable[[dict[str, Any]], Awaitable[None]] | None = None
        pending: PendingCall | None = None
        if method == "notifications/progress":
            token = params.get("progressToken")
            pending = self._pending.get(token) if type(token) is int else None
            handler = pending.on_progress if pending is not None else None
            if handler is None:
                return True  # progress for nobody (a finished call): dropped
        elif method == "notifications/message":
            pending = self._caller(lambda p: p.origin is not None and p.origin.on_log is not None, concerns)
            if pending is None or pending.origin is None:
                return False  # no single caller to attach it to: the server-wide handler logs it
            handler = pending.origin.on_log
        else:
            return False
        assert pending is not None and handler is not None
        previous = pending.delivery
        deliver_to = handler

        async def deliver() -> None:
            if previous is not None:
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    await previous
            try:
                await deliver_to(params)
            except Exception:  # a client that went away must not break the server's stream
                logger.debug("%s from %s could not be delivered", method, self.server, exc_info=True)

        task = asyncio.ensure_future(deliver())
        pending.delivery = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def _handle_notification(self, message: dict[str, Any]) -> None:
        params = message.get("params") if isinstance(message.get("params"), dict) else {}
        if self._on_notification is not None:
            try:
                await self._on_notification(message["method"], params)
            except Exception:
                logger.exception("handling %s from %s failed", message["method"], self.server)

    def _caller(self, usable: Callable[[PendingCall], bool], hint: Any = None) -> PendingCall | None:
        """The in-flight call a server-initiated message belongs to, if that can be told for sure.

        A hint naming one of our request ids settles it: the request whose HTTP response carried
        the message, or a ``progressToken`` (our request id). Otherwise: the newest usable call,
        provided every usable call comes from the same client session; with calls of several
        sessions in flight the answer is None (guessing could leak one session's data to another).
        """
        candidates = [p for p in self._pending.values() if usable(p) and not p.future.done()]
        if type(hint) is int:
            hinted = self._pending.get(hint)
            if hinted is not None and hinted in candidates:
                return hinted
        if not candidates:
            return None
        owners = {p.origin.owner if p.origin is not None else id(p) for p in candidates}
        return candidates[-1] if len(owners) == 1 else None

    async def _answer_server_request(self, message: dict[str, Any], concerns: int | None) -> None:
        method = message["method"]
        params = message.get("params") if isinstance(message.get("params"), dict) else {}
        reply: dict[str, Any] = {"jsonrpc": "2.0", "id": message["id"]}
        try:
            if method == "ping":
                reply["result"] = {}
            else:
                reply["result"] = await self._forward_request(method, params, concerns)
        except UpstreamError as exc:
            reply["error"] = {"code": exc.code, "message": exc.message}
        except Exception as exc:
            logger.warning("answering %s for %s failed: %s", method, self.server, exc)
            reply["error"] = {"code": INTERNAL_ERROR, "message": f"the client could not answer {method}"}
        with contextlib.suppress(UpstreamError):
            await self._send(reply)

    async def _forward_request(self, method: str, params: dict[str, Any], concerns: int | None) -> dict[str, Any]:
        """Ask the client whose call caused this request; refuse when that cannot be told for sure."""
        meta = params.get("_meta") if isinstance(params.get("_meta"), dict) else {}
        hint = concerns if concerns is not None else meta.get("progressToken")
        pending = self._caller(lambda p: p.on_request is not None, hint)
        if pending is not None and pending.on_request is not None:
            return await pending.on_request(method, params)
        if any(p.on_request is not None and not p.future.done() for p in self._pending.values()):
            raise UpstreamError(
                f"the gateway cannot tell which of several client sessions calling server {self.server!r}"
                f" caused this {method}; it is refused rather than sent to the wrong client",
                AMBIGUOUS_CALLER,
            )
        raise UpstreamError(
            f"no client call to server {self.server!r} is in progress to answer {method}",
            METHOD_NOT_FOUND,
        )

    # -- ending --------------------------------------------------------------------------

    def abort(self, reason: str) -> None:
        """Fail every call in flight now (the gateway is stopping), telling the server to stop them."""
        for request_id, pending in list(self._pending.items()):
            if pending.future.done():
                continue
            if self._closed_reason is None:
                cancel = {"requestId": request_id, "reason": reason}
                self._spawn(self._notify_quietly("notifications/cancelled", cancel))
            pending.future.set_exception(UpstreamError(f"server {self.server!r}: {reason}", SERVER_UNAVAILABLE))

    async def _notify_quietly(self, method: str, params: dict[str, Any]) -> None:
        with contextlib.suppress(UpstreamError):
            await self.notify(method, params)

    def close(self, reason: str) -> None:
        """Mark the connection dead and fail every in-flight call at once."""
        if self._closed_reason is not None:
            return
        self._closed_reason = reason
        for pending in list(self._pending.values()):
            if not pending.future.done():
                pending.future.set_exception(
                    ConnectionClosed(f"server {self.server!r} stopped: {reason}", SERVER_UNAVAILABLE)
                )

    async def aclose(self, reason: str = "stopped by the gateway") -> None:
        self.close(reason)
        with contextlib.suppress(Exception):
            await self.transport.close()
        if self._read_task is not None:
            self._read_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._read_task
        for task in list(self._tasks):
            task.cancel()
