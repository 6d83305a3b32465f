"""Locate (installing on first use) Node 22 and the official MCP conformance suite.

Both come from the npm registry into a git-ignored cache directory, pinned:
`@modelcontextprotocol/conformance@SUITE_VERSION` and `node-<os>-<arch>@NODE_MAJOR` (the suite
declares `engines.node >= 22`; the CI image has Node 20). A system `node` that is already
>= 22 is used as is. The cache is `$MCP_CONFORMANCE_DIR`, else `<repo>/.cache/conformance`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import platform
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

SUITE_PACKAGE = "@modelcontextprotocol/conformance"
SUITE_VERSION = "0.1.16"
NODE_MAJOR = 22
REPO_ROOT = Path(__file__).resolve().parents[2]
INSTALL_TIMEOUT_S = 600


class SuiteUnavailable(RuntimeError):
    """Node 22 or the suite could not be found or installed (e.g. no npm, no registry)."""


@dataclass(frozen=True)
class Suite:
    """How to run the suite's CLI: `[node, cli, *args]`."""

    node: Path
    cli: Path
    version: str

    def command(self, *args: str) -> list[str]:
        return [str(self.node), str(self.cli), *args]


def cache_dir() -> Path:
    return Path(os.environ.get("MCP_CONFORMANCE_DIR") or REPO_ROOT / ".cache" / "conformance")


def _node_package() -> str:
    system = {"linux": "linux", "darwin": "darwin"}.get(sys.platform)
    arch = {"x86_64": "x64", "amd64": "x64", "aarch64": "arm64", "arm64": "arm64"}.get(platform.machine().lower())
    if system is None or arch is None:
        raise SuiteUnavailable(f"no npm Node build known for {sys.platform}/{platform.machine()}")
    return f"node-{system}-{arch}"


def _node_major(node: str | Path) -> int | None:
    try:
        out = subprocess.run([str(node), "--version"], capture_output=True, text=True, timeout=30, check=True).stdout
        return int(out.strip().lstrip("v").split(".")[0])
    except (OSError, subprocess.SubprocessError, ValueError):
        return None


def _installed_version(root: Path, package: str) -> str | None:
    try:
        return json.loads((root / "node_modules" / package / "package.json").read_text())["version"]
    except (OSError, ValueError, KeyError):
        return None


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    """Serialise installs between concurrent test processes."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _npm_install(root: Path, specs: list[str]) -> None:
    npm = shutil.which("npm")
    if npm is None:
        raise SuiteUnavailable("npm is not on PATH, so Node 22 and the conformance suite cannot be installed")
    cmd = [npm, "install", "--prefix", str(root), "--save-exact", "--no-audit", "--no-fund", "--loglevel=error", *specs]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S)
    except subprocess.TimeoutExpired as e:
        raise SuiteUnavailable(f"`npm install {' '.join(specs)}` timed out after {INSTALL_TIMEOUT_S}s") from e
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise SuiteUnavailable(f"`npm install {' '.join(specs)}` failed: {' | '.join(tail)}")


def ensure_suite(root: Path | None = None) -> Suite:
    """Return a runnable suite, installing what is missing into `root` (default `cache_dir()`)."""
    root = root or cache_dir()
    node_pkg = _node_package()
    with _locked(root):
        local_node = root / "node_modules" / node_pkg / "bin" / "node"
        system_node = shutil.which("node")
        node: Path | None = None
        if local_node.exists() and (_node_major(local_node) or 0) >= NODE_MAJOR:
            node = local_node
        elif system_node and (_node_major(system_node) or 0) >= NODE_MAJOR:
            node = Path(system_node)
        missing: list[str] = []
        if node is None:
            missing.append(f"{node_pkg}@{NODE_MAJOR}")
        if _installed_version(root, SUITE_PACKAGE) != SUITE_VERSION:
            missing.append(f"{SUITE_PACKAGE}@{SUITE_VERSION}")
        if missing:
            _npm_install(root, missing)
        if node is None:
            node = local_node
            if (_node_major(node) or 0) < NODE_MAJOR:
                raise SuiteUnavailable(f"{node} is not a working Node {NODE_MAJOR}")
        cli = root / "node_modules" / SUITE_PACKAGE / "dist" / "index.js"
        if not cli.exists():
            raise SuiteUnavailable(f"{cli} is missing after installing {SUITE_PACKAGE}@{SUITE_VERSION}")
        return Suite(node=node, cli=cli, version=SUITE_VERSION)
