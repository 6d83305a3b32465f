"""Every ``serve`` option from a flag, an environment variable or a TOML config file.

Precedence: the flag, else ``MCP_GATEWAY_<FLAG>`` (upper case, ``-`` -> ``_``: ``--idle-timeout``
is ``MCP_GATEWAY_IDLE_TIMEOUT``), else the key of the file named by ``--config-file`` (or
``$MCP_GATEWAY_CONFIG_FILE``; the key is the flag's name: ``idle-timeout = 60``, ``idle_timeout``
works too), else the default. A value from the environment or the file goes through the flag's
own check, and a bad one is one line naming where it came from.

Values: on/off options take ``true``/``false`` (in the environment also 1/0, yes/no, on/off);
options that may repeat (``--catalog``, ``--allow-origin``) and lists (``--servers``) take a TOML
array or, in the environment, a comma-separated list; ``config`` may be a TOML table (the
E2B-style server config itself) as well as the flag's string.
"""

from __future__ import annotations

import argparse
import json
import os
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

ENV_PREFIX = "MCP_GATEWAY_"
CONFIG_FILE_OPTION = "config_file"
TRUE = ("1", "true", "yes", "on")
FALSE = ("0", "false", "no", "off")


class OptionError(ValueError):
    """A bad value from the environment or the config file; one line naming its source."""


class _Unset:
    """An option's value before resolution when no flag gave it (false, so ``x or y`` skips it)."""

    def __repr__(self) -> str:
        return "<unset>"

    def __bool__(self) -> bool:
        return False


UNSET: Any = _Unset()


def env_name(action: argparse.Action) -> str:
    return ENV_PREFIX + flag(action)[2:].upper().replace("-", "_")


def flag(action: argparse.Action) -> str:
    return next(s for s in action.option_strings if s.startswith("--"))


def key(action: argparse.Action) -> str:
    return flag(action)[2:]


class LayeredOptions:
    """The options of one subcommand, resolved flag > env > file > default.

    Options are added through :meth:`add` (which records them), then :meth:`finish` marks their
    defaults as unset, so that :meth:`resolve` can tell a flag given from a flag left out.
    """

    def __init__(self) -> None:
        self.actions: list[argparse.Action] = []
        self.repeated: set[str] = set()
        self.defaults: dict[str, Any] = {}

    def add(self, container: Any, *flags: str, **kwargs: Any) -> argparse.Action:
        action: argparse.Action = container.add_argument(*flags, **kwargs)
        self.actions.append(action)
        if kwargs.get("action") == "append":
            self.repeated.add(action.dest)
        return action

    def finish(self, parser: argparse.ArgumentParser) -> None:
        for action in self.actions:
            self.defaults[action.dest] = action.default
            if action.dest not in self.repeated:
                action.default = UNSET
            extra = f"env {env_name(action)}"
            if self.defaults[action.dest] not in (None, False, []):
                extra += f"; default {self.defaults[action.dest]}"
            action.help = f"{action.help or ''} [{extra}]".strip()
        parser.set_defaults(layered_options=self)

    def resolve(self, args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> argparse.Namespace:
        environ = os.environ if environ is None else environ
        by_dest = {action.dest: action for action in self.actions}
        file_action = by_dest.get(CONFIG_FILE_OPTION)
        file_values: dict[str, Any] = {}
        file_path: str | None = None
        if file_action is not None:
            file_path = self._given(args, file_action) or environ.get(env_name(file_action)) or None
            if file_path:
                file_values = read_config_file(Path(file_path), self.actions)
            setattr(args, CONFIG_FILE_OPTION, file_path)
        for action in self.actions:
            if action is file_action:
                continue
            given = self._given(args, action)
            if given is not UNSET:
                continue
            name = env_name(action)
            if environ.get(name, "") != "":
                value = from_env(action, environ[name], name, action.dest in self.repeated)
                setattr(args, action.dest, value)
            elif action.dest in file_values:
                source = f"config file {file_path}: {key(action)}"
                value = from_file(action, file_values[action.dest], source, action.dest in self.repeated)
                setattr(args, action.dest, value)
            else:
                setattr(args, action.dest, self.defaults[action.dest])
        return args

    def _given(self, args: argparse.Namespace, action: argparse.Action) -> Any:
        value = getattr(args, action.dest, UNSET)
        if action.dest in self.repeated:
            return value if value else UNSET
        return value


def read_config_file(path: Path, actions: list[argparse.Action]) -> dict[str, Any]:
    """The file's values by option dest; unknown keys are an error."""
    try:
        text = path.expanduser().read_text(encoding="utf-8")
    except OSError as exc:
        raise OptionError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    try:
        table = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise OptionError(f"config file {path} is not valid TOML: {exc}") from None
    known = {key(a): a for a in actions if a.dest != CONFIG_FILE_OPTION}
    known.update({k.replace("-", "_"): a for k, a in list(known.items())})
    values: dict[str, Any] = {}
    for name, value in table.items():
        action = known.get(name)
        if action is None:
            raise OptionError(f"config file {path}: unknown key {name!r} (the keys are the flags of serve --help)")
        values[action.dest] = value
    return values


def _convert(action: argparse.Action, text: str, source: str) -> Any:
    convert: Callable[[str], Any] = action.type if callable(action.type) else str  # type: ignore[assignment]
    try:
        value = convert(text)
    except (argparse.ArgumentTypeError, ValueError, TypeError) as exc:
        raise OptionError(f"{source}: {exc}") from None
    if action.choices is not None and value not in action.choices:
        choices = ", ".join(map(str, action.choices))
        raise OptionError(f"{source}: invalid choice {text!r} (choose from {choices})")
    return value


def from_env(action: argparse.Action, text: str, source: str, repeated: bool = False) -> Any:
    if action.nargs == 0:  # an on/off flag
        lowered = text.strip().lower()
        if lowered in TRUE:
            return action.const
        if lowered in FALSE:
            return False if action.const is True else None
        raise OptionError(f"{source}: expected true or false, got {text!r}")
    if repeated:
        return [_convert(action, item.strip(), source) for item in text.split(",") if item.strip()]
    return _convert(action, text, source)


def from_file(action: argparse.Action, value: Any, source: str, repeated: bool = False) -> Any:
    if action.nargs == 0:
        if not isinstance(value, bool):
            raise OptionError(f"{source}: expected true or false, got {value!r}")
        return action.const if value else (False if action.const is True else None)
    if repeated:
        items = value if isinstance(value, list) else [value]
        return [_convert(action, _scalar(item, source), source) for item in items]
    if isinstance(value, list):
        return _convert(action, ",".join(_scalar(item, source) for item in value), source)
    if isinstance(value, dict) and action.dest == "config":
        return json.dumps(value)
    return _convert(action, _scalar(value, source), source)


def _scalar(value: Any, source: str) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise OptionError(f"{source}: expected a string or a number, got {value!r}")
    return str(value)
