"""Serve a stdio MCP server over streamable HTTP, one child process per session, no gateway.

This is the yardstick for the conformance fixture: it bridges the very stdio process the
gateway would spawn (`tests/fixtures/conformance_server.py` by default) onto the MCP SDK's
`StreamableHTTPServerTransport`, so the conformance suite can be pointed at the fixture
alone and its results compared with the gateway's.

Routing of what the child sends (the part a real gateway must also get right):
- responses go to the POST stream of the request they answer (the transport does that by id);
- `notifications/progress` goes to the request whose `_meta.progressToken` it carries;
- other notifications and server-to-client requests (logging, sampling, elicitation) go to
  the request stream when exactly one request is in flight, else to the standalone GET stream.

Usage: python tests/conformance/serve_direct.py [--port 0] [-- COMMAND...]
Prints `listening on http://127.0.0.1:<port>/mcp` once ready; stops on SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import uvicorn
from anyio.abc import TaskGroup, TaskStatus
from mcp.server.streamable_http import (
    EventCallback,
    EventMessage,
    EventStore,
    StreamableHTTPServerTransport,
)
from mcp.shared.message import ServerMessageMetadata, SessionMessage
from mcp_types import JSONRPCMessage, jsonrpc_message_adapter
from starlette.types import Receive, Scope, Send

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "conformance_server.py"
LOCAL_HOSTS = {"127.0.0.1", "localhost", "[::1]"}
IDLE_TIMEOUT_S = 120.0
RETRY_INTERVAL_MS = 1000

log = logging.getLogger("serve_direct")


class MemoryEventStore(EventStore):
    """Keeps every event in memory so a client can resume a stream with Last-Event-ID."""

    def __init__(self) -> None:
        self._events: list[tuple[str, str, JSONRPCMessage | None]] = []

    async def store_event(self, stream_id: str, message: JSONRPCMessage | None) -> str:
        event_id = f"{len(self._events) + 1}"
        self._events.append((event_id, stream_id, message))
        return event_id

    async def replay_events_after(self, last_event_id: str, send_callback: EventCallback) -> str | None:
        index = next((i for i, (eid, _, _) in enumerate(self._events) if eid == last_event_id), None)
        if index is None:
            return None
        stream_id = self._events[index][1]
        for event_id, sid, message in self._events[index + 1 :]:
            if sid == stream_id and message is not None:
                await send_callback(EventMessage(message, event_id))
        return stream_id


@dataclass
class Session:
    """One client session: its transport, its child process and the requests in flight."""

    command: list[str]
    transport: StreamableHTTPServerTransport
    in_flight: dict[str, Any] = field(default_factory=dict)  # request id -> progress token (or None)

    def related_request(self, msg: dict[str, Any]) -> str | None:
        """The client request an unsolicited child message belongs to, if it can be told."""
        if msg.get("method") == "notifications/progress":
            token = (msg.get("params") or {}).get("progressToken")
            for rid, tok in self.in_flight.items():
                if tok is not None and tok == token:
                    return rid
        if len(self.in_flight) == 1:
            return next(iter(self.in_flight))
        return None

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        async with self.transport.connect() as (read, write), contextlib.AsyncExitStack() as stack:
            proc = await anyio.open_process(self.command, stderr=None)
            stack.push_async_callback(_stop_process, proc)
            assert proc.stdin is not None and proc.stdout is not None
            scope = self.transport.idle_scope or anyio.CancelScope()
            task_status.started()
            with scope:
                async with anyio.create_task_group() as tg:

                    async def to_child() -> None:
                        async for item in read:
                            if isinstance(item, Exception):
                                continue
                            msg = item.message.model_dump(by_alias=True, mode="json", exclude_unset=True)
                            if "method" in msg and "id" in msg:
                                meta = (msg.get("params") or {}).get("_meta") or {}
                                self.in_flight[str(msg["id"])] = meta.get("progressToken")
                            await proc.stdin.send(json.dumps(msg, separators=(",", ":")).encode() + b"\n")
                        tg.cancel_scope.cancel()

                    async def from_child() -> None:
                        buffer = b""
                        async for chunk in proc.stdout:
                            buffer += chunk
                            while b"\n" in buffer:
                                line, buffer = buffer.split(b"\n", 1)
                                if line.strip():
                                    await self._forward(write, json.loads(line))
                        tg.cancel_scope.cancel()

                    tg.start_soon(to_child)
                    tg.start_soon(from_child)

    async def _forward(self, write: Any, msg: dict[str, Any]) -> None:
        related: str | None = None
        if "method" not in msg:
            self.in_flight.pop(str(msg.get("id")), None)
        else:
            related = self.related_request(msg)
        metadata = ServerMessageMetadata(related_request_id=related) if related is not None else None
        await write.send(SessionMessage(jsonrpc_message_adapter.validate_python(msg), metadata=metadata))


async def _stop_process(proc: anyio.abc.Process) -> None:
    with contextlib.suppress(Exception):
        if proc.stdin is not None:
            await proc.stdin.aclose()
    with anyio.move_on_after(2):
        await proc.wait()
        return
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    await proc.wait()


def _host_ok(value: str) -> bool:
    host = value.rsplit(":", 1)[0] if not value.endswith("]") else value
    return host in LOCAL_HOSTS


def _origin_ok(origin: str) -> bool:
    for scheme in ("http://", "https://"):
        if origin.startswith(scheme):
            return _host_ok(origin[len(scheme) :].rstrip("/"))
    return False


class DirectApp:
    """ASGI app: `/mcp` per-session bridge, `/healthz`; refuses non-loopback Host/Origin."""

    def __init__(self, command: list[str], tg: TaskGroup) -> None:
        self.command = command
        self.tg = tg
        self.sessions: dict[str, Session] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] == "/healthz":
            await _plain(send, 200, b'{"status":"ok"}')
            return
        if scope["path"] != "/mcp":
            await _plain(send, 404, b'{"error":"not_found"}')
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        if not _host_ok(headers.get("host", "")) or ("origin" in headers and not _origin_ok(headers["origin"])):
            await _plain(send, 403, b'{"error":"forbidden","message":"Host/Origin is not a loopback address"}')
            return
        sid = headers.get("mcp-session-id")
        if sid:
            session = self.sessions.get(sid)
            if session is None:
                await _plain(send, 404, b'{"error":"unknown_session"}')
                return
        elif scope["method"] == "POST":
            session = await self._new_session()
        else:
            await _plain(send, 400, b'{"error":"missing_session"}')
            return
        await session.transport.handle_request(scope, receive, send)

    async def _new_session(self) -> Session:
        sid = uuid.uuid4().hex
        transport = StreamableHTTPServerTransport(
            sid, event_store=MemoryEventStore(), retry_interval=RETRY_INTERVAL_MS, idle_timeout=IDLE_TIMEOUT_S
        )
        session = Session(self.command, transport)
        self.sessions[sid] = session

        async def run(*, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
            try:
                await session.run(task_status=task_status)
            except Exception:
                log.exception("session %s failed", sid)
            finally:
                self.sessions.pop(sid, None)

        await self.tg.start(run)
        return session


async def _plain(send: Send, status: int, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


class _Server(uvicorn.Server):
    """A uvicorn server that says when it is listening."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = anyio.Event()

    async def startup(self, sockets: list[Any] | None = None) -> None:
        await super().startup(sockets)
        self.ready.set()


async def serve(port: int, command: list[str]) -> None:
    async with anyio.create_task_group() as tg:
        app = DirectApp(command, tg)
        server = _Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))

        async def announce() -> None:
            await server.ready.wait()
            bound = server.servers[0].sockets[0].getsockname()[1]
            print(f"listening on http://127.0.0.1:{bound}/mcp", flush=True)

        tg.start_soon(announce)
        await server.serve()
        tg.cancel_scope.cancel()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: any free port)")
    parser.add_argument("command", nargs="*", help="stdio server command (default: the conformance fixture)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    command = args.command or [sys.executable, str(FIXTURE)]
    anyio.run(serve, args.port, command)


if __name__ == "__main__":
    main()
