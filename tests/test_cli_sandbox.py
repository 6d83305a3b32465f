"""``mcp-gateway sandbox create | list | delete`` against a running gateway (real processes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.sandbox_helpers import CATALOG, mcp_status
from tests.support import REPO, RunningGateway, free_port, start_gateway

SECRET = "cli-canary-9d3e11f0a2"


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    gateway = start_gateway(workdir=tmp_path_factory.mktemp("cli"), catalog=CATALOG)
    yield gateway
    gateway.stop()


def cli(*args: str, stdin: str | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MCP_GATEWAY_")}
    environment.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        input=stdin if stdin is not None else "",  # never the terminal pytest may run in
        capture_output=True,
        text=True,
        cwd=REPO,
        env=environment,
        timeout=60,
    )


def one_line_error(result: subprocess.CompletedProcess[str], *words: str) -> None:
    assert result.returncode == 1, result
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("mcp-gateway: ")
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in lines[0], lines[0]


def test_create_from_a_file_prints_url_token_and_ready_line(gateway: RunningGateway, tmp_path: Path) -> None:
    config = tmp_path / "mcp.json"
    config.write_text(json.dumps({"canary": {"token": SECRET}, "plain": {}}))
    result = cli("sandbox", "create", "--config", f"@{config}", "--id", "cli-one", "--data-dir", str(gateway.data_dir))
    assert result.returncode == 0, result.stderr
    lines = dict(line.split(": ", 1) for line in result.stdout.strip().splitlines())
    assert lines["Sandbox"] == "cli-one"
    assert lines["Servers"] == "canary, plain"
    assert lines["MCP endpoint"] == gateway.url
    assert lines["Ready"].startswith(f"claude mcp add --transport http mcp-gateway {gateway.url} --header ")
    assert mcp_status(gateway, lines["Token"]) == 200
    assert SECRET not in result.stdout + result.stderr


def test_create_from_stdin_with_json_output(gateway: RunningGateway) -> None:
    result = cli(
        "sandbox",
        "create",
        "--config",
        "-",
        "--ttl",
        "600",
        "--json",
        "--data-dir",
        str(gateway.data_dir),
        stdin=json.dumps({"canary": {"canaryToken": SECRET}}),
    )
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert set(answer) == {"id", "mcp_url", "mcp_token", "servers"}
    assert mcp_status(gateway, answer["mcp_token"]) == 200
    assert SECRET not in result.stdout


def test_list_shows_sandboxes_without_secrets(gateway: RunningGateway) -> None:
    # No --data-dir: the gateway is found through --url and --admin-key instead.
    created = cli(
        "sandbox",
        "create",
        "--config",
        json.dumps({"canary": {"token": SECRET}}),
        "--id",
        "cli-list",
        "--url",
        gateway.base_url,
        "--admin-key",
        gateway.admin_key,
    )
    assert created.returncode == 0, created.stderr
    table = cli("sandbox", "list", "--data-dir", str(gateway.data_dir))
    assert table.returncode == 0
    assert table.stdout.splitlines()[0].split() == ["ID", "SERVERS", "CREATED", "EXPIRES"]
    assert any(line.startswith("cli-list ") and "canary" in line for line in table.stdout.splitlines())
    as_json = cli("sandbox", "list", "--json", "--data-dir", str(gateway.data_dir))
    rows = {row["id"]: row for row in json.loads(as_json.stdout)["sandboxes"]}
    assert rows["cli-list"]["servers"] == ["canary"]
    assert SECRET not in table.stdout + as_json.stdout


def test_delete_removes_the_sandbox(gateway: RunningGateway) -> None:
    created = cli("sandbox", "create", "--config", '{"plain": {}}', "--json", "--data-dir", str(gateway.data_dir))
    answer = json.loads(created.stdout)
    result = cli("sandbox", "delete", answer["id"], "--data-dir", str(gateway.data_dir))
    assert result.returncode == 0 and answer["id"] in result.stdout
    assert mcp_status(gateway, answer["mcp_token"]) == 401
    again = cli("sandbox", "delete", answer["id"], "--data-dir", str(gateway.data_dir))
    one_line_error(again, answer["id"], "404")


def cli_on_terminal(*args: str, typed: str = "") -> subprocess.CompletedProcess[str]:
    """Run the CLI with a pseudo-terminal as standard input, on which ``typed`` is typed."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MCP_GATEWAY_")}
    master, slave = os.openpty()
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway", *args],
            stdin=slave,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
            env=environment,
        )
    finally:
        os.close(slave)
    try:
        if typed:
            os.write(master, typed.encode())
        try:
            stdout, stderr = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            raise AssertionError("the command waited for an answer nobody was asked to give") from None
    finally:
        os.close(master)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def create_plain(gateway: RunningGateway) -> dict[str, Any]:
    created = cli("sandbox", "create", "--config", '{"plain": {}}', "--json", "--data-dir", str(gateway.data_dir))
    assert created.returncode == 0, created.stderr
    return dict(json.loads(created.stdout))


