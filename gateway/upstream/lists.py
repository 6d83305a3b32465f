"""What a server offers (tools, prompts, resources), fetched and refreshed the same way for every upstream."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

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

    The class using it provides ``name``, ``capabilities``, ``limits.start_timeout``,
    ``_on_list_changed`` and :meth:`_list_request`.
    """

    name: str
    capabilities: dict[str, Any]
    tools: list[dict[str, Any]]
    prompts: list[dict[str, Any]]
    resources: list[dict[str, Any]]
    resource_templates: list[dict[str, Any]]
    _on_list_changed: Callable[[Any, str], Awaitable[None]] | None

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
