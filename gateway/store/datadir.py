"""The gateway's data directory: keys, the default token, the sandbox store, pulled servers.

Files that hold keys, tokens or secrets are created with mode 0600 and never rewritten once
they exist, so restarting the gateway keeps every token it minted valid.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import hmac
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def default_data_dir() -> Path:
    env = os.environ.get("MCP_GATEWAY_HOME")
    return Path(env).expanduser() if env else Path.home() / ".mcp-gateway"


def write_private(path: Path, text: str) -> None:
    """Write a file readable by its owner only (created 0600, never briefly world-readable)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.chmod(path, 0o600)


_started_umask: int | None = None  # the umask before restrict_umask(), for the servers the gateway starts


def restrict_umask() -> int:
    """Make every file and directory this process creates private to its owner, whatever the
    umask it was started with (server logs, homes, audit files, the database's -wal/-shm).
    The umask only ever loses bits here. Returns the umask the process had before; the servers
    the gateway starts get that one back (:func:`server_umask`)."""
    global _started_umask
    before = os.umask(0o077)
    os.umask(before | 0o077)
    if _started_umask is None:
        _started_umask = before
    return before


def server_umask() -> int:
    """The umask for a server process: the one the gateway was started with, so files a server
    writes into a read-write directory get the user's usual modes, not the gateway's private
    0600. -1 (keep the current one) when the umask was never restricted."""
    return -1 if _started_umask is None else _started_umask


def _random_key() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode("ascii").rstrip("=")


class DataDirBusy(Exception):
    """Another process holds the data dir's lock; ``owner`` is what it recorded (pid, host, port)."""

    def __init__(self, path: Path, owner: dict[str, Any]) -> None:
        self.path = path
        self.owner = owner
        where = ""
        if owner.get("pid"):
            where = f" (pid {owner['pid']}" + (f", port {owner['port']}" if owner.get("port") else "") + ")"
        super().__init__(f"another gateway{where} is serving the data dir {path}; stop it, or use another --data-dir")


@dataclass(frozen=True)
class DataDir:
    path: Path

    @classmethod
    def open(cls, path: str | Path | None) -> DataDir:
        """The data dir, created if need be; always mode 0700 (it holds keys, tokens and secrets)."""
        root = Path(path).expanduser() if path else default_data_dir()
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        if root.stat().st_mode & 0o777 != 0o700:
            root.chmod(0o700)
        return cls(root.resolve())

    @classmethod
    def locate(cls, path: str | Path | None) -> DataDir:
        """The data dir at ``path`` (or the default), without creating it."""
        root = Path(path).expanduser() if path else default_data_dir()
        return cls(root.resolve())

    def _key(self, name: str, generator: Any = _random_key) -> str:
        path = self.path / name
        if path.exists():
            if path.stat().st_mode & 0o077:  # written by an older version or by hand: make it private
                path.chmod(0o600)
            value = path.read_text(encoding="utf-8").strip()
            if value:
                return value
        value = generator()
        write_private(path, value + "\n")
        return value

    def signing_key(self) -> bytes:
        text = self._key("signing.key")
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))

    def secrets_key(self) -> str:
        """The Fernet key that encrypts sandbox secrets at rest (``MCP_GATEWAY_SECRETS_KEY`` wins)."""
        env = os.environ.get("MCP_GATEWAY_SECRETS_KEY")
        if env:
            return env

        def fernet_key() -> str:
            return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode("ascii")

        return self._key("secrets.key", fernet_key)

    def fingerprint_key(self) -> bytes:
        """The key of settings fingerprints (tool record names, tool ledger keys).

        A sub-key derived from :meth:`secrets_key`, so the sealing key itself is never used to hash.
        """
        return hmac.new(self.secrets_key().encode(), b"settings-fingerprint", hashlib.sha256).digest()

    def admin_key(self) -> str:
        # Hex, so a key never starts with "-" and passes cleanly as `--admin-key KEY`.
        return self._key("admin.key", lambda: secrets.token_hex(32))

    @property
    def lock_file(self) -> Path:
        return self.path / "gateway.lock"

    def lock(self, owner: dict[str, Any]) -> int:
        """Take the data dir's lock for this process's life (one gateway per data dir); return its fd.

        The lock is ``flock`` on ``gateway.lock``: the kernel drops it when the process ends, however
        it ends, so a crashed gateway never leaves a stale lock. ``owner`` (pid, host, port) is
        written into the file for the message a second gateway prints. Raises ``DataDirBusy``
        without changing anything when another process holds the lock.
        """
        fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise DataDirBusy(self.path, self.lock_owner()) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(owner) + "\n").encode("utf-8"), 0)
        return fd

    def lock_owner(self) -> dict[str, Any]:
        """What the lock's holder recorded, or ``{}``."""
        try:
            data = json.loads(self.lock_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def is_locked(self) -> bool:
        """Whether a live process holds the lock (checked without creating or changing anything)."""
        try:
            fd = os.open(self.lock_file, os.O_RDONLY)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False

    @property
    def token_file(self) -> Path:
        return self.path / "token"

    @property
    def database(self) -> Path:
        return self.path / "sandboxes.db"

    @property
    def servers_dir(self) -> Path:
        return self.path / "servers"

    @property
    def logs_dir(self) -> Path:
        return self.path / "logs"

    @property
    def state_file(self) -> Path:
        return self.path / "gateway.json"

    def read_state(self) -> dict[str, Any]:
        try:
            data = json.loads(self.state_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def write_state(self, state: dict[str, Any]) -> None:
        write_private(self.state_file, json.dumps(state, indent=2) + "\n")
