"""The command line: ``mcp-gateway serve | token | catalog | pull | sandbox | status | tools | call``.

Every user error ends with one line on stderr naming the problem and what is valid, and a
non-zero exit status; never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from gateway import __version__
from gateway.catalog.entries import Catalog, CatalogError
from gateway.cli.args import Parser, csv, non_negative_float, port_number, positive_float, positive_int, seconds
from gateway.store.datadir import DataDir, restrict_umask

EXIT_FAILURE = 1


class UserError(Exception):
    """A problem the user can fix; printed as one line."""


def add_data_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", help="data directory (default $MCP_GATEWAY_HOME or ~/.mcp-gateway)")


def add_catalog(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--catalog", action="append", default=[], metavar="FILE", help="catalog file laid over the built-in catalog"
    )


def build_parser() -> Parser:
    parser = Parser(prog="mcp-gateway", description="An authenticated, sandbox-scoped MCP gateway.")
    parser.add_argument("--version", action="version", version=f"mcp-gateway {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    commands.required = True

    add_serve(commands)

    token = commands.add_parser("token", help="print a sandbox token")
    add_data_dir(token)
    token.add_argument("--sandbox", default="default")
    token.add_argument("--ttl", type=positive_int, default=24 * 3600, help="lifetime in seconds")
    token.add_argument("--servers", type=csv, help="narrow the token to these servers")
    token.add_argument("--tools", type=csv, help="narrow the token to tool names matching these globs")
    token.add_argument("--public-url", help=argparse.SUPPRESS)
    with_module("gateway.cli.sandbox", lambda m: m.register_token_commands(token))

    catalog = commands.add_parser("catalog", help="list or show catalog entries")
    catalog_commands = catalog.add_subparsers(dest="catalog_command", metavar="list|show", parser_class=Parser)
    catalog_commands.required = True
    listing = catalog_commands.add_parser("list")
    add_catalog(listing)
    add_data_dir(listing)
    listing.add_argument("--json", action="store_true")
    show = catalog_commands.add_parser("show")
    show.add_argument("name")
    add_catalog(show)
    add_data_dir(show)

    pull = commands.add_parser("pull", help="install servers into the data dir")
    pull.add_argument("names", nargs="+", metavar="NAME")
    add_data_dir(pull)
    add_catalog(pull)

    modules = ("remote", "sandbox", "doctor", "connect", "stdio", "completion")
    for module in (f"gateway.cli.{name}" for name in modules):
        with_module(module, lambda m: m.register(commands))
    return parser


def add_serve(commands: Any) -> None:
    """``serve``: each option is a flag, an ``MCP_GATEWAY_*`` variable and a config-file key (cli/options.py)."""
    from gateway.cli.options import LayeredOptions

    serve = commands.add_parser("serve", help="run the gateway", description="Run the gateway.")
    options = LayeredOptions()

    def add(*flags: str, container: Any = serve, **kwargs: Any) -> None:
        options.add(container, *flags, **kwargs)

    add("--config-file", metavar="FILE", help="TOML file of serve options (keys are these flags' names)")
    add("--host", default="127.0.0.1", help="address to listen on")
    add("--port", type=port_number, default=8811, help="port to listen on")
    add("--data-dir", help="data directory (default $MCP_GATEWAY_HOME or ~/.mcp-gateway)")
    add("--catalog", action="append", default=[], metavar="FILE", help="catalog file laid over the built-in catalog")
    add("--servers", type=csv, default=[], metavar="A,B", help="servers of the default sandbox")
    add("--config", metavar="JSON|@FILE|-", help="E2B-style server config: JSON, @FILE or - (stdin)")
    add("--public-url", metavar="URL", help="the public MCP URL (token audience), default http://HOST:PORT/mcp")
    add("--admin-key", metavar="KEY", help="admin key (default DATA_DIR/admin.key)")
    add("--no-auth", action="store_true", help="serve /mcp without tokens (loopback only)")
    add("--runtime", choices=["auto", "host", "bwrap", "container"], default="auto", help="where servers run")
    add("--container-engine", choices=["docker", "podman"], help="engine of --runtime container (default: found)")
    add("--allow-origin", action="append", default=[], metavar="ORIGIN", help="browser origin allowed to call /mcp")
    add("--no-redact", action="store_true", help="do not redact secret values in results")
    add("--accept-tool-changes", action="store_true", help="accept changed tool definitions")
    add("--issuer", default="mcp-gateway", help="expected token issuer")
    keys = serve.add_mutually_exclusive_group()
    add("--jwt-public-key", container=keys, type=Path, metavar="FILE", help="verify tokens of an external issuer")
    add("--jwks-url", container=keys, metavar="URL", help="verify tokens of an external issuer by its JWKS")
    add("--metrics-port", type=port_number, metavar="PORT", help="also serve /metrics on this port")
    add("--log-format", choices=["json", "text"], default="text", help="log line format (stderr)")
    add("--log-level", choices=["debug", "info", "warning", "error"], default="info", help="least level logged")
    add("--discovery", choices=["auto", "on", "off"], default="auto", help="tool discovery of the default sandbox")
    add("--discovery-limit", type=positive_int, default=128, metavar="N", help="tools listed before discovery (auto)")
    add(
        "--pin-tools",
        type=csv,
        metavar="GLOB,...",
        help="tools always listed for the default sandbox, even with discovery",
    )
    add("--prestart", action="store_true", help="start the default sandbox's servers at once")
    add(
        "--max-concurrent-requests",
        type=positive_int,
        default=64,
        metavar="N",
        help="in-flight MCP requests per sandbox before 429",
    )
    add(
        "--max-sessions",
        type=positive_int,
        default=10_000,
        metavar="N",
        help="open MCP sessions (all sandboxes) before a new one gets 503",
    )
    add(
        "--max-sessions-per-sandbox",
        type=positive_int,
        default=1_000,
        metavar="N",
        help="open MCP sessions of one sandbox before its next one gets 503 (others are not affected)",
    )
    add(
        "--idle-timeout",
        type=seconds,
        default=900.0,
        metavar="SECONDS",
        help="seconds without requests before a sandbox's servers stop (0: never)",
    )
    add(
        "--call-timeout",
        type=positive_float,
        default=300.0,
        metavar="SECONDS",
        help="seconds an upstream call may take",
    )
    add(
        "--grace-period",
        type=non_negative_float,
        default=10.0,
        metavar="SECONDS",
        help="seconds to finish calls on shutdown",
    )
    add(
        "--header-timeout",
        type=positive_float,
        default=15.0,
        metavar="SECONDS",
        help="seconds a request's headers may take to arrive before the connection is closed (408)",
    )
    add(
        "--max-header-bytes",
        type=positive_int,
        default=64 * 1024,
        metavar="BYTES",
        help="largest request header block (else 431)",
    )
    options.finish(serve)


def with_module(name: str, action: Callable[[Any], None]) -> None:
    """Optional command groups live in their own modules."""
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name != name:
            raise
        return
    action(module)


def load_catalog(files: Sequence[str]) -> Catalog:
    return Catalog.load([Path(f) for f in files])


# -- token ---------------------------------------------------------------------------------


def cmd_token(args: argparse.Namespace) -> int:
    from gateway.core.auth import TokenService
    from gateway.store.sandboxes import DEFAULT_SANDBOX, SandboxStore, check_sandbox_id

    check_sandbox_id(args.sandbox)
    data = DataDir.open(args.data_dir)
    audience = args.public_url or data.read_state().get("public_url") or "http://127.0.0.1:8811/mcp"
    store = SandboxStore(data.database, data.secrets_key())
    try:
        generation = store.generation(args.sandbox)  # the token is bound to this incarnation of the sandbox
    finally:
        store.close()
    if generation is None:
        if args.sandbox == DEFAULT_SANDBOX:
            raise UserError("no default sandbox yet; start the gateway once with: mcp-gateway serve")
        raise UserError(f"no sandbox {args.sandbox!r}; see: mcp-gateway sandbox list")
    tokens = TokenService(data.signing_key(), audience)
    print(tokens.mint(args.sandbox, ttl=args.ttl, servers=args.servers, tools=args.tools, generation=generation))
    return 0


# -- catalog and pull ----------------------------------------------------------------------


def cmd_catalog(args: argparse.Namespace) -> int:
    from gateway.catalog.pull import catalog_rows

    catalog = load_catalog(args.catalog)
    data = DataDir.open(args.data_dir)
    if args.catalog_command == "show":
        entry = catalog.get(catalog.resolve_name(args.name))
        rows = [r for r in catalog_rows(catalog, data.path) if r["name"] == entry.name]
        info = dict(rows[0]) if rows else {"name": entry.name}
        info["description"] = entry.description
        info["config"] = {k: dict(v) for k, v in entry.config_properties.items()}
        info["command"] = list(entry.command)
        print(json.dumps(info, indent=2, default=str))
        return 0
    rows = catalog_rows(catalog, data.path)
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
        return 0
    width = max((len(r["name"]) for r in rows), default=4)
    for row in rows:
        pulled = "pulled" if row.get("pulled") else "-"
        secrets = ", ".join(row.get("secrets") or [])
        print(
            f"{row['name']:<{width}}  {pulled:<6}  {row.get('title', '')}"
            + (f"  (secrets: {secrets})" if secrets else "")
        )
    return 0


def cmd_pull(args: argparse.Namespace) -> int:
    from gateway.catalog.pull import pull

    catalog = load_catalog(args.catalog)
    data = DataDir.open(args.data_dir)
    entries = [catalog.get(catalog.resolve_name(n)) for n in args.names]

    def report(line: str) -> None:
        print(line, flush=True)

    for entry in entries:
        asyncio.run(pull(entry, data.path, report))
    return 0


# -- serve -----------------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    from gateway.cli.serve import serve

    return serve(args.layered_options.resolve(args))


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "serve": cmd_serve,
    "token": cmd_token,
    "catalog": cmd_catalog,
    "pull": cmd_pull,
}


def main(argv: Sequence[str] | None = None) -> int:
    restrict_umask()  # what the gateway writes into the data dir is its owner's only
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None) or COMMANDS[args.command]
    try:
        return handler(args)
    except (UserError, CatalogError, ValueError) as exc:
        print(f"mcp-gateway: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except BrokenPipeError:  # the reader went away (`mcp-gateway tools | head`): nothing to say
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")
        return 0
    except OSError as exc:
        print(f"mcp-gateway: {exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else ""), file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 130
    finally:
        logging.shutdown()
