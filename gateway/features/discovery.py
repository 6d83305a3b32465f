"""Progressive tool discovery: big sandboxes show two search tools instead of hundreds of tools.

With discovery on, a session's ``tools/list`` holds ``gateway__find_tools`` (ranked search over
the tools the token may see: BM25 over names, descriptions and argument names),
``gateway__enable_tools`` (adds tools to this session's list and sends it
``notifications/tools/list_changed``) and the tools the session enabled. Every other tool the
token allows can still be called by its full name. Per sandbox: ``discovery`` is ``on``, ``off``
or ``auto`` (on when the token may see more than ``--discovery-limit`` tools).

Enabled tools are remembered per MCP session, in its record (``SessionState.features``, kept by
the session store: an ended session's state goes with it). Clients of the 2026-07-28 era have no session; for them
``gateway__enable_tools`` can only confirm the names, which they then call directly.
Nothing here ever reveals a tool the token may not see: every answer is built from the
token's own (filtered, redacted) tool list.
"""

from __future__ import annotations

import fnmatch
import functools
import logging
import math
import re
import weakref
from collections import Counter
from typing import TYPE_CHECKING, Any

from gateway.features import toolcache

if TYPE_CHECKING:
    from gateway.core.auth import Principal
    from gateway.core.gateway import Gateway
    from gateway.core.pipeline import Call, Handler, SessionState
    from gateway.core.router import SandboxRouter

logger = logging.getLogger("gateway.discovery")

FIND = "gateway__find_tools"
ENABLE = "gateway__enable_tools"
FEATURE_KEY = "discovery.enabled"  # in SessionState.features: the tool names the session enabled
DEFAULT_LIMIT = 10
MAX_LIMIT = 50

FIND_TOOL: dict[str, Any] = {
    "name": FIND,
    "description": (
        "Search this gateway's tools (there are too many to list). Returns the best matches, best first, with"
        " their descriptions. Then call gateway__enable_tools with the names you need, or call a tool directly"
        " by its full name."
    ),
    "inputSchema": {
        "type": "object",
        "properties": {
            "query": {"type": "string", "description": "What you want to do, in a few words"},
            "limit": {
                "type": "integer",
                "minimum": 1,
                "maximum": MAX_LIMIT,
                "default": DEFAULT_LIMIT,
                "description": "How many tools to return at most",
            },
        },
        "required": ["query"],
    },
    "outputSchema": {
        "type": "object",
        "properties": {
            "tools": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"name": {"type": "string"}, "description": {"type": "string"}},
                    "required": ["name", "description"],
                },
            }
        },
        "required": ["tools"],
    },
}
ENABLE_TOOL: dict[str, Any] = {
    "name": ENABLE,
    "description": "Add tools (full names from gateway__find_tools) to this session's tool list.",
    "inputSchema": {
        "type": "object",
        "properties": {"names": {"type": "array", "items": {"type": "string"}, "description": "Full tool names"}},
        "required": ["names"],
    },
}


# -- ranking: Okapi BM25 -------------------------------------------------------------------

WORD = re.compile(r"[A-Z]+(?![a-z])|[A-Za-z][a-z]*|[0-9]+")
STOP_WORDS = frozenset("a an and as at be by for from in into is it of on or the this to with".split())


@functools.lru_cache(maxsize=16384)
def tokens(text: str) -> tuple[str, ...]:
    """Words of ``text`` (``create_issue``, ``createIssue`` -> create, issue), lower case, plurals folded.

    Cached: argument names and descriptions repeat across tools and sandboxes share servers.
    """
    words = (w.lower() for w in WORD.findall(text))
    return tuple(_stem(w) for w in words if w not in STOP_WORDS)


def _stem(word: str) -> str:
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def tool_terms(tool: dict[str, Any]) -> list[str]:
    """What a tool is found by: its name (counted twice), description and argument names and descriptions."""
    name = tokens(str(tool.get("name", "")))
    terms = [*name, *name, *tokens(str(tool.get("description") or ""))]
    schema = tool.get("inputSchema")
    properties = schema.get("properties") if isinstance(schema, dict) else None
    if isinstance(properties, dict):
        for arg, spec in properties.items():
            terms += tokens(str(arg))
            if isinstance(spec, dict) and isinstance(spec.get("description"), str):
                terms += tokens(spec["description"])
    return terms


