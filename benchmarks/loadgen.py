"""A lean MCP load generator: raw JSON-RPC over HTTP/1.1 keep-alive, or over stdio pipes.

The client must not be the bottleneck on a 2-core machine, so it is not the ``mcp`` SDK client
(that one is used for correctness checks in ``run.py``). Each session is one TCP connection with
a hand-written HTTP/1.1 request and a minimal response parser (Content-Length, chunked, or
read-to-close bodies; ``application/json`` or ``text/event-stream``). Sessions are spread over a
few worker processes (``multiprocessing``, spawn) that each run an asyncio loop (uvloop when
installed). Every loop stops by itself at its deadline; the parent also kills any worker that
overstays its time.

Worker protocol over a ``multiprocessing`` pipe (parent <-> worker)::

    worker: ("ready", [pids])  parent: "go"     worker: ("done", stats)   parent: "close"
    idle mode:                 parent: "check"  worker: ("checked", stats) parent: "close"

Standalone use (one scenario, prints a JSON line)::

    python benchmarks/loadgen.py --url http://127.0.0.1:8811/mcp --token-file ~/.mcp-gateway/token \\
        --tool echo__echo --sessions 16 --workers 2 --duration 5
    python benchmarks/loadgen.py --stdio "python benchmarks/echo_server.py" --sessions 8 --duration 5
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import multiprocessing as mp
import os
import resource
import shlex
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

try:
    import orjson

    _loads: Callable[[bytes | str], Any] = orjson.loads

    def _dumps(obj: Any) -> bytes:
        return orjson.dumps(obj)

except ImportError:  # pragma: no cover - orjson is a project dependency
    _loads = json.loads

    def _dumps(obj: Any) -> bytes:
        return json.dumps(obj, separators=(",", ":")).encode()


PROTOCOL_VERSION = "2025-11-25"
CLIENT_INFO = {"name": "mcp-bench-loadgen", "version": "1.0.0"}
STREAM_LIMIT = 128 * 1024 * 1024  # big results arrive as one line / one chunk


class CallError(Exception):
    """A request failed: HTTP status, JSON-RPC error, or a tool error result."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


BUSY = (429, 503)  # "retry shortly": a gateway's in-flight or session limit


async def with_backoff(fn: Callable[[], Any], attempts: int = 8) -> Any:
    """``await fn()``, retried with backoff while the server answers busy (setup and checks only:
    the measured loops count a busy answer as an error)."""
    for i in range(attempts):
        try:
            return await fn()
        except CallError as exc:
            if exc.status not in BUSY or i == attempts - 1:
                raise
            await asyncio.sleep(min(1.0, 0.05 * 2**i))
    raise AssertionError("unreachable")


def _tool_call_tail(tool: str, arguments: dict[str, Any]) -> bytes:
    """The part of a tools/call body after the id (the id is spliced in per call)."""
    return b',"method":"tools/call","params":' + _dumps({"name": tool, "arguments": arguments}) + b"}"


def _check_reply(msg: dict[str, Any], rid: int) -> dict[str, Any]:
    if msg.get("id") != rid:
        raise CallError(f"reply id {msg.get('id')!r} != request id {rid}")
    if "error" in msg:
        raise CallError(f"JSON-RPC error {msg['error']}")
    result = msg.get("result")
    if not isinstance(result, dict):
        raise CallError("reply has no result")
    return result


# --------------------------------------------------------------------------- HTTP


def parse_sse(body: bytes) -> list[dict[str, Any]]:
    """The JSON messages in an SSE body (``data:`` lines joined per event)."""
    out: list[dict[str, Any]] = []
    data: list[bytes] = []
    for raw in body.split(b"\n"):
        line = raw[:-1] if raw.endswith(b"\r") else raw
        if not line:
            if data:
                out.append(_loads(b"\n".join(data)))
                data = []
        elif line.startswith(b"data:"):
            data.append(line[6:] if line[5:6] == b" " else line[5:])
    if data:
        out.append(_loads(b"\n".join(data)))
    return out


