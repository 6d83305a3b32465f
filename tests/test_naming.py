"""Namespaced tool names are always valid for clients."""

from __future__ import annotations

import re

from gateway.core.naming import exposed_name

VALID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


def test_prefix_and_tool_are_joined_with_two_underscores() -> None:
    assert exposed_name("github-official", "create_issue") == "github-official__create_issue"


def test_empty_prefix_keeps_the_bare_name() -> None:
    assert exposed_name("", "echo") == "echo"


def test_bad_characters_become_underscores() -> None:
    assert exposed_name("srv", "get.file/v2 now") == "srv__get_file_v2_now"


def test_long_names_are_cut_with_a_hash_and_stay_distinct() -> None:
    a = exposed_name("server", "x" * 80 + "a")
    b = exposed_name("server", "x" * 80 + "b")
    assert VALID.match(a) and VALID.match(b)
    assert len(a) == 64 and a != b


def test_unicode_names_are_made_valid() -> None:
    assert VALID.match(exposed_name("srv", "überprüfen"))