class BM25:
    """Okapi BM25 (k1=1.5, b=0.75) over small documents, with postings so a query touches only its terms."""

    def __init__(self, documents: list[list[str]], k1: float = 1.5, b: float = 0.75) -> None:
        self.k1, self.b = k1, b
        self.lengths = [len(d) for d in documents]
        self.average = (sum(self.lengths) / len(documents)) if documents else 0.0
        self.postings: dict[str, list[tuple[int, int]]] = {}
        for index, document in enumerate(documents):
            for term, count in Counter(document).items():
                self.postings.setdefault(term, []).append((index, count))
        n = len(documents)
        self.idf = {t: math.log(1 + (n - len(p) + 0.5) / (len(p) + 0.5)) for t, p in self.postings.items()}

    def scores(self, query: tuple[str, ...]) -> dict[int, float]:
        scores: dict[int, float] = {}
        for term in set(query):
            idf = self.idf.get(term)
            if idf is None:
                continue
            for index, tf in self.postings[term]:
                norm = self.k1 * (1 - self.b + self.b * self.lengths[index] / (self.average or 1.0))
                scores[index] = scores.get(index, 0.0) + idf * tf * (self.k1 + 1) / (tf + norm)
        return scores


class ToolIndex:
    def __init__(self, tools: list[dict[str, Any]]) -> None:
        self.tools = tools
        self.bm25 = BM25([tool_terms(t) for t in tools])

    def search(self, query: str, limit: int) -> list[dict[str, Any]]:
        scores = self.bm25.scores(tokens(query))
        best = sorted(scores.items(), key=lambda item: (-item[1], self.tools[item[0]].get("name", "")))[:limit]
        return [self.tools[i] for i, _ in best]


# -- per gateway state -----------------------------------------------------------------------


