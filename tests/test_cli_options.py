"""``serve`` options: flag > ``MCP_GATEWAY_*`` > ``--config-file`` key > default; bad values name their source."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.cli.main import build_parser
from gateway.cli.options import OptionError, env_name
from tests.support import REPO, RunningGateway, fixture_entry


def resolve(argv: list[str], environ: dict[str, str] | None = None) -> argparse.Namespace:
    args = build_parser().parse_args(["serve", *argv])
    return args.layered_options.resolve(args, environ or {})


def config(tmp_path: Path, text: str) -> str:
    path = tmp_path / "gateway.toml"
    path.write_text(text)
    return str(path)


def test_the_default_applies_when_nothing_is_set() -> None:
    args = resolve([])
    assert args.port == 8811 and args.idle_timeout == 900.0 and args.no_auth is False and args.catalog == []


def test_the_file_beats_the_default(tmp_path: Path) -> None:
    args = resolve(["--config-file", config(tmp_path, "port = 9001\nidle-timeout = 5\n")])
    assert args.port == 9001 and args.idle_timeout == 5.0


def test_the_environment_beats_the_file(tmp_path: Path) -> None:
    args = resolve(["--config-file", config(tmp_path, "port = 9001\n")], {"MCP_GATEWAY_PORT": "9002"})
    assert args.port == 9002


def test_the_flag_beats_the_environment(tmp_path: Path) -> None:
    argv = ["--port", "9003", "--config-file", config(tmp_path, "port = 9001\n")]
    assert resolve(argv, {"MCP_GATEWAY_PORT": "9002"}).port == 9003


def test_the_idle_timeout_variable_yields_to_its_flag() -> None:
    assert resolve(["--idle-timeout", "60"], {"MCP_GATEWAY_IDLE_TIMEOUT": "1"}).idle_timeout == 60.0
    assert resolve([], {"MCP_GATEWAY_IDLE_TIMEOUT": "1"}).idle_timeout == 1.0


def test_the_config_file_may_come_from_the_environment(tmp_path: Path) -> None:
    args = resolve([], {"MCP_GATEWAY_CONFIG_FILE": config(tmp_path, 'host = "127.0.0.2"\n')})
    assert args.host == "127.0.0.2"


def test_on_off_lists_and_repeated_options_from_the_environment() -> None:
    environ = {
        "MCP_GATEWAY_NO_AUTH": "true",
        "MCP_GATEWAY_SERVERS": "time,everything",
        "MCP_GATEWAY_ALLOW_ORIGIN": "https://a.example, https://b.example",
        "MCP_GATEWAY_RUNTIME": "host",
    }
    args = resolve([], environ)
    assert args.no_auth is True
    assert args.servers == ["time", "everything"]
    assert args.allow_origin == ["https://a.example", "https://b.example"]
    assert args.runtime == "host"


def test_on_off_lists_tables_and_underscored_keys_from_the_file(tmp_path: Path) -> None:
    text = """
prestart = true
servers = ["time", "everything"]
allow_origin = ["https://a.example"]
log-level = "debug"
max-sessions = 20

[config.time]
"""
    args = resolve(["--config-file", config(tmp_path, text)])
    assert args.prestart is True
    assert args.servers == ["time", "everything"]
    assert args.allow_origin == ["https://a.example"]
    assert args.log_level == "debug" and args.max_sessions == 20
    assert args.config == '{"time": {}}'


def test_a_repeated_flag_replaces_the_environment_s_list() -> None:
    args = resolve(["--allow-origin", "https://c.example"], {"MCP_GATEWAY_ALLOW_ORIGIN": "https://a.example"})
    assert args.allow_origin == ["https://c.example"]


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"MCP_GATEWAY_PORT": "99999"}, "MCP_GATEWAY_PORT: a port is 1-65535"),
        ({"MCP_GATEWAY_RUNTIME": "magic"}, "MCP_GATEWAY_RUNTIME: invalid choice 'magic'"),
        ({"MCP_GATEWAY_NO_AUTH": "maybe"}, "MCP_GATEWAY_NO_AUTH: expected true or false"),
        ({"MCP_GATEWAY_IDLE_TIMEOUT": "soon"}, "MCP_GATEWAY_IDLE_TIMEOUT: expected a number of seconds"),
    ],
)
def test_a_bad_environment_value_names_the_variable(environ: dict[str, str], expected: str) -> None:
    with pytest.raises(OptionError, match=expected):
        resolve([], environ)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("port = 0\n", "port: expected a positive number"),
        ('no-auth = "yes"\n', "no-auth: expected true or false"),
        ("prot = 1\n", "unknown key 'prot'"),
        ("port = \n", "is not valid TOML"),
        ('log-level = "loud"\n', "log-level: invalid choice 'loud'"),
    ],
)
def test_a_bad_file_value_names_the_file_and_key(tmp_path: Path, text: str, expected: str) -> None:
    path = config(tmp_path, text)
    with pytest.raises(OptionError, match=expected) as raised:
        resolve(["--config-file", path])
    assert path in str(raised.value)


def test_every_serve_flag_has_help_a_variable_and_a_key(tmp_path: Path) -> None:
    serve_help = subprocess.run(
        [sys.executable, "-m", "gateway", "serve", "--help"], capture_output=True, text=True, cwd=REPO, timeout=60
    ).stdout
    args = build_parser().parse_args(["serve"])
    options = args.layered_options
    assert len(options.actions) > 30
    lines = []
    for action in options.actions:
        assert action.help and not action.help.startswith("["), action.option_strings
        assert env_name(action) in " ".join(serve_help.split()), action.option_strings
        if action.dest != "config_file":
            lines.append(f"{action.option_strings[0][2:]} = {'true' if action.nargs == 0 else '1'}")
    # every flag's name is a key the file accepts (the values may then be refused, the key is not)
    for line in lines:
        try:
            resolve(["--config-file", config(tmp_path, line + "\n")])
        except OptionError as exc:
            assert "unknown key" not in str(exc), line


def test_a_bad_variable_is_one_line_from_the_command_line(tmp_path: Path) -> None:
    env = {**os.environ, "MCP_GATEWAY_PORT": "http"}
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "serve", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=60,
    )
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == ["mcp-gateway: MCP_GATEWAY_PORT: expected a whole number, got 'http'"]
    assert list(tmp_path.iterdir()) == []


async def test_a_gateway_runs_with_its_servers_from_a_config_file(
    gateway_factory: Callable[..., RunningGateway], tmp_path: Path
) -> None:
    path = config(tmp_path, 'servers = ["fx"]\nruntime = "host"\n')
    gateway = gateway_factory(["--config-file", path], catalog={"fx": fixture_entry()})
    async with gateway.client() as client:
        names = [tool.name for tool in (await client.list_tools()).tools]
    assert "fx__echo" in names
