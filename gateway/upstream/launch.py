"""How to start one server process: its argv, its environment, its working directory.

The environment is built from nothing: a minimal base (PATH, a private HOME, LANG), the
entry's declared ``env`` (config values and references to its own secrets filled in) and its
declared secrets. Nothing else of the gateway's environment reaches a server. Secret values
never go on a command line.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.catalog.config import ServerSettings
from gateway.catalog.entries import CatalogEntry
from gateway.store.datadir import server_umask

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
CONFIG_REF = re.compile(r"\{\{\s*([a-zA-Z0-9_-]+)\.([a-zA-Z0-9_.-]+)\s*\}\}")
SECRET_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)")


@dataclass(frozen=True, slots=True)
class LaunchSpec:
    """What to exec. ``env`` is the complete environment of the process that is started."""

    argv: list[str]
    env: dict[str, str]
    cwd: str | None = None
    runtime: str = "host"
    secret_env: frozenset[str] = field(default_factory=frozenset)  # names in env whose values are secret
    cleanup: list[list[str]] = field(default_factory=list)  # commands to run after the process ends


def fill_config(template: str, entry: CatalogEntry, config: Mapping[str, Any]) -> str:
    """Replace ``{{server.key}}`` with the sandbox's config value (empty when unset)."""

    def sub(match: re.Match[str]) -> str:
        server, key = match.group(1), match.group(2)
        if server not in (entry.name, entry.camel_name):
            return ""
        value = config.get(key)
        if value is None:
            value = entry.config_properties.get(key, {}).get("default")
        if isinstance(value, bool):
            return "true" if value else "false"
        return "" if value is None else str(value)

    return CONFIG_REF.sub(sub, template)


