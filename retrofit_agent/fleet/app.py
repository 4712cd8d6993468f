"""The ingest HTTP app (ASGI, Starlette): the edge where a request is judged before it costs.

In the order a request meets them, each refusal the protocol's status with a one-line JSON
error (docs/upload-protocol.md), the connection closed after it:

1. The token, from headers alone, before the body is read: uvicorn sends `100 Continue` only
   when the app first reads the body, so a device with a bad token never sends its batch
   (the reference server said "continue" first). The token's sha256 is looked up in the
   store on every request, so revocation is immediate.
2. Content-Type, then Content-Length: required, and at most `max_body_bytes`.
3. A slot among `max_inflight` (per worker): the body and its parse are the memory a request
   costs, so at most that many are held at once; one waiting longer than the deadline is
   answered 503 with Retry-After.
4. The body, read within `deadline_s` (a slow body is cut off, 408) and inflated as it comes
   with the caps of `limits.Inflater`.
5. Parse, per-row checks and the committed insert (`ingest.acknowledge`) in a worker thread, so
   the event loop keeps reading other requests. A store failure (database restarting) is 503
   with Retry-After: 1 and nothing acknowledged; the device re-sends later.

Idle connections cost no thread (asyncio); one that sends no complete headers within the
deadline is closed (`connections.HeaderDeadlineProtocol`), and uvicorn's `limit_concurrency`
answers 503 past `max_connections` per worker.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from retrofit_agent.common.logs import kv
from retrofit_agent.errors import one_line
from retrofit_agent.fleet import campaigns
from retrofit_agent.fleet.ingest import acknowledge, parse
from retrofit_agent.fleet.limits import Inflater, Limits, Refused
from retrofit_agent.fleet.store import FleetStore
from retrofit_agent.fleet.tokens import token_hash
from retrofit_agent.transport.protocol import PROTOCOL

OBSERVATIONS = "/v1/observations"
CAMPAIGNS = "/v1/campaigns"

log = logging.getLogger(__name__)


def error_response(status: int, reason: str, retry_after_s: int | None = None) -> Response:
    headers = {"Connection": "close"}
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    if retry_after_s is not None:
        headers["Retry-After"] = str(retry_after_s)
    body = json.dumps({"protocol": PROTOCOL, "error": reason})
    return Response(body, status, headers, media_type="application/json")


class Ingest:
    """The request handlers over one store, with one worker's limits."""

    def __init__(self, store: FleetStore, limits: Limits) -> None:
        self.store = store
        self.limits = limits
        self.slots: anyio.CapacityLimiter | None = None  # made in the event loop (lifespan)

    async def authenticate(self, request: Request) -> str:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise Refused(401, "missing device token (Authorization: Bearer ...)")
        device = await self._store_call(self.store.device_for_token, token_hash(token.strip()))
        if device is None:
            raise Refused(401, "unknown or revoked device token")
        return device

    async def _store_call(self, function: Any, *args: Any) -> Any:
        try:
            return await anyio.to_thread.run_sync(function, *args)
        except Refused:
            raise
        except Exception as exc:  # the database is restarting, full, unreachable...
            log.warning("store unavailable", extra=kv(error=one_line(exc)))
            raise Refused(503, f"storage unavailable: {one_line(exc, 120)}", 1) from None

    async def observations(self, request: Request) -> Response:
        try:
            device = await self.authenticate(request)
            if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
                raise Refused(415, "Content-Type must be application/json")
            length = self._content_length(request)
            inflater = Inflater(self.limits, request.headers.get("content-encoding"))
            assert self.slots is not None
            with anyio.move_on_after(self.limits.deadline_s) as waited:
                await self.slots.acquire()
            if waited.cancelled_caught:
                raise Refused(503, "busy: every ingest slot is taken", 1)
            try:
                data = await self._read(request, inflater, length)
                ack = await self._store_call(self._acknowledge, device, data)
            finally:
                self.slots.release()
        except Refused as refused:
            if refused.status >= 500:
                log.warning("refused", extra=kv(status=refused.status, reason=refused.reason))
            else:
                log.info("refused", extra=kv(status=refused.status, reason=refused.reason))
            return error_response(refused.status, refused.reason, refused.retry_after_s)
        except ClientDisconnect:
            return error_response(400, "client disconnected before the whole body")
        return Response(ack.model_dump_json(), media_type="application/json")

    def _content_length(self, request: Request) -> int:
        try:
            length = int(request.headers["content-length"])
        except (KeyError, ValueError):
            raise Refused(411, "Content-Length required") from None
        if not 0 < length <= self.limits.max_body_bytes:
            limit = self.limits.max_body_bytes
            raise Refused(413, f"body must be 1 to {limit} bytes, not {length}")
        return length

    async def _read(self, request: Request, inflater: Inflater, length: int) -> bytes:
        with anyio.move_on_after(self.limits.deadline_s) as reading:
            async for chunk in request.stream():
                inflater.feed(chunk)
        if reading.cancelled_caught:
            raise Refused(408, f"body not received within {self.limits.deadline_s:g} s")
        if inflater.received != length:
            raise Refused(400, f"body is {inflater.received} bytes, Content-Length said {length}")
        return inflater.result()

    def _acknowledge(self, device: str, data: bytes) -> Any:
        return acknowledge(self.store, device, parse(data, self.limits), self.limits)

    async def campaigns(self, request: Request) -> Response:
        try:
            await self.authenticate(request)
            stored = await self._store_call(self.store.campaigns)
        except Refused as refused:
            return error_response(refused.status, refused.reason, refused.retry_after_s)
        etag = campaigns.etag(stored)
        if etag in (t.strip() for t in request.headers.get("if-none-match", "").split(",")):
            return Response(status_code=304, headers={"ETag": etag})
        body = campaigns.body(stored)
        return Response(body, headers={"ETag": etag}, media_type="application/json")


def create_app(store: FleetStore, limits: Limits, owns_store: bool = False) -> Starlette:
    """The app over `store`; with `owns_store` it closes the store when it shuts down."""
    ingest = Ingest(store, limits)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        ingest.slots = anyio.CapacityLimiter(limits.max_inflight)
        try:
            yield
        finally:
            if owns_store:
                store.close()

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 404:
            paths = f"POST {OBSERVATIONS} or GET {CAMPAIGNS}"
            return error_response(404, f"no such endpoint {request.url.path!r}, {paths}")
        return error_response(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}")

    return Starlette(
        routes=[
            Route(OBSERVATIONS, ingest.observations, methods=["POST"]),
            Route(CAMPAIGNS, ingest.campaigns, methods=["GET"]),
        ],
        exception_handlers={HTTPException: http_error},
        lifespan=lifespan,
    )
