"""Namespaced names: ``<prefix>__<tool>``, always valid for clients (``^[a-zA-Z0-9_-]{1,64}$``)."""

from __future__ import annotations

import hashlib
import re

SEPARATOR = "__"
MAX_LENGTH = 64
VALID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
INVALID_CHARS = re.compile(r"[^a-zA-Z0-9_-]")


def exposed_name(prefix: str, name: str) -> str:
    """The name a client sees for an upstream tool or prompt ``name`` of a server with ``prefix``."""
    full = f"{prefix}{SEPARATOR}{name}" if prefix else name
    if VALID.match(full):
        return full
    cleaned = INVALID_CHARS.sub("_", full) or "_"
    if len(cleaned) <= MAX_LENGTH:
        return cleaned
    # Cut, and add a short hash of the original so two long names stay distinct.
    digest = hashlib.sha256(full.encode("utf-8")).hexdigest()[:8]
    return f"{cleaned[: MAX_LENGTH - 9]}_{digest}"
