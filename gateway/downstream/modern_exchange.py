"""2026-07-28 calls that need the client's input: ``input_required`` rounds instead of server requests.

The 2026-07-28 era has no server-to-client requests. When an upstream asks something back during a
call (``sampling/createMessage``, ``elicitation/create``, ``roots/list``), the upstream call is parked
and the client's request is answered with an ``InputRequiredResult``: the open questions
(``inputRequests``) and a random ``requestState`` that names the parked call. The client answers
them and retries the same request with ``inputResponses`` and that ``requestState``; the retry
resumes the parked call, which either finishes (its result is the retry's answer) or asks again.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from gateway.core.pipeline import RpcError
from gateway.downstream.relay import RELAYED_REQUESTS, log_message, progress_message, relay_refusal
from gateway.features.redaction import Redactor
from gateway.upstream.errors import INVALID_PARAMS, METHOD_NOT_FOUND, UpstreamError

if TYPE_CHECKING:
    from gateway.core.pipeline import Caller

logger = logging.getLogger("gateway.modern")

# A parked call (waiting for the client to retry with input) is cancelled after this long.
INPUT_WAIT_SECONDS = 600.0
STATE_PREFIX = "gw1."


class Notifier:
    """Where a call's notifications go: the response of the client request being answered now."""

    async def notify(self, method: str, params: dict[str, Any]) -> None: ...


class ModernChannel:
    """The :class:`~gateway.core.pipeline.ClientChannel` of a 2026-07-28 request.

    Progress goes out only with the client's ``progressToken``, log messages only at the levels
    the request opted into (``io.modelcontextprotocol/logLevel``); both on the request's own
    response (an SSE stream from the first one on). An upstream's request to the client becomes
    an ``input_required`` round through the call's :class:`InputExchange`; without one (or
    without the capability the request needs) the upstream gets an error.
    """

    __slots__ = ("caller", "exchange", "levels", "redactor", "reply", "token")

    def __init__(self, reply: Notifier, caller: Caller, token: Any, levels: frozenset[str], redactor: Redactor) -> None:
        self.reply = reply
        self.caller = caller
        self.token = token
        self.levels = levels
        self.redactor = redactor
        self.exchange: InputExchange | None = None

    def rebind(self, reply: Notifier, caller: Caller, token: Any, levels: frozenset[str]) -> None:
        """A retry of the call: what happens next goes to the retry's response."""
        self.reply = reply
        self.caller = caller
        self.token = token
        self.levels = levels

    async def progress(self, params: dict[str, Any]) -> None:
        if self.token is not None:
            await self.reply.notify("notifications/progress", progress_message(params, self.token, self.redactor))

    async def log(self, params: dict[str, Any]) -> None:
        if not self.levels:
            return
        forwarded = log_message(params, self.levels, self.redactor)
        if forwarded is not None:
            await self.reply.notify("notifications/message", forwarded)

    async def request(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        refusal = relay_refusal(method, params, self.caller.capabilities)
        if refusal is not None:
            raise UpstreamError(refusal, METHOD_NOT_FOUND)
        if self.exchange is None:
            raise UpstreamError(f"{method} cannot be relayed for this request", METHOD_NOT_FOUND)
        return await self.exchange.ask(method, self.redactor.value(params))


def may_ask(caller: Caller) -> bool:
    """Whether an upstream could get an answer from this client (it declared sampling, elicitation or roots)."""
    return any(caller.declares(capability) for capability in RELAYED_REQUESTS.values())


class InputExchange:
    """A call whose upstream may ask the client something, run across the client's retries.

    The call runs in its own task. Each round (the first request, then every retry) waits until
    the call finishes or the upstream asks something; in the latter case the round answers
    ``InputRequiredResult`` with the open questions and a fresh ``requestState``. The state is
    bound to the sandbox, the method and the name the call was for; a call nobody resumes is
    cancelled after ``INPUT_WAIT_SECONDS`` (the upstream then gets ``notifications/cancelled``).
    """

    parked: dict[str, InputExchange] = {}

    def __init__(self, sandbox: str, method: str, name: str, channel: ModernChannel) -> None:
        self.sandbox = sandbox
        self.method = method
        self.name = name
        self.channel = channel
        self.task: asyncio.Task[dict[str, Any]] | None = None
        self.state: str | None = None
        self._keys = itertools.count(1)
        self._open: dict[str, tuple[str, dict[str, Any], asyncio.Future[dict[str, Any]]]] = {}
        self._asked = asyncio.Event()
        self._expiry: asyncio.TimerHandle | None = None
        channel.exchange = self

    def start(self, work: Any) -> None:
        self.task = asyncio.ensure_future(work)
        self.task.add_done_callback(self._finished)

    async def ask(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        key = f"{method.split('/')[0]}-{next(self._keys)}"
        self._open[key] = (method, params, future)
        self._asked.set()
        try:
            return await future
        finally:
            self._open.pop(key, None)

    def answer(self, responses: Any) -> None:
        """The retry's ``inputResponses``: each answers the open question with its key (others are ignored)."""
        if not isinstance(responses, Mapping):
            return
        for key, response in responses.items():
            entry = self._open.get(key)
            if entry is not None and not entry[2].done():
                entry[2].set_result(response if isinstance(response, dict) else {})

    async def round(self) -> dict[str, Any]:
        """The call's result once it finishes, or an ``input_required`` result when it needs input."""
        assert self.task is not None
        self._unpark()
        try:
            while not self.task.done():
                if any(not future.done() for _, _, future in self._open.values()):
                    break
                self._asked.clear()
                waiter = asyncio.ensure_future(self._asked.wait())
                try:
                    await asyncio.wait({self.task, waiter}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    waiter.cancel()
        except asyncio.CancelledError:
            self.task.cancel()  # the client gave up on this round: the upstream call goes too
            raise
        if self.task.done():
            return self.task.result()
        requests = {key: {"method": m, "params": p} for key, (m, p, f) in self._open.items() if not f.done()}
        self.state = STATE_PREFIX + secrets.token_urlsafe(32)
        self.parked[self.state] = self
        self._expiry = asyncio.get_running_loop().call_later(INPUT_WAIT_SECONDS, self._expire)
        return {"resultType": "input_required", "inputRequests": requests, "requestState": self.state}

    def _unpark(self) -> None:
        if self.state is not None:
            self.parked.pop(self.state, None)
            self.state = None
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None

    def _expire(self) -> None:
        logger.info("a call waiting for client input on sandbox %s expired", self.sandbox)
        self._unpark()
        if self.task is not None:
            self.task.cancel()

    def _finished(self, _task: asyncio.Task[Any]) -> None:
        """The upstream call ended (result, error, timeout) while possibly parked: forget it."""
        self._unpark()
        for _, _, future in self._open.values():
            if not future.done():
                future.cancel()

    @classmethod
    def resume(cls, state: Any, sandbox: str, method: str, name: str) -> InputExchange:
        exchange = cls.parked.get(state) if isinstance(state, str) else None
        if exchange is None or (exchange.sandbox, exchange.method, exchange.name) != (sandbox, method, name):
            raise RpcError(INVALID_PARAMS, "Invalid or expired requestState", {"reason": "invalid_request_state"})
        return exchange