def _sse_event_message(event: bytes) -> dict[str, Any] | None:
    """The JSON message of one SSE event (already split off, ``\\n`` line ends), if it has data."""
    data = [ln[6:] if ln[5:6] == b" " else ln[5:] for ln in event.split(b"\n") if ln.startswith(b"data:")]
    return _loads(b"\n".join(data)) if data else None


class _Conn:
    """One keep-alive HTTP/1.1 connection."""

    __slots__ = ("reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @property
    def usable(self) -> bool:
        return not (self.writer.is_closing() or self.reader.at_eof())

    def close(self) -> None:
        self.writer.close()


class HttpSession:
    """One MCP session over keep-alive HTTP/1.1 connections (usually exactly one).

    Like the ``mcp`` SDK client (httpx and its connection pool), a call is done when its response
    arrives, also when the server keeps the SSE stream of that POST open afterwards: the rest of
    that stream is read in the background, and a call made meanwhile uses another connection.
    """

    def __init__(self, url: str, token: str | None = None, protocol: str = PROTOCOL_VERSION) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or parts.hostname not in ("127.0.0.1", "localhost"):
            raise ValueError(f"only http://127.0.0.1 URLs are allowed, got {url!r}")
        self.host = "127.0.0.1"
        self.port = parts.port or 80
        self.path = parts.path or "/"
        self.token = token
        self.protocol = protocol
        self.session_id: str | None = None
        self.idle: list[_Conn] = []
        self.draining: set[asyncio.Task[None]] = set()
        self.next_id = 0
        self.head = b""
        self._build_head()

    def _build_head(self) -> None:
        lines = [
            f"POST {self.path} HTTP/1.1",
            f"Host: {self.host}:{self.port}",
            "Content-Type: application/json",
            "Accept: application/json, text/event-stream",
        ]
        if self.session_id:
            lines.append(f"Mcp-Session-Id: {self.session_id}")
            lines.append(f"MCP-Protocol-Version: {self.protocol}")
        if self.token:
            lines.append(f"Authorization: Bearer {self.token}")
        self.head = ("\r\n".join(lines) + "\r\nContent-Length: ").encode("latin-1")

    async def _open(self) -> _Conn:
        reader, writer = await asyncio.open_connection(self.host, self.port, limit=STREAM_LIMIT)
        return _Conn(reader, writer)

    async def connect(self) -> None:
        if not self.idle:
            self.idle.append(await self._open())

    async def _send(self, request: bytes) -> tuple[_Conn, int, dict[bytes, bytes]]:
        """Send a request on a free connection; returns it with the response's status and headers."""
        conn: _Conn | None = None
        while self.idle and conn is None:
            conn = self.idle.pop()
            if not conn.usable:
                conn.close()
                conn = None
        reused = conn is not None
        if conn is None:
            conn = await self._open()
        conn.writer.write(request)
        try:
            head = await conn.reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            conn.close()
            # A kept-alive connection the server closed while idle (uvicorn's keep-alive timeout
            # is 5 s): no byte of an answer came back, so send once more on a fresh connection,
            # as every HTTP client does.
            if not reused or (isinstance(exc, asyncio.IncompleteReadError) and exc.partial):
                raise
            conn = await self._open()
            conn.writer.write(request)
            head = await conn.reader.readuntil(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        headers: dict[bytes, bytes] = {}
        for line in lines[1:]:
            if line:
                k, _, v = line.partition(b":")
                headers[k.strip().lower()] = v.strip()
        return conn, status, headers

    def _release(self, conn: _Conn, headers: dict[bytes, bytes]) -> None:
        if headers.get(b"connection", b"").lower() == b"close" or not conn.usable:
            conn.close()
        else:
            self.idle.append(conn)

    @staticmethod
    async def _next_chunk(reader: asyncio.StreamReader) -> bytes:
        """The next chunk of a chunked body; b"" at its end (trailers consumed)."""
        size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0], 16)
        if size == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":  # trailers
                pass
            return b""
        return (await reader.readexactly(size + 2))[:-2]

    async def _read_body(self, conn: _Conn, status: int, headers: dict[bytes, bytes]) -> bytes:
        """The whole body; the connection is released (or closed) afterwards."""
        reader = conn.reader
        if (length := headers.get(b"content-length")) is not None:
            body = await reader.readexactly(int(length)) if int(length) else b""
        elif headers.get(b"transfer-encoding", b"").lower() == b"chunked":
            chunks: list[bytes] = []
            while chunk := await self._next_chunk(reader):
                chunks.append(chunk)
            body = b"".join(chunks)
        elif status in (204, 304) or status < 200:
            body = b""
        else:
            body = await reader.read()
            headers[b"connection"] = b"close"
        self._release(conn, headers)
        return body

    async def _drain(self, conn: _Conn, headers: dict[bytes, bytes]) -> None:
        try:
            while await self._next_chunk(conn.reader):
                pass
        except BaseException:  # an error, or cancelled by aclose(): the connection is done for
            conn.close()
            raise
        self._release(conn, headers)

    async def _sse_until(self, conn: _Conn, headers: dict[bytes, bytes], rid: int) -> dict[str, Any]:
        """Read a chunked SSE body until the response to ``rid``; the rest drains in the background."""
        buf = b""
        while chunk := await self._next_chunk(conn.reader):
            buf += chunk
            if b"\r" in buf:
                buf = buf.replace(b"\r\n", b"\n")
            while (i := buf.find(b"\n\n")) >= 0:
                event, buf = buf[:i], buf[i + 2 :]
                msg = _sse_event_message(event)
                if msg is not None and msg.get("id") == rid and ("result" in msg or "error" in msg):
                    task = asyncio.ensure_future(self._drain(conn, headers))
                    self.draining.add(task)
                    task.add_done_callback(self.draining.discard)
                    return msg
        self._release(conn, headers)
        if buf.strip() and (msg := _sse_event_message(buf)) is not None and msg.get("id") == rid:
            return msg
        raise CallError("SSE stream ended without the response")

    async def post(self, body: bytes) -> tuple[int, dict[bytes, bytes], bytes]:
        conn, status, headers = await self._send(self.head + str(len(body)).encode() + b"\r\n\r\n" + body)
        return status, headers, await self._read_body(conn, status, headers)

    async def rpc_raw(self, body: bytes, rid: int) -> dict[str, Any]:
        return (await self._rpc_exchange(body, rid))[1]

    async def _rpc_exchange(self, body: bytes, rid: int) -> tuple[dict[bytes, bytes], dict[str, Any]]:
        conn, status, headers = await self._send(self.head + str(len(body)).encode() + b"\r\n\r\n" + body)
        sse = headers.get(b"content-type", b"").startswith(b"text/event-stream")
        if status == 200 and sse and headers.get(b"transfer-encoding", b"").lower() == b"chunked":
            return headers, await self._sse_until(conn, headers, rid)
        payload = await self._read_body(conn, status, headers)
        if status != 200:
            raise CallError(f"HTTP {status}: {payload[:200]!r}", status)
        if sse:
            for msg in parse_sse(payload):
                if msg.get("id") == rid and ("result" in msg or "error" in msg):
                    return headers, msg
            raise CallError("SSE stream ended without the response")
        return headers, _loads(payload)

    async def rpc(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        self.next_id += 1
        rid = self.next_id
        msg: dict[str, Any] = {"jsonrpc": "2.0", "id": rid, "method": method}
        if params is not None:
            msg["params"] = params
        return _check_reply(await self.rpc_raw(_dumps(msg), rid), rid)

    async def notify(self, method: str) -> None:
        status, _, payload = await self.post(_dumps({"jsonrpc": "2.0", "method": method}))
        if status not in (200, 202, 204):
            raise CallError(f"notification {method}: HTTP {status}: {payload[:200]!r}", status)

    async def initialize(self) -> dict[str, Any]:
        self.next_id += 1
        rid = self.next_id
        params = {"protocolVersion": self.protocol, "capabilities": {}, "clientInfo": CLIENT_INFO}
        body = _dumps({"jsonrpc": "2.0", "id": rid, "method": "initialize", "params": params})
        headers, msg = await with_backoff(lambda: self._rpc_exchange(body, rid))
        result = _check_reply(msg, rid)
        sid = headers.get(b"mcp-session-id")
        self.session_id = sid.decode("latin-1") if sid else None
        self.protocol = str(result.get("protocolVersion", self.protocol))
        self._build_head()
        await with_backoff(lambda: self.notify("notifications/initialized"))
        return result

    def make_call(self, tool: str, arguments: dict[str, Any]) -> Callable[[], Any]:
        """A zero-argument coroutine function doing one tools/call (the hot path)."""
        tail = _tool_call_tail(tool, arguments)

        async def call() -> dict[str, Any]:
            self.next_id += 1
            rid = self.next_id
            body = b'{"jsonrpc":"2.0","id":' + str(rid).encode() + tail
            result = _check_reply(await self.rpc_raw(body, rid), rid)
            if result.get("isError"):
                raise CallError(f"tool error: {str(result)[:200]}")
            return result

        return call

    async def delete(self) -> None:
        """End the session (DELETE /mcp); failures are ignored: the server may not support it."""
        if not self.session_id:
            return
        request = self.head.replace(b"POST ", b"DELETE ", 1) + b"0\r\n\r\n"

        async def exchange() -> None:
            conn, status, headers = await self._send(request)
            await self._read_body(conn, status, headers)

        with contextlib.suppress(Exception):
            await asyncio.wait_for(exchange(), 5)

    async def aclose(self) -> None:
        for task in list(self.draining):
            task.cancel()
        conns, self.idle = self.idle, []
        for conn in conns:
            conn.close()
        for conn in conns:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.writer.wait_closed(), 2)

    def pids(self) -> list[int]:
        return []


