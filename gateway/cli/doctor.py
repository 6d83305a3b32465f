"""``mcp-gateway doctor``: report which runtimes work here (see gateway.cli.diagnose)."""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

from gateway.cli.diagnose import diagnose


def register(commands: Any) -> None:
    doctor = commands.add_parser("doctor", help="which runtimes (host, bwrap, containers) work on this machine")
    doctor.add_argument("--container-engine", choices=["docker", "podman"], help="check only this engine")
    doctor.add_argument("--json", action="store_true")
    doctor.set_defaults(handler=cmd_doctor)


def cmd_doctor(args: argparse.Namespace) -> int:
    report = asyncio.run(diagnose(args.container_engine))
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        print("\n".join(report.lines()))
    return 0
