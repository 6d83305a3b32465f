"""2026-07-28 requests on the wire: every malformed request gets the error the spec names, with its status.

Raw HTTP (httpx) against the real gateway, so the headers, bodies and statuses are exactly what a
client sends and gets.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.support import RunningGateway, fixture_entry, start_gateway

MODERN = "2026-07-28"
CATALOG = {"fix": fixture_entry("--name", "fix", "--routed-tool")}
PARSE_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND, INVALID_PARAMS = -32700, -32600, -32601, -32602
HEADER_MISMATCH, UNSUPPORTED_VERSION = -32020, -32022
SERVER_INFO = "io.modelcontextprotocol/serverInfo"


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    gw = start_gateway(
        ["--servers", "fix", "--runtime", "host"],
        workdir=tmp_path_factory.mktemp("modern-http"),
        catalog=CATALOG,
    )
    yield gw
    gw.stop()


def envelope(**extra: Any) -> dict[str, Any]:
    return {
        "io.modelcontextprotocol/protocolVersion": MODERN,
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "raw-test", "version": "1"},
        **extra,
    }


def headers_for(gateway: RunningGateway, method: str, name: str | None = None, **extra: str) -> dict[str, str]:
    headers = {
        "Authorization": f"Bearer {gateway.token}",
        "Accept": "application/json, text/event-stream",
        "MCP-Protocol-Version": MODERN,
        "Mcp-Method": method,
    }
    if name is not None:
        headers["Mcp-Name"] = name
    headers.update(extra)
    return headers


async def post(
    http: httpx.AsyncClient,
    gateway: RunningGateway,
    method: str,
    params: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
    request_id: Any = 1,
) -> httpx.Response:
    params = {"_meta": envelope()} if params is None else params
    name = params.get("name", params.get("uri"))
    body = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}
    sent = headers_for(gateway, method, name if isinstance(name, str) else None)
    sent.update(headers or {})
    return await http.post(gateway.url, json=body, headers=sent)


def sse_messages(response: httpx.Response) -> list[dict[str, Any]]:
    return [json.loads(line[6:]) for line in response.text.splitlines() if line.startswith("data: ")]


def error_of(response: httpx.Response) -> dict[str, Any]:
    assert response.headers["content-type"].startswith("application/json"), response.text
    return response.json()["error"]


async def test_discover_names_the_served_version_and_the_listen_capabilities(
    gateway: RunningGateway, http: httpx.AsyncClient
) -> None:
    response = await post(http, gateway, "server/discover")
    result = response.json()["result"]
    assert response.status_code == 200
    assert result["supportedVersions"] == [MODERN]
    assert result["capabilities"]["tools"] == {"listChanged": True}
    assert result["resultType"] == "complete"
    assert result["_meta"][SERVER_INFO]["name"] == "mcp-sandbox-gateway"


async def test_list_results_carry_cache_hints_and_the_server_info(
    gateway: RunningGateway, http: httpx.AsyncClient
) -> None:
    result = (await post(http, gateway, "tools/list")).json()["result"]
    assert result["ttlMs"] == 0 and result["cacheScope"] == "private"
    assert result["resultType"] == "complete" and SERVER_INFO in result["_meta"]
    again = (await post(http, gateway, "tools/list")).json()["result"]
    assert [t["name"] for t in again["tools"]] == [t["name"] for t in result["tools"]]


async def test_a_call_without_progress_token_or_log_level_is_answered_as_json(
    gateway: RunningGateway, http: httpx.AsyncClient
) -> None:
    params = {"name": "fix__log", "arguments": {"level": "error", "message": "m"}, "_meta": envelope()}
    response = await post(http, gateway, "tools/call", params)
    assert response.headers["content-type"] == "application/json"
    assert response.json()["result"]["content"][0]["text"] == "logged"


async def test_progress_and_log_messages_come_before_the_result_on_an_sse_response(
    gateway: RunningGateway, http: httpx.AsyncClient
) -> None:
    meta = envelope(progressToken="tok", **{"io.modelcontextprotocol/logLevel": "warning"})
    params = {"name": "fix__progress", "arguments": {"steps": 2}, "_meta": meta}
    response = await post(http, gateway, "tools/call", params)
    assert response.headers["content-type"] == "text/event-stream"
    messages = sse_messages(response)
    assert [m["params"]["progress"] for m in messages[:-1]] == [1, 2]
    assert all(m["params"]["progressToken"] == "tok" for m in messages[:-1])
    assert messages[-1]["id"] == 1 and messages[-1]["result"]["content"][0]["text"] == "done"
    logged = {"name": "fix__log", "arguments": {"level": "info", "message": "below"}, "_meta": meta}
    assert (await post(http, gateway, "tools/call", logged)).headers["content-type"] == "application/json"
    logged["arguments"] = {"level": "error", "message": "above"}
    messages = sse_messages(await post(http, gateway, "tools/call", logged))
    assert messages[0]["method"] == "notifications/message" and messages[0]["params"]["data"] == "above"


async def test_an_unsupported_version_is_refused_with_the_supported_list(
    gateway: RunningGateway, http: httpx.AsyncClient
) -> None:
    meta = {**envelope(), "io.modelcontextprotocol/protocolVersion": "2099-01-01"}
    response = await post(http, gateway, "tools/list", {"_meta": meta}, {"MCP-Protocol-Version": "2099-01-01"})
    assert response.status_code == 400
    error = error_of(response)
    assert error["code"] == UNSUPPORTED_VERSION and error["data"]["supported"] == [MODERN]


async def test_a_version_header_that_contradicts_the_envelope_is_a_header_mismatch(
    gateway: RunningGateway, http: httpx.AsyncClient
) -> None:
    meta = {**envelope(), "io.modelcontextprotocol/protocolVersion": "2099-01-01"}
    response = await post(http, gateway, "tools/list", {"_meta": meta})
    assert response.status_code == 400 and error_of(response)["code"] == HEADER_MISMATCH


@pytest.mark.parametrize(
    ("headers", "what"),
    [
        ({"Mcp-Method": "prompts/list"}, "method"),
        ({"Mcp-Name": "fix__add"}, "name"),
    ],
)
async def test_a_routing_header_that_contradicts_the_body_is_a_header_mismatch(
    gateway: RunningGateway, http: httpx.AsyncClient, headers: dict[str, str], what: str
) -> None:
    params = {"name": "fix__echo", "arguments": {"text": "x"}, "_meta": envelope()}
    response = await post(http, gateway, "tools/call", params, headers)
    assert response.status_code == 400
    assert error_of(response)["code"] == HEADER_MISMATCH and what in error_of(response)["message"]
    assert response.json()["id"] == 1


async def test_a_missing_method_header_is_a_header_mismatch(gateway: RunningGateway, http: httpx.AsyncClient) -> None:
    body = {"jsonrpc": "2.0", "id": 3, "method": "tools/list", "params": {"_meta": envelope()}}
    headers = headers_for(gateway, "tools/list")
    del headers["Mcp-Method"]
    response = await http.post(gateway.url, json=body, headers=headers)
    assert response.status_code == 400 and error_of(response)["code"] == HEADER_MISMATCH


async def test_a_repeated_routing_header_is_a_header_mismatch(gateway: RunningGateway, http: httpx.AsyncClient) -> None:
    body = json.dumps({"jsonrpc": "2.0", "id": 3, "method": "tools/list", "params": {"_meta": envelope()}})
    headers = [*headers_for(gateway, "tools/list").items(), ("Mcp-Method", "tools/list")]
    response = await http.post(gateway.url, content=body, headers=headers)
    assert response.status_code == 400 and error_of(response)["code"] == HEADER_MISMATCH


async def test_a_request_without_the_envelope_is_invalid_params(
    gateway: RunningGateway, http: httpx.AsyncClient
) -> None:
    response = await post(http, gateway, "tools/list", {})
    assert response.status_code == 400 and error_of(response)["code"] == INVALID_PARAMS


async def test_malformed_params_of_a_known_method_are_invalid_params(
    gateway: RunningGateway, http: httpx.AsyncClient
) -> None:
    params = {"name": "fix__echo", "arguments": "not an object", "_meta": envelope()}
    response = await post(http, gateway, "tools/call", params)
    assert response.status_code == 400 and error_of(response)["code"] == INVALID_PARAMS


@pytest.mark.parametrize("method", ["initialize", "ping", "logging/setLevel", "resources/subscribe", "no/such"])
async def test_methods_this_era_does_not_have_are_not_found(
    gateway: RunningGateway, http: httpx.AsyncClient, method: str
) -> None:
    response = await post(http, gateway, method, {"uri": "x://y", "level": "info", "_meta": envelope()})
    assert response.status_code == 404 and error_of(response)["code"] == METHOD_NOT_FOUND


@pytest.mark.parametrize(
    ("content", "code"),
    [
        (b"{not json", PARSE_ERROR),
        (b"[]", INVALID_REQUEST),
        (b'[{"jsonrpc": "2.0", "id": 1, "method": "tools/list"}]', INVALID_REQUEST),
        (b'{"jsonrpc": "1.0", "id": 1, "method": "tools/list"}', INVALID_REQUEST),
        (b'{"jsonrpc": "2.0", "id": {"a": 1}, "method": "tools/list"}', INVALID_REQUEST),
        (b'{"jsonrpc": "2.0", "id": 1, "method": 7}', INVALID_REQUEST),
        (b'{"jsonrpc": "2.0", "id": 1, "result": {}}', INVALID_REQUEST),
        (b'"just a string"', INVALID_REQUEST),
    ],
)
async def test_a_malformed_body_gets_a_json_rpc_error_with_status_400(
    gateway: RunningGateway, http: httpx.AsyncClient, content: bytes, code: int
) -> None:
    response = await http.post(gateway.url, content=content, headers=headers_for(gateway, "tools/list"))
    assert response.status_code == 400
    assert response.json() == {
        "jsonrpc": "2.0",
        "id": None,
        "error": {"code": code, "message": error_of(response)["message"]},
    }


async def test_a_notification_is_accepted_and_dropped(gateway: RunningGateway, http: httpx.AsyncClient) -> None:
    body = {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 1}}
    response = await http.post(gateway.url, json=body, headers=headers_for(gateway, "notifications/cancelled"))
    assert response.status_code == 202 and response.content == b""


async def test_a_get_at_this_era_is_not_allowed(gateway: RunningGateway, http: httpx.AsyncClient) -> None:
    response = await http.get(gateway.url, headers=headers_for(gateway, "tools/list"))
    assert response.status_code == 405 and response.headers["allow"] == "POST"


async def test_an_accept_without_event_streams_is_not_acceptable(
    gateway: RunningGateway, http: httpx.AsyncClient
) -> None:
    response = await post(http, gateway, "tools/list", headers={"Accept": "application/json"})
    assert response.status_code == 406


async def test_a_body_over_the_limit_of_4_mib_is_refused_with_413(
    gateway: RunningGateway, http: httpx.AsyncClient
) -> None:
    params = {"name": "fix__echo", "arguments": {"text": "x" * (5 * 1024 * 1024)}, "_meta": envelope()}
    response = await post(http, gateway, "tools/call", params)
    assert response.status_code == 413


async def test_an_unknown_request_state_is_invalid_params(gateway: RunningGateway, http: httpx.AsyncClient) -> None:
    params = {"name": "fix__elicit", "arguments": {"message": "?"}, "requestState": "gw1.nope", "_meta": envelope()}
    response = await post(http, gateway, "tools/call", params)
    assert response.status_code == 400 and error_of(response)["code"] == INVALID_PARAMS


async def test_an_elicitation_round_trip_goes_through_input_required(
    gateway: RunningGateway, http: httpx.AsyncClient
) -> None:
    meta = envelope(**{"io.modelcontextprotocol/clientCapabilities": {"elicitation": {}}})
    params: dict[str, Any] = {"name": "fix__elicit", "arguments": {"message": "name?"}, "_meta": meta}
    first = (await post(http, gateway, "tools/call", params)).json()["result"]
    assert first["resultType"] == "input_required"
    [(key, asked)] = first["inputRequests"].items()
    assert asked["method"] == "elicitation/create" and asked["params"]["message"] == "name?"
    retry = {**params, "inputResponses": {key: {"action": "accept", "content": {"answer": "Ada"}}}}
    retry["requestState"] = first["requestState"]
    final = (await post(http, gateway, "tools/call", retry, request_id=2)).json()["result"]
    assert final["resultType"] == "complete"
    assert json.loads(final["content"][0]["text"])["content"] == {"answer": "Ada"}
    # A state is good for one retry only.
    again = await post(http, gateway, "tools/call", retry, request_id=3)
    assert again.status_code == 400 and error_of(again)["code"] == INVALID_PARAMS


async def test_a_client_without_the_capability_gets_no_input_request(
    gateway: RunningGateway, http: httpx.AsyncClient
) -> None:
    params = {"name": "fix__elicit", "arguments": {"message": "name?"}, "_meta": envelope()}
    result = (await post(http, gateway, "tools/call", params)).json()["result"]
    assert result["resultType"] == "complete" and result["isError"] is True


async def test_listen_acknowledges_first_with_the_subscription_id(
    gateway: RunningGateway, http: httpx.AsyncClient
) -> None:
    params = {"notifications": {"toolsListChanged": True, "promptsListChanged": False}, "_meta": envelope()}
    body = {"jsonrpc": "2.0", "id": "listen-a", "method": "subscriptions/listen", "params": params}
    async with http.stream("POST", gateway.url, json=body, headers=headers_for(gateway, "subscriptions/listen")) as r:
        assert r.headers["content-type"] == "text/event-stream"
        lines = r.aiter_lines()
        async for line in lines:
            if line.startswith("data: "):
                ack = json.loads(line[6:])
                break
    assert ack["method"] == "notifications/subscriptions/acknowledged"
    assert ack["params"]["notifications"] == {"toolsListChanged": True}
    assert ack["params"]["_meta"] == {"io.modelcontextprotocol/subscriptionId": "listen-a"}


async def test_trace_context_reaches_the_upstream_and_the_envelope_does_not(
    gateway: RunningGateway, http: httpx.AsyncClient
) -> None:
    trace = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    meta = envelope(traceparent=trace, tracestate="vendor=1")
    result = (await post(http, gateway, "tools/call", {"name": "fix__meta", "arguments": {}, "_meta": meta})).json()
    seen = result["result"]["structuredContent"]["meta"]
    assert seen["traceparent"] == trace and seen["tracestate"] == "vendor=1"
    assert not [key for key in seen if key.startswith("io.modelcontextprotocol/")]


async def test_open_listen_streams_do_not_use_up_the_concurrent_request_limit(
    gateway_factory: Callable[..., RunningGateway], http: httpx.AsyncClient
) -> None:
    gw = gateway_factory(["--servers", "fix", "--runtime", "host", "--max-concurrent-requests", "2"], catalog=CATALOG)
    params = {"notifications": {"toolsListChanged": True}, "_meta": envelope()}
    readers = []  # kept: a reader closed early would close its stream
    async with contextlib.AsyncExitStack() as streams:
        for index in range(3):
            body = {"jsonrpc": "2.0", "id": f"listen-{index}", "method": "subscriptions/listen", "params": params}
            headers = headers_for(gw, "subscriptions/listen")
            response = await streams.enter_async_context(http.stream("POST", gw.url, json=body, headers=headers))
            assert response.status_code == 200, f"listen {index}: {response.status_code}"
            readers.append(response.aiter_lines())
            while not (await readers[-1].__anext__()).startswith("data: "):
                pass  # until the acknowledgment: the stream is open
        listed = await post(http, gw, "tools/list")
    assert listed.status_code == 200, listed.text
