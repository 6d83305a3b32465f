"""Sandbox ids: one rule (``[a-z0-9][a-z0-9-]{0,62}``, matched in full) for the admin API, the CLI and the store.

A path like ``/admin/sandboxes/..`` must never reach the file system: the data dir, its keys and
the other sandboxes survive every bad id.
"""

from __future__ import annotations

import http.client
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gateway.catalog.config import ServerSettings
from gateway.store.sandboxes import InvalidSandboxId, Sandbox, SandboxStore, check_sandbox_id
from tests.sandbox_helpers import CATALOG, create, mcp_status
from tests.support import REPO, RunningGateway, start_gateway

BAD_IDS = ["ok\n", "UPPER", "a" * 64, "-lead", "has_underscore", "dot.ted", "", "..", "a/b"]
GOOD_IDS = ["a", "0", "sbx-1f2e", "a" * 63, "team-a-1"]
# Path segments as sent on the wire (percent-encoded where a raw byte would not be a valid target).
BAD_SEGMENTS = ["%2E%2E", "%2e%2e", "ok%0A", "UPPER", "a" * 64, "has_underscore", "dot.ted", "%2E"]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    gateway = start_gateway(workdir=tmp_path_factory.mktemp("ids"), catalog=CATALOG)
    yield gateway
    gateway.stop()


def snapshot(data_dir: Path) -> dict[str, bytes]:
    """Every key file of the data dir, to compare before and after."""
    names = ("signing.key", "secrets.key", "admin.key", "token")
    return {name: (data_dir / name).read_bytes() for name in names}


def assert_invalid_id(response: httpx.Response) -> None:
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["error"] == "invalid_sandbox_id"
    assert "\n" not in body["message"] and "a-z" in body["message"]


def raw_request(gateway: RunningGateway, method: str, target: str) -> tuple[int, bytes]:
    """Send ``target`` byte for byte (httpx would normalise ``..`` away before sending)."""
    connection = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=60)
    try:
        connection.request(method, target, headers={"Authorization": f"Bearer {gateway.admin_key}"})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


# -- the rule itself -------------------------------------------------------------------------


@pytest.mark.parametrize("value", BAD_IDS)
def test_check_sandbox_id_refuses(value: str) -> None:
    with pytest.raises(InvalidSandboxId):
        check_sandbox_id(value)


@pytest.mark.parametrize("value", GOOD_IDS)
def test_check_sandbox_id_accepts(value: str) -> None:
    assert check_sandbox_id(value) == value


def test_the_store_refuses_a_bad_id(tmp_path: Path) -> None:
    store = SandboxStore(tmp_path / "db", "MkFa8mWfJ-B1rBJ1DKY1lj4LvB-JTPcrYZgLzNbqJ-8=")
    try:
        with pytest.raises(InvalidSandboxId):
            store.put(Sandbox("ok\n", {"fix": ServerSettings("fix")}))
        assert store.get("ok\n") is None and store.delete("..") is False
    finally:
        store.close()


# -- the admin API ---------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["/admin/sandboxes/..", "/admin/sandboxes/%2E%2E", "/admin/sandboxes/."])
def test_deleting_dot_dot_is_400_and_the_data_dir_survives(gateway: RunningGateway, target: str) -> None:
    (gateway.data_dir / "home").mkdir(exist_ok=True)  # as once any sandbox has started a server
    before = snapshot(gateway.data_dir)
    status, body = raw_request(gateway, "DELETE", target)
    assert status in (400, 404), body
    assert gateway.data_dir.is_dir() and snapshot(gateway.data_dir) == before
    assert mcp_status(gateway, gateway.token) == 200


@pytest.mark.parametrize("segment", BAD_SEGMENTS)
@pytest.mark.parametrize(("method", "suffix"), [("GET", ""), ("DELETE", ""), ("POST", "/token")])
def test_a_bad_id_in_the_path_is_400(gateway: RunningGateway, segment: str, method: str, suffix: str) -> None:
    with gateway.admin() as admin:
        assert_invalid_id(admin.request(method, f"/admin/sandboxes/{segment}{suffix}"))


@pytest.mark.parametrize("value", BAD_IDS)
def test_a_bad_id_in_create_is_400(gateway: RunningGateway, value: str) -> None:
    with gateway.admin() as admin:
        assert_invalid_id(admin.post("/admin/sandboxes", json={"id": value, "mcp": {"plain": {}}}))


def test_a_non_string_id_in_create_is_400(gateway: RunningGateway) -> None:
    with gateway.admin() as admin:
        assert_invalid_id(admin.post("/admin/sandboxes", json={"id": 7, "mcp": {}}))


def test_deleting_an_unknown_id_is_404_and_touches_no_directory(gateway: RunningGateway) -> None:
    home = gateway.data_dir / "home" / "never-created"
    home.mkdir(parents=True)
    with gateway.admin() as admin:
        response = admin.delete("/admin/sandboxes/never-created")
    assert response.status_code == 404 and response.json()["error"] == "not_found"
    assert home.is_dir()


def test_generated_ids_follow_the_rule(gateway: RunningGateway) -> None:
    created = create(gateway, {"plain": {}})
    assert check_sandbox_id(created["id"]) == created["id"]
    assert created["id"].startswith("sbx-")


# -- the CLI ---------------------------------------------------------------------------------


def cli(gateway: RunningGateway, *args: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MCP_GATEWAY_")}
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args, "--data-dir", str(gateway.data_dir)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=environment,
        timeout=60,
    )


def assert_one_line_id_error(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode != 0, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "invalid sandbox id" in lines[0] and "Traceback" not in result.stderr


@pytest.mark.parametrize("value", ["..", "UPPER", "ok\n", "a" * 64])
def test_cli_delete_refuses_a_bad_id(gateway: RunningGateway, value: str) -> None:
    before = snapshot(gateway.data_dir)
    assert_one_line_id_error(cli(gateway, "sandbox", "delete", value))
    assert snapshot(gateway.data_dir) == before


def test_cli_create_refuses_a_bad_id(gateway: RunningGateway) -> None:
    assert_one_line_id_error(cli(gateway, "sandbox", "create", "--config", "{}", "--id", "Bad_Id"))


def test_cli_token_refuses_a_bad_id(gateway: RunningGateway) -> None:
    assert_one_line_id_error(cli(gateway, "token", "--sandbox", "../x"))
