"""``mcp-gateway status | tools | call`` against a running gateway, and each with bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import REPO, RunningGateway, fixture_entry, free_port, start_gateway

CATALOG = {"fx": fixture_entry(), "other": fixture_entry("--name", "other")}


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    gateway = start_gateway(
        ["--servers", "fx", "--runtime", "host"], workdir=tmp_path_factory.mktemp("cli-remote"), catalog=CATALOG
    )
    try:
        yield gateway
    finally:
        gateway.stop()


def cli(*args: str, env: dict[str, str] | None = None, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    unset = ("MCP_GATEWAY_ADMIN_KEY", "MCP_GATEWAY_HOME", "MCP_GATEWAY_URL", "MCP_GATEWAY_TOKEN")
    full_env = {k: v for k, v in os.environ.items() if k not in unset}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env=full_env,
        input=stdin,
    )


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("mcp-gateway: ")
    return lines[0]


def test_status_shows_the_servers_of_a_running_gateway(gw: RunningGateway) -> None:
    assert cli("call", "fx__echo", "--args", '{"text": "wake up"}', "--data-dir", str(gw.data_dir)).returncode == 0
    result = cli("status", "--data-dir", str(gw.data_dir))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"Gateway {gw.base_url}" in out
    assert "Sandbox default" in out
    server_line = next(line for line in out.splitlines() if line.strip().startswith("fx "))
    assert "running" in server_line
    assert gw.admin_key not in out and gw.token not in out


def test_status_json_is_the_admin_status_with_open_sessions(gw: RunningGateway) -> None:
    result = cli("status", "--json", "--data-dir", str(gw.data_dir))
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    default = next(s for s in status["sandboxes"] if s["id"] == "default")
    assert [s["name"] for s in default["servers"]] == ["fx"]
    assert {"state", "pid", "uptime_s", "restarts", "last_error", "calls"} <= set(default["servers"][0])
    assert isinstance(default["sessions"], int)


def test_tools_lists_what_a_client_of_the_default_sandbox_sees(gw: RunningGateway) -> None:
    result = cli("tools", "--data-dir", str(gw.data_dir))
    assert result.returncode == 0, result.stderr
    names = [line.split()[0] for line in result.stdout.splitlines()]
    assert "fx__echo" in names and "fx__add" in names
    assert not any(name.startswith("other__") for name in names)
    echo = next(line for line in result.stdout.splitlines() if line.startswith("fx__echo "))
    assert "Echo" in echo


def test_tools_json_has_the_schemas(gw: RunningGateway) -> None:
    result = cli("tools", "--json", "--data-dir", str(gw.data_dir))
    assert result.returncode == 0, result.stderr
    tools = {tool["name"]: tool for tool in json.loads(result.stdout)}
    assert tools["fx__add"]["inputSchema"]["properties"].keys() >= {"a", "b"}


def test_tools_of_another_sandbox_use_a_token_minted_with_the_admin_key(gw: RunningGateway) -> None:
    with gw.admin() as admin:
        created = admin.post("/admin/sandboxes", json={"id": "cli-b", "mcp": {"other": {}}})
    if created.status_code == 404:
        pytest.skip("this gateway has no sandbox admin API")
    assert created.status_code == 201, created.text
    result = cli("tools", "--sandbox", "cli-b", "--data-dir", str(gw.data_dir))
    assert result.returncode == 0, result.stderr
    names = [line.split()[0] for line in result.stdout.splitlines()]
    assert "other__echo" in names and "fx__echo" not in names
    called = cli(
        "call", "other__add", "--args", '{"a": 2, "b": 3}', "--sandbox", "cli-b", "--data-dir", str(gw.data_dir)
    )
    assert called.returncode == 0, called.stderr
    assert called.stdout.strip() == "5"


def test_tools_of_an_unknown_sandbox_fail_in_one_line(gw: RunningGateway) -> None:
    line = one_line_error(cli("tools", "--sandbox", "no-such-sandbox", "--data-dir", str(gw.data_dir)))
    assert "no-such-sandbox" in line


def test_call_prints_the_result(gw: RunningGateway) -> None:
    result = cli("call", "fx__echo", "--args", '{"text": "hello from the cli"}', "--data-dir", str(gw.data_dir))
    assert result.returncode == 0, result.stderr
    assert result.stdout == "hello from the cli\n"


def test_call_reads_arguments_from_a_file_or_stdin(gw: RunningGateway, tmp_path: Path) -> None:
    args = tmp_path / "args.json"
    args.write_text('{"a": 20, "b": 22}')
    from_file = cli("call", "fx__add", "--args", f"@{args}", "--data-dir", str(gw.data_dir))
    assert from_file.stdout.strip() == "42", from_file.stderr
    from_stdin = cli("call", "fx__add", "--args", "-", "--data-dir", str(gw.data_dir), stdin='{"a": 1, "b": 1}')
    assert from_stdin.stdout.strip() == "2", from_stdin.stderr


def test_call_json_prints_the_whole_result(gw: RunningGateway) -> None:
    result = cli("call", "fx__add", "--args", '{"a": 2, "b": 40}', "--json", "--data-dir", str(gw.data_dir))
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    assert body["structuredContent"] == {"sum": 42}
    assert body["content"][0]["text"] == "42"


def test_a_tool_error_is_printed_and_exits_1(gw: RunningGateway) -> None:
    result = cli("call", "fx__fail", "--args", '{"message": "it broke"}', "--data-dir", str(gw.data_dir))
    assert result.returncode == 1
    assert result.stdout.strip() == "it broke"
    assert "fx__fail" in one_line_error(result)


def test_an_unknown_tool_fails_in_one_line(gw: RunningGateway) -> None:
    line = one_line_error(cli("call", "fx__nope", "--data-dir", str(gw.data_dir)))
    assert "fx__nope" in line


@pytest.mark.parametrize(
    ("args", "expected"),
    [('{"text": ', "not valid JSON"), ("[1, 2]", "must be a JSON object"), ("@/no/such/file.json", "cannot read")],
)
def test_bad_json_arguments_fail_in_one_line(gw: RunningGateway, args: str, expected: str) -> None:
    line = one_line_error(cli("call", "fx__echo", "--args", args, "--data-dir", str(gw.data_dir)))
    assert expected in line


@pytest.mark.parametrize("command", [["status"], ["status", "--json"], ["tools"], ["call", "fx__echo"]])
def test_a_gateway_that_is_down_fails_in_one_line(gw: RunningGateway, command: list[str]) -> None:
    down = f"http://127.0.0.1:{free_port()}"
    line = one_line_error(cli(*command, "--url", down, "--data-dir", str(gw.data_dir)))
    assert "cannot reach the gateway" in line and down in line


def test_a_refused_admin_key_fails_in_one_line(gw: RunningGateway) -> None:
    line = one_line_error(cli("status", "--admin-key", "wrong-key", "--data-dir", str(gw.data_dir)))
    assert "admin key" in line
    assert "wrong-key" not in line


def test_a_refused_token_fails_in_one_line(gw: RunningGateway) -> None:
    line = one_line_error(cli("tools", "--token", "not.a.token", "--data-dir", str(gw.data_dir)))
    assert "token" in line
    assert "not.a.token" not in line


def test_the_admin_key_may_come_from_the_environment_and_the_url_from_the_flag(
    gw: RunningGateway, tmp_path: Path
) -> None:
    empty = tmp_path / "elsewhere"
    empty.mkdir()
    result = cli("status", "--url", gw.url, "--data-dir", str(empty), env={"MCP_GATEWAY_ADMIN_KEY": gw.admin_key})
    assert result.returncode == 0, result.stderr
    assert "Sandbox default" in result.stdout
    assert list(empty.iterdir()) == []  # remote commands only read the data dir


def test_without_any_admin_key_status_says_where_to_find_one(gw: RunningGateway, tmp_path: Path) -> None:
    line = one_line_error(cli("status", "--url", gw.base_url, "--data-dir", str(tmp_path)))
    assert "--admin-key" in line and "MCP_GATEWAY_ADMIN_KEY" in line


def test_tools_and_call_take_the_gateway_and_token_from_the_environment(gw: RunningGateway, tmp_path: Path) -> None:
    env = {"MCP_GATEWAY_URL": gw.base_url, "MCP_GATEWAY_TOKEN": gw.token}
    tools = cli("tools", "--data-dir", str(tmp_path), env=env)
    assert tools.returncode == 0, tools.stderr
    assert "fx__echo" in tools.stdout
    called = cli("call", "fx__add", "--args", '{"a": 1, "b": 2}', "--data-dir", str(tmp_path), env=env)
    assert called.stdout.strip() == "3", called.stderr


def test_url_and_token_flags_win_over_the_environment(gw: RunningGateway, tmp_path: Path) -> None:
    env = {"MCP_GATEWAY_URL": f"http://127.0.0.1:{free_port()}", "MCP_GATEWAY_TOKEN": "not.a.token"}
    result = cli("tools", "--url", gw.base_url, "--token", gw.token, "--data-dir", str(tmp_path), env=env)
    assert result.returncode == 0, result.stderr
    assert "fx__echo" in result.stdout


def test_status_takes_the_gateway_from_the_environment(gw: RunningGateway, tmp_path: Path) -> None:
    env = {"MCP_GATEWAY_URL": gw.url, "MCP_GATEWAY_ADMIN_KEY": gw.admin_key}
    result = cli("status", "--data-dir", str(tmp_path), env=env)
    assert result.returncode == 0, result.stderr
    assert f"Gateway {gw.base_url}" in result.stdout