# --------------------------------------------------------------------------- stdio


class StdioSession:
    """One MCP session with its own server process, driven over its pipes."""

    def __init__(self, command: Sequence[str]) -> None:
        self.command = list(command)
        self.proc: asyncio.subprocess.Process | None = None
        self.next_id = 0

    async def connect(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            *self.command,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
            limit=STREAM_LIMIT,
            start_new_session=True,
        )

    async def rpc_raw(self, line: bytes, rid: int) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(line)
        stdout = self.proc.stdout
        while True:
            raw = await stdout.readline()
            if not raw:
                raise CallError("server closed stdout")
            msg = _loads(raw)
            if msg.get("id") == rid and ("result" in msg or "error" in msg):
                return msg

    async def rpc(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        self.next_id += 1
        rid = self.next_id
        msg: dict[str, Any] = {"jsonrpc": "2.0", "id": rid, "method": method}
        if params is not None:
            msg["params"] = params
        return _check_reply(await self.rpc_raw(_dumps(msg) + b"\n", rid), rid)

    async def initialize(self) -> dict[str, Any]:
        params = {"protocolVersion": PROTOCOL_VERSION, "capabilities": {}, "clientInfo": CLIENT_INFO}
        result = await self.rpc("initialize", params)
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(b'{"jsonrpc":"2.0","method":"notifications/initialized"}\n')
        return result

    def make_call(self, tool: str, arguments: dict[str, Any]) -> Callable[[], Any]:
        tail = _tool_call_tail(tool, arguments) + b"\n"

        async def call() -> dict[str, Any]:
            self.next_id += 1
            rid = self.next_id
            result = _check_reply(await self.rpc_raw(b'{"jsonrpc":"2.0","id":' + str(rid).encode() + tail, rid), rid)
            if result.get("isError"):
                raise CallError(f"tool error: {str(result)[:200]}")
            return result

        return call

    async def delete(self) -> None:
        return None

    async def aclose(self) -> None:
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(Exception):
            assert proc.stdin is not None
            proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), 2)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(proc.wait(), 2)

    def pids(self) -> list[int]:
        return [self.proc.pid] if self.proc is not None else []


