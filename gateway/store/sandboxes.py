"""The sandbox registry and its store: SQLite in the data dir, secrets encrypted at rest.

A sandbox is an id, its enabled servers (with their config and secrets), its creation time
and an optional expiry. Secret values are sealed with Fernet (the data dir's ``secrets.key``
or ``MCP_GATEWAY_SECRETS_KEY``) and only ever opened in memory to start a server.

Each sandbox also has a random *generation*, signed into every token minted for it (the ``gen``
claim): deleting a sandbox and creating another under the same id gives a new generation, so
the old tokens never work again. Single tokens revoked by their ``jti`` are kept here as well,
until they would have expired anyway.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets as pysecrets
import sqlite3
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken

from gateway.catalog.config import ServerSettings

logger = logging.getLogger("gateway.store")

# A sandbox id names a directory (server homes, logs) and appears in URLs, metric labels and logs:
# lower-case letters, digits and '-', at most 63 characters, matched in full (no trailing newline).
SANDBOX_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
SANDBOX_ID_RULE = "a sandbox id is 1-63 characters of a-z, 0-9 and '-', starting with a letter or digit"
DEFAULT_SANDBOX = "default"


class SandboxError(ValueError):
    pass


class SandboxExists(SandboxError):
    """Creating a sandbox under an id that is taken (the admin API answers 409)."""


class InvalidSandboxId(SandboxError):
    """An id outside :data:`SANDBOX_ID` (the admin API answers 400 ``invalid_sandbox_id``)."""


@dataclass(frozen=True)
class Sandbox:
    id: str
    servers: dict[str, ServerSettings]
    created_at: float = field(default_factory=time.time)
    expires_at: float | None = None
    discovery: str = "auto"
    pinned: tuple[str, ...] = ()  # tool-name globs always listed, even with discovery on
    # This incarnation of the id; "" for sandboxes stored before generations existed, whose
    # tokens carry no ``gen`` claim.
    generation: str = field(default_factory=lambda: new_generation())

    @property
    def expired(self) -> bool:
        return self.expires_at is not None and time.time() >= self.expires_at

    def public(self) -> dict[str, Any]:
        """What the admin API shows: never a secret value."""
        return {
            "id": self.id,
            "servers": sorted(self.servers),
            "created_at": _iso(self.created_at),
            "expires_at": _iso(self.expires_at) if self.expires_at else None,
            "discovery": self.discovery,
            "pinned": list(self.pinned),
        }

    def secret_values(self) -> dict[str, str]:
        """secret name -> value, over all the sandbox's servers (for redaction)."""
        return {name: value for s in self.servers.values() for name, value in s.secrets.items()}


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def new_generation() -> str:
    return pysecrets.token_hex(8)


def new_sandbox_id() -> str:
    return "sbx-" + pysecrets.token_hex(8)


def is_sandbox_id(value: object) -> bool:
    return isinstance(value, str) and SANDBOX_ID.fullmatch(value) is not None


def check_sandbox_id(value: object) -> str:
    """The one check of a sandbox id, for the admin API, the CLI and the store alike."""
    if not is_sandbox_id(value):
        shown = repr(value)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        raise InvalidSandboxId(f"invalid sandbox id {shown}: {SANDBOX_ID_RULE}")
    assert isinstance(value, str)
    return value


COLUMNS = "id, servers, sealed, created_at, expires_at, discovery, pinned, generation"
PLACEHOLDERS = ", ".join("?" * len(COLUMNS.split(", ")))


@dataclass(frozen=True)
class Revocation:
    """One revoked token: its sandbox and ``jti``, kept until ``expires_at`` (None: for good)."""

    sandbox: str
    jti: str
    expires_at: float | None


