"""The command line's parser class and the value types of its options.

Every type raises ``argparse.ArgumentTypeError`` with a message that says what is valid; the
parser prints it as one line (``mcp-gateway: ...``) and exits 2.
"""

from __future__ import annotations

import argparse
from typing import Any, NoReturn

EXIT_USAGE = 2


class Parser(argparse.ArgumentParser):
    """argparse, with one-line usage errors; it records its options and subcommands (for completion)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.recorded: list[argparse.Action] = []
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"mcp-gateway: {message} (see: {self.prog} --help)\n")

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action:
        action = super().add_argument(*args, **kwargs)
        self.recorded.append(action)
        return action

    def add_subparsers(self, **kwargs: Any) -> Any:
        action = super().add_subparsers(**kwargs)
        self.recorded.append(action)
        return Subcommands(action)

    def add_mutually_exclusive_group(self, **kwargs: Any) -> Any:
        return RecordingGroup(super().add_mutually_exclusive_group(**kwargs), self.recorded)


class Subcommands:
    """argparse's subcommands action; each new subcommand's parser keeps its help (``command_help``)."""

    def __init__(self, action: Any) -> None:
        object.__setattr__(self, "action", action)

    def add_parser(self, name: str, **kwargs: Any) -> Any:
        parser = self.action.add_parser(name, **kwargs)
        parser.command_help = kwargs.get("help") or ""
        return parser

    def __getattr__(self, name: str) -> Any:
        return getattr(self.action, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self.action, name, value)


class RecordingGroup:
    """A mutually exclusive group whose options the parser records too."""

    def __init__(self, group: Any, recorded: list[argparse.Action]) -> None:
        self.group = group
        self.recorded = recorded

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action:
        action: argparse.Action = self.group.add_argument(*args, **kwargs)
        self.recorded.append(action)
        return action


def csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {value!r}") from None
    if number <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {value}")
    return number


def seconds(value: str) -> float:
    """Any number of seconds (0 or less means "never" where an option says so)."""
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {value!r}") from None
    if number != number or number in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"expected a finite number of seconds, got {value}")
    return number


def positive_float(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {value!r}") from None
    if not number > 0 or number == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {value}")
    return number


def non_negative_float(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {value!r}") from None
    if not 0 <= number < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number of seconds (0 or more), got {value}")
    return number


def port_number(value: str) -> int:
    number = positive_int(value)
    if number > 65535:
        raise argparse.ArgumentTypeError(f"a port is 1-65535, got {value}")
    return number
