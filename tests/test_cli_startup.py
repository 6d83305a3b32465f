"""``serve`` start-up: the port is bound before anything is written or announced; one gateway per data dir."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import REPO, RunningGateway, free_port

START_TIMEOUT = 120


def serve(data_dir: Path, port: int, *args: str, timeout: float = START_TIMEOUT) -> subprocess.CompletedProcess[str]:
    """Run ``serve`` expecting it to refuse (and so to exit by itself)."""
    argv = [sys.executable, "-m", "gateway", "serve", "--port", str(port), "--data-dir", str(data_dir), *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=REPO)


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``root`` with its size and mtime (ns)."""
    return {
        str(path.relative_to(root)): (path.stat().st_size, path.stat().st_mtime_ns)
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Ready" not in result.stdout
    return lines[0]


@pytest.fixture
def used_data_dir(gateway_factory: Callable[..., RunningGateway]) -> Path:
    """A data dir a gateway has run on (keys, token, gateway.json, store), that gateway stopped."""
    gateway = gateway_factory(["--runtime", "host"])
    gateway.stop()
    return gateway.data_dir


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_port_in_use_is_one_line_and_leaves_the_data_dir_unchanged(used_data_dir: Path, taken_port: int) -> None:
    before = snapshot(used_data_dir)
    time.sleep(0.05)  # an mtime written now would differ
    result = serve(used_data_dir, taken_port)
    assert f"port {taken_port} is in use" in one_line(result)
    assert snapshot(used_data_dir) == before


def test_port_in_use_does_not_create_the_data_dir(tmp_path: Path, taken_port: int) -> None:
    result = serve(tmp_path / "new", taken_port)
    assert "in use" in one_line(result)
    assert not (tmp_path / "new").exists()


def test_second_gateway_on_a_data_dir_refuses_naming_the_first(
    gateway_factory: Callable[..., RunningGateway],
) -> None:
    first = gateway_factory(["--runtime", "host"])
    before = snapshot(first.data_dir)
    time.sleep(0.05)
    result = serve(first.data_dir, free_port())
    line = one_line(result)
    assert f"pid {first.process.pid}" in line and f"port {first.port}" in line
    assert snapshot(first.data_dir) == before
    assert httpx.get(first.base_url + "/healthz", timeout=10).status_code == 200


def test_second_gateway_on_the_same_port_and_data_dir_names_the_first(
    gateway_factory: Callable[..., RunningGateway],
) -> None:
    first = gateway_factory(["--runtime", "host"])
    line = one_line(serve(first.data_dir, first.port))
    assert f"pid {first.process.pid}" in line and "another gateway" in line


def test_the_lock_ends_with_the_gateway(gateway_factory: Callable[..., RunningGateway]) -> None:
    first = gateway_factory(["--runtime", "host"])
    first.stop()
    second = gateway_factory(["--runtime", "host"], data_dir=first.data_dir)
    assert httpx.get(second.base_url + "/healthz", timeout=10).status_code == 200


def test_ready_is_printed_once_the_port_answers(tmp_path: Path) -> None:
    port = free_port()
    argv = [sys.executable, "-m", "gateway", "serve", "--port", str(port), "--data-dir", str(tmp_path / "d")]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=REPO)
    try:
        assert process.stdout is not None
        for line in process.stdout:
            if line.startswith("Ready:"):
                break
        else:
            pytest.fail("no Ready line")
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200
        assert (tmp_path / "d" / "token").read_text().strip() in line
    finally:
        process.terminate()
        process.wait(30)
    assert process.returncode == 0


def test_with_hide_token_the_ready_line_names_the_token_file_instead(tmp_path: Path) -> None:
    port = free_port()
    argv = [sys.executable, "-m", "gateway", "serve", "--port", str(port), "--data-dir", str(tmp_path / "d")]
    env = {**os.environ, "MCP_GATEWAY_HIDE_TOKEN": "1"}
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=env)
    try:
        assert process.stdout is not None
        for line in process.stdout:
            if line.startswith("Ready:"):
                break
        else:
            pytest.fail("no Ready line")
        token = (tmp_path / "d" / "token").read_text().strip()
        assert token not in line and f"$(cat {tmp_path / 'd' / 'token'})" in line
    finally:
        process.terminate()
        _, errors = process.communicate(timeout=30)
    assert token not in errors


def test_lock_file_is_private(gateway_factory: Callable[..., RunningGateway]) -> None:
    gateway = gateway_factory(["--runtime", "host"])
    assert os.stat(gateway.data_dir / "gateway.lock").st_mode & 0o077 == 0
