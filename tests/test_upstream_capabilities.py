"""What the gateway declares upstream in ``initialize``: every client capability it can route.

server-everything registers ``trigger-url-elicitation`` only for a client that declares URL-mode
elicitation (``{"elicitation": {"url": {}}}``), so the tool being listed through the gateway
shows the declaration reached it. (The list a never-started server is shown comes from its pull;
a first call starts it.)
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.servers_cache import pulled_data_dir
from tests.support import RunningGateway


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A fresh data dir whose pulled servers are the shared, already-pulled ones."""
    cache = pulled_data_dir(["everything"])
    data = tmp_path / "data"
    data.mkdir()
    (data / "servers").symlink_to(cache / "servers", target_is_directory=True)
    return data


async def test_url_mode_elicitation_is_declared_upstream(
    gateway_factory: Callable[..., RunningGateway], data_dir: Path
) -> None:
    gateway = gateway_factory(["--servers", "everything"], data_dir=data_dir)
    async with gateway.client() as client:
        # A call starts the server; from then on the list is its live one (before: the pulled record).
        await client.call_tool("everything__echo", {"message": "start"})
        names = {tool.name for tool in (await client.list_tools()).tools}
    assert "everything__trigger-elicitation-request" in names  # form mode, declared before too
    assert "everything__trigger-url-elicitation" in names
