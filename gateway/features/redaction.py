"""Redaction: a sandbox's secret values never leave the gateway in results, prompts or logs.

Every string in a JSON value is searched for every secret value of the sandbox, and each
hit is replaced by ``[REDACTED:<secret name>]``. Values shorter than ``MIN_SECRET_LENGTH``
are not searched for: replacing every ``1`` or ``ab`` in a result would destroy it and
protect nothing.

A secret is also found in the forms a server is likely to print it in: base64 (standard and
URL-safe, at any alignment, so ``Basic base64(user:secret)`` is caught too), hex (either case)
and URL-encoded. Encoded forms shorter than ``MIN_ENCODED_LENGTH`` are left alone, for the
same reason as short values.

Line streams (a server's stderr, copied to its log) go through :class:`LineRedactor`, which
also catches a secret split across lines (line breaks anywhere inside it, as when a long value
or its base64 is wrapped): it holds lines back while their end could be the start of a secret.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote, quote_plus

MIN_SECRET_LENGTH = 4
MIN_ENCODED_LENGTH = 8
MAX_HELD_LINES = 64  # a line stream never holds back more than this many lines
LINE_BREAK = "(?:\\r?\\n)?"  # what may sit between two characters of a secret split across lines


def _base64_cores(raw: bytes) -> set[str]:
    """The part of any base64 text holding ``raw`` that depends on ``raw`` alone, for each of the
    three byte alignments it can have in the encoded data (standard and URL-safe alphabets)."""
    cores = set()
    for offset, skip in ((0, 0), (1, 2), (2, 3)):
        encoded = base64.b64encode(b"\0" * offset + raw).decode("ascii")
        core = encoded[skip : (8 * (offset + len(raw))) // 6]
        cores.add(core)
        cores.add(core.translate(str.maketrans("+/", "-_")))
    whole = base64.b64encode(raw).decode("ascii")
    cores.update({whole, whole.rstrip("="), base64.urlsafe_b64encode(raw).decode("ascii")})
    return cores


def _trie_pattern(words: Iterable[str]) -> str:
    """One regex matching any of ``words``, longest first, factored by common prefixes: CPython's
    ``re`` tries alternatives one by one, so a flat ``a|b|c`` of many secrets and their forms would
    cost each position of a large result once per form."""
    trie: dict[str, Any] = {}
    for word in words:
        node = trie
        for char in word:
            node = node.setdefault(char, {})
        node[""] = {}  # the end of a word

    def build(node: dict[str, Any]) -> str:
        ends = "" in node
        branches = [re.escape(char) + build(child) for char, child in sorted(node.items()) if char]
        if not branches:
            return ""
        body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
        if ends:  # a shorter word ends here: the longer ones are tried first, then it matches as it is
            return "(?:" + body + ")?"
        return body

    return build(trie)


def encoded_forms(value: str) -> set[str]:
    """The encoded forms of a secret value searched for besides the value itself."""
    raw = value.encode("utf-8")
    forms = _base64_cores(raw)
    forms.update({raw.hex(), raw.hex().upper()})
    for encoded in (quote(value, safe=""), quote(value), quote_plus(value)):
        forms.add(encoded)
        forms.add(re.sub(r"%[0-9A-F]{2}", lambda m: m.group(0).lower(), encoded))
    forms.discard(value)
    return {form for form in forms if len(form) >= MIN_ENCODED_LENGTH}


class Redactor:
    """Replaces secret values in strings and nested JSON. Cheap when there is nothing to hide."""

    def __init__(self, secrets: Mapping[str, str]) -> None:
        usable = [
            (name, value)
            for name, value in secrets.items()
            if isinstance(value, str) and len(value) >= MIN_SECRET_LENGTH
        ]
        names: dict[str, str] = {}
        for name, value in usable:  # the values first: a value that is another's encoding keeps its name
            names.setdefault(value, name)
        for name, value in usable:
            for form in encoded_forms(value):
                names.setdefault(form, name)
        # Longest forms first, so a form that contains another is replaced whole.
        self._forms = sorted(names, key=lambda form: (-len(form), form))
        self._names = names
        self._pattern = re.compile(_trie_pattern(self._forms)) if names else None
        self._split_pattern: re.Pattern[str] | None = None

    def __bool__(self) -> bool:
        return self._pattern is not None

    def _mark(self, match: re.Match[str]) -> str:
        return f"[REDACTED:{self._names[match.group(0)]}]"

    def text(self, value: str) -> str:
        if self._pattern is None:
            return value
        return self._pattern.sub(self._mark, value)

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

    # -- text made of lines --------------------------------------------------------------

    def lines(self) -> LineRedactor:
        """A redactor for one stream of lines (one server's stderr)."""
        return LineRedactor(self)

    def split_text(self, value: str) -> str:
        """:meth:`text`, also catching a secret (or encoded form) with line breaks inside it.

        A match keeps its line breaks after the mark, so the text has as many lines as before.
        """
        if self._pattern is None:
            return value
        if self._split_pattern is None:
            self._split_pattern = re.compile(
                "|".join(LINE_BREAK.join(re.escape(char) for char in form) for form in self._forms)
            )

        def mark(match: re.Match[str]) -> str:
            found = match.group(0)
            joined = found.replace("\r", "").replace("\n", "")
            breaks = "".join(c for c in found if c in "\r\n")
            return f"[REDACTED:{self._names[joined]}]{breaks}"

        return self._split_pattern.sub(mark, value)

    def continuation(self, text: str) -> int | None:
        """Where in ``text`` a secret (or encoded form) may begin that the next line would complete:
        the index of the earliest such start, line breaks skipped, or None."""
        if self._pattern is None:
            return None
        longest = len(self._forms[0]) - 1
        chars: list[str] = []
        where: list[int] = []
        index = len(text) - 1
        while index >= 0 and len(chars) < longest:
            if text[index] not in "\r\n":
                chars.append(text[index])
                where.append(index)
            index -= 1
        tail = "".join(reversed(chars))
        where.reverse()
        start: int | None = None
        for form in self._forms:
            for k in range(min(len(form) - 1, len(tail)), 0, -1):
                if tail.endswith(form[:k]):
                    position = where[len(tail) - k]
                    start = position if start is None else min(start, position)
                    break
        return start


class LineRedactor:
    """Redacts one stream of lines, catching secrets split across them.

    ``feed`` takes each line as read (with its line break) and returns the lines that may be
    written now, redacted. Lines whose end could begin a secret are held back until the next
    lines show whether it does; ``flush`` returns what is held when the stream ends.
    """

    def __init__(self, redactor: Redactor) -> None:
        self._redactor = redactor
        self._held = ""

    def feed(self, line: bytes) -> list[bytes]:
        if not self._redactor:
            return [line]
        text = self._redactor.split_text(self._held + line.decode("utf-8", "replace"))
        lines = text.splitlines(keepends=True)
        start = self._redactor.continuation(text)
        keep = len(lines)
        if start is not None:  # hold back from the line where a secret may begin
            offset = 0
            for number, part in enumerate(lines):
                if offset + len(part) > start:
                    keep = number
                    break
                offset += len(part)
            keep = max(keep, len(lines) - MAX_HELD_LINES)
        self._held = "".join(lines[keep:])
        return [part.encode("utf-8") for part in lines[:keep]]

    def flush(self) -> bytes:
        held, self._held = self._held, ""
        return held.encode("utf-8")

    def feed_all(self, lines: Iterable[bytes]) -> bytes:
        """Every line of a finished stream, redacted (for tests and one-off texts)."""
        out = [part for line in lines for part in self.feed(line)]
        return b"".join(out) + self.flush()


NO_REDACTION = Redactor({})
