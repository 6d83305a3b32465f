"""The errors an upstream call can fail with, and the JSON-RPC codes the gateway answers with."""

from __future__ import annotations

from typing import Any

# JSON-RPC error codes the gateway itself answers with.
INTERNAL_ERROR = -32603
INVALID_PARAMS = -32602
METHOD_NOT_FOUND = -32601
REQUEST_TIMEOUT = -32001
SERVER_UNAVAILABLE = -32002
# A server-to-client request whose caller cannot be told for sure (refused, never guessed).
AMBIGUOUS_CALLER = -32603


class UpstreamError(Exception):
    """A call to an upstream server failed. The message names the server and is safe to show."""

    def __init__(self, message: str, code: int = INTERNAL_ERROR, data: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.data = data


class ConnectionClosed(UpstreamError):
    """The connection to the server is gone (process exited, remote closed, gateway stopping)."""


class ErrorReply(UpstreamError):
    """The server itself answered a request with a JSON-RPC error (its code, message and data kept)."""

    @classmethod
    def of(cls, error: Any) -> ErrorReply:
        error = error if isinstance(error, dict) else {}
        code = error.get("code")
        return cls(
            str(error.get("message", "unknown error")),
            code if type(code) is int else INTERNAL_ERROR,
            error.get("data"),
        )
