"""User errors on the command line: one line naming the problem and what is valid, non-zero exit."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import free_port

SECRET = "ghp_do-not-print-me-123456789"


def run(*args: str, stdin: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args], capture_output=True, text=True, input=stdin, timeout=timeout
    )


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["serve", "--servers", "nope"], "unknown server 'nope'"),
        (["serve", "--config", '{"githubOfficial": {}}'], "githubPersonalAccessToken"),
        (["serve", "--config", '{"time": {"zone": 1}}'], "unknown key 'zone'"),
        (["serve", "--config", "{not json"], "not valid JSON"),
        (["serve", "--config", "@/nonexistent/file.json"], "cannot read config file"),
        (["serve", "--no-auth", "--host", "0.0.0.0"], "loopback"),
        (["serve", "--port", "99999"], "port"),
        (["serve", "--runtime", "magic"], "invalid choice"),
        (["serve", "--catalog", "/nonexistent.yaml"], "catalog file not found"),
        (["pull", "nope"], "unknown server 'nope'"),
        (["catalog", "show", "nope"], "unknown server 'nope'"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_user_error_is_one_line_without_traceback(tmp_path: Path, args: list[str], expected: str) -> None:
    result = run(*args, "--data-dir", str(tmp_path)) if args[0] in ("serve", "pull") else run(*args)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert expected in lines[0]


def test_bad_config_never_echoes_the_secret(tmp_path: Path) -> None:
    config = '{"githubOfficial": {"githubPersonalAccessToken": "' + SECRET + '", "bogus": 1}}'
    result = run("serve", "--data-dir", str(tmp_path), "--config", "-", stdin=config)
    assert result.returncode != 0
    assert SECRET not in result.stderr + result.stdout


def test_bad_catalog_file_is_one_line(tmp_path: Path) -> None:
    catalog = tmp_path / "bad.yaml"
    catalog.write_text("registry:\n  Bad_Name:\n    command: [x]\n")
    result = run("catalog", "list", "--catalog", str(catalog))
    assert result.returncode != 0
    assert "Bad_Name" in result.stderr and "[a-z0-9-]+" in result.stderr


def test_catalog_list_shows_the_built_in_servers(tmp_path: Path) -> None:
    result = run("catalog", "list", "--data-dir", str(tmp_path))
    assert result.returncode == 0
    for name in ("everything", "time", "github-official", "notion", "fetch", "git", "memory", "filesystem"):
        assert name in result.stdout


def test_serve_with_no_servers_says_how_to_add_some(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--port", str(free_port()), "--data-dir", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lines = [process.stdout.readline() for _ in range(2)]  # type: ignore[union-attr]
    finally:
        process.terminate()
        process.wait(30)
    assert "--servers" in lines[1]
