"""``mcp-gateway connect CLIENT`` / ``disconnect CLIENT``: point an MCP client's own config at the gateway.

The entry is added to (or updated in) the client's config file (see cli/clients.py for each
client's file and format); every other entry and key of the file stays as it was. The file holds
the token, so it is written 0600, atomically (a crash never leaves half a file). ``--print``
shows the entry instead of writing anything.

The entry's name is ``--name``, else ``mcp-gateway``, suffixed (``mcp-gateway-2``, ...) when that
name is taken by an entry that is not this gateway's. The gateway's URL and token are found as
``tools`` finds them: ``--url``/``--token``, ``$MCP_GATEWAY_URL``/``$MCP_GATEWAY_TOKEN``, else the
data dir of the last ``serve``.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import re
import tempfile
import tomllib
from pathlib import Path
from typing import Any

from gateway.cli.clients import CLIENTS, Client
from gateway.cli.main import UserError, add_data_dir

DEFAULT_NAME = "mcp-gateway"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def register(commands: Any) -> None:
    names = sorted(CLIENTS)
    connect = commands.add_parser("connect", help="add the gateway to an MCP client's config")
    connect.add_argument("client", choices=names, metavar="CLIENT", help="one of: " + ", ".join(names))
    connect.add_argument("--print", action="store_true", help="print the entry instead of writing the file")
    connect.add_argument("--name", help=f"the entry's name (default {DEFAULT_NAME}, suffixed if taken)")
    connect.add_argument("--url", metavar="BASE_URL", help="the gateway (default $MCP_GATEWAY_URL or the data dir's)")
    connect.add_argument("--token", help="the token (default $MCP_GATEWAY_TOKEN or DATA_DIR/token)")
    add_data_dir(connect)
    connect.set_defaults(handler=cmd_connect)

    disconnect = commands.add_parser("disconnect", help="remove the gateway from an MCP client's config")
    disconnect.add_argument("client", choices=names, metavar="CLIENT", help="one of: " + ", ".join(names))
    disconnect.add_argument("--name", default=DEFAULT_NAME, help=f"the entry's name (default {DEFAULT_NAME})")
    disconnect.set_defaults(handler=cmd_disconnect)


def gateway_url_and_token(args: argparse.Namespace) -> tuple[str, str]:
    from gateway.cli.remote import Remote

    remote = Remote(
        argparse.Namespace(url=args.url, data_dir=args.data_dir, admin_key=None, token=args.token, sandbox=None)
    )
    return remote.mcp_url, remote.token()


def cmd_connect(args: argparse.Namespace) -> int:
    client = CLIENTS[args.client]
    if args.name is not None and not NAME_PATTERN.match(args.name):
        raise UserError(f"--name must be letters, digits, '-' or '_' (at most 64), not {args.name!r}")
    url, token = gateway_url_and_token(args)
    entry = client.entry(url, token)
    path = client.path()
    if args.print:
        name = args.name or DEFAULT_NAME
        print(
            toml_section(client, name, entry)
            if client.toml
            else json.dumps({client.servers_key: {name: entry}}, indent=2)
        )
        return 0
    document, text = read_config(client, path)
    servers = document.get(client.servers_key) or {}
    if not isinstance(servers, dict):
        raise UserError(f"{path}: {client.servers_key!r} is not a table of servers; fix the file or use --print")
    name = args.name or free_name(client, servers, url)
    updated = name in servers
    if client.toml:
        new_text = toml_with(client, path, text, document, name, entry)
    else:
        servers[name] = entry
        document[client.servers_key] = servers
        new_text = json.dumps(document, indent=2) + "\n"
    write_private(path, new_text)
    verb = "Updated" if updated else "Added"
    print(f"{verb} {name!r} in {client.title}'s {path}; restart {client.title} to use it")
    return 0


def cmd_disconnect(args: argparse.Namespace) -> int:
    client = CLIENTS[args.client]
    path = client.path()
    document, text = read_config(client, path)
    servers = document.get(client.servers_key)
    if not isinstance(servers, dict) or args.name not in servers:
        raise UserError(f"no entry {args.name!r} in {client.title}'s {path}")
    if client.toml:
        new_text = toml_without(path, text, document, args.name)
    else:
        del servers[args.name]
        new_text = json.dumps(document, indent=2) + "\n"
    write_private(path, new_text)
    print(f"Removed {args.name!r} from {client.title}'s {path}")
    return 0


def free_name(client: Client, servers: dict[str, Any], url: str) -> str:
    """``mcp-gateway``, or the first ``mcp-gateway-N`` that is free or already this gateway's."""
    candidates = [DEFAULT_NAME] + [f"{DEFAULT_NAME}-{n}" for n in range(2, 100)]
    for name in candidates:
        if name not in servers or client.owns(servers[name], url):
            return name
    raise UserError(f"every name from {DEFAULT_NAME} to {candidates[-1]} is taken; pass --name")


