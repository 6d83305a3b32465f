"""``subscriptions/listen`` (2026-07-28): the response is the stream of the sandbox's change notifications.

The client names what it wants (``toolsListChanged``, ``promptsListChanged``, ``resourcesListChanged``,
``resourceSubscriptions``: URIs); the stream's first event acknowledges the subset the gateway will
honor, every later one is a notification of that subset, each tagged with the listen request's id
(``_meta["io.modelcontextprotocol/subscriptionId"]``). List changes come from
:meth:`Gateway.listen`; resource updates from the upstream owning each URI, which is subscribed to
it for as long as the stream lasts. The stream ends when the client closes it, or (the result, a
graceful close) when the gateway stops.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson

from gateway.upstream.errors import UpstreamError

if TYPE_CHECKING:
    from starlette.types import Receive, Send

    from gateway.core.gateway import Gateway
    from gateway.core.pipeline import Caller

logger = logging.getLogger("gateway.modern")

# A callable in the request's scope (set by gateway.web.app.McpGuard): the POST stops counting toward
# the sandbox's concurrent-request limit. A listen stream calls it once open: it may last for hours.
INFLIGHT_RELEASE_KEY = "gateway.release_inflight"
SUBSCRIPTION_ID_META_KEY = "io.modelcontextprotocol/subscriptionId"
SERVER_INFO_META_KEY = "io.modelcontextprotocol/serverInfo"
PING_SECONDS = 15.0
MAX_BACKLOG = 1024
LIST_CHANGED = {
    "notifications/tools/list_changed": "toolsListChanged",
    "notifications/prompts/list_changed": "promptsListChanged",
    "notifications/resources/list_changed": "resourcesListChanged",
}
_SSE_HEADERS = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache, no-transform"),
    (b"x-accel-buffering", b"no"),
]


class ListenStream:
    """One ``subscriptions/listen`` request, served until the client leaves or the gateway stops."""

    open_streams: set[ListenStream] = set()

    def __init__(
        self, gateway: Gateway, caller: Caller, request_id: Any, params: dict[str, Any], info: dict[str, Any]
    ) -> None:
        self.gateway = gateway
        self.caller = caller
        self.request_id = request_id
        self.info = info
        wanted = params.get("notifications")
        self.wanted: dict[str, Any] = wanted if isinstance(wanted, dict) else {}
        self.meta = {SUBSCRIPTION_ID_META_KEY: request_id}
        self.queue: asyncio.Queue[tuple[str, dict[str, Any]] | None] = asyncio.Queue(MAX_BACKLOG)
        self.uris: list[str] = []

    # -- what reaches the stream ----------------------------------------------------------

    async def _on_sandbox_notification(self, method: str, params: dict[str, Any]) -> None:
        if self.wanted.get(LIST_CHANGED.get(method, "")) is True:
            self._enqueue(method, {})

    async def send_resource_updated(self, uri: str) -> None:
        """Called by the sandbox router for an upstream's ``notifications/resources/updated``."""
        if uri in self.uris:
            self._enqueue("notifications/resources/updated", {"uri": uri})

    def _enqueue(self, method: str, params: dict[str, Any]) -> None:
        try:
            self.queue.put_nowait((method, params))
        except asyncio.QueueFull:
            logger.warning("a listen stream of sandbox %s stopped reading; ending it", self.caller.sandbox)
            self.close()

    def close(self) -> None:
        """End the stream gracefully (its result is the last event)."""
        while True:
            try:
                self.queue.put_nowait(None)
                return
            except asyncio.QueueFull:
                self.queue.get_nowait()

    # -- serving ------------------------------------------------------------------------------

    async def serve(self, receive: Receive, send: Send, release: Callable[[], None] | None = None) -> None:
        honored = await self._subscribe()
        remove = self.gateway.listen(self.caller.sandbox, self._on_sandbox_notification)
        self.open_streams.add(self)
        disconnected = asyncio.ensure_future(_disconnect(receive))
        try:
            await send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS})
            ack = {"notifications": honored, "_meta": self.meta}
            await send(_event({"jsonrpc": "2.0", "method": "notifications/subscriptions/acknowledged", "params": ack}))
            if release is not None:
                release()
            while True:
                getter = asyncio.ensure_future(self.queue.get())
                done, _ = await asyncio.wait(
                    {getter, disconnected}, timeout=PING_SECONDS, return_when=asyncio.FIRST_COMPLETED
                )
                if disconnected in done:
                    getter.cancel()
                    return
                if getter not in done:
                    getter.cancel()
                    await send({"type": "http.response.body", "body": b": ping\r\n\r\n", "more_body": True})
                    continue
                item = getter.result()
                if item is None:
                    result = {"resultType": "complete", "_meta": {**self.meta, SERVER_INFO_META_KEY: self.info}}
                    body = _frame({"jsonrpc": "2.0", "id": self.request_id, "result": result})
                    await send({"type": "http.response.body", "body": body, "more_body": False})
                    return
                method, params = item
                message = {"jsonrpc": "2.0", "method": method, "params": {**params, "_meta": self.meta}}
                await send(_event(message))
        finally:
            disconnected.cancel()
            remove()
            self.open_streams.discard(self)
            await self._unsubscribe()

    async def _subscribe(self) -> dict[str, Any]:
        """Subscribe upstream to the wanted resources; the filter the gateway honors (for the ack)."""
        honored: dict[str, Any] = {key: True for key in LIST_CHANGED.values() if self.wanted.get(key) is True}
        uris = self.wanted.get("resourceSubscriptions")
        if isinstance(uris, list) and uris:
            router = self.gateway.router(self.caller.sandbox)
            for uri in uris:
                if not isinstance(uri, str) or uri in self.uris:
                    continue
                try:
                    await router.subscribe(self.caller.principal, uri, self)
                except UpstreamError as exc:
                    logger.info("listen: resource %s of sandbox %s not subscribed: %s", uri, self.caller.sandbox, exc)
                    continue
                self.uris.append(uri)
            if self.uris:
                honored["resourceSubscriptions"] = list(self.uris)
        return honored

    async def _unsubscribe(self) -> None:
        if not self.uris:
            return
        router = self.gateway.live_routers().get(self.caller.sandbox)
        if router is None:
            return
        for uri in self.uris:
            try:
                await router.unsubscribe(self.caller.principal, uri, self)
            except Exception:
                logger.debug("listen: unsubscribing %s failed", uri, exc_info=True)


def close_all() -> None:
    """The gateway is stopping: every listen stream ends gracefully."""
    for stream in list(ListenStream.open_streams):
        stream.close()


def _frame(message: dict[str, Any]) -> bytes:
    return b"event: message\r\ndata: " + orjson.dumps(message) + b"\r\n\r\n"


def _event(message: dict[str, Any]) -> dict[str, Any]:
    return {"type": "http.response.body", "body": _frame(message), "more_body": True}


async def _disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
