"""The gateway's listening socket, bound before anything else happens.

``serve`` binds (and listens on) its port before it opens the data dir, takes its lock or
writes a file, so a port that is taken ends the start with one line and a changed nothing.
The socket is handed to uvicorn (``Server.run(sockets=[...])``), which then serves on it.
"""

from __future__ import annotations

import errno
import socket

BACKLOG = 2048  # uvicorn's default


class ListenError(ValueError):
    """The port cannot be listened on; the message is one line for the user."""


def listen_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` and listening; ``ListenError`` if that is not possible.

    ``SO_REUSEADDR`` (as asyncio and uvicorn set it) lets a restarted gateway bind while the
    previous one's connections linger in TIME_WAIT; it never lets two sockets listen on one port.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ListenError(f"cannot listen on {host}:{port}: unknown host ({exc.strerror})") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
        sock.listen(BACKLOG)
    except OSError as exc:
        sock.close()
        raise ListenError(_reason(host, port, exc)) from None
    sock.setblocking(False)
    return sock


def _reason(host: str, port: int, exc: OSError) -> str:
    where = f"{host}:{port}"
    if exc.errno == errno.EADDRINUSE:
        return f"port {port} is in use on {host} (another program listens there); choose another with --port"
    if exc.errno == errno.EACCES:
        return f"not allowed to listen on {where} (ports below 1024 need privileges); choose another with --port"
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"cannot listen on {where}: {host} is not an address of this machine (see --host)"
    return f"cannot listen on {where}: {exc.strerror or exc}"
