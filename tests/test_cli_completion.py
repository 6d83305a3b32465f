"""``mcp-gateway completion bash|zsh|fish``: the bash script is run in a real bash; the others are checked as text."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from tests.support import REPO


def script(shell: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "completion", shell], capture_output=True, text=True, cwd=REPO, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def bash_script() -> str:
    return script("bash")


def complete(bash_script: str, line: str) -> list[str]:
    """What bash offers for ``line`` (the last word is the one being completed)."""
    words = line.split(" ")
    program = (
        bash_script
        + f"\nCOMP_WORDS=({' '.join(repr(w) for w in words)})\nCOMP_CWORD={len(words) - 1}\n"
        + '_mcp_gateway\nprintf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    bash = shutil.which("bash")
    assert bash, "bash is needed"
    result = subprocess.run([bash, "--norc", "--noprofile"], input=program, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    return [w for w in result.stdout.splitlines() if w]


def test_bash_completes_the_commands(bash_script: str) -> None:
    offered = complete(bash_script, "mcp-gateway ")
    assert {"serve", "token", "catalog", "status", "tools", "call", "completion"} <= set(offered)


def test_bash_completes_a_command_s_flags(bash_script: str) -> None:
    assert complete(bash_script, "mcp-gateway serve --runt") == ["--runtime"]


def test_bash_completes_a_flag_s_choices(bash_script: str) -> None:
    assert complete(bash_script, "mcp-gateway serve --port 9000 --runtime b") == ["bwrap"]


def test_bash_completes_nested_commands(bash_script: str) -> None:
    assert set(complete(bash_script, "mcp-gateway catalog ")) >= {"list", "show"}
    assert "--json" in complete(bash_script, "mcp-gateway catalog list --")


def test_bash_completes_the_shells_of_completion(bash_script: str) -> None:
    assert complete(bash_script, "mcp-gateway completion ") == ["bash", "zsh", "fish"]


def test_zsh_script_is_the_bash_one_through_bashcompinit(bash_script: str) -> None:
    zsh = script("zsh")
    assert zsh.startswith("#compdef mcp-gateway\n")
    assert "bashcompinit" in zsh and bash_script in zsh


def test_fish_script_completes_commands_flags_and_choices() -> None:
    fish = script("fish")
    assert "complete -c mcp-gateway -n __fish_use_subcommand -a serve -d 'run the gateway'" in fish
    runtime = next(line for line in fish.splitlines() if "-l runtime" in line)
    assert "__fish_seen_subcommand_from serve" in runtime and "-a 'auto host bwrap container'" in runtime


def test_an_unknown_shell_is_one_line() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "completion", "tcsh"], capture_output=True, text=True, cwd=REPO, timeout=60
    )
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "invalid choice" in result.stderr
