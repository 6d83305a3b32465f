"""E2B-style config: keys as users write them map to catalog secrets and config values."""

from __future__ import annotations

import pytest

from gateway.catalog.config import parse_mcp_config
from gateway.catalog.entries import Catalog, CatalogError

CATALOG = Catalog.load()


def test_camel_case_server_and_secret_keys_map_to_catalog_names() -> None:
    servers = parse_mcp_config(CATALOG, {"githubOfficial": {"githubPersonalAccessToken": "ghp_x", "host": "h.example"}})
    github = servers["github-official"]
    assert github.secrets == {"github.personal_access_token": "ghp_x"}
    assert github.config == {"host": "h.example"}


def test_leading_server_name_is_dropped_from_the_secret_key() -> None:
    servers = parse_mcp_config(CATALOG, {"notion": {"internalIntegrationToken": "ntn_x"}})
    assert servers["notion"].secrets == {"notion.internal_integration_token": "ntn_x"}


@pytest.mark.parametrize("key", ["github.personal_access_token", "githubPersonalAccessToken", "personalAccessToken"])
def test_every_documented_spelling_of_a_secret_key_is_accepted(key: str) -> None:
    servers = parse_mcp_config(CATALOG, {"github-official": {key: "ghp_y"}})
    assert servers["github-official"].secrets["github.personal_access_token"] == "ghp_y"


def test_plain_server_names_need_no_settings() -> None:
    assert set(parse_mcp_config(CATALOG, {"time": {}}, ["everything"])) == {"time", "everything"}


def test_unknown_server_lists_the_valid_ones() -> None:
    with pytest.raises(CatalogError) as caught:
        parse_mcp_config(CATALOG, {"githb": {}})
    assert "githb" in str(caught.value) and "github-official (githubOfficial)" in str(caught.value)


def test_unknown_key_lists_the_valid_keys() -> None:
    with pytest.raises(CatalogError) as caught:
        parse_mcp_config(CATALOG, {"githubOfficial": {"token": "x"}})
    message = str(caught.value)
    assert "'token'" in message and "githubPersonalAccessToken" in message and "host" in message


def test_missing_required_secret_says_how_to_pass_it() -> None:
    with pytest.raises(CatalogError) as caught:
        parse_mcp_config(CATALOG, {"notion": {}})
    assert "internalIntegrationToken" in str(caught.value)


def test_wrong_types_are_refused_without_echoing_the_value() -> None:
    with pytest.raises(CatalogError) as caught:
        parse_mcp_config(CATALOG, {"githubOfficial": {"githubPersonalAccessToken": 12345678, "host": "h"}})
    assert "12345678" not in str(caught.value)
    with pytest.raises(CatalogError):
        parse_mcp_config(CATALOG, {"githubOfficial": {"githubPersonalAccessToken": "x", "host": 5}})
    with pytest.raises(CatalogError):
        parse_mcp_config(CATALOG, ["time"])
