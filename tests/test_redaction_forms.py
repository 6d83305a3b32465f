"""Redaction of encoded forms of a secret (base64, hex, URL-encoded) and of secrets split across lines."""

from __future__ import annotations

import base64
import re
import secrets
import sys
from collections.abc import Iterator
from urllib.parse import quote, quote_plus

import pytest

from gateway.features.redaction import Redactor
from tests.sandbox_helpers import create, text_of, wait_until
from tests.support import FIXTURE_SERVER, RunningGateway, fixture_entry, start_gateway

SECRET = "s3cr3t-Value/with+odd=chars&" + secrets.token_hex(6)
MARK = "[REDACTED:canary.token]"

# Prints its secret to stderr split over two lines, base64-wrapped at 20 columns, and as hex with a
# CRLF inside; then becomes the fixture server.
SPLITTER = (
    "import base64, os, sys\n"
    "t = os.environ['SPLIT_TOKEN']\n"
    "print('token part', t[:9], file=sys.stderr)\n"
    "print(t[9:], 'and the rest', file=sys.stderr)\n"
    "b = base64.b64encode(('user:' + t).encode()).decode()\n"
    "print('\\n'.join(b[i:i + 20] for i in range(0, len(b), 20)), file=sys.stderr)\n"
    "h = t.encode().hex()\n"
    "sys.stderr.write('hex ' + h[:10] + '\\r\\n' + h[10:] + ' done\\n')\n"
    "sys.stderr.flush()\n"
    "os.execv(sys.executable, [sys.executable, sys.argv[1], '--name', 'split'])\n"
)
CATALOG = {
    "canary": fixture_entry("--name", "canary", secrets=[{"name": "canary.token", "env": "CANARY_TOKEN"}]),
    "split": {
        "command": [sys.executable, "-c", SPLITTER, str(FIXTURE_SERVER)],
        "secrets": [{"name": "split.token", "env": "SPLIT_TOKEN"}],
    },
}


def forms(value: str) -> dict[str, str]:
    raw = value.encode()
    return {
        "base64": base64.b64encode(raw).decode(),
        "base64-unpadded": base64.b64encode(raw).decode().rstrip("="),
        "base64-urlsafe": base64.urlsafe_b64encode(raw).decode(),
        "basic-auth": base64.b64encode(b"user:" + raw).decode(),
        "base64-offset-1": base64.b64encode(b"x" + raw + b"yz").decode(),
        "base64-offset-2": base64.b64encode(b"xy" + raw).decode(),
        "hex": raw.hex(),
        "HEX": raw.hex().upper(),
        "url": quote(value, safe=""),
        "url-lower": re.sub("%[0-9A-F]{2}", lambda m: m.group(0).lower(), quote(value, safe="")),
        "url-plus": quote_plus(value),
    }


# -- the redactor itself ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(forms(SECRET)))
def test_an_encoded_form_of_a_secret_is_redacted(kind: str) -> None:
    encoded = forms(SECRET)[kind]
    redacted = Redactor({"canary.token": SECRET}).text(f"before {encoded} after")
    assert MARK in redacted
    assert redacted.startswith("before ") and redacted.endswith(" after")
    assert encoded not in redacted


def test_the_value_inside_an_encoded_blob_leaves_only_its_edges() -> None:
    blob = base64.b64encode(b"header " + SECRET.encode() + b" trailer").decode()
    redacted = Redactor({"canary.token": SECRET}).text(blob)
    # What is left of the blob can no longer be decoded to anything holding the secret.
    assert MARK in redacted and len(redacted.replace(MARK, "")) < len(blob) - len(SECRET)


def test_ordinary_text_is_left_alone() -> None:
    text = "Hello, world: 0123456789abcdef and SGVsbG8gd29ybGQ= and %41%42"
    assert Redactor({"canary.token": SECRET}).text(text) == text


def test_short_values_and_their_forms_are_not_searched() -> None:
    assert Redactor({"pin": "123"}).text("313233 MTIz 123") == "313233 MTIz 123"
    assert Redactor({"pin": "1234"}).text("MTIz 1234") == "MTIz [REDACTED:pin]"


@pytest.mark.parametrize("split", [1, 5, len(SECRET) - 1])
@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_a_secret_split_across_lines_is_redacted(split: int, newline: str) -> None:
    lines = [f"first {SECRET[:split]}{newline}".encode(), f"{SECRET[split:]} second{newline}".encode()]
    out = Redactor({"canary.token": SECRET}).lines().feed_all(lines).decode()
    assert out == f"first {MARK}{newline} second{newline}"


def test_wrapped_base64_of_a_secret_is_redacted() -> None:
    encoded = base64.b64encode(("user:" + SECRET).encode()).decode()
    lines = [(encoded[i : i + 16] + "\n").encode() for i in range(0, len(encoded), 16)]
    out = Redactor({"canary.token": SECRET}).lines().feed_all(lines).decode()
    assert MARK in out
    for piece in (SECRET[:8], encoded[8:24]):
        assert piece not in out.replace("\n", "")


def test_a_line_that_cannot_begin_a_secret_is_written_at_once() -> None:
    stream = Redactor({"canary.token": SECRET}).lines()
    assert stream.feed(b"plain line ##\n") == [b"plain line ##\n"]
    assert stream.flush() == b""


def test_a_held_line_comes_out_when_the_stream_ends() -> None:
    stream = Redactor({"canary.token": SECRET}).lines()
    assert stream.feed(f"ends with {SECRET[:6]}\n".encode()) == []
    assert stream.flush() == f"ends with {SECRET[:6]}\n".encode()


# -- end to end ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    gateway = start_gateway(["--runtime", "host"], workdir=tmp_path_factory.mktemp("forms"), catalog=CATALOG)
    yield gateway
    gateway.stop()


async def test_encoded_forms_in_tool_results_are_redacted(gateway: RunningGateway) -> None:
    sandbox = create(gateway, {"canary": {"token": SECRET}})
    text = " | ".join(forms(SECRET).values())
    async with gateway.client(sandbox["mcp_token"]) as client:
        echoed = text_of(await client.call_tool("canary__echo", {"text": text}))
        raw = text_of(await client.call_tool("canary__secret_echo", {"name": "CANARY_TOKEN"}))
    assert raw == MARK
    assert echoed.count(MARK) == len(forms(SECRET))
    for encoded in forms(SECRET).values():
        assert encoded not in echoed


async def test_a_secret_split_across_stderr_lines_is_redacted_in_the_log(gateway: RunningGateway) -> None:
    token = "split-" + secrets.token_hex(10)
    sandbox = create(gateway, {"split": {"token": token}})
    async with gateway.client(sandbox["mcp_token"]) as client:
        assert text_of(await client.call_tool("split__echo", {"text": "hi"})) == "hi"
    log = gateway.data_dir / "logs" / sandbox["id"] / "split.log"
    assert wait_until(lambda: log.exists() and "done" in log.read_text(), timeout=15)
    text = log.read_text()
    assert text.count("[REDACTED:split.token]") == 3, text
    assert token[:9] not in text and token[9:] not in text
    assert token.encode().hex()[:10] not in text