Session = HttpSession | StdioSession


# --------------------------------------------------------------------------- worker process


@dataclass
class WorkerSpec:
    """What one worker process does. Plain data: it crosses a process boundary."""

    mode: str  # "load" or "idle"
    sessions: int
    url: str | None = None  # HTTP target
    token: str | None = None
    stdio_command: list[str] | None = None  # stdio target: one process per session
    tool: str = "echo"
    arguments: dict[str, Any] = field(default_factory=lambda: {"text": "hello"})
    expect_text: str | None = "hello"  # checked on warm-up calls
    duration: float = 5.0
    max_calls: int = 0  # per session; 0 = no cap (duration only)
    warmup: int = 20  # calls per session before the clock starts
    setup_concurrency: int = 32
    hard_timeout: float = 300.0


def _raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _new_session(spec: WorkerSpec) -> Session:
    if spec.stdio_command:
        return StdioSession(spec.stdio_command)
    assert spec.url is not None
    return HttpSession(spec.url, spec.token)


async def _recv(conn: Any) -> Any:
    """Wait for the parent's next message without blocking the event loop."""
    return await asyncio.get_running_loop().run_in_executor(None, conn.recv)


async def _open_sessions(spec: WorkerSpec) -> list[Session]:
    sem = asyncio.Semaphore(spec.setup_concurrency)
    sessions = [_new_session(spec) for _ in range(spec.sessions)]

    async def setup(s: Session) -> None:
        async with sem:
            await s.connect()
            await s.initialize()
            if spec.mode == "load":
                call = s.make_call(spec.tool, spec.arguments)
                for i in range(max(1, spec.warmup)):
                    result = await with_backoff(call)
                    if i == 0 and spec.expect_text is not None:
                        text = result["content"][0]["text"]
                        if text != spec.expect_text:
                            raise CallError(f"echo returned {text[:80]!r}, expected {spec.expect_text[:80]!r}")

    await asyncio.gather(*(setup(s) for s in sessions))
    return sessions


