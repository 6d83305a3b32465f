"""Catalog servers pulled for real, once, into a data dir shared by every test (and every run).

``pulled_data_dir(["time", "everything"])`` returns ``<repo>/.cache/test-servers`` (or
``$MCP_GATEWAY_TEST_SERVERS``) with those built-in servers pulled: the first call downloads
them from PyPI/npm, later calls (in this run or the next) find them pulled and return at once.
A changed pin in ``catalog/`` makes the next call pull again. Pass it as ``--data-dir`` (or copy
``servers/`` into a test's own data dir) to launch the servers offline.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from gateway.catalog.entries import Catalog
from gateway.catalog.pull import is_pulled, pull

REPO_ROOT = Path(__file__).resolve().parent.parent
CACHE_DIR = Path(os.environ.get("MCP_GATEWAY_TEST_SERVERS") or REPO_ROOT / ".cache" / "test-servers")

_lock = threading.Lock()


def run_sync(make: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run a coroutine to completion on a fresh event loop in a thread.

    Works whether or not the caller is inside a running loop (sync or async tests, fixtures).
    """
    error: list[BaseException] = []

    def target() -> None:
        try:
            asyncio.run(make())
        except BaseException as exc:
            error.append(exc)

    thread = threading.Thread(target=target, name="pull-test-servers")
    thread.start()
    thread.join()
    if error:
        raise error[0]


def pulled_data_dir(names: list[str]) -> Path:
    """The shared data dir with the built-in servers ``names`` pulled (pulling what is missing).

    Safe to call from sync and async tests alike and from several processes at once (``pull``
    takes a per-server file lock).
    """
    catalog = Catalog.load()
    entries = [catalog.get(name) for name in names]
    with _lock:
        missing = [e for e in entries if not is_pulled(e, CACHE_DIR)]
        if missing:

            async def pull_all() -> None:
                for entry in missing:
                    await pull(entry, CACHE_DIR, lambda line: None)

            run_sync(pull_all)
    return CACHE_DIR
