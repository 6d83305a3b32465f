"""The audit log: one JSON line per tool call in ``<data-dir>/audit.log``, rotated by size.

A line holds names and sizes, never values: time, sandbox, session, tool, server, duration,
outcome, error class, the argument *names* and the result size. Files are created 0600.
Reading back (for ``GET /admin/audit``) walks the files from the newest line backwards and
stops as soon as it has enough, so it stays cheap however large the log grows.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import logging.handlers
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.hub import CallRecord

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


class _PrivateRotatingHandler(logging.handlers.RotatingFileHandler):
    """A rotating file handler whose files (the first and every one after a rollover) are 0600."""

    def _open(self) -> Any:
        fd = os.open(self.baseFilename, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        return os.fdopen(fd, self.mode, encoding=self.encoding, errors=self.errors)


class AuditLog:
    def __init__(self, path: Path, max_bytes: int = DEFAULT_MAX_BYTES, backups: int = DEFAULT_BACKUPS) -> None:
        self.path = path
        self.backups = backups
        path.parent.mkdir(parents=True, exist_ok=True)
        self._handler = _PrivateRotatingHandler(path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8")
        self._handler.setFormatter(logging.Formatter("%(message)s"))

    def observe(self, record: CallRecord) -> None:
        self.write(entry_for(record))

    def write(self, entry: dict[str, Any]) -> None:
        line = json.dumps(entry, separators=(",", ":"), ensure_ascii=False)
        self._handler.emit(logging.LogRecord("gateway.audit", logging.INFO, __file__, 0, line, None, None))

    def close(self) -> None:
        self._handler.close()

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
