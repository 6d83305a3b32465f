"""The official MCP conformance suite's server scenarios, against the gateway and without it.

Both runs serve the same stdio fixture (`tests/fixtures/conformance_server.py`): once bridged
directly by `tests/conformance/serve_direct.py` (the yardstick: the fixture alone), once
behind `mcp-gateway serve --no-auth`. Every scenario that does not pass must be listed, with
a reason, in `tests/conformance/baseline.txt`. Node 22 and the suite are installed from npm
on first use into `.cache/conformance` (see `tests/conformance/suite.py`); without npm the
suite tests skip. Select them with `-m conformance`.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conformance.run_conformance import RunResult, load_baseline, report, run_suite
from tests.conformance.suite import Suite, SuiteUnavailable, ensure_suite

REPO_ROOT = Path(__file__).resolve().parents[1]
FIXTURE = REPO_ROOT / "tests" / "fixtures" / "conformance_server.py"
SERVE_DIRECT = REPO_ROOT / "tests" / "conformance" / "serve_direct.py"
CATALOG = REPO_ROOT / "tests" / "conformance" / "catalog.yaml"
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0

# What the suite (0.1.16) calls by name; the fixture must offer all of it.
SUITE_TOOLS = {
    "test_simple_text",
    "test_image_content",
    "test_audio_content",
    "test_embedded_resource",
    "test_multiple_content_types",
    "test_tool_with_logging",
    "test_tool_with_progress",
    "test_error_handling",
    "test_reconnection",
    "test_sampling",
    "test_elicitation",
    "test_elicitation_sep1034_defaults",
    "test_elicitation_sep1330_enums",
    "json_schema_2020_12_tool",
}


@pytest.fixture(scope="module")
def suite() -> Suite:
    try:
        return ensure_suite()
    except SuiteUnavailable as e:
        pytest.skip(f"conformance suite unavailable: {e}")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


@contextmanager
def _serving(cmd: list[str], port: int, log_dir: Path) -> Iterator[str]:
    """Start `cmd`, wait for `/healthz` 200, yield the `/mcp` URL; stop it and its children after."""
    log_dir.mkdir(parents=True, exist_ok=True)
    out_path, err_path = log_dir / "stdout.txt", log_dir / "stderr.txt"
    with open(out_path, "w") as out, open(err_path, "w") as err:
        proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=out, stderr=err, start_new_session=True)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _healthy(port):
            if proc.poll() is not None:
                pytest.fail(f"{cmd[1:4]} exited with {proc.returncode} before serving:\n{err_path.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"{cmd[1:4]} did not answer /healthz within {START_TIMEOUT_S:.0f}s")
            time.sleep(0.2)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        try:  # whatever it left behind in its process group
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _assert_only_baseline_failures(run: RunResult, results_dir: Path) -> None:
    baseline = load_baseline()
    unexpected, _ = report(run, baseline)
    lines = []
    for result in run.results:
        if result.name in unexpected:
            lines.append(f"{result.name} ({result.status}):")
            lines.extend(f"    {p}" for p in result.problems())
    assert not unexpected, (
        f"{run.summary()}; not in tests/conformance/baseline.txt:\n"
        + "\n".join(lines)
        + f"\ndetails: {results_dir / 'conformance-details.json'}"
    )


def test_fixture_offers_every_tool_the_suite_calls() -> None:
    init = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}
    requests = [
        {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": init},
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {}},
    ]
    stdin = "".join(json.dumps(r) + "\n" for r in requests)
    proc = subprocess.run(["python3", str(FIXTURE)], input=stdin, capture_output=True, text=True, timeout=30)
    replies = {m["id"]: m for m in map(json.loads, proc.stdout.splitlines()) if "id" in m}
    assert replies[1]["result"]["protocolVersion"] == "2025-11-25"
    assert SUITE_TOOLS <= {t["name"] for t in replies[2]["result"]["tools"]}


@pytest.mark.conformance
def test_direct_fixture_passes_conformance_suite(suite: Suite, tmp_path: Path) -> None:
    port = _free_port()
    cmd = [sys.executable, str(SERVE_DIRECT), "--port", str(port)]
    with _serving(cmd, port, tmp_path / "server") as url:
        run = run_suite(suite, url, tmp_path / "results")
    _assert_only_baseline_failures(run, tmp_path / "results")


def absolute_catalog(tmp_path: Path) -> Path:
    """The catalog overlay with the fixture's absolute path (a server runs in its own home dir)."""
    text = CATALOG.read_text().replace("tests/fixtures/conformance_server.py", str(FIXTURE))
    path = tmp_path / "catalog.yaml"
    path.write_text(text)
    return path


@pytest.mark.conformance
def test_gateway_passes_conformance_suite(suite: Suite, tmp_path: Path) -> None:
    port = _free_port()
    cmd = [
        sys.executable,
        "-m",
        "gateway",
        "serve",
        "--no-auth",
        "--port",
        str(port),
        "--data-dir",
        str(tmp_path / "data"),
        "--catalog",
        str(absolute_catalog(tmp_path)),
        "--servers",
        "conformance",
    ]
    with _serving(cmd, port, tmp_path / "gateway") as url:
        run = run_suite(suite, url, tmp_path / "results")
    _assert_only_baseline_failures(run, tmp_path / "results")
