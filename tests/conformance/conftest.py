"""Registers the `conformance` marker (select with `-m conformance`, skip with `-m "not conformance"`)."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "conformance: runs the official MCP conformance suite (Node 22 + npm package; ~10-30 s)"
    )
