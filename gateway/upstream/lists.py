"""What a server offers (tools, prompts, resources), fetched and refreshed the same way for every upstream,
and what becomes of its notifications that no call is waiting for."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from gateway.features.redaction import Redactor
from gateway.upstream.errors import UpstreamError

logger = logging.getLogger("gateway.upstream")

LIST_CHANGED = {
    "notifications/tools/list_changed": "tools",
    "notifications/prompts/list_changed": "prompts",
    "notifications/resources/list_changed": "resources",
}
MAX_PAGES = 100  # a paginator that never ends cannot hang us


class ServerLists:
    """Mixin for upstreams: keeps the lists and refreshes them on ``*/list_changed``.

    The class using it provides ``name``, ``sandbox``, ``redactor``, ``capabilities``,
    ``_on_list_changed``, ``_on_notification`` and :meth:`_list_request`.
    """

    name: str
    sandbox: str
    redactor: Redactor
    capabilities: dict[str, Any]
    tools: list[dict[str, Any]]
    prompts: list[dict[str, Any]]
    resources: list[dict[str, Any]]
    resource_templates: list[dict[str, Any]]
    _on_list_changed: Callable[[Any, str], Awaitable[None]] | None
    _on_notification: Callable[[Any, str, dict[str, Any]], Awaitable[None]] | None

    async def _list_request(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    async def _list_all(self, method: str, key: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        cursor: str | None = None
        for _ in range(MAX_PAGES):
            result = await self._list_request(method, {"cursor": cursor} if cursor else {})
            items.extend(item for item in result.get(key) or [] if isinstance(item, dict))
            cursor = result.get("nextCursor")
            if not cursor:
                break
        return items

    async def refresh_lists(self, which: str | None = None) -> None:
        caps = self.capabilities
        if caps.get("tools") is not None and which in (None, "tools"):
            self.tools = await self._list_all("tools/list", "tools")
        if caps.get("prompts") is not None and which in (None, "prompts"):
            self.prompts = await self._list_all("prompts/list", "prompts")
        if caps.get("resources") is not None and which in (None, "resources"):
            self.resources = await self._list_all("resources/list", "resources")
            try:
                self.resource_templates = await self._list_all("resources/templates/list", "resourceTemplates")
            except UpstreamError:
                self.resource_templates = []

    async def refresh_on_list_changed(self, method: str) -> bool:
        """Handle a ``*/list_changed`` notification; False when ``method`` is not one."""
        kind = LIST_CHANGED.get(method)
        if kind is None:
            return False
        try:
            await self.refresh_lists(kind)
        except UpstreamError as exc:
            logger.warning("refreshing %s of %s failed: %s", kind, self.name, exc.message)
            return True
        if self._on_list_changed is not None:
            await self._on_list_changed(self, kind)
        return True

    async def _handle_notification(self, method: str, params: dict[str, Any]) -> None:
        """A notification no call is waiting for: list changes refresh; the rest go to the router."""
        if await self.refresh_on_list_changed(method):
            return
        if self._on_notification is not None:
            await self._on_notification(self, method, params)
        elif method == "notifications/message":  # not attributable to one caller: keep it in our log
            data = str(self.redactor.value(params.get("data")))[:500]
            logger.debug("server %s of sandbox %s logged (%s): %s", self.name, self.sandbox, params.get("level"), data)