async def _closed_loop(call: Callable[[], Any], deadline: float, max_calls: int, lat: list[float]) -> int:
    """Call back to back until the deadline; returns the number of errors."""
    clock = time.perf_counter
    errors = 0
    n = 0
    while True:
        t0 = clock()
        if t0 >= deadline or (max_calls and n >= max_calls):
            return errors
        try:
            await call()
        except (CallError, OSError, asyncio.IncompleteReadError, ValueError):
            errors += 1
            if errors > 100:  # a broken target: stop hammering it
                return errors
            continue
        finally:
            n += 1
        lat.append(clock() - t0)


async def _worker(conn: Any, spec: WorkerSpec) -> None:
    sessions: list[Session] = []
    try:
        sessions = await _open_sessions(spec)
        conn.send(("ready", [p for s in sessions for p in s.pids()]))
        cmd = await _recv(conn)
        if spec.mode == "load" and cmd == "go":
            calls = [s.make_call(spec.tool, spec.arguments) for s in sessions]
            lat: list[float] = []
            t0 = time.perf_counter()
            deadline = t0 + spec.duration
            errs = await asyncio.gather(*(_closed_loop(c, deadline, spec.max_calls, lat) for c in calls))
            elapsed = time.perf_counter() - t0
            conn.send(("done", {"lat": lat, "errors": sum(errs), "elapsed": elapsed}))
            await _recv(conn)  # "close": the parent has read the CPU counters
        elif spec.mode == "idle" and cmd == "check":
            failures: list[str] = []

            async def ping(s: Session) -> bool:
                try:
                    await asyncio.wait_for(with_backoff(lambda: s.rpc("ping")), 30)
                    return True
                except Exception as exc:
                    failures.append(f"{type(exc).__name__}: {exc}")
                    return False

            sem = asyncio.Semaphore(spec.setup_concurrency)

            async def limited(s: Session) -> bool:
                async with sem:
                    return await ping(s)

            ok = await asyncio.gather(*(limited(s) for s in sessions))
            conn.send(("checked", {"ok": sum(ok), "failed": len(ok) - sum(ok), "errors": failures[:3]}))
            await _recv(conn)
    except Exception as exc:
        with contextlib.suppress(Exception):
            conn.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        sem = asyncio.Semaphore(64)

        async def close(s: Session) -> None:
            async with sem:
                await s.delete()
                await s.aclose()

        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.gather(*(close(s) for s in sessions)), 30)