class Discovery:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self._modes: weakref.WeakKeyDictionary[SandboxRouter, str] = weakref.WeakKeyDictionary()
        self._pinned: weakref.WeakKeyDictionary[SandboxRouter, tuple[str, ...]] = weakref.WeakKeyDictionary()
        # router -> {token scope: (the tool list the index was built from, the index)}
        self._indexes: weakref.WeakKeyDictionary[SandboxRouter, dict[Any, tuple[list[str], ToolIndex]]] = (
            weakref.WeakKeyDictionary()
        )

    def mode(self, router: SandboxRouter) -> str:
        mode = self._modes.get(router)
        if mode is None:
            sandbox = self.gateway.sandbox(router.sandbox)
            mode = sandbox.discovery if sandbox is not None else self.gateway.settings.discovery
            mode = mode if mode in ("auto", "on", "off") else "auto"
            self._modes[router] = mode
        return mode

    def active(self, router: SandboxRouter, tools: list[dict[str, Any]]) -> bool:
        mode = self.mode(router)
        return mode == "on" or (mode == "auto" and len(tools) > self.gateway.settings.discovery_limit)

    def session_tools(
        self, router: SandboxRouter, session: SessionState | None, tools: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        if not self.active(router, tools):
            return tools
        enabled = set(session.features.get(FEATURE_KEY, ())) if session is not None else set()
        pinned = self.pinned(router)
        return [
            FIND_TOOL,
            ENABLE_TOOL,
            *(t for t in tools if t.get("name") in enabled or _matches(str(t.get("name")), pinned)),
        ]

    def pinned(self, router: SandboxRouter) -> tuple[str, ...]:
        pinned = self._pinned.get(router)
        if pinned is None:
            sandbox = self.gateway.sandbox(router.sandbox)
            pinned = self._pinned[router] = sandbox.pinned if sandbox is not None else ()
        return pinned

    def index(self, principal: Principal, router: SandboxRouter, tools: list[dict[str, Any]]) -> ToolIndex:
        scope = (principal.servers, principal.tools)
        names = [str(t.get("name")) for t in tools]
        per_router = self._indexes.setdefault(router, {})
        cached = per_router.get(scope)
        if cached is not None and cached[0] == names and cached[1].tools == tools:
            return cached[1]
        index = ToolIndex(tools)
        per_router[scope] = (names, index)
        return index

    async def call_tool(
        self,
        principal: Principal,
        router: SandboxRouter,
        name: str,
        arguments: dict[str, Any] | None,
        session: SessionState | None,
    ) -> dict[str, Any] | None:
        """Answer gateway__find_tools / gateway__enable_tools, or None when discovery does not handle ``name``."""
        if name not in (FIND, ENABLE) or self.mode(router) == "off":
            return None
        arguments = arguments or {}
        tools = await self.gateway.list_tools(principal, router)
        if name == FIND:
            return self._find(principal, router, tools, arguments)
        return await self._enable(tools, arguments, session)

    def _find(
        self, principal: Principal, router: SandboxRouter, tools: list[dict[str, Any]], arguments: dict[str, Any]
    ) -> dict[str, Any]:
        query = arguments.get("query")
        if not isinstance(query, str) or not query.strip():
            return _error("query must be a non-empty string: what you want to do, in a few words")
        limit = arguments.get("limit", DEFAULT_LIMIT)
        if isinstance(limit, bool) or not isinstance(limit, int | float):
            return _error(f"limit must be an integer from 1 to {MAX_LIMIT}")
        limit = max(1, min(MAX_LIMIT, int(limit)))
        found = self.index(principal, router, tools).search(query, limit)
        matches = [{"name": t["name"], "description": str(t.get("description") or "")} for t in found]
        if matches:
            lines = [f"{m['name']}: {m['description']}" for m in matches]
            text = "\n".join(lines) + f"\n\nEnable them with {ENABLE}, or call one directly by its name."
        else:
            text = "No tool matches that query. Try other words."
        return {"content": [{"type": "text", "text": text}], "structuredContent": {"tools": matches}, "isError": False}

    async def _enable(
        self, tools: list[dict[str, Any]], arguments: dict[str, Any], session: SessionState | None
    ) -> dict[str, Any]:
        names = arguments.get("names")
        if isinstance(names, str):
            names = [names]
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            return _error("names must be a non-empty list of full tool names (from gateway__find_tools)")
        visible = {str(t.get("name")) for t in tools}
        enabled = [n for n in dict.fromkeys(names) if n in visible]
        unknown = [n for n in dict.fromkeys(names) if n not in visible]
        if not enabled:
            return _error(f"no such tool: {', '.join(unknown)}. Use {FIND} to find tool names.")
        remembered = False
        if session is not None:
            before = list(session.features.get(FEATURE_KEY, ()))
            added = [n for n in enabled if n not in before]
            remembered = True
            if added:
                session.features[FEATURE_KEY] = before + added
                session.version += 1  # the session store keeps the change
                await self.gateway.notify_session(session.id, "notifications/tools/list_changed", {})
        text = f"Enabled: {', '.join(enabled)}."
        if not remembered:
            text += " This connection has no session to keep a tool list in: call them by these names."
        if unknown:
            text += f" Unknown (not enabled): {', '.join(unknown)}."
        structured = {"enabled": enabled, "unknown": unknown}
        return {"content": [{"type": "text", "text": text}], "structuredContent": structured, "isError": False}


def _matches(name: str, globs: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(name, glob) for glob in globs)


def _error(message: str) -> dict[str, Any]:
    return {"content": [{"type": "text", "text": message}], "isError": True}


class DiscoveryMiddleware:
    """Pipeline middleware: narrows tools/list per session and answers discovery's own two tools."""

    def __init__(self, discovery: Discovery) -> None:
        self.discovery = discovery

    async def __call__(self, call: Call, call_next: Handler) -> dict[str, Any]:
        if call.method == "tools/list":
            result = await call_next(call)
            router = self.discovery.gateway.router(call.caller.sandbox)
            return {**result, "tools": self.discovery.session_tools(router, call.caller.session, result["tools"])}
        if call.method == "tools/call":
            name = call.params.get("name")
            if name in (FIND, ENABLE):
                router = self.discovery.gateway.router(call.caller.sandbox)
                arguments = call.params.get("arguments")
                handled = await self.discovery.call_tool(
                    call.caller.principal,
                    router,
                    str(name),
                    arguments if isinstance(arguments, dict) else None,
                    call.caller.session,
                )
                if handled is not None:
                    return handled
        return await call_next(call)


_installed: weakref.WeakKeyDictionary[Gateway, Discovery] = weakref.WeakKeyDictionary()


def install(gateway: Gateway) -> None:
    """Feature hook (``serve.FEATURES``): discovery as the outermost middleware, and the tool record it lists from."""
    toolcache.install(gateway)
    if gateway not in _installed:
        discovery = _installed[gateway] = Discovery(gateway)
        gateway.middleware.insert(0, DiscoveryMiddleware(discovery))
