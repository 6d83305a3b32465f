"""Bearer tokens on /mcp: minted by `mcp-gateway token`, verified on every request."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from collections.abc import Callable

import httpx
import jwt
import pytest
from mcp.shared.exceptions import MCPError

from gateway.core.auth import AuthError, TokenService
from tests.support import RunningGateway, fixture_entry, sandbox_generation

CATALOG = {"fix": fixture_entry("--name", "fix"), "other": fixture_entry("--name", "other")}
INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
}
ACCEPT = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> RunningGateway:
    from tests.support import start_gateway

    gw = start_gateway(
        ["--servers", "fix,other"],
        workdir=tmp_path_factory.mktemp("auth"),
        catalog=CATALOG,
        env={"GATEWAY_ACCESS_TOKEN": "e2b-style-access-token-123456"},
    )
    yield gw
    gw.stop()


def post_init(gateway: RunningGateway, token: str | None) -> httpx.Response:
    headers = dict(ACCEPT)
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return httpx.post(gateway.url, json=INIT, headers=headers, timeout=30)


def signing_key(gateway: RunningGateway) -> bytes:
    text = (gateway.data_dir / "signing.key").read_text().strip()
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def claims(gateway: RunningGateway, **overrides: object) -> dict[str, object]:
    now = int(time.time())
    base: dict[str, object] = {
        "iss": "mcp-gateway",
        "aud": gateway.url,
        "sub": "default",
        "iat": now,
        "exp": now + 600,
        "jti": "t1",
        "gen": sandbox_generation(gateway, "default"),
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def cli_token(gateway: RunningGateway, *args: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "gateway", "token", "--data-dir", str(gateway.data_dir), *args],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout


def test_minted_token_is_accepted(gateway: RunningGateway) -> None:
    assert post_init(gateway, gateway.token).status_code == 200


def test_missing_token_is_401_with_a_bearer_challenge(gateway: RunningGateway) -> None:
    response = post_init(gateway, None)
    assert response.status_code == 401
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith("Bearer ")
    assert f'resource_metadata="{gateway.base_url}/.well-known/oauth-protected-resource"' in challenge


@pytest.mark.parametrize(
    "make_token",
    [
        pytest.param(lambda gw: "not-a-jwt", id="garbage"),
        pytest.param(lambda gw: jwt.encode(claims(gw), b"x" * 32, algorithm="HS256"), id="wrong-key"),
        pytest.param(lambda gw: jwt.encode(claims(gw, exp=int(time.time()) - 3600), signing_key(gw)), id="expired"),
        pytest.param(lambda gw: jwt.encode(claims(gw, aud="http://evil/mcp"), signing_key(gw)), id="wrong-audience"),
        pytest.param(lambda gw: jwt.encode(claims(gw, iss="someone-else"), signing_key(gw)), id="wrong-issuer"),
        pytest.param(lambda gw: jwt.encode(claims(gw, exp=None), signing_key(gw)), id="no-expiry"),
        pytest.param(lambda gw: jwt.encode(claims(gw, sub="no-such-sandbox"), signing_key(gw)), id="unknown-sandbox"),
        pytest.param(lambda gw: jwt.encode(claims(gw), None, algorithm="none"), id="alg-none"),
        pytest.param(
            lambda gw: jwt.encode(claims(gw), signing_key(gw), headers={"jku": "http://evil/keys"}), id="jku-header"
        ),
        pytest.param(lambda gw: jwt.encode(claims(gw), signing_key(gw), algorithm="HS512"), id="other-hmac-alg"),
    ],
)
def test_bad_token_is_401_invalid_token(gateway: RunningGateway, make_token: Callable[[RunningGateway], str]) -> None:
    response = post_init(gateway, make_token(gateway))
    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["www-authenticate"]
    assert response.json()["error"]["message"].startswith("Unauthorized")


def test_gateway_access_token_is_accepted_for_the_default_sandbox(gateway: RunningGateway) -> None:
    assert post_init(gateway, "e2b-style-access-token-123456").status_code == 200
    assert post_init(gateway, "e2b-style-access-token-12345").status_code == 401


def test_healthz_needs_no_token(gateway: RunningGateway) -> None:
    response = httpx.get(gateway.base_url + "/healthz")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"


def test_token_command_prints_one_jwt_for_the_public_url(gateway: RunningGateway) -> None:
    output = cli_token(gateway, "--ttl", "60")
    assert output.count("\n") == 1
    decoded = jwt.decode(output.strip(), signing_key(gateway), algorithms=["HS256"], audience=gateway.url)
    assert decoded["sub"] == "default"
    assert decoded["iss"] == "mcp-gateway"
    assert decoded["exp"] - decoded["iat"] == 60
    assert decoded["jti"]


async def test_servers_claim_narrows_the_tool_list_and_calls(gateway: RunningGateway) -> None:
    token = cli_token(gateway, "--servers", "fix").strip()
    async with gateway.client(token=token) as client:
        names = {t.name for t in (await client.list_tools()).tools}
        assert "fix__echo" in names
        assert not any(n.startswith("other__") for n in names)
        with pytest.raises(MCPError) as caught:
            await client.call_tool("other__echo", {"text": "x"})
    assert caught.value.code == -32602


async def test_tools_claim_narrows_by_glob(gateway: RunningGateway) -> None:
    token = cli_token(gateway, "--tools", "fix__ec*,other__whoami").strip()
    async with gateway.client(token=token) as client:
        names = {t.name for t in (await client.list_tools()).tools}
        with pytest.raises(MCPError):
            await client.call_tool("fix__whoami", {})
    assert names == {"fix__echo", "other__whoami"}


def test_token_for_an_unknown_sandbox_is_a_one_line_error(gateway: RunningGateway) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "gateway", "token", "--data-dir", str(gateway.data_dir), "--sandbox", "ghost"],
        capture_output=True,
        text=True,
    )
    assert out.returncode != 0
    assert out.stdout == ""
    assert out.stderr.count("\n") == 1 and "ghost" in out.stderr


def test_token_service_rejects_tokens_signed_for_another_audience() -> None:
    key = b"k" * 32
    service = TokenService(key, "http://127.0.0.1:1/mcp")
    other = TokenService(key, "http://127.0.0.1:2/mcp")
    with pytest.raises(AuthError):
        service.verify(other.mint("default"))
    assert service.verify(service.mint("default", servers=["a"])).servers == ("a",)


def test_protected_resource_metadata_names_the_mcp_url(gateway: RunningGateway) -> None:
    response = httpx.get(gateway.base_url + "/.well-known/oauth-protected-resource")
    assert response.status_code == 200
    body = response.json()
    assert body["resource"] == gateway.url
    assert httpx.get(gateway.base_url + "/.well-known/openid-configuration").status_code == 404


def test_builtin_tokens_name_no_authorization_server_and_say_where_tokens_come_from(gateway: RunningGateway) -> None:
    body = httpx.get(gateway.base_url + "/.well-known/oauth-protected-resource").json()
    assert "authorization_servers" not in body  # no dead-end registration at the gateway
    assert "mcp-gateway token" in body["mcp_gateway_tokens"]


def test_decoded_claims_round_trip_as_json(gateway: RunningGateway) -> None:
    token = cli_token(gateway, "--servers", "fix", "--tools", "fix__*").strip()
    payload = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    assert payload["servers"] == ["fix"] and payload["tools"] == ["fix__*"]
