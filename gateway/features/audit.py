"""The audit log: one JSON line per tool call in ``<data-dir>/audit.log``, rotated by size.

A line holds names and sizes, never values: time, sandbox, session, tool, server, duration,
outcome, error class, the argument *names* and the result size. Files are created 0600.
Reading back (for ``GET /admin/audit``) walks the files from the newest line backwards and
stops as soon as it has enough, so it stays cheap however large the log grows.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from gateway.core.gateway import CallRecord

DEFAULT_MAX_BYTES = 10 * 1024 * 1024
DEFAULT_BACKUPS = 5
DEFAULT_LIMIT = 100
MAX_LIMIT = 10_000
READ_CHUNK = 64 * 1024
MAX_TOOL_CHARS = 200
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def format_time(epoch: float) -> str:
    """ISO 8601 in UTC with milliseconds: sorts as text in time order."""
    # Whole milliseconds by integer arithmetic, so a time read back and parsed formats the same.
    stamp = EPOCH + dt.timedelta(milliseconds=round(epoch * 1000))
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"


def parse_time(text: str) -> float:
    """Epoch seconds from a number or an ISO 8601 time (a time without a zone is UTC)."""
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        pass
    stamp = dt.datetime.fromisoformat(text)
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=dt.UTC)
    return stamp.timestamp()


def entry_for(record: CallRecord) -> dict[str, Any]:
    upstream_ms = getattr(record, "upstream_ms", None)
    return {
        "time": format_time(record.time),
        "sandbox": record.sandbox,
        "session": record.session,
        "tool": record.tool[:MAX_TOOL_CHARS],
        "server": record.server,
        "duration_ms": round(record.duration_ms, 3),
        "upstream_ms": round(upstream_ms, 3) if upstream_ms is not None else None,
        "outcome": record.outcome,
        "error": record.error,
        "args": [str(name)[:MAX_TOOL_CHARS] for name in record.args],
        "result_bytes": record.result_bytes,
    }


class _RotatingFile:
    """An append-only file of lines, 0600, rotated by size (``audit.log`` -> ``audit.log.1`` ...).

    One ``write`` system call per line and no ``stat`` per line: the size is tracked here.
    Only the event loop's thread writes, so no lock is needed.
    """

    def __init__(self, path: Path, max_bytes: int, backups: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        self._fd = self._open()

    def _open(self) -> int:
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._size = os.fstat(fd).st_size
        return fd

    def write(self, data: bytes) -> None:
        if self._size and self._size + len(data) > self.max_bytes:
            self._rotate()
        os.write(self._fd, data)
        self._size += len(data)

    def _rotate(self) -> None:
        os.close(self._fd)
        for i in range(self.backups - 1, 0, -1):
            older = Path(f"{self.path}.{i}")
            if older.exists():
                older.replace(f"{self.path}.{i + 1}")
        if self.backups:
            self.path.replace(f"{self.path}.1")
        else:
            self.path.unlink(missing_ok=True)
        self._fd = self._open()

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class AuditLog:
    def __init__(self, path: Path, max_bytes: int = DEFAULT_MAX_BYTES, backups: int = DEFAULT_BACKUPS) -> None:
        self.path = path
        self.backups = backups
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = _RotatingFile(path, max_bytes, backups)

    def observe(self, record: CallRecord) -> None:
        self.write(entry_for(record))

    def write(self, entry: dict[str, Any]) -> None:
        self._file.write(orjson.dumps(entry) + b"\n")

    def close(self) -> None:
        self._file.close()

    def files(self) -> list[Path]:
        """The log's files, newest first."""
        found = [self.path] + [Path(f"{self.path}.{i}") for i in range(1, self.backups + 1)]
        return [p for p in found if p.exists()]

    def read(self, sandbox: str | None = None, since: float | None = None, limit: int = DEFAULT_LIMIT) -> list[dict]:
        """The newest ``limit`` entries (of ``sandbox``, after ``since``), oldest first."""
        picked: list[dict[str, Any]] = []
        since_text = format_time(since) if since is not None else None
        for entry in self._newest_first():
            if since_text is not None and str(entry.get("time", "")) <= since_text:
                break  # lines are written in time order: everything further back is older
            if sandbox is not None and entry.get("sandbox") != sandbox:
                continue
            picked.append(entry)
            if len(picked) >= limit:
                break
        picked.reverse()
        return picked

    def _newest_first(self) -> Iterator[dict[str, Any]]:
        for path in self.files():
            try:
                lines = _lines_backwards(path)
                for line in lines:
                    try:
                        entry = json.loads(line)
                    except ValueError:
                        continue  # a line being written right now, or damage: skip it
                    if isinstance(entry, dict):
                        yield entry
            except FileNotFoundError:
                continue  # rotated away while we read


def _lines_backwards(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as handle:
        handle.seek(0, os.SEEK_END)
        position = handle.tell()
        rest = b""
        while position > 0:
            step = min(READ_CHUNK, position)
            position -= step
            handle.seek(position)
            chunk = handle.read(step) + rest
            lines = chunk.split(b"\n")
            rest = lines[0]
            for line in reversed(lines[1:]):
                if line.strip():
                    yield line
        if rest.strip():
            yield rest
