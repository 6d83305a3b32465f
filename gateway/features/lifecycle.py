"""Sandbox lifecycle: expiry on time, and idle sandboxes' servers stopped until needed again.

A :class:`Reaper` service wakes up every ``tick`` seconds and

- deletes every sandbox whose ``expires_at`` has passed (as ``DELETE /admin/sandboxes/{id}``
  does: its servers stop, its secrets are erased, its tokens stop working);
- stops the server processes of sandboxes no request has reached for ``idle_timeout``
  seconds (``settings.idle_timeout``: ``--idle-timeout`` or ``$MCP_GATEWAY_IDLE_TIMEOUT``). A server with a call
  in flight is left alone. The sandbox itself stays: the next request starts its servers again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from gateway.core.gateway import Gateway

logger = logging.getLogger("gateway.lifecycle")

MAX_TICK_SECONDS = 1.0


def idle_timeout(gateway: Gateway) -> float:
    """Seconds without requests after which a sandbox's servers stop (0 or less: never)."""
    return float(gateway.settings.idle_timeout)


class Reaper:
    """The background task that expires sandboxes and stops idle servers."""

    def __init__(self, gateway: Gateway, idle_after: float | None = None, tick: float | None = None) -> None:
        self.gateway = gateway
        self.idle_after = idle_timeout(gateway) if idle_after is None else idle_after
        default_tick = min(MAX_TICK_SECONDS, self.idle_after / 4) if self.idle_after > 0 else MAX_TICK_SECONDS
        self.tick = tick if tick is not None else max(0.05, default_tick)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="sandbox-reaper")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                await self.sweep()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("the sandbox reaper failed; it will try again")
            await asyncio.sleep(self.tick)

    async def sweep(self) -> None:
        await self.expire()
        if self.idle_after > 0:
            await self.stop_idle()

    async def expire(self) -> None:
        gateway = self.gateway
        for sandbox_id in gateway.store.expired_ids():
            if await gateway.delete_sandbox(sandbox_id):
                logger.info("sandbox %s expired and was deleted", sandbox_id)

    async def stop_idle(self) -> None:
        gateway = self.gateway
        now = time.monotonic()
        for sandbox_id, router in list(gateway.live_routers().items()):
            last = gateway.last_used(sandbox_id)
            if last is None or now - last < self.idle_after:
                continue
            running = [s for s in router.servers.values() if s.state == "running"]
            busy = [s for s in running if s.connection is not None and s.connection.in_flight]
            idle = [s for s in running if s not in busy]
            if not idle:
                continue
            await asyncio.gather(*(s.idle_stop() for s in idle), return_exceptions=True)
            stopped = [s.name for s in idle if s.state == "stopped"]
            if stopped:
                logger.info(
                    "sandbox %s idle for %.0f s: stopped %s (they start again on the next request)",
                    sandbox_id,
                    now - last,
                    ", ".join(stopped),
                )


def install(gateway: Gateway) -> None:
    gateway.services.append(Reaper(gateway))
