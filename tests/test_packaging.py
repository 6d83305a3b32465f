"""The package as users install it: every package and dependency declared, and the built wheel works on its own."""

from __future__ import annotations

import ast
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.servers_cache import pulled_data_dir
from tests.support import REPO

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
OPTIONAL_IMPORTS = {"uvloop"}  # the "fast" extra: imported only when installed


def declared(requirements: list[str]) -> set[str]:
    return {re.split(r"[\s\[<>=!~;]", r, maxsplit=1)[0].lower().replace("_", "-") for r in requirements}


def imported_modules() -> set[str]:
    """Top-level modules the gateway's code imports."""
    found: set[str] = set()
    for path in (REPO / "gateway").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return found - set(sys.stdlib_module_names) - {"gateway", "__future__"}


def test_the_built_in_catalog_is_package_data() -> None:
    """catalog/ reaches the wheel as gateway/catalog/builtin (a symlink), matched by the package-data glob."""
    builtin = REPO / "gateway" / "catalog" / "builtin"
    assert builtin.is_symlink() and builtin.resolve() == (REPO / "catalog").resolve()
    assert "builtin/*.yaml" in PYPROJECT["tool"]["setuptools"]["package-data"]["gateway.catalog"]
    assert sorted(p.name for p in builtin.glob("*.yaml")) == sorted(p.name for p in (REPO / "catalog").iterdir())


def test_every_imported_package_is_a_declared_dependency() -> None:
    distributions = importlib.metadata.packages_distributions()
    dependencies = declared(PYPROJECT["project"]["dependencies"])
    optional = declared([r for extra in PYPROJECT["project"]["optional-dependencies"].values() for r in extra])
    missing = []
    for module in sorted(imported_modules()):
        names = {d.lower().replace("_", "-") for d in distributions.get(module, [module])}
        allowed = dependencies | (optional if module in OPTIONAL_IMPORTS else set())
        if not names & allowed:
            missing.append(f"{module} ({', '.join(sorted(names))})")
    assert not missing, f"imported but not declared in pyproject dependencies: {missing}"


@pytest.mark.packaging
def test_the_installed_wheel_has_the_built_in_catalog_and_serves(tmp_path: Path) -> None:
    """scripts/wheel-check.sh: build, install into a fresh venv, run from outside the repository."""
    data = tmp_path / "data"
    shutil.copytree(pulled_data_dir(["time"]) / "servers" / "time", data / "servers" / "time", symlinks=True)
    env = {**os.environ, "PYTHON": sys.executable, "DATA_DIR": str(data)}
    for name in ("MCP_GATEWAY_HOME", "MCP_GATEWAY_URL", "MCP_GATEWAY_TOKEN", "MCP_GATEWAY_ADMIN_KEY", "PYTHONPATH"):
        env.pop(name, None)
    result = subprocess.run(
        ["bash", str(REPO / "scripts" / "wheel-check.sh"), str(tmp_path / "work")],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=900,
    )
    log = result.stdout + result.stderr
    serve_log = tmp_path / "work" / "serve.log"
    if serve_log.exists():
        log += "\n--- serve.log ---\n" + serve_log.read_text(errors="replace")
    assert result.returncode == 0, log
    assert "wheel check: OK" in result.stdout
    assert re.search(r"^time\s+pulled\s", result.stdout, re.MULTILINE), result.stdout
    assert "time__get_current_time" in result.stdout