def worker_main(conn: Any, spec: WorkerSpec) -> None:
    """Entry point of a worker process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops us
    _raise_nofile()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass

    async def bounded() -> None:
        try:
            await asyncio.wait_for(_worker(conn, spec), spec.hard_timeout)
        except TimeoutError:
            with contextlib.suppress(Exception):
                conn.send(("error", "worker hard timeout"))

    asyncio.run(bounded())


# --------------------------------------------------------------------------- parent side


CLK_TCK = os.sysconf("SC_CLK_TCK")


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), from /proc/<pid>/stat; 0 if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # fields 14 and 15 of stat(5)


def proc_rss_kb(pid: int) -> int:
    """VmRSS of a process in kB, from /proc/<pid>/status; 0 if it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def descendants(pid: int) -> list[int]:
    """All live descendants of a process (scans /proc once)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                ppid = int(f.read().rsplit(b")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted sequence (q in 0..100)."""
    if not sorted_values:
        return float("nan")
    k = max(0, min(len(sorted_values) - 1, math.ceil(q / 100 * len(sorted_values)) - 1))
    return sorted_values[k]


@dataclass
class LoadResult:
    sessions: int
    calls: int
    errors: int
    elapsed: float
    p50_ms: float
    p99_ms: float
    mean_ms: float
    calls_per_s: float
    cpu: dict[str, float]  # group name -> CPU seconds during the measured loop
    error_messages: list[str] = field(default_factory=list)

    def cpu_ms_per_call(self, group: str) -> float:
        return 1000 * self.cpu.get(group, float("nan")) / self.calls if self.calls else float("nan")


CpuGroups = Callable[[list[int]], dict[str, list[int]]]


def _split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


class WorkerPool:
    """Worker processes for one scenario; always stopped on exit."""

    def __init__(self, spec: WorkerSpec, workers: int) -> None:
        self.ctx = mp.get_context("spawn")
        self.workers = max(1, min(workers, spec.sessions))
        self.procs: list[Any] = []
        self.conns: list[Any] = []
        self.child_pids: list[int] = []
        for n in _split(spec.sessions, self.workers):
            parent_end, child_end = self.ctx.Pipe()
            sub = WorkerSpec(**{**spec.__dict__, "sessions": n})
            proc = self.ctx.Process(target=worker_main, args=(child_end, sub), daemon=True)
            proc.start()
            child_end.close()
            self.procs.append(proc)
            self.conns.append(parent_end)

    def gather(self, expect: str, timeout: float) -> list[Any]:
        """One message from every worker, all of kind ``expect``; raises on error or timeout."""
        out: list[Any] = []
        end = time.monotonic() + timeout
        for conn in self.conns:
            left = end - time.monotonic()
            if left <= 0 or not conn.poll(left):
                raise RuntimeError(f"worker did not answer {expect!r} within {timeout:.0f} s")
            kind, payload = conn.recv()
            if kind != expect:
                raise RuntimeError(f"worker failed: {payload}")
            out.append(payload)
        return out

    def broadcast(self, msg: str) -> None:
        for conn in self.conns:
            with contextlib.suppress(OSError):
                conn.send(msg)

    def close(self) -> None:
        """Let the workers close their sessions and exit; on an error or interrupt, kill them now."""
        failing = sys.exc_info()[0] is not None
        self.broadcast("close")
        end = time.monotonic() + (1 if failing else 35)
        for proc in self.procs:
            proc.join(timeout=max(0.0, end - time.monotonic()))
        for proc in self.procs:
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=5)
        for pid in self.child_pids:  # stdio servers the workers started, if a worker died
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
        for conn in self.conns:
            conn.close()


