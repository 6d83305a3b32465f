from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.servers_cache import pulled_data_dir
from tests.support import RunningGateway, start_gateway


@pytest.fixture
def gateway_factory(tmp_path: Path) -> Iterator[Callable[..., RunningGateway]]:
    """Start real gateways (``start_gateway`` arguments); every one is stopped after the test."""
    started: list[RunningGateway] = []
    counter = iter(range(1000))

    def start(*args: Any, **kwargs: Any) -> RunningGateway:
        kwargs.setdefault("workdir", tmp_path / f"gw{next(counter)}")
        gateway = start_gateway(*args, **kwargs)
        started.append(gateway)
        return gateway

    yield start
    for gateway in started:
        gateway.stop()


@pytest.fixture
def servers_data_dir(tmp_path: Path) -> Path:
    """A fresh data dir whose pulled servers (time, everything) are the shared, already-pulled ones."""
    cache = pulled_data_dir(["time", "everything"])
    data = tmp_path / "data"
    data.mkdir()
    (data / "servers").symlink_to(cache / "servers", target_is_directory=True)
    return data


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    """A plain HTTP client for raw requests to a gateway (headers and bodies as the test writes them)."""
    async with httpx.AsyncClient(timeout=60) as client:
        yield client
