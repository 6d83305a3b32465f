"""One running MCP server of one sandbox: start, initialize, call, crash, restart, stop.

The process is started on first need and reused by every session and call of the sandbox.
When it dies, its in-flight calls fail at once and the next call starts it again, with a
backoff; a server that keeps crashing is marked ``failed`` for a cool-down instead of being
restarted in a hot loop.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.features.redaction import NO_REDACTION, Redactor
from gateway.upstream.errors import SERVER_UNAVAILABLE, UpstreamError
from gateway.upstream.launch import LaunchSpec, ServerProcess, attach, spawn
from gateway.upstream.lists import ServerLists
from gateway.upstream.peer import Peer, ProgressHandler, RequestHandler
from gateway.upstream.stdio import StdioTransport
from gateway.upstream.transport import DEFAULT_MAX_MESSAGE_BYTES

logger = logging.getLogger("gateway.upstream")

CRASH_WINDOW_SECONDS = 60.0
MAX_CRASHES_IN_WINDOW = 5
FAILED_COOLDOWN_SECONDS = 30.0
STDERR_TAIL_LINES = 20


@dataclass(frozen=True, slots=True)
class ServerLimits:
    start_timeout: float = 60.0
    call_timeout: float = 300.0
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES


class UpstreamServer(ServerLists):
    """A stdio MCP server process and what the gateway knows about it."""

    def __init__(
        self,
        name: str,
        sandbox: str,
        launcher: Callable[[], Awaitable[LaunchSpec]],
        log_file: Path,
        limits: ServerLimits = ServerLimits(),
        redactor: Redactor = NO_REDACTION,
        on_list_changed: Callable[[UpstreamServer, str], Awaitable[None]] | None = None,
        on_notification: Callable[[UpstreamServer, str, dict[str, Any]], Awaitable[None]] | None = None,
    ) -> None:
        self.name = name
        self.sandbox = sandbox
        self._launcher = launcher
        self.log_file = log_file
        self.limits = limits
        self.redactor = redactor
        self._on_list_changed = on_list_changed
        self._on_notification = on_notification
        self.state = "stopped"  # stopped, starting, running, crashed, failed, stopping
        self.process: ServerProcess | None = None
        self.connection: Peer | None = None
        self.started_at: float | None = None
        self.restarts = 0
        self.starts = 0
        self.calls = 0
        self.last_error: str | None = None
        self.capabilities: dict[str, Any] = {}
        self.server_info: dict[str, Any] = {}
        self.tools: list[dict[str, Any]] = []
        self.prompts: list[dict[str, Any]] = []
        self.resources: list[dict[str, Any]] = []
        self.resource_templates: list[dict[str, Any]] = []
        self._crashes: collections.deque[float] = collections.deque(maxlen=MAX_CRASHES_IN_WINDOW)
        self._stderr_tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)
        self._start_lock = asyncio.Lock()
        self._stderr_task: asyncio.Task[None] | None = None
        self._launch: LaunchSpec | None = None
        self._stopping = False

    # -- status --------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        if self.process is not None and self.process.returncode is None and self.state in ("starting", "running"):
            return self.process.pid
        return None

    @property
    def uptime(self) -> float | None:
        return time.monotonic() - self.started_at if self.started_at and self.state == "running" else None

    def status(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "state": self.state,
            "pid": self.pid,
            "uptime_s": round(self.uptime, 1) if self.uptime is not None else None,
            "restarts": self.restarts,
            "last_error": self.last_error,
            "calls": self.calls,
        }

    def stderr_tail(self) -> str:
        return "\n".join(self._stderr_tail)

    # -- start ---------------------------------------------------------------------------

    async def ensure_running(self) -> Peer:
        connection = self.connection
        if connection is not None and not connection.closed and self.state == "running":
            return connection
        async with self._start_lock:
            connection = self.connection
            if connection is not None and not connection.closed and self.state == "running":
                return connection
            await self._wait_for_backoff()
            return await self._start()

    async def _wait_for_backoff(self) -> None:
        now = time.monotonic()
        recent = [t for t in self._crashes if now - t < CRASH_WINDOW_SECONDS]
        if len(recent) >= MAX_CRASHES_IN_WINDOW:
            retry_in = FAILED_COOLDOWN_SECONDS - (now - recent[-1])
            if retry_in > 0:
                if self.state != "failed":
                    logger.warning(
                        "server %s of sandbox %s crashed %d times in %g s: marked failed for %g s; last error: %s",
                        self.name,
                        self.sandbox,
                        len(recent),
                        CRASH_WINDOW_SECONDS,
                        FAILED_COOLDOWN_SECONDS,
                        self.last_error,
                    )
                self.state = "failed"
                raise UpstreamError(
                    f"server {self.name!r} crashed {len(recent)} times in {CRASH_WINDOW_SECONDS:g} s and is marked"
                    f" failed; it will be retried in {retry_in:.0f} s. Last error: {self.last_error}",
                    SERVER_UNAVAILABLE,
                )
            self._crashes.clear()
        elif len(recent) >= 2:
            await asyncio.sleep(min(0.25 * 2 ** (len(recent) - 2), 4.0))

    async def _start(self) -> Peer:
        if self._stopping:
            raise UpstreamError(f"server {self.name!r} is shutting down", SERVER_UNAVAILABLE)
        if self.starts:
            self.restarts += 1
        self.starts += 1
        self.state = "starting"
        self._stderr_tail.clear()
        if self.process is not None:
            await self._kill()  # whatever is left of the previous run (a broken pipe, a stuck child)
        try:
            await asyncio.wait_for(self._spawn_and_initialize(), self.limits.start_timeout)
        except TimeoutError:
            await self._kill()
            return self._start_failed(f"did not finish starting within {self.limits.start_timeout:g} s")
        except UpstreamError as exc:
            await self._kill()
            return self._start_failed(exc.message)
        except OSError as exc:
            await self._kill()
            return self._start_failed(f"could not be started: {exc.strerror or exc}")
        self.state = "running"
        self.started_at = time.monotonic()
        self.last_error = None if self.restarts == 0 else self.last_error
        assert self.connection is not None
        return self.connection

    def _start_failed(self, reason: str) -> Peer:
        reason = reason.removeprefix(f"server {self.name!r} ")
        tail = self.redactor.text(self.stderr_tail())
        self.last_error = reason + (f"; stderr: {tail[-500:]}" if tail else "")
        self.state = "failed"
        self._crashes.append(time.monotonic())
        logger.warning("server %s of sandbox %s failed to start: %s", self.name, self.sandbox, self.last_error)
        raise UpstreamError(f"server {self.name!r} {self.last_error}", SERVER_UNAVAILABLE)

    async def _spawn_and_initialize(self) -> None:
        spec = await self._launcher()
        self._launch = spec
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        # The servers of a sandbox start together (SandboxRouter.ensure_started): let the others
        # prepare their launch too before any of them is spawned, so that none is prepared while
        # the CPUs are busy with the others' starts. Preparing a host or bwrap launch waits on
        # nothing once the runtime probe is done (at startup), so one turn of the loop is enough;
        # a launch that does wait (a container image check) does not hold the others back.
        await asyncio.sleep(0)
        if self._stopping:
            raise UpstreamError(f"server {self.name!r} is shutting down", SERVER_UNAVAILABLE)
        self.process = await attach(spawn(spec), limit=1024 * 1024)
        if self._stopping:  # stop() ran while we were launching: this process must not outlive it
            raise UpstreamError(f"server {self.name!r} is shutting down", SERVER_UNAVAILABLE)
        assert self.process.stdout is not None and self.process.stdin is not None
        self._stderr_task = asyncio.create_task(self._pump_stderr(self.process))
        transport = StdioTransport(
            self.process.stdout,
            self.process.stdin,  # type: ignore[arg-type]
            self.limits.max_message_bytes,
        )
        connection = Peer(self.name, transport, on_notification=self._handle_notification, on_closed=self._exit_reason)
        connection.start()
        self.connection = connection
        result = await connection.initialize(timeout=None)
        self.capabilities = result.get("capabilities") or {}
        self.server_info = result.get("serverInfo") or {}
        await self.refresh_lists()

    async def _exit_reason(self) -> str:
        """Called when the server's output ends or breaks: find out why, and leave no process behind."""
        process = self.process
        if process is None:
            return "its output closed"
        broken = self.connection is not None and self.connection.closed  # e.g. an endless line
        if not broken:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(process.wait(), 1.0)
        if process.returncode is None or not self._stopping:
            # A server that closed its output, or broke the protocol, is of no further use; and a
            # crashed one may have left children in its process group.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(process.wait(), 5.0)
        if self._stderr_task is not None:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(self._stderr_task), 0.5)
        code = process.returncode
        if code is None:
            reason = "it closed its output"
        elif broken and code == -signal.SIGKILL:
            reason = "it broke the protocol and was killed"
        elif code < 0:
            reason = f"it was killed by signal {signal.Signals(-code).name}"
        else:
            reason = f"it exited with code {code}"
        if not self._stopping and self.state == "running":
            self.state = "crashed"
            self._crashes.append(time.monotonic())
            tail = self.redactor.text(self.stderr_tail())
            self.last_error = reason + (f"; stderr: {tail[-300:]}" if tail else "")
            logger.warning("server %s of sandbox %s stopped: %s", self.name, self.sandbox, self.last_error)
        return reason

    async def _pump_stderr(self, process: ServerProcess) -> None:
        """Copy the server's stderr to its own log file (redacted), keeping a short tail for errors."""
        assert process.stderr is not None
        lines = self.redactor.lines()  # also catches a secret split across lines (holds one back)

        def write(log: Any, part: bytes) -> None:
            log.write(part)
            self._stderr_tail.append(part.decode("utf-8", "replace").rstrip()[:500])

        with open(self.log_file, "ab") as log:
            try:
                while True:
                    try:
                        line = await process.stderr.readline()
                    except ValueError:  # a line over the limit: take what is there
                        line = await process.stderr.read(64 * 1024)
                    except (ConnectionError, asyncio.CancelledError):
                        break
                    if not line:
                        break
                    for part in lines.feed(line):
                        write(log, part)
                    log.flush()
            finally:
                rest = lines.flush()
                if rest:
                    write(log, rest)

    # -- lists ---------------------------------------------------------------------------

    async def _list_request(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        assert self.connection is not None
        return await self.connection.request(method, params, timeout=self.limits.start_timeout)

    # -- calls ---------------------------------------------------------------------------

    async def call(
        self,
        method: str,
        params: dict[str, Any],
        timeout: float | None = None,
        on_progress: ProgressHandler | None = None,
        on_request: RequestHandler | None = None,
    ) -> dict[str, Any]:
        connection = await self.ensure_running()
        self.calls += 1
        return await connection.request(
            method,
            params,
            timeout=timeout or self.limits.call_timeout,
            on_progress=on_progress,
            on_request=on_request,
        )

    # -- stop ----------------------------------------------------------------------------

    async def _kill(self, grace: float = 2.0) -> None:
        """Stop the process: close stdin, then SIGTERM, then SIGKILL, to its whole process group."""
        process = self.process
        connection = self.connection
        if connection is not None:
            await connection.aclose()
        if process is not None and process.returncode is None:
            with contextlib.suppress(Exception):
                if process.stdin is not None:
                    process.stdin.close()
            for sig, wait in ((None, grace / 2), (signal.SIGTERM, grace / 2), (signal.SIGKILL, 5.0)):
                if sig is not None:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(process.pid, sig)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(process.wait(), wait)
                    break
        if process is not None:
            # The group may hold children (npm wrappers) that outlived the leader.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
        if self._stderr_task is not None:
            self._stderr_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._stderr_task
        # Forget the process: its pid (and process group id) may be reused once it is reaped.
        self.process = None
        spec, self._launch = self._launch, None  # cleanup runs once per launch
        for command in spec.cleanup if spec else []:
            with contextlib.suppress(OSError):
                cleanup = await asyncio.create_subprocess_exec(
                    *command, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(cleanup.wait(), 15)

    def abort_calls(self, reason: str) -> None:
        """Fail the calls in flight at once and start no more (the gateway's grace period is over)."""
        self._stopping = True
        if self.connection is not None:
            self.connection.abort(reason)

    async def stop(self, grace: float = 1.0) -> None:
        """Stop for good (sandbox deleted, gateway exiting), including a start in progress.

        Killing the current process makes a start that is initializing it fail at once; a start
        still launching sees ``_stopping`` as soon as its process exists and kills it. Waiting for
        the start lock then guarantees no process of this server is left running.
        """
        self._stopping = True
        self.state = "stopping"
        await self._kill(grace)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._start_lock.acquire(), self.limits.start_timeout + 10)
            self._start_lock.release()
        await self._kill(grace)
        self.state = "stopped"
        self.connection = None

    async def idle_stop(self) -> None:
        """Stop to save resources; the next call starts the server again."""
        async with self._start_lock:
            if self.connection is not None and self.connection.in_flight:
                return
            self.state = "stopping"
            await self._kill()
            self.state = "stopped"
            self.connection = None
