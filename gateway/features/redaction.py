"""Redaction: a sandbox's secret values never leave the gateway in results, prompts or logs.

Every string in a JSON value is searched for every secret value of the sandbox, and each
hit is replaced by ``[REDACTED:<secret name>]``. Values shorter than ``MIN_SECRET_LENGTH``
are not searched for: replacing every ``1`` or ``ab`` in a result would destroy it and
protect nothing.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

MIN_SECRET_LENGTH = 4


class Redactor:
    """Replaces secret values in strings and nested JSON. Cheap when there is nothing to hide."""

    def __init__(self, secrets: Mapping[str, str]) -> None:
        # Longest values first, so a secret that contains another is replaced whole.
        usable = sorted(
            (
                (name, value)
                for name, value in secrets.items()
                if isinstance(value, str) and len(value) >= MIN_SECRET_LENGTH
            ),
            key=lambda item: -len(item[1]),
        )
        self._names = {value: name for name, value in reversed(usable)}
        self._pattern = re.compile("|".join(re.escape(value) for _, value in usable)) if usable else None

    def __bool__(self) -> bool:
        return self._pattern is not None

    def text(self, value: str) -> str:
        if self._pattern is None:
            return value
        return self._pattern.sub(lambda m: f"[REDACTED:{self._names[m.group(0)]}]", value)

    def value(self, data: Any) -> Any:
        """Return ``data`` with secrets replaced in every string (keys included)."""
        if self._pattern is None:
            return data
        if isinstance(data, str):
            return self.text(data)
        if isinstance(data, dict):
            return {self.text(k) if isinstance(k, str) else k: self.value(v) for k, v in data.items()}
        if isinstance(data, list):
            return [self.value(v) for v in data]
        return data

    def bytes(self, data: bytes) -> bytes:
        if self._pattern is None:
            return data
        return self.text(data.decode("utf-8", "replace")).encode("utf-8")


NO_REDACTION = Redactor({})
