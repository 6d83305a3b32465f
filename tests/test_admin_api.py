"""The sandbox admin API end to end: create, list, get, delete, new token; auth; bad inputs -> clear 4xx."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.sandbox_helpers import CATALOG, create, mcp_status
from tests.support import RunningGateway, start_gateway

SECRET = "canary-admin-SECRET-4f1d9a"


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    gateway = start_gateway(workdir=tmp_path_factory.mktemp("admin"), catalog=CATALOG)
    yield gateway
    gateway.stop()


@pytest.fixture
def admin(gateway: RunningGateway) -> Iterator[httpx.Client]:
    with gateway.admin() as client:
        yield client


def assert_error(response: httpx.Response, status: int, *words: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "message"}
    assert isinstance(body["error"], str) and body["error"]
    assert "\n" not in body["message"]
    for word in words:
        assert word in body["message"], body["message"]
    assert SECRET not in response.text
    return body


# -- the happy path --------------------------------------------------------------------------


def test_create_answers_201_with_url_token_and_servers(gateway: RunningGateway, admin: httpx.Client) -> None:
    response = admin.post("/admin/sandboxes", json={"mcp": {"canary": {"token": SECRET}, "plain": {}}})
    assert response.status_code == 201
    body = response.json()
    assert set(body) == {"id", "mcp_url", "mcp_token", "servers"}
    assert body["mcp_url"] == gateway.url
    assert body["servers"] == ["canary", "plain"]
    assert body["id"].startswith("sbx-")
    assert mcp_status(gateway, body["mcp_token"]) == 200


def test_create_with_an_id_uses_it_and_a_second_create_is_409(admin: httpx.Client) -> None:
    first = admin.post("/admin/sandboxes", json={"id": "team-a-1", "mcp": {"plain": {}}})
    assert first.status_code == 201 and first.json()["id"] == "team-a-1"
    again = admin.post("/admin/sandboxes", json={"id": "team-a-1", "mcp": {"plain": {}}})
    assert_error(again, 409, "team-a-1")


def test_creating_the_default_sandbox_id_is_409(admin: httpx.Client) -> None:
    assert_error(admin.post("/admin/sandboxes", json={"id": "default", "mcp": {}}), 409)


def test_camel_case_server_keys_and_secret_aliases_are_accepted(admin: httpx.Client) -> None:
    response = admin.post("/admin/sandboxes", json={"mcp": {"canary": {"canaryToken": SECRET}}})
    assert response.status_code == 201, response.text


def test_list_and_get_show_sandboxes_without_secret_values(gateway: RunningGateway, admin: httpx.Client) -> None:
    created = create(gateway, {"canary": {"token": SECRET}}, ttl=3600)
    listing = admin.get("/admin/sandboxes")
    assert listing.status_code == 200
    assert SECRET not in listing.text
    rows = {row["id"]: row for row in listing.json()["sandboxes"]}
    row = rows[created["id"]]
    assert {"id", "servers", "created_at", "expires_at"} <= set(row)
    assert row["servers"] == ["canary"] and row["expires_at"] is not None
    assert "default" in rows
    one = admin.get(f"/admin/sandboxes/{created['id']}")
    assert one.status_code == 200 and SECRET not in one.text
    assert one.json() == row


def test_delete_answers_204_then_404(gateway: RunningGateway, admin: httpx.Client) -> None:
    created = create(gateway, {"plain": {}})
    response = admin.delete(f"/admin/sandboxes/{created['id']}")
    assert response.status_code == 204 and response.content == b""
    assert_error(admin.get(f"/admin/sandboxes/{created['id']}"), 404, created["id"])
    assert_error(admin.delete(f"/admin/sandboxes/{created['id']}"), 404)


def test_new_token_is_accepted_on_mcp(gateway: RunningGateway, admin: httpx.Client) -> None:
    created = create(gateway, {"plain": {}})
    response = admin.post(f"/admin/sandboxes/{created['id']}/token", json={"ttl": 60})
    assert response.status_code == 200
    assert set(response.json()) == {"mcp_token"}
    assert mcp_status(gateway, response.json()["mcp_token"]) == 200


def test_new_token_takes_an_empty_body(gateway: RunningGateway, admin: httpx.Client) -> None:
    created = create(gateway, {"plain": {}})
    response = admin.post(f"/admin/sandboxes/{created['id']}/token")
    assert response.status_code == 200 and response.json()["mcp_token"]


def test_new_token_for_an_unknown_sandbox_is_404(admin: httpx.Client) -> None:
    assert_error(admin.post("/admin/sandboxes/nope/token", json={}), 404, "nope")


# -- admin key -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/admin/sandboxes"),
        ("GET", "/admin/sandboxes"),
        ("GET", "/admin/sandboxes/default"),
        ("DELETE", "/admin/sandboxes/default"),
        ("POST", "/admin/sandboxes/default/token"),
    ],
)
@pytest.mark.parametrize("credential", [None, "wrong-key", "sandbox-token"])
def test_every_route_needs_the_admin_key(
    gateway: RunningGateway, method: str, path: str, credential: str | None
) -> None:
    headers = {}
    if credential == "sandbox-token":
        headers["Authorization"] = f"Bearer {gateway.token}"
    elif credential:
        headers["Authorization"] = f"Bearer {credential}"
    response = httpx.request(method, gateway.base_url + path, headers=headers, json={"mcp": {}}, timeout=30)
    if credential == "sandbox-token":  # a valid credential, but not an admin one
        assert_error(response, 403, "admin key")
        assert 'error="insufficient_scope"' in response.headers["www-authenticate"]
    else:
        assert_error(response, 401, "admin key")
    assert response.headers["www-authenticate"].startswith("Bearer ")
    assert "resource_metadata=" in response.headers["www-authenticate"]


def test_a_foreign_origin_is_refused(gateway: RunningGateway, admin: httpx.Client) -> None:
    response = admin.get("/admin/sandboxes", headers={"Origin": "https://evil.example"})
    assert_error(response, 403)


# -- bad inputs ------------------------------------------------------------------------------

COLLECTION = "/admin/sandboxes"
TOKEN = "/admin/sandboxes/default/token"


@pytest.mark.parametrize("path", [COLLECTION, TOKEN])
def test_bad_json_is_400(admin: httpx.Client, path: str) -> None:
    response = admin.post(
        path,
        content=b'{"mcp": {"canary": {"token": "' + SECRET.encode() + b'"}',
        headers={"Content-Type": "application/json"},
    )
    assert_error(response, 400, "not valid JSON")


@pytest.mark.parametrize("path", [COLLECTION, TOKEN])
def test_a_body_that_is_not_an_object_is_400(admin: httpx.Client, path: str) -> None:
    assert_error(admin.post(path, json=["mcp"]), 400, "JSON object")


@pytest.mark.parametrize("path", [COLLECTION, TOKEN])
def test_bodies_over_4_mib_are_413(admin: httpx.Client, path: str) -> None:
    huge = b'{"mcp": {"plain": {}}, "pad": "' + b"x" * (4 * 1024 * 1024 + 10) + b'"}'
    assert_error(admin.post(path, content=huge, headers={"Content-Type": "application/json"}), 413)


@pytest.mark.parametrize("path", [COLLECTION, TOKEN])
def test_a_chunked_body_over_4_mib_is_413(admin: httpx.Client, path: str) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"pad": "'
        for _ in range(80):
            yield b"x" * 65536
        yield b'"}'

    assert_error(admin.post(path, content=chunks(), headers={"Content-Type": "application/json"}), 413)


def test_unknown_key_in_create_is_400_and_lists_valid_keys(admin: httpx.Client) -> None:
    response = admin.post(COLLECTION, json={"mcp": {}, "secrets": {}})
    assert_error(response, 400, "'secrets'", "id", "mcp", "ttl", "discovery")


def test_unknown_key_in_token_is_400_and_lists_valid_keys(admin: httpx.Client) -> None:
    assert_error(admin.post(TOKEN, json={"sandbox": "other"}), 400, "'sandbox'", "ttl")


def test_create_without_mcp_is_400(admin: httpx.Client) -> None:
    assert_error(admin.post(COLLECTION, json={"id": "x"}), 400, "'mcp'")


def test_unknown_server_is_400_and_lists_valid_servers(admin: httpx.Client) -> None:
    assert_error(admin.post(COLLECTION, json={"mcp": {"nosuch": {}}}), 400, "nosuch", "canary", "plain")


def test_unknown_config_key_is_400_and_lists_valid_keys(admin: httpx.Client) -> None:
    response = admin.post(COLLECTION, json={"mcp": {"canary": {"token": SECRET, "pasword": SECRET}}})
    assert_error(response, 400, "pasword", "token")


def test_missing_required_secret_is_400_and_names_it(admin: httpx.Client) -> None:
    assert_error(admin.post(COLLECTION, json={"mcp": {"canary": {}}}), 400, "token", "canary.token")


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"mcp": ["canary"]}, ["'mcp'"]),
        ({"mcp": {"canary": "secret"}}, ["canary"]),
        ({"mcp": {"canary": {"token": 12345}}}, ["token", "string"]),
        ({"mcp": {}, "ttl": "60"}, ["'ttl'"]),
        ({"mcp": {}, "ttl": True}, ["'ttl'"]),
        ({"mcp": {}, "ttl": -5}, ["'ttl'"]),
        ({"mcp": {}, "ttl": 0}, ["'ttl'"]),
        ({"mcp": {}, "ttl": 1e30}, ["'ttl'"]),
        ({"mcp": {}, "id": 7}, ["sandbox id"]),
        ({"mcp": {}, "id": "../etc"}, ["sandbox id"]),
        ({"mcp": {}, "id": ""}, ["sandbox id"]),
        ({"mcp": {}, "discovery": "sometimes"}, ["'discovery'", "auto"]),
    ],
)
def test_wrong_types_in_create_are_400(admin: httpx.Client, body: dict[str, Any], words: list[str]) -> None:
    assert_error(admin.post(COLLECTION, json=body), 400, *words)


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"ttl": "60"}, ["'ttl'"]),
        ({"ttl": -1}, ["'ttl'"]),
        ({"servers": "plain"}, ["'servers'"]),
        ({"servers": [""]}, ["'servers'"]),
        ({"tools": [1]}, ["'tools'"]),
    ],
)
def test_wrong_types_in_token_are_400(admin: httpx.Client, body: dict[str, Any], words: list[str]) -> None:
    assert_error(admin.post(TOKEN, json=body), 400, *words)


def test_token_narrowed_to_a_server_the_sandbox_lacks_is_400(gateway: RunningGateway, admin: httpx.Client) -> None:
    created = create(gateway, {"plain": {}})
    response = admin.post(f"/admin/sandboxes/{created['id']}/token", json={"servers": ["canary"]})
    assert_error(response, 400, "canary", "plain")


@pytest.mark.parametrize(
    ("method", "path"),
    [("PUT", COLLECTION), ("DELETE", COLLECTION), ("POST", "/admin/sandboxes/default"), ("GET", TOKEN)],
)
def test_wrong_methods_are_405_with_allow(admin: httpx.Client, method: str, path: str) -> None:
    response = admin.request(method, path)
    assert_error(response, 405)
    assert response.headers["allow"]


def test_a_secret_in_a_rejected_body_is_not_echoed(admin: httpx.Client) -> None:
    response = admin.post(COLLECTION, json={"mcp": {"canary": {"token": SECRET}}, "ttl": "soon"})
    assert_error(response, 400)