class SandboxStore:
    """SQLite-backed, safe to use from the event loop (short, serialized transactions)."""

    def __init__(self, path: Path, secrets_key: str) -> None:
        self.path = path
        self._fernet = Fernet(secrets_key.encode() if isinstance(secrets_key, str) else secrets_key)
        self._lock = threading.Lock()
        # Created 0600 before SQLite opens it: SQLite gives the -wal and -shm files the database's mode.
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS sandboxes (id TEXT PRIMARY KEY, servers TEXT NOT NULL,"
            " sealed BLOB NOT NULL, created_at REAL NOT NULL, expires_at REAL, discovery TEXT NOT NULL,"
            " pinned TEXT NOT NULL DEFAULT '[]', generation TEXT NOT NULL DEFAULT '')"
        )
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS revoked (sandbox TEXT NOT NULL, jti TEXT NOT NULL, expires_at REAL,"
            " PRIMARY KEY (sandbox, jti))"
        )
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(sandboxes)")}
        if "pinned" not in columns:  # a database from before pinned tools
            self._db.execute("ALTER TABLE sandboxes ADD COLUMN pinned TEXT NOT NULL DEFAULT '[]'")
        if "generation" not in columns:  # from before generations: existing sandboxes keep generation ""
            self._db.execute("ALTER TABLE sandboxes ADD COLUMN generation TEXT NOT NULL DEFAULT ''")
        self._drop_invalid_ids()
        for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            if file.exists():
                file.chmod(0o600)

    def _drop_invalid_ids(self) -> None:
        """Erase sandboxes stored by older versions under ids the current rule refuses (``sbx_...``,
        upper case, dots): no request can name them any more, so their secrets would only linger."""
        for (sandbox_id,) in self._db.execute("SELECT id FROM sandboxes").fetchall():
            if not is_sandbox_id(sandbox_id):
                logger.warning("erasing sandbox %r: its id does not fit the rule (%s)", sandbox_id, SANDBOX_ID_RULE)
                self._db.execute("DELETE FROM sandboxes WHERE id = ?", (sandbox_id,))

    def _seal(self, sandbox: Sandbox) -> bytes:
        payload = {name: s.to_json() for name, s in sandbox.servers.items()}
        return self._fernet.encrypt(json.dumps(payload).encode())

    def _open(self, row: tuple[Any, ...]) -> Sandbox:
        sandbox_id, _names, sealed, created, expires, discovery, pinned, generation = row
        try:
            payload = json.loads(self._fernet.decrypt(sealed))
        except InvalidToken:
            raise SandboxError(
                f"the secrets of sandbox {sandbox_id!r} cannot be decrypted: the secrets key has changed"
            ) from None
        servers = {name: ServerSettings.from_json(data) for name, data in payload.items()}
        pins = tuple(json.loads(pinned or "[]"))
        return Sandbox(sandbox_id, servers, created, expires, discovery, pins, generation or "")

    def _row(self, sandbox: Sandbox) -> tuple[Any, ...]:
        names = json.dumps(sorted(sandbox.servers))
        pinned = json.dumps(list(sandbox.pinned))
        return (
            sandbox.id,
            names,
            self._seal(sandbox),
            sandbox.created_at,
            sandbox.expires_at,
            sandbox.discovery,
            pinned,
            sandbox.generation,
        )

    def put(self, sandbox: Sandbox) -> Sandbox:
        """Store a sandbox, updating one of the same id (``serve``'s default sandbox).

        An update keeps the stored generation, so the tokens already minted for the sandbox stay
        valid; the answer is the sandbox as stored (with that generation).
        """
        check_sandbox_id(sandbox.id)
        with self._lock:
            row = self._db.execute("SELECT generation FROM sandboxes WHERE id = ?", (sandbox.id,)).fetchone()
            if row is not None:
                sandbox = replace(sandbox, generation=row[0] or "")
            self._db.execute(
                f"INSERT OR REPLACE INTO sandboxes ({COLUMNS}) VALUES ({PLACEHOLDERS})", self._row(sandbox)
            )
        return sandbox

    def create(self, sandbox: Sandbox) -> None:
        """Store a new sandbox; an existing id is an error."""
        check_sandbox_id(sandbox.id)
        with self._lock:
            try:
                self._db.execute(f"INSERT INTO sandboxes ({COLUMNS}) VALUES ({PLACEHOLDERS})", self._row(sandbox))
            except sqlite3.IntegrityError:
                raise SandboxExists(f"sandbox {sandbox.id!r} already exists") from None

    def get(self, sandbox_id: str) -> Sandbox | None:
        if not is_sandbox_id(sandbox_id):
            return None
        with self._lock:
            row = self._db.execute(f"SELECT {COLUMNS} FROM sandboxes WHERE id = ?", (sandbox_id,)).fetchone()
        return self._open(row) if row else None

    def all(self) -> list[Sandbox]:
        with self._lock:
            rows = self._db.execute(f"SELECT {COLUMNS} FROM sandboxes ORDER BY created_at").fetchall()
        return [self._open(row) for row in rows]

    def expired_ids(self, now: float | None = None) -> list[str]:
        """Ids of sandboxes whose expiry has passed (no secrets are opened)."""
        now = time.time() if now is None else now
        with self._lock:
            rows = self._db.execute(
                "SELECT id FROM sandboxes WHERE expires_at IS NOT NULL AND expires_at <= ?", (now,)
            ).fetchall()
        return [row[0] for row in rows]

    def delete(self, sandbox_id: str) -> bool:
        """Erase a sandbox and its secrets (the row is deleted and the file space reclaimed)."""
        if not is_sandbox_id(sandbox_id):
            return False
        with self._lock:
            cursor = self._db.execute("DELETE FROM sandboxes WHERE id = ?", (sandbox_id,))
            if cursor.rowcount:
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                self._db.execute("VACUUM")
            return bool(cursor.rowcount)

    def generation(self, sandbox_id: str) -> str | None:
        """The stored generation of a sandbox (None: no such sandbox); no secrets are opened."""
        if not is_sandbox_id(sandbox_id):
            return None
        with self._lock:
            row = self._db.execute("SELECT generation FROM sandboxes WHERE id = ?", (sandbox_id,)).fetchone()
        return None if row is None else row[0] or ""

    def liveness(self, sandbox_id: str) -> tuple[str, float | None] | None:
        """(generation, expires_at) of a stored sandbox, or None; cheap (no secrets are opened),
        for the check every request makes."""
        if not is_sandbox_id(sandbox_id):
            return None
        with self._lock:
            row = self._db.execute(
                "SELECT generation, expires_at FROM sandboxes WHERE id = ?", (sandbox_id,)
            ).fetchone()
        return None if row is None else (row[0] or "", row[1])

    # -- revoked tokens ------------------------------------------------------------------

    def revoke(self, revocation: Revocation) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO revoked (sandbox, jti, expires_at) VALUES (?, ?, ?)",
                (revocation.sandbox, revocation.jti, revocation.expires_at),
            )

    def revocations(self, now: float | None = None) -> list[Revocation]:
        """The revocations still in force; those past their expiry are deleted on the way."""
        now = time.time() if now is None else now
        with self._lock:
            self._db.execute("DELETE FROM revoked WHERE expires_at IS NOT NULL AND expires_at <= ?", (now,))
            rows = self._db.execute("SELECT sandbox, jti, expires_at FROM revoked").fetchall()
        return [Revocation(*row) for row in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()
