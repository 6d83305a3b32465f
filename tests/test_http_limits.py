"""Request header limits (``--header-timeout``, ``--max-header-bytes``), with raw sockets against the real gateway."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.support import RunningGateway, start_gateway

HEADER_TIMEOUT = 2.0
MAX_HEADER_BYTES = 16 * 1024


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    gateway = start_gateway(
        [
            "--runtime",
            "host",
            "--header-timeout",
            str(HEADER_TIMEOUT),
            "--max-header-bytes",
            str(MAX_HEADER_BYTES),
        ],
        workdir=tmp_path_factory.mktemp("limits"),
    )
    try:
        yield gateway
    finally:
        gateway.stop()


def connect(gw: RunningGateway) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", gw.port), timeout=30)
    return sock


def read_all(sock: socket.socket) -> bytes:
    chunks = []
    try:
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except ConnectionResetError:
        pass
    return b"".join(chunks)


def read_response(sock: socket.socket) -> bytes:
    """One whole response (headers and its content-length body) from a kept-alive connection."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


def request(extra_header: bytes = b"") -> bytes:
    return b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n" + extra_header + b"Connection: close\r\n\r\n"


def test_a_slow_header_client_is_dropped_while_others_are_served(gw: RunningGateway) -> None:
    slow = connect(gw)
    started = time.monotonic()
    sent = 0
    stop = threading.Event()

    def trickle() -> None:
        nonlocal sent
        data = request(b"X-Slow: " + b"a" * 200 + b"\r\n")
        try:
            for byte in data[:-4]:  # never finishes the header block
                if stop.is_set():
                    return
                slow.send(bytes([byte]))
                sent += 1
                time.sleep(0.05)
        except OSError:
            return

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    try:
        time.sleep(0.5)
        served = httpx.get(gw.base_url + "/healthz", timeout=10)  # meanwhile, another client
        assert served.status_code == 200
        answer = read_all(slow)
        elapsed = time.monotonic() - started
    finally:
        stop.set()
        thread.join(10)
        slow.close()
    assert answer.startswith(b"HTTP/1.1 408")
    assert HEADER_TIMEOUT - 0.5 < elapsed < HEADER_TIMEOUT + 10
    assert sent < len(request(b"X-Slow: " + b"a" * 200 + b"\r\n")) - 4


def test_a_client_sending_no_bytes_at_all_is_dropped(gw: RunningGateway) -> None:
    with connect(gw) as idle:
        started = time.monotonic()
        answer = read_all(idle)
    assert answer.startswith(b"HTTP/1.1 408")
    assert time.monotonic() - started < HEADER_TIMEOUT + 10


def test_headers_within_the_limit_are_served(gw: RunningGateway) -> None:
    with connect(gw) as sock:
        sock.sendall(request(b"X-Big: " + b"a" * (MAX_HEADER_BYTES // 2) + b"\r\n"))
        answer = read_all(sock)
    assert answer.startswith(b"HTTP/1.1 200")


def test_headers_over_the_limit_get_431(gw: RunningGateway) -> None:
    with connect(gw) as sock:
        sock.sendall(request(b"X-Big: " + b"a" * (MAX_HEADER_BYTES * 2) + b"\r\n"))
        answer = read_all(sock)
    assert answer.startswith(b"HTTP/1.1 431")


def test_25_mb_of_headers_are_not_read_whole(gw: RunningGateway) -> None:
    total = 25 * 1024 * 1024
    chunk = b"X-Flood: " + b"a" * 65000 + b"\r\n"
    sent = 0
    with connect(gw) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        try:
            while sent < total:
                sent += sock.send(chunk)
        except OSError:  # the gateway closed the connection
            pass
        answer = read_all(sock)
    assert sent < total
    assert answer == b"" or answer.startswith(b"HTTP/1.1 431")
    assert httpx.get(gw.base_url + "/healthz", timeout=10).status_code == 200


def test_a_kept_alive_connection_gets_the_timeout_per_request(gw: RunningGateway) -> None:
    """A second request on the same connection has its own header deadline, not the first one's."""
    with connect(gw) as sock:
        keep = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        sock.sendall(keep)
        first = read_response(sock)
        assert first.startswith(b"HTTP/1.1 200")
        time.sleep(HEADER_TIMEOUT * 1.25)
        sock.sendall(keep)
        second = read_response(sock)
    assert second.startswith(b"HTTP/1.1 200")