def fill_secrets(template: str, secret_env: Mapping[str, str]) -> str:
    """Replace ``$NAME`` / ``${NAME}`` with the value of the entry's own secret of that env name (or HOME)."""

    def sub(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        return secret_env.get(name, match.group(0))

    return SECRET_REF.sub(sub, template)


def secret_environment(entry: CatalogEntry, settings: ServerSettings) -> dict[str, str]:
    """env name -> value for the secrets the sandbox set."""
    return {s.env: settings.secrets[s.name] for s in entry.secrets if s.name in settings.secrets}


def server_environment(entry: CatalogEntry, settings: ServerSettings, home: Path) -> dict[str, str]:
    """The whole environment of a server process, before any runtime wrapping."""
    env = {
        "PATH": os.environ.get("PATH") or DEFAULT_PATH,
        "HOME": str(home),
        "LANG": "C.UTF-8",
    }
    secrets = secret_environment(entry, settings)
    for item in entry.env:
        # $HOME may be referenced too (memory keeps its file there); other names are the entry's own secrets.
        value = fill_secrets(fill_config(item.value, entry, settings.config), {"HOME": str(home), **secrets})
        if value != "":
            env[item.name] = value
    env.update(secrets)
    return env


def host_launch(entry: CatalogEntry, settings: ServerSettings, command: list[str], home: Path) -> LaunchSpec:
    """A plain subprocess: the server's command with the built environment, in its private HOME."""
    (home / "tmp").mkdir(parents=True, exist_ok=True)
    argv = [fill_config(arg, entry, settings.config) for arg in command]
    env = server_environment(entry, settings, home)
    return LaunchSpec(
        argv=argv, env=env, cwd=str(home), runtime="host", secret_env=frozenset(secret_environment(entry, settings))
    )


# -- spawning ---------------------------------------------------------------------------------


class ServerProcess:
    """A started server: its pipes as asyncio streams and its exit as an awaitable.

    The same surface as ``asyncio.subprocess.Process`` (``pid``, ``returncode``, ``wait()``,
    ``stdin``/``stdout``/``stderr``), but the process is started by :func:`spawn` and only
    its pipes are handed to the event loop (see there why).
    """

    def __init__(
        self,
        popen: subprocess.Popen[bytes],
        stdin: asyncio.StreamWriter,
        stdout: asyncio.StreamReader,
        stderr: asyncio.StreamReader,
        exited: asyncio.Future[int],
    ) -> None:
        self._popen = popen
        self.stdin = stdin
        self.stdout = stdout
        self.stderr = stderr
        self._exited = exited

    @property
    def pid(self) -> int:
        return self._popen.pid

    @property
    def returncode(self) -> int | None:
        """The exit status once the process has been reaped (negative: killed by that signal)."""
        return self._exited.result() if self._exited.done() else None

    async def wait(self) -> int:
        return await asyncio.shield(self._exited)


def spawn(spec: LaunchSpec) -> subprocess.Popen[bytes]:
    """Start the process of ``spec`` now, with three pipes, in a session (process group) of its own.

    ``subprocess`` starts it with ``vfork``: about 0.5 ms whatever the gateway's size, where
    uvloop's ``subprocess_exec`` forks (5-10 ms for a 100 MB gateway, during which the event
    loop stands still). A sandbox's servers are then all started within a few milliseconds.
    Raises ``OSError`` when the program or the working directory cannot be found or run.
    """
    return subprocess.Popen(
        spec.argv,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=spec.env,
        cwd=spec.cwd,
        start_new_session=True,
        bufsize=0,
        umask=server_umask(),  # not the gateway's own 077: see restrict_umask()
    )


class _WriteProtocol(asyncio.streams.FlowControlMixin):
    """Flow control for the server's stdin, and the close waiter ``StreamWriter.wait_closed`` asks for."""

    def __init__(self) -> None:
        super().__init__()
        self._closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if not self._closed.done():
            self._closed.set_result(None)

    def _get_close_waiter(self, stream: asyncio.StreamWriter) -> asyncio.Future[None]:
        return self._closed


def _watch_exit(popen: subprocess.Popen[bytes], loop: asyncio.AbstractEventLoop) -> asyncio.Future[int]:
    """A future that gets the exit status once the process has ended and is reaped.

    A pidfd in the event loop where the kernel has them (Linux 5.3+), else a thread waiting for
    the process (what asyncio's own child watcher does).
    """
    exited: asyncio.Future[int] = loop.create_future()

    def finish(code: int) -> None:
        if not exited.done():
            exited.set_result(code)

    try:
        pidfd = os.pidfd_open(popen.pid)
    except (AttributeError, OSError):
        pidfd = -1
    if pidfd >= 0:

        def readable() -> None:
            code = popen.poll()
            if code is not None:
                loop.remove_reader(pidfd)
                os.close(pidfd)
                finish(code)

        loop.add_reader(pidfd, readable)
        return exited

    def wait() -> None:
        code = popen.wait()
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            loop.call_soon_threadsafe(finish, code)

    threading.Thread(target=wait, name=f"wait-{popen.pid}", daemon=True).start()
    return exited


async def attach(popen: subprocess.Popen[bytes], limit: int) -> ServerProcess:
    """Hand a just spawned process's pipes to the running event loop.

    ``limit`` bounds a line read from stdout or stderr. If this fails the process is killed:
    nothing is left running that the caller does not know of.
    """
    loop = asyncio.get_running_loop()
    assert popen.stdin is not None and popen.stdout is not None and popen.stderr is not None
    exited = _watch_exit(popen, loop)
    transports: list[asyncio.BaseTransport] = []
    try:
        stdout = asyncio.StreamReader(limit=limit, loop=loop)
        stderr = asyncio.StreamReader(limit=limit, loop=loop)
        for reader, pipe in ((stdout, popen.stdout), (stderr, popen.stderr)):
            read, _ = await loop.connect_read_pipe(lambda r=reader: asyncio.StreamReaderProtocol(r, loop=loop), pipe)
            transports.append(read)
        transport, protocol = await loop.connect_write_pipe(_WriteProtocol, popen.stdin)
    except BaseException:  # cancelled (a start timeout, a stop) or the loop refused a pipe
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(popen.pid, signal.SIGKILL)
        for done in transports:
            done.close()
        unattached = [popen.stdout, popen.stderr][len(transports) :]
        for pipe in [*unattached, popen.stdin]:
            with contextlib.suppress(OSError):
                pipe.close()
        raise
    stdin = asyncio.StreamWriter(transport, protocol, None, loop)
    return ServerProcess(popen, stdin, stdout, stderr, exited)
