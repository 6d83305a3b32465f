"""``mcp-gateway sandbox create | list | update | delete`` and ``mcp-gateway token revoke``: the admin API of a
running gateway, from a shell.

The gateway is found with ``--url`` or the data dir's ``gateway.json`` (what the last
``serve`` used); the admin key is ``--admin-key``, ``$MCP_GATEWAY_ADMIN_KEY`` or the data dir's
``admin.key``. Secrets go in with ``--config @FILE`` or ``--config -`` (standard input), never
on the command line if other users share the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from gateway.catalog.config import read_config_argument
from gateway.client import GatewayClient, GatewayError, Sandbox
from gateway.store.datadir import DataDir, default_data_dir
from gateway.store.sandboxes import check_sandbox_id


class SandboxCliError(ValueError):
    """A problem the user can fix; the CLI prints it as one line and exits 1."""


def _positive_seconds(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {value!r}") from None
    if not number > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {value}")
    return number


def _connection_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url", help="the gateway's base URL (default $MCP_GATEWAY_URL, else from the data dir's gateway.json)"
    )
    parser.add_argument("--data-dir", help="data directory (default $MCP_GATEWAY_HOME or ~/.mcp-gateway)")
    parser.add_argument("--admin-key", help="admin key (default $MCP_GATEWAY_ADMIN_KEY or DATA_DIR/admin.key)")


def register(commands: Any) -> None:
    sandbox = commands.add_parser("sandbox", help="create, list and delete sandboxes of a running gateway")
    actions = sandbox.add_subparsers(
        dest="sandbox_command", metavar="create|list|update|delete", parser_class=type(sandbox)
    )
    actions.required = True

    create = actions.add_parser("create", help="create a sandbox; prints its MCP URL and token")
    create.add_argument("--config", required=True, help="E2B-style server config: JSON, @FILE or - (stdin)")
    create.add_argument("--id", help="the sandbox id (default: generated)")
    create.add_argument("--ttl", type=_positive_seconds, metavar="SECONDS", help="delete the sandbox after this long")
    create.add_argument("--json", action="store_true", help="print the API's JSON answer")
    _connection_flags(create)
    create.set_defaults(handler=cmd_create)

    listing = actions.add_parser("list", help="list sandboxes (never a secret value)")
    listing.add_argument("--json", action="store_true")
    _connection_flags(listing)
    listing.set_defaults(handler=cmd_list)

    update = actions.add_parser(
        "update", help="change a live sandbox's servers and secrets; only changed servers restart"
    )
    update.add_argument("id", metavar="ID")
    update.add_argument(
        "--config", required=True, help="servers to set (JSON object each) or remove (null): JSON, @FILE or -"
    )
    update.add_argument("--json", action="store_true", help="print the API's JSON answer")
    _connection_flags(update)
    update.set_defaults(handler=cmd_update)

    delete = actions.add_parser("delete", help="delete a sandbox: its servers stop, its secrets are erased")
    delete.add_argument("id", metavar="ID")
    delete.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation on a terminal")
    _connection_flags(delete)
    delete.set_defaults(handler=cmd_delete)


def register_token_commands(token: argparse.ArgumentParser) -> None:
    """``mcp-gateway token revoke``; plain ``mcp-gateway token`` (no action) still prints a token."""
    actions = token.add_subparsers(dest="token_command", metavar="[revoke]", parser_class=type(token))
    actions.required = False
    revoke = actions.add_parser("revoke", help="refuse one token from now on (by the token, or --jti and --sandbox)")
    revoke.add_argument("token", nargs="?", metavar="TOKEN", help="the token, or - to read it from standard input")
    revoke.add_argument("--jti", help="the token's jti claim (with --sandbox), when the token is not at hand")
    revoke.add_argument("--sandbox", dest="revoke_sandbox", metavar="ID", help="the sandbox of --jti")
    revoke.add_argument("--json", action="store_true", help="print the API's JSON answer")
    _connection_flags(revoke)
    revoke.set_defaults(handler=cmd_revoke)


# -- finding the gateway ---------------------------------------------------------------------


def _data_dir(args: argparse.Namespace) -> DataDir:
    """The data dir, without creating it (a client has no business making one)."""
    path = Path(args.data_dir).expanduser() if args.data_dir else default_data_dir()
    return DataDir(path=path.resolve())


def base_url(args: argparse.Namespace) -> str:
    url = args.url or os.environ.get("MCP_GATEWAY_URL")
    if url:
        url = str(url).rstrip("/")
        return url[: -len("/mcp")] if url.endswith("/mcp") else url
    data = _data_dir(args)
    public_url = data.read_state().get("public_url")
    if not isinstance(public_url, str) or not public_url:
        raise SandboxCliError(
            f"no gateway found: {data.state_file} is missing (start one with: mcp-gateway serve, or pass --url)"
        )
    url = public_url.rstrip("/")
    return url[: -len("/mcp")] if url.endswith("/mcp") else url


def admin_key(args: argparse.Namespace) -> str:
    if args.admin_key:
        return str(args.admin_key)
    env = os.environ.get("MCP_GATEWAY_ADMIN_KEY")
    if env:
        return env
    path = _data_dir(args).path / "admin.key"
    try:
        key = path.read_text(encoding="utf-8").strip()
    except OSError:
        key = ""
    if not key:
        raise SandboxCliError(f"no admin key: pass --admin-key, set $MCP_GATEWAY_ADMIN_KEY, or create {path}")
    return key


def _client(args: argparse.Namespace) -> GatewayClient:
    return GatewayClient(base_url(args), admin_key(args))


def _fail(exc: GatewayError) -> SandboxCliError:
    if exc.status == 0:
        return SandboxCliError(f"{exc.message} (is the gateway running? start it with: mcp-gateway serve)")
    return SandboxCliError(f"{exc.message} (HTTP {exc.status})")


# -- commands --------------------------------------------------------------------------------


def cmd_create(args: argparse.Namespace) -> int:
    if args.id is not None:
        check_sandbox_id(args.id)
    config = read_config_argument(args.config)
    try:
        with _client(args) as client:
            sandbox = client.create_sandbox(mcp=config, id=args.id, ttl=args.ttl)
    except GatewayError as exc:
        raise _fail(exc) from None
    if args.json:
        answer = {"id": sandbox.id, "mcp_url": sandbox.mcp_url, "mcp_token": sandbox.mcp_token}
        answer["servers"] = sandbox.servers
        print(json.dumps(answer, indent=2))
        return 0
    print(f"Sandbox: {sandbox.id}")
    print(f"Servers: {', '.join(sandbox.servers) or 'none'}")
    print(f"MCP endpoint: {sandbox.mcp_url}")
    print(f"Token: {sandbox.mcp_token}")
    print(f"Ready: {sandbox.claude_command()}")
    return 0


def _row(sandbox: Sandbox) -> dict[str, Any]:
    return {
        "id": sandbox.id,
        "servers": sandbox.servers,
        "created_at": sandbox.created_at,
        "expires_at": sandbox.expires_at,
    }


def cmd_list(args: argparse.Namespace) -> int:
    try:
        with _client(args) as client:
            sandboxes = client.list_sandboxes()
    except GatewayError as exc:
        raise _fail(exc) from None
    rows = [_row(s) for s in sandboxes]
    if args.json:
        print(json.dumps({"sandboxes": rows}, indent=2))
        return 0
    if not rows:
        print("No sandboxes. Create one with: mcp-gateway sandbox create --config @FILE")
        return 0
    table = [("ID", "SERVERS", "CREATED", "EXPIRES")]
    for r in rows:
        table.append((r["id"], ",".join(r["servers"]) or "-", r["created_at"] or "-", r["expires_at"] or "never"))
    widths = [max(len(row[i]) for row in table) for i in range(3)]
    for row in table:
        print(f"{row[0]:<{widths[0]}}  {row[1]:<{widths[1]}}  {row[2]:<{widths[2]}}  {row[3]}")
    return 0


def cmd_update(args: argparse.Namespace) -> int:
    check_sandbox_id(args.id)
    config = read_config_argument(args.config)
    try:
        with _client(args) as client:
            sandbox = client.update_sandbox(args.id, config)
    except GatewayError as exc:
        raise _fail(exc) from None
    if args.json:
        print(json.dumps({"id": sandbox.id, "servers": sandbox.servers, "changed": sandbox.changed}, indent=2))
        return 0
    print(f"Sandbox: {sandbox.id}")
    print(f"Servers: {', '.join(sandbox.servers) or 'none'}")
    print(f"Changed: {', '.join(sandbox.changed) or 'nothing'}")
    return 0


def _confirmed(question: str) -> bool:
    """Ask on the terminal; only a "y" or "yes" answer is a yes (end of input or Ctrl-C is a no)."""
    sys.stderr.write(f"{question} [y/N] ")
    sys.stderr.flush()
    try:
        answer = sys.stdin.readline()
    except KeyboardInterrupt:
        answer = ""
    if not answer.endswith("\n"):
        sys.stderr.write("\n")
    return answer.strip().lower() in ("y", "yes")


def cmd_delete(args: argparse.Namespace) -> int:
    check_sandbox_id(args.id)
    # Only a person at a terminal is asked: scripts (stdin not a terminal) keep working unchanged.
    if not args.yes and sys.stdin is not None and sys.stdin.isatty():
        question = f"Delete sandbox {args.id}? Its servers stop, its tokens stop working, its secrets are erased."
        if not _confirmed(question):
            raise SandboxCliError(f"sandbox {args.id} not deleted (answer y, or pass --yes)")
    try:
        with _client(args) as client:
            client.delete_sandbox(args.id)
    except GatewayError as exc:
        raise _fail(exc) from None
    print(f"Deleted sandbox {args.id}", file=sys.stdout)
    return 0


def _token_argument(args: argparse.Namespace) -> str | None:
    if args.token == "-":
        token = sys.stdin.readline().strip()
        if not token:
            raise SandboxCliError("no token on standard input")
        return token
    return str(args.token) if args.token is not None else None


def cmd_revoke(args: argparse.Namespace) -> int:
    token = _token_argument(args)
    if (token is None) == (args.jti is None):
        raise SandboxCliError("give the token to revoke (TOKEN, or - for standard input), or --jti with --sandbox")
    if args.jti is not None and args.revoke_sandbox is None:
        raise SandboxCliError("--jti needs --sandbox ID (the token's sandbox)")
    if args.revoke_sandbox is not None:
        if token is not None:
            raise SandboxCliError("--sandbox goes with --jti; a TOKEN names its sandbox itself")
        check_sandbox_id(args.revoke_sandbox)
    try:
        with _client(args) as client:
            answer = client.revoke_token(token, jti=args.jti, sandbox=args.revoke_sandbox)
    except GatewayError as exc:
        raise _fail(exc) from None
    if args.json:
        print(json.dumps(answer, indent=2))
        return 0
    until = f" (kept until {answer['until']})" if answer.get("until") else ""
    print(f"Revoked token {answer['jti']} of sandbox {answer['sandbox']}{until}")
    return 0