# -- reading and writing the files ------------------------------------------------------------------


def read_config(client: Client, path: Path) -> tuple[dict[str, Any], str]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}, ""
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror or exc}") from None
    if not text.strip():
        return {}, text
    try:
        document = tomllib.loads(text) if client.toml else json.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        kind = "TOML" if client.toml else "JSON (comments are not supported)"
        raise UserError(f"{path} is not valid {kind}: {exc}; fix it, or add the entry by hand (--print)") from None
    if not isinstance(document, dict):
        raise UserError(f"{path} does not hold a JSON object; fix it, or add the entry by hand (--print)")
    return document, text


def write_private(path: Path, text: str) -> None:
    """Replace ``path`` (through a symlink, if it is one) atomically with a 0600 file."""
    target = path.resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(temporary, 0o600)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


# -- TOML (codex): the file is edited as text, so its comments and layout stay ------------------------


def toml_value(value: Any) -> str:
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return json.dumps(value)  # a JSON string is a TOML basic string


def toml_section(client: Client, name: str, entry: dict[str, Any]) -> str:
    lines = [f"[{client.servers_key}.{name}]"] + [f"{key} = {toml_value(value)}" for key, value in entry.items()]
    return "\n".join(lines) + "\n"


def _header(line: str) -> str | None:
    match = re.match(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$", line)
    return match.group(1).replace('"', "").replace("'", "").replace(" ", "") if match else None


def _without_section(text: str, name: str) -> str:
    """``text`` without the ``[mcp_servers.NAME]`` table and its sub-tables."""
    prefix = f"mcp_servers.{name}"
    kept: list[str] = []
    skipping = False
    for line in text.splitlines(keepends=True):
        header = _header(line)
        if header is not None:
            skipping = header == prefix or header.startswith(prefix + ".")
        if not skipping:
            kept.append(line)
    return "".join(kept)


def _check(path: Path, new_text: str, expected: dict[str, Any]) -> None:
    try:
        got = tomllib.loads(new_text)
    except tomllib.TOMLDecodeError:
        got = None
    for table in (got, expected):  # an emptied [mcp_servers] may vanish with its last sub-table
        if isinstance(table, dict) and table.get("mcp_servers") == {}:
            del table["mcp_servers"]
    if got != expected:
        raise UserError(
            f"{path} defines its MCP servers in a form this command does not rewrite; "
            "add the entry by hand (see: mcp-gateway connect codex --print)"
        )


def toml_with(client: Client, path: Path, text: str, document: dict[str, Any], name: str, entry: dict[str, Any]) -> str:
    body = _without_section(text, name).rstrip("\n")
    new_text = (body + "\n\n" if body else "") + toml_section(client, name, entry)
    expected = copy.deepcopy(document)
    expected.setdefault(client.servers_key, {})[name] = entry
    _check(path, new_text, expected)
    return new_text


def toml_without(path: Path, text: str, document: dict[str, Any], name: str) -> str:
    new_text = _without_section(text, name).rstrip("\n") + "\n"
    expected = copy.deepcopy(document)
    del expected["mcp_servers"][name]
    _check(path, new_text, expected)
    return new_text
