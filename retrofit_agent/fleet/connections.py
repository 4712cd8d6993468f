"""A deadline for a request's headers: a connection that sends none is closed, not kept.

uvicorn arms its keep-alive timeout only after an answer, so a connection that opens and sends
nothing, or trickles its headers a byte at a time, is held for ever, and enough of them fill
`limit_concurrency`, after which every device is answered 503. The app cannot see such a
connection (it is called once the headers are complete), so the rule lives in the protocol:
from the moment a connection opens, and again after each answer, the next request's headers
must be complete within `timeout_keep_alive` seconds (`Limits.deadline_s`), or the connection
is closed. The body then has the app's own deadline.
"""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.h11_impl import H11Protocol


class HeaderDeadlineProtocol(H11Protocol):
    _headers_due: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._headers_due is not None:
            self._headers_due.cancel()
        super().connection_lost(exc)

    def _arm(self) -> None:
        if self._headers_due is not None:
            self._headers_due.cancel()
        self._headers_due = self.loop.call_later(self.timeout_keep_alive, self._headers_late)

    def _headers_late(self) -> None:
        waiting = self.cycle is None or self.cycle.response_complete  # no request under way
        if waiting and not self.transport.is_closing():
            self.transport.close()
