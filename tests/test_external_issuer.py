"""Tokens from an external issuer: a public key file or a JWKS URL, RS256/ES256/EdDSA."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from gateway.core.auth import JWKS_COOLDOWN
from tests.support import RunningGateway, fixture_entry

ISSUER = "https://issuer.example.test"
CATALOG = {"fix": fixture_entry("--name", "fix")}
INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
}


def new_key(alg: str) -> Any:
    if alg == "RS256":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if alg == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    return ed25519.Ed25519PrivateKey.generate()


def public_pem(key: Any) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def mint(key: Any, alg: str, audience: str, kid: str | None = None, **claims: Any) -> str:
    now = int(time.time())
    body = {"iss": ISSUER, "aud": audience, "sub": "default", "iat": now, "exp": now + 300, **claims}
    return jwt.encode(body, key, algorithm=alg, headers={"kid": kid} if kid else None)


def status(gateway: RunningGateway, token: str) -> int:
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json, text/event-stream"}
    return httpx.post(gateway.url, json=INIT, headers=headers, timeout=30).status_code


class JwksServer:
    """A JWKS endpoint on loopback whose key set the test can change."""

    def __init__(self) -> None:
        self.keys: list[dict[str, Any]] = []
        self.fetches = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.fetches += 1
                body = json.dumps({"keys": outer.keys}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/jwks.json"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def add(self, key: Any, kid: str, alg: str) -> None:
        jwk = json.loads(jwt.algorithms.get_default_algorithms()[alg].to_jwk(key.public_key()))
        self.keys.append({**jwk, "kid": kid, "alg": alg, "use": "sig"})

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def jwks() -> Iterator[JwksServer]:
    server = JwksServer()
    yield server
    server.close()


@pytest.mark.parametrize("alg", ["RS256", "ES256", "EdDSA"])
def test_public_key_file_verifies_the_issuers_tokens(
    gateway_factory: Callable[..., RunningGateway], tmp_path: Path, alg: str
) -> None:
    key = new_key(alg)
    pem = tmp_path / "issuer.pem"
    pem.write_bytes(public_pem(key))
    gateway = gateway_factory(["--servers", "fix", "--jwt-public-key", str(pem), "--issuer", ISSUER], catalog=CATALOG)
    assert status(gateway, mint(key, alg, gateway.url)) == 200
    assert status(gateway, mint(new_key(alg), alg, gateway.url)) == 401  # another key
    assert status(gateway, mint(key, alg, gateway.url, iss="https://other.example")) == 401


def test_protected_resource_metadata_names_the_external_issuer(
    gateway_factory: Callable[..., RunningGateway], tmp_path: Path
) -> None:
    pem = tmp_path / "issuer.pem"
    pem.write_bytes(public_pem(new_key("ES256")))
    gateway = gateway_factory(["--servers", "fix", "--jwt-public-key", str(pem), "--issuer", ISSUER], catalog=CATALOG)
    body = httpx.get(gateway.base_url + "/.well-known/oauth-protected-resource").json()
    assert body["authorization_servers"] == [ISSUER]


def test_hmac_token_signed_with_the_public_key_is_refused(
    gateway_factory: Callable[..., RunningGateway], tmp_path: Path
) -> None:
    """The classic RS/HS confusion: the public key used as an HMAC secret."""
    key = new_key("RS256")
    pem = tmp_path / "issuer.pem"
    pem.write_bytes(public_pem(key))
    gateway = gateway_factory(["--servers", "fix", "--jwt-public-key", str(pem), "--issuer", ISSUER], catalog=CATALOG)
    now = int(time.time())
    body = {"iss": ISSUER, "aud": gateway.url, "sub": "default", "iat": now, "exp": now + 300}

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).decode().rstrip("=")

    signing_input = b64(b'{"alg":"HS256","typ":"JWT"}') + "." + b64(json.dumps(body).encode())
    signature = hmac.new(public_pem(key), signing_input.encode(), hashlib.sha256).digest()
    forged = signing_input + "." + b64(signature)
    assert status(gateway, forged) == 401


def test_jwks_url_verifies_tokens_and_refreshes_on_an_unknown_kid(
    gateway_factory: Callable[..., RunningGateway], jwks: JwksServer
) -> None:
    first = new_key("RS256")
    jwks.add(first, "k1", "RS256")
    gateway = gateway_factory(["--servers", "fix", "--jwks-url", jwks.url, "--issuer", ISSUER], catalog=CATALOG)
    assert status(gateway, mint(first, "RS256", gateway.url, kid="k1")) == 200
    # The issuer rotates in a new key: the gateway fetches the set again for the unknown kid.
    second = new_key("ES256")
    jwks.add(second, "k2", "ES256")
    time.sleep(JWKS_COOLDOWN + 0.5)  # refetches for unknown kids are rate-limited
    assert status(gateway, mint(second, "ES256", gateway.url, kid="k2")) == 200
    assert status(gateway, mint(new_key("RS256"), "RS256", gateway.url, kid="k3")) == 401


def test_gateway_does_not_mint_tokens_for_an_external_issuer(
    gateway_factory: Callable[..., RunningGateway], tmp_path: Path
) -> None:
    pem = tmp_path / "issuer.pem"
    pem.write_bytes(public_pem(new_key("RS256")))
    gateway = gateway_factory(["--servers", "fix", "--jwt-public-key", str(pem), "--issuer", ISSUER], catalog=CATALOG)
    assert not (gateway.data_dir / "token").exists()
    assert "Ready" not in gateway.output() or "Bearer ey" not in gateway.output()
