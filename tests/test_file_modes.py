"""The data dir is 0700 and nothing in it is readable by others (keys, token, database and its
-wal/-shm, server logs and homes, audit files), whatever the umask the gateway starts with."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from gateway.store.datadir import DataDir
from gateway.store.sandboxes import Sandbox, SandboxStore
from tests.sandbox_helpers import CATALOG, create, text_of
from tests.support import RunningGateway


@pytest.fixture
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    """Run the test (and the gateways it starts, which inherit it) under ``request.param`` as umask."""
    before = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(before)


def exposed(root: Path) -> list[str]:
    """Paths under ``root`` (itself included) with any group or other permission bit."""
    found = []
    for path in [root, *root.rglob("*")]:
        mode = path.lstat().st_mode
        if not stat.S_ISLNK(mode) and mode & 0o077:
            found.append(f"{path.relative_to(root.parent)} {stat.filemode(mode)}")
    return found


@pytest.mark.parametrize("umask", [0o022, 0o000], indirect=True, ids=["umask022", "umask000"])
async def test_nothing_in_a_served_data_dir_is_readable_by_others(
    umask: int, gateway_factory: Callable[..., RunningGateway]
) -> None:
    gateway = gateway_factory(["--servers", "plain"], catalog=CATALOG)
    sandbox = create(gateway, {"canary": {"token": "mode-canary-5512"}})
    async with gateway.client(sandbox["mcp_token"]) as client:
        assert "REDACTED" in text_of(await client.call_tool("canary__secret_echo", {"name": "CANARY_TOKEN"}))
    async with gateway.client() as client:
        await client.call_tool("plain__echo", {"text": "hi"})
    data = gateway.data_dir
    for name in ("signing.key", "secrets.key", "admin.key", "token", "sandboxes.db", "sandboxes.db-wal"):
        assert (data / name).exists(), name
    assert (data / "home" / sandbox["id"]).is_dir()
    assert any((data / "logs").rglob("*.log"))
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    assert exposed(data) == []


@pytest.mark.parametrize("umask", [0o000], indirect=True)
def test_data_dir_and_store_files_are_private_when_used_as_a_library(umask: int, tmp_path: Path) -> None:
    data = DataDir.open(tmp_path / "lib-data")
    data.signing_key()
    data.admin_key()
    store = SandboxStore(data.database, Fernet.generate_key().decode())
    store.put(Sandbox("a", {}))
    try:
        assert (data.path / "sandboxes.db-wal").exists()
        assert stat.S_IMODE(data.path.stat().st_mode) == 0o700
        assert exposed(data.path) == []
    finally:
        store.close()


def test_an_existing_data_dir_and_key_are_made_private(tmp_path: Path) -> None:
    root = tmp_path / "old-data"
    root.mkdir(mode=0o755)
    root.chmod(0o755)
    key = root / "admin.key"
    key.write_text("ab" * 32 + "\n")
    key.chmod(0o644)
    data = DataDir.open(root)
    assert data.admin_key() == "ab" * 32
    assert stat.S_IMODE(root.stat().st_mode) == 0o700 and stat.S_IMODE(key.stat().st_mode) == 0o600