def test_delete_on_a_terminal_asks_and_a_no_keeps_the_sandbox(gateway: RunningGateway) -> None:
    answer = create_plain(gateway)
    result = cli_on_terminal("sandbox", "delete", answer["id"], "--data-dir", str(gateway.data_dir), typed="n\n")
    assert result.returncode == 1
    assert f"Delete sandbox {answer['id']}?" in result.stderr and "[y/N]" in result.stderr
    assert "not deleted" in result.stderr and "Traceback" not in result.stderr
    assert mcp_status(gateway, answer["mcp_token"]) == 200


def test_delete_on_a_terminal_deletes_after_a_yes(gateway: RunningGateway) -> None:
    answer = create_plain(gateway)
    result = cli_on_terminal("sandbox", "delete", answer["id"], "--data-dir", str(gateway.data_dir), typed="y\n")
    assert result.returncode == 0, result.stderr
    assert "[y/N]" in result.stderr and f"Deleted sandbox {answer['id']}" in result.stdout
    assert mcp_status(gateway, answer["mcp_token"]) == 401


def test_delete_with_yes_does_not_ask_on_a_terminal(gateway: RunningGateway) -> None:
    answer = create_plain(gateway)
    result = cli_on_terminal("sandbox", "delete", "-y", answer["id"], "--data-dir", str(gateway.data_dir))
    assert result.returncode == 0, result.stderr
    assert "[y/N]" not in result.stderr
    assert mcp_status(gateway, answer["mcp_token"]) == 401


def test_delete_without_a_terminal_does_not_ask(gateway: RunningGateway) -> None:
    answer = create_plain(gateway)
    result = cli("sandbox", "delete", answer["id"], "--data-dir", str(gateway.data_dir), stdin="n\n")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert mcp_status(gateway, answer["mcp_token"]) == 401


def test_the_admin_key_comes_from_the_environment(gateway: RunningGateway, tmp_path: Path) -> None:
    env = {"MCP_GATEWAY_ADMIN_KEY": gateway.admin_key}
    result = cli("sandbox", "list", "--url", gateway.base_url, "--data-dir", str(tmp_path), env=env)
    assert result.returncode == 0, result.stderr


def test_a_bad_config_is_one_line_listing_valid_servers(gateway: RunningGateway) -> None:
    result = cli("sandbox", "create", "--config", '{"nosuch": {}}', "--data-dir", str(gateway.data_dir))
    one_line_error(result, "nosuch", "canary", "plain")


def test_invalid_json_is_one_line_without_echoing_it(gateway: RunningGateway) -> None:
    result = cli(
        "sandbox", "create", "--config", '{"canary": {"token": "' + SECRET, "--data-dir", str(gateway.data_dir)
    )
    one_line_error(result, "not valid JSON")
    assert SECRET not in result.stderr


def test_a_wrong_admin_key_is_one_line(gateway: RunningGateway) -> None:
    result = cli("sandbox", "list", "--data-dir", str(gateway.data_dir), "--admin-key", "wrong")
    one_line_error(result, "admin key", "401")


def test_a_down_gateway_is_one_line(tmp_path: Path) -> None:
    result = cli("sandbox", "list", "--url", f"http://127.0.0.1:{free_port()}", "--admin-key", "x")
    one_line_error(result, "cannot reach the gateway")
    (tmp_path / "gateway.json").write_text(json.dumps({"public_url": f"http://127.0.0.1:{free_port()}/mcp"}))
    (tmp_path / "admin.key").write_text("x\n")
    one_line_error(cli("sandbox", "list", "--data-dir", str(tmp_path)), "cannot reach the gateway")


def test_no_gateway_json_is_one_line(tmp_path: Path) -> None:
    one_line_error(cli("sandbox", "list", "--data-dir", str(tmp_path / "none")), "gateway.json", "--url")
    assert not (tmp_path / "none").exists()


def test_mcp_gateway_url_finds_the_gateway_without_its_data_dir(gateway: RunningGateway, tmp_path: Path) -> None:
    elsewhere = tmp_path / "no-gateway-here"
    env = {"MCP_GATEWAY_URL": gateway.url, "MCP_GATEWAY_ADMIN_KEY": gateway.admin_key}
    result = cli("sandbox", "list", "--data-dir", str(elsewhere), env=env)
    assert result.returncode == 0, result.stderr
    missing = cli("sandbox", "list", "--data-dir", str(elsewhere), env={"MCP_GATEWAY_ADMIN_KEY": gateway.admin_key})
    one_line_error(missing, "no gateway found")