def run_load(spec: WorkerSpec, workers: int, cpu_groups: CpuGroups, setup_timeout: float = 120.0) -> LoadResult:
    """Run one closed-loop scenario and measure it. ``cpu_groups`` maps the workers' child pids
    (stdio servers) to named groups of processes whose CPU time is measured; the load generator's
    own processes are measured as the group ``client``."""
    spec.mode = "load"
    spec.hard_timeout = setup_timeout + spec.duration + 60
    pool = WorkerPool(spec, workers)
    try:
        pids = [p for r in pool.gather("ready", setup_timeout) for p in r]
        pool.child_pids = pids
        groups = {**cpu_groups(pids), "client": [p.pid for p in pool.procs]}
        before = {g: sum(proc_cpu_seconds(p) for p in ps) for g, ps in groups.items()}
        pool.broadcast("go")
        stats = pool.gather("done", spec.duration + 60)
        after = {g: sum(proc_cpu_seconds(p) for p in ps) for g, ps in groups.items()}
    finally:
        pool.close()
    lat = sorted(x for s in stats for x in s["lat"])
    elapsed = max(s["elapsed"] for s in stats)
    calls = len(lat)
    return LoadResult(
        sessions=spec.sessions,
        calls=calls,
        errors=sum(s["errors"] for s in stats),
        elapsed=elapsed,
        p50_ms=1000 * percentile(lat, 50),
        p99_ms=1000 * percentile(lat, 99),
        mean_ms=1000 * sum(lat) / calls if calls else float("nan"),
        calls_per_s=calls / elapsed if elapsed > 0 else 0.0,
        cpu={g: after[g] - before[g] for g in groups},
    )


@dataclass
class IdleResult:
    sessions: int
    rss_before_kb: int
    rss_after_kb: int
    ok: int
    failed: int
    open_s: float
    errors: list[str] = field(default_factory=list)

    @property
    def per_session_kb(self) -> float:
        return (self.rss_after_kb - self.rss_before_kb) / self.sessions if self.sessions else float("nan")


def run_idle(spec: WorkerSpec, workers: int, server_pid: int, settle: float = 2.0) -> IdleResult:
    """Open ``spec.sessions`` sessions, hold them idle, measure the server's RSS, ping them all."""
    spec.mode = "idle"
    spec.hard_timeout = 600
    rss_before = proc_rss_kb(server_pid)
    t0 = time.monotonic()
    pool = WorkerPool(spec, workers)
    try:
        pool.gather("ready", 300)
        open_s = time.monotonic() - t0
        time.sleep(settle)
        rss_after = proc_rss_kb(server_pid)
        pool.broadcast("check")
        checked = pool.gather("checked", 300)
    finally:
        pool.close()
    return IdleResult(
        sessions=spec.sessions,
        rss_before_kb=rss_before,
        rss_after_kb=rss_after,
        ok=sum(c["ok"] for c in checked),
        failed=sum(c["failed"] for c in checked),
        open_s=open_s,
        errors=[e for c in checked for e in c["errors"]][:3],
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--url", help="MCP endpoint, http://127.0.0.1:PORT/mcp")
    target.add_argument("--stdio", help="server command; one process per session")
    parser.add_argument("--token-file", help="file holding the bearer token")
    parser.add_argument("--tool", default="echo")
    parser.add_argument("--args", default='{"text":"hello"}', help="tool arguments (JSON)")
    parser.add_argument("--sessions", type=int, default=1)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--server-pid", type=int, help="measure this process's CPU time")
    args = parser.parse_args(argv)
    token = open(os.path.expanduser(args.token_file)).read().strip() if args.token_file else None
    arguments = json.loads(args.args)
    spec = WorkerSpec(
        mode="load",
        sessions=args.sessions,
        url=args.url,
        token=token,
        stdio_command=shlex.split(args.stdio) if args.stdio else None,
        tool=args.tool,
        arguments=arguments,
        expect_text=arguments.get("text"),
        duration=args.duration,
    )

    def groups(pids: list[int]) -> dict[str, list[int]]:
        if args.server_pid:
            return {"server": [args.server_pid]}
        return {"server": pids}

    result = run_load(spec, args.workers, groups)
    out = {**result.__dict__, "server_cpu_ms_per_call": result.cpu_ms_per_call("server")}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
