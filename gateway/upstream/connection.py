"""A lean JSON-RPC 2.0 connection over an MCP server's stdin/stdout.

We do not use the SDK's ``ClientSession`` here: a gateway must own what it hides (request
ids, deadlines, cancellation, progress routing, huge or endless lines) and the per-call path
should stay thin. Messages are plain dicts parsed once with orjson; ids are the gateway's own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
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
from gateway.upstream.peer import CallOrigin, NotificationHandler, ProgressHandler, RequestHandler, call_origin

logger = logging.getLogger("gateway.upstream")

DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
READ_CHUNK = 256 * 1024


# How long a finished call waits for its progress and log messages to reach the client.
DELIVERY_FLUSH_SECONDS = 5.0


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
    extra: dict[str, Any] = field(default_factory=dict)


class StdioConnection:
    """Owns the framing and request bookkeeping of one running server process."""

    def __init__(
        self,
        server: str,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        on_notification: NotificationHandler | None = None,
        on_request: RequestHandler | None = None,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        on_eof: Callable[[], Awaitable[str]] | None = None,
    ) -> None:
        self.server = server
        self._on_eof = on_eof
        self._reader = reader
        self._writer = writer
        self._on_notification = on_notification
        self._on_request = on_request
        self._max = max_message_bytes
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

    def _write(self, message: dict[str, Any]) -> None:
        if self._closed_reason is not None:
            raise ConnectionClosed(f"server {self.server!r} is not running ({self._closed_reason})")
        try:
            self._writer.write(orjson.dumps(message) + b"\n")
        except (ConnectionError, RuntimeError) as exc:
            raise ConnectionClosed(f"server {self.server!r} closed its input ({exc})") from None

    async def notify(self, method: str, params: dict[str, Any] | None = None) -> None:
        message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            message["params"] = params
        self._write(message)
        with contextlib.suppress(ConnectionError):
            await self._writer.drain()

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
                meta = dict(params.get("_meta") or {})
                meta["progressToken"] = request_id
                params = {**params, "_meta": meta}
            message["params"] = params
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        pending = PendingCall(method, future, on_progress, on_request, call_origin.get())
        self._pending[request_id] = pending
        try:
            self._write(message)
            await self._writer.drain()
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
        except ConnectionError as exc:
            raise ConnectionClosed(f"server {self.server!r} closed its input ({exc})") from None
        finally:
            self._pending.pop(request_id, None)

    @staticmethod
    async def _flush_deliveries(pending: PendingCall) -> None:
        """Let the call's progress and log messages reach the client before its result does."""
        if pending.delivery is not None and not pending.delivery.done():
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(pending.delivery), DELIVERY_FLUSH_SECONDS)

    async def _cancel_upstream(self, request_id: int, reason: str) -> None:
        if self._closed_reason is None and request_id in self._pending:
            with contextlib.suppress(UpstreamError, ConnectionError, RuntimeError):
                await self.notify("notifications/cancelled", {"requestId": request_id, "reason": reason})

    # -- receiving -----------------------------------------------------------------------

    async def _read_loop(self) -> None:
        """Split stdout into lines of any size up to the limit; a longer line breaks the connection.

        A server that writes a line over the limit (or one that never ends) cannot be resynchronised
        cheaply or safely, so the connection is closed at once (its calls fail with that reason) and
        the server is treated as crashed: memory stays bounded by the limit.
        """
        buffer = bytearray()
        broken: str | None = None
        try:
            while broken is None:
                chunk = await self._reader.read(READ_CHUNK)
                if not chunk:
                    break
                start = 0
                while True:
                    newline = chunk.find(b"\n", start)
                    if newline < 0:
                        buffer += chunk[start:]
                        if len(buffer) > self._max:
                            broken = (
                                f"it sent a message over the {self._max / (1024 * 1024):g} MiB limit"
                                " (an endless or oversized line); the connection was closed"
                            )
                            buffer = bytearray()
                        break
                    if len(buffer) + newline - start > self._max:
                        broken = f"it sent a message over the {self._max / (1024 * 1024):g} MiB limit"
                        buffer = bytearray()
                        break
                    buffer += chunk[start:newline]
                    if buffer.strip():
                        self._dispatch(bytes(buffer))
                    buffer.clear()
                    start = newline + 1
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            logger.debug("read from %s failed: %s", self.server, exc)
        if broken is not None:
            logger.warning("server %s: %s", self.server, broken)
            self.close(broken)  # fail the calls now; the process is dealt with by on_eof
        reason = broken or "its output closed"
        if self._on_eof is not None:
            try:
                found = await self._on_eof()
                reason = broken or found
            except Exception:
                logger.exception("handling the end of %s failed", self.server)
        self.close(reason)

    def _dispatch(self, line: bytes) -> None:
        try:
            message = orjson.loads(line)
        except orjson.JSONDecodeError:
            preview = line[:80].decode("utf-8", "replace")
            logger.warning("server %s wrote a line that is not JSON-RPC (skipped): %r", self.server, preview)
            return
        if not isinstance(message, dict):
            logger.warning("server %s wrote a JSON value that is not a message (skipped)", self.server)
            return
        if "method" in message:
            if "id" in message and message["id"] is not None:
                self._spawn(self._answer_server_request(message))
            elif not self._route_to_call(message):
                self._spawn(self._handle_notification(message))
            return
        request_id = message.get("id")
        pending = self._pending.get(request_id) if isinstance(request_id, int) else None
        if pending is None or pending.future.done():
            return  # a late answer to a cancelled or timed-out request
        if "error" in message:
            pending.future.set_exception(ErrorReply.of(message["error"]))
        else:
            result = message.get("result")
            pending.future.set_result(result if isinstance(result, dict) else {})

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _route_to_call(self, message: dict[str, Any]) -> bool:
        """Queue a progress or log message for the call it belongs to; False if it is not one of those.

        Done synchronously while reading, so the call is still in flight (its result, on a later
        line, cannot overtake it). Progress is matched by its token (the request id we sent);
        a log message carries no request id, so it goes to the newest in-flight call that relays logs.
        """
        method = message["method"]
        params = message.get("params") if isinstance(message.get("params"), dict) else {}
        handler: Callable[[dict[str, Any]], Awaitable[None]] | None = None
        pending: PendingCall | None = None
        if method == "notifications/progress":
            token = params.get("progressToken")
            pending = self._pending.get(token) if isinstance(token, int) and not isinstance(token, bool) else None
            handler = pending.on_progress if pending is not None else None
            if handler is None:
                return True  # progress for nobody (a finished call): dropped
        elif method == "notifications/message":
            pending = self._caller(lambda p: p.origin is not None and p.origin.on_log is not None)
            if pending is None or pending.origin is None:
                return False  # no single caller to attach it to: the server-wide handler logs it
            handler = pending.origin.on_log
        else:
            return False
        assert pending is not None
        previous = pending.delivery

        async def deliver() -> None:
            if previous is not None:
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    await previous
            try:
                await handler(params)
            except Exception:  # a client that went away must not break the server's stream
                logger.debug("%s from %s could not be delivered", method, self.server, exc_info=True)

        task = asyncio.ensure_future(deliver())
        pending.delivery = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def _handle_notification(self, message: dict[str, Any]) -> None:
        method = message["method"]
        params = message.get("params") if isinstance(message.get("params"), dict) else {}
        if self._on_notification is not None:
            try:
                await self._on_notification(method, params)
            except Exception:
                logger.exception("handling %s from %s failed", method, self.server)

    def _caller(self, usable: Callable[[PendingCall], bool], hint: Any = None) -> PendingCall | None:
        """The in-flight call a server-initiated message belongs to, if that can be told for sure.

        A ``progressToken`` hint naming one of our request ids settles it. Otherwise: the newest
        usable call, provided every usable call comes from the same client session; with calls
        of several sessions in flight the answer is None (guessing could leak one session's data
        to another).
        """
        candidates = [p for p in self._pending.values() if usable(p) and not p.future.done()]
        if isinstance(hint, int) and not isinstance(hint, bool):
            hinted = self._pending.get(hint)
            if hinted is not None and hinted in candidates:
                return hinted
        if not candidates:
            return None
        owners = {p.origin.owner if p.origin is not None else id(p) for p in candidates}
        return candidates[-1] if len(owners) == 1 else None

    def _request_handler(self, params: dict[str, Any]) -> tuple[RequestHandler | None, bool]:
        """Server-to-client requests go to the call that caused them (see :meth:`_caller`).

        Returns the handler, and whether the caller was ambiguous.
        """
        meta = params.get("_meta") if isinstance(params.get("_meta"), dict) else {}
        pending = self._caller(lambda p: p.on_request is not None, meta.get("progressToken"))
        if pending is not None:
            return pending.on_request, False
        if any(p.on_request is not None and not p.future.done() for p in self._pending.values()):
            return None, True
        return self._on_request, False

    async def _answer_server_request(self, message: dict[str, Any]) -> None:
        method = message["method"]
        params = message.get("params") if isinstance(message.get("params"), dict) else {}
        reply: dict[str, Any] = {"jsonrpc": "2.0", "id": message["id"]}
        if method == "ping":
            reply["result"] = {}
        else:
            handler, ambiguous = self._request_handler(params)
            try:
                if ambiguous:
                    raise UpstreamError(
                        f"the gateway cannot tell which of several client sessions calling server {self.server!r}"
                        f" caused this {method}; it is refused rather than sent to the wrong client",
                        AMBIGUOUS_CALLER,
                    )
                if handler is None:
                    raise UpstreamError(f"no client can answer {method} right now", METHOD_NOT_FOUND)
                reply["result"] = await handler(method, params)
            except UpstreamError as exc:
                reply["error"] = {"code": exc.code, "message": exc.message}
            except Exception as exc:
                logger.warning("answering %s for %s failed: %s", method, self.server, exc)
                reply["error"] = {"code": INTERNAL_ERROR, "message": f"the client could not answer {method}"}
        with contextlib.suppress(UpstreamError):
            self._write(reply)

    def abort(self, reason: str) -> None:
        """Fail every call in flight now (the gateway is stopping), telling the server to stop them."""
        for request_id, pending in list(self._pending.items()):
            if pending.future.done():
                continue
            if self._closed_reason is None:
                with contextlib.suppress(UpstreamError):
                    self._write(
                        {
                            "jsonrpc": "2.0",
                            "method": "notifications/cancelled",
                            "params": {"requestId": request_id, "reason": reason},
                        }
                    )
            pending.future.set_exception(UpstreamError(f"server {self.server!r}: {reason}", SERVER_UNAVAILABLE))

    def _fail_pending(self, reason: str, code: int = INTERNAL_ERROR) -> None:
        for pending in list(self._pending.values()):
            if not pending.future.done():
                pending.future.set_exception(UpstreamError(reason, code))

    def close(self, reason: str) -> None:
        """Mark the connection dead and fail every in-flight call at once."""
        if self._closed_reason is not None:
            return
        self._closed_reason = reason
        self._fail_pending(f"server {self.server!r} stopped: {reason}", SERVER_UNAVAILABLE)
        with contextlib.suppress(Exception):
            self._writer.close()

    async def aclose(self) -> None:
        self.close("stopped by the gateway")
        if self._read_task is not None:
            self._read_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._read_task
        for task in list(self._tasks):
            task.cancel()
