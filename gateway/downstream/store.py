"""Where handshake-era sessions are kept: the :class:`SessionStore` protocol and its in-memory form.

A session record is a :class:`~gateway.core.pipeline.SessionState` (JSON values only: id, sandbox,
negotiated version, the client's capabilities and info, log level, what features keep per
session). The HTTP endpoint reads it on every request, stores it back when a request changed it
(its ``version`` went up), and touches it so it does not expire while in use. A shared store
(Redis, so several gateway replicas serve one session) implements the same protocol; what
lives only in one process (an open event stream, a server-to-client request waiting for the
client's answer) is never in the store.
"""

from __future__ import annotations

import time
from collections.abc import Collection
from typing import Protocol

from gateway.core.pipeline import SessionState


class SessionStore(Protocol):
    """Session records by id. Every method is a coroutine so a networked store fits the same shape."""

    async def get(self, session_id: str) -> SessionState | None:
        """The record, or None if there is none or it has expired."""

    async def put(self, state: SessionState) -> None:
        """Add or replace a record (and count it as used now)."""

    async def delete(self, session_id: str) -> SessionState | None:
        """Forget a record; the one forgotten, if any."""

    async def touch(self, session_id: str) -> None:
        """The session was used now: its idle time starts again."""

    async def count(self, sandbox: str | None = None) -> int:
        """Live sessions, of one sandbox or of all."""

    def counts(self) -> dict[str, int]:
        """Sessions per sandbox (sandboxes with none left out), for metrics; a networked store may
        answer from a recent snapshot."""

    async def expire(self, keep: Collection[str] = ()) -> list[SessionState]:
        """Remove and return the records idle too long, except those in ``keep`` (in use right now)."""


class MemorySessionStore:
    """Sessions in this process's memory, expiring after ``idle_timeout`` seconds without a request."""

    def __init__(self, idle_timeout: float | None) -> None:
        self.idle_timeout = idle_timeout
        self._states: dict[str, SessionState] = {}
        self._used: dict[str, float] = {}  # session id -> time.monotonic() of its last use

    def _expired(self, session_id: str, now: float) -> bool:
        return self.idle_timeout is not None and now - self._used.get(session_id, now) > self.idle_timeout

    async def get(self, session_id: str) -> SessionState | None:
        state = self._states.get(session_id)
        if state is None or self._expired(session_id, time.monotonic()):
            return None
        return state

    async def put(self, state: SessionState) -> None:
        self._states[state.id] = state
        self._used[state.id] = time.monotonic()

    async def delete(self, session_id: str) -> SessionState | None:
        self._used.pop(session_id, None)
        return self._states.pop(session_id, None)

    async def touch(self, session_id: str) -> None:
        if session_id in self._states:
            self._used[session_id] = time.monotonic()

    async def count(self, sandbox: str | None = None) -> int:
        if sandbox is None:
            return len(self._states)
        return sum(1 for state in self._states.values() if state.sandbox == sandbox)

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for state in self._states.values():
            counts[state.sandbox] = counts.get(state.sandbox, 0) + 1
        return counts

    async def expire(self, keep: Collection[str] = ()) -> list[SessionState]:
        now = time.monotonic()
        gone = [sid for sid in self._states if sid not in keep and self._expired(sid, now)]
        return [state for sid in gone if (state := await self.delete(sid)) is not None]
