"""Tokens are bound to one incarnation of their sandbox (the ``gen`` claim), and single tokens can be revoked.

Both take effect on the very next request, sessions already open included, for both protocol eras.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator

import httpx
import jwt
import pytest

from gateway.client import AsyncGatewayClient, GatewayClient, GatewayError
from tests.sandbox_helpers import CATALOG, create, mcp_status, text_of
from tests.support import REPO, RunningGateway, sandbox_generation, sandbox_token, start_gateway

MODES = ["legacy", "2026-07-28"]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    gateway = start_gateway(["--servers", "plain"], workdir=tmp_path_factory.mktemp("revoke"), catalog=CATALOG)
    yield gateway
    gateway.stop()


def new_id() -> str:
    return "t-" + uuid.uuid4().hex[:10]


def revoke(gateway: RunningGateway, body: dict[str, str]) -> httpx.Response:
    with gateway.admin() as admin:
        return admin.post("/admin/tokens/revoke", json=body)


def new_token(gateway: RunningGateway, sandbox_id: str) -> str:
    with gateway.admin() as admin:
        response = admin.post(f"/admin/sandboxes/{sandbox_id}/token", json={})
    assert response.status_code == 200, response.text
    return str(response.json()["mcp_token"])


def assert_refused(gateway: RunningGateway, token: str) -> None:
    body = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json, text/event-stream"}
    response = httpx.post(gateway.url, json=body, headers=headers, timeout=30)
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"].startswith("Bearer ")
    assert 'error="invalid_token"' in response.headers["www-authenticate"]


async def echo(gateway: RunningGateway, token: str, mode: str) -> str:
    async with gateway.client(token, mode=mode) as client:
        return text_of(await client.call_tool("plain__echo", {"text": "hi"}))


# -- incarnations ----------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_a_deleted_sandboxs_token_stays_dead_when_its_id_is_created_again(
    gateway: RunningGateway, mode: str
) -> None:
    sandbox_id = new_id()
    old = create(gateway, {"plain": {}}, id=sandbox_id)["mcp_token"]
    assert "hi" in await echo(gateway, old, mode)
    with gateway.admin() as admin:
        assert admin.delete(f"/admin/sandboxes/{sandbox_id}").status_code == 204
    fresh = create(gateway, {"plain": {}}, id=sandbox_id)["mcp_token"]

    assert_refused(gateway, old)
    with pytest.raises(Exception):  # noqa: B017 - the transport reports the 401 its own way
        await echo(gateway, old, mode)
    assert "hi" in await echo(gateway, fresh, mode)


def test_tokens_carry_the_generation_of_their_sandbox(gateway: RunningGateway) -> None:
    created = create(gateway, {"plain": {}})
    claims = jwt.decode(created["mcp_token"], options={"verify_signature": False})
    assert claims["gen"] == sandbox_generation(gateway, created["id"]) != ""


def test_a_token_without_generation_is_refused_for_a_sandbox_that_has_one(gateway: RunningGateway) -> None:
    created = create(gateway, {"plain": {}})
    claims = jwt.decode(created["mcp_token"], options={"verify_signature": False})
    del claims["gen"]
    from gateway.store.datadir import DataDir

    forged = jwt.encode(claims, DataDir.open(gateway.data_dir).signing_key(), algorithm="HS256")
    assert_refused(gateway, forged)
    assert mcp_status(gateway, created["mcp_token"]) == 200


def test_serve_keeps_the_default_sandboxs_generation_across_restarts(
    gateway_factory: Callable[..., RunningGateway],
) -> None:
    first = gateway_factory(["--servers", "plain"], catalog=CATALOG)
    minted = sandbox_token(first, "default")
    first.stop()
    again = gateway_factory(catalog=CATALOG, data_dir=first.data_dir, port=first.port)  # other servers: none
    assert mcp_status(again, minted) == 200
    assert mcp_status(again, again.token) == 200


# -- revocation over HTTP --------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_a_revoked_token_is_refused_at_once_even_in_an_open_session(gateway: RunningGateway, mode: str) -> None:
    created = create(gateway, {"plain": {}})
    kept = new_token(gateway, created["id"])
    async with gateway.client(created["mcp_token"], mode=mode) as client:
        assert "hi" in text_of(await client.call_tool("plain__echo", {"text": "hi"}))
        response = revoke(gateway, {"token": created["mcp_token"]})
        assert response.status_code == 200, response.text
        with pytest.raises(Exception):  # noqa: B017 - the transport reports the 401 its own way
            await client.call_tool("plain__echo", {"text": "again"})
    assert_refused(gateway, created["mcp_token"])
    assert "hi" in await echo(gateway, kept, mode)


def test_revoke_answers_what_it_revoked(gateway: RunningGateway) -> None:
    created = create(gateway, {"plain": {}})
    claims = jwt.decode(created["mcp_token"], options={"verify_signature": False})
    answer = revoke(gateway, {"token": created["mcp_token"]}).json()
    assert answer["revoked"] is True and answer["sandbox"] == created["id"] and answer["jti"] == claims["jti"]
    assert answer["until"] and answer["until"].endswith("Z")


def test_revoking_by_jti_and_sandbox(gateway: RunningGateway) -> None:
    created = create(gateway, {"plain": {}})
    jti = jwt.decode(created["mcp_token"], options={"verify_signature": False})["jti"]
    response = revoke(gateway, {"jti": jti, "sandbox": created["id"]})
    assert response.status_code == 200, response.text
    assert_refused(gateway, created["mcp_token"])


def test_a_revocation_survives_a_restart(gateway_factory: Callable[..., RunningGateway]) -> None:
    first = gateway_factory(["--servers", "plain"], catalog=CATALOG)
    created = create(first, {"plain": {}})
    kept = new_token(first, created["id"])
    assert revoke(first, {"token": created["mcp_token"]}).status_code == 200
    first.stop()
    again = gateway_factory(["--servers", "plain"], catalog=CATALOG, data_dir=first.data_dir, port=first.port)
    assert_refused(again, created["mcp_token"])
    assert mcp_status(again, kept) == 200


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        ({}, 400, "invalid_request"),
        ({"token": ""}, 400, "invalid_request"),
        ({"token": "not-a-jwt"}, 400, "invalid_token"),
        ({"jti": "x"}, 400, "invalid_request"),
        ({"jti": "x", "sandbox": "no-such-sandbox"}, 404, "not_found"),
        ({"jti": "x", "sandbox": "Bad_Id"}, 400, "invalid_sandbox_id"),
        ({"jti": "x", "sandbox": "default", "token": "t"}, 400, "invalid_request"),
        ({"jti": "x", "sandbox": "default", "extra": 1}, 400, "invalid_request"),
    ],
)
def test_bad_revoke_requests_are_clear_4xx(
    gateway: RunningGateway, body: dict[str, str], status: int, error: str
) -> None:
    response = revoke(gateway, body)
    assert response.status_code == status, response.text
    assert response.json()["error"] == error and "\n" not in response.json()["message"]


def test_a_token_of_another_gateway_cannot_be_revoked_here(gateway: RunningGateway) -> None:
    foreign = jwt.encode({"sub": "default", "jti": "j", "exp": 9999999999}, b"k" * 32, algorithm="HS256")
    response = revoke(gateway, {"token": foreign})
    assert response.status_code == 400 and response.json()["error"] == "invalid_token"


def test_revoke_needs_the_admin_key(gateway: RunningGateway) -> None:
    response = httpx.post(
        gateway.base_url + "/admin/tokens/revoke",
        json={"token": gateway.token},
        headers={"Authorization": f"Bearer {gateway.token}"},
        timeout=30,
    )
    assert response.status_code == 403
    assert mcp_status(gateway, gateway.token) == 200


# -- CLI and Python client -------------------------------------------------------------------


def cli(gateway: RunningGateway, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MCP_GATEWAY_")}
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args, "--data-dir", str(gateway.data_dir)],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=REPO,
        env=environment,
        timeout=60,
    )


def test_cli_revokes_a_token_read_from_stdin(gateway: RunningGateway) -> None:
    created = create(gateway, {"plain": {}})
    result = cli(gateway, "token", "revoke", "-", stdin=created["mcp_token"] + "\n")
    assert result.returncode == 0, result.stderr
    assert created["id"] in result.stdout and created["mcp_token"] not in result.stdout
    assert_refused(gateway, created["mcp_token"])


def test_cli_revokes_by_jti_and_sandbox_with_json_output(gateway: RunningGateway) -> None:
    created = create(gateway, {"plain": {}})
    jti = jwt.decode(created["mcp_token"], options={"verify_signature": False})["jti"]
    result = cli(gateway, "token", "revoke", "--jti", jti, "--sandbox", created["id"], "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["jti"] == jti
    assert_refused(gateway, created["mcp_token"])


@pytest.mark.parametrize(
    ("args", "words"),
    [
        ((), "give the token"),
        (("--jti", "x"), "--sandbox"),
        (("not-a-jwt",), "not a token this gateway accepts"),
        (("--jti", "x", "--sandbox", "UPPER"), "invalid sandbox id"),
    ],
)
def test_cli_revoke_errors_are_one_line(gateway: RunningGateway, args: tuple[str, ...], words: str) -> None:
    result = cli(gateway, "token", "revoke", *args)
    assert result.returncode != 0 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert words in lines[0], lines[0]


def test_plain_token_command_still_prints_a_token(gateway: RunningGateway) -> None:
    result = cli(gateway, "token", "--ttl", "60")
    assert result.returncode == 0, result.stderr
    assert mcp_status(gateway, result.stdout.strip()) == 200


def test_python_client_revokes_a_token(gateway: RunningGateway) -> None:
    with GatewayClient(gateway.base_url, gateway.admin_key) as client:
        sandbox = client.create_sandbox(mcp={"plain": {}})
        assert sandbox.mcp_token is not None
        answer = client.revoke_token(sandbox.mcp_token)
        assert answer["sandbox"] == sandbox.id
        assert_refused(gateway, sandbox.mcp_token)
        with pytest.raises(GatewayError) as caught:
            client.revoke_token(jti="x", sandbox="no-such-sandbox")
        assert caught.value.status == 404


async def test_async_python_client_revokes_by_jti(gateway: RunningGateway) -> None:
    async with AsyncGatewayClient(gateway.base_url, gateway.admin_key) as client:
        sandbox = await client.create_sandbox(mcp={"plain": {}})
        assert sandbox.mcp_token is not None
        jti = jwt.decode(sandbox.mcp_token, options={"verify_signature": False})["jti"]
        answer = await client.revoke_token(jti=jti, sandbox=sandbox.id)
        assert answer["jti"] == jti
    assert_refused(gateway, sandbox.mcp_token)
