"""Read deadlines for the HTTP connections, as production servers have them (nginx's
``client_header_timeout`` / ``client_body_timeout``, uvicorn's ``timeout_keep_alive``):

    connect / previous answer --(--header-timeout: headers complete)--> app --(--body-timeout: body read)
                                                                        --> answer --(--keep-alive-timeout idle)--> close

uvicorn bounds only the idle time after an answer (``timeout_keep_alive``, reset by any byte), so a
client that connects and sends nothing, or drips its request headers a byte at a time, or drips its
body, holds a connection forever. ``HeaderDeadline`` is uvicorn's own h11 protocol with one timer
more: a connection whose request headers are not complete ``header_timeout`` seconds after it opened
(or after its previous answer) is closed. ``BodyDeadline`` is ASGI middleware: a request body not
read in full ``timeout`` seconds after the headers is answered 408 and the connection closed.

uvicorn's protocol class is the one upstream internal here: ``H11Protocol`` and its ``conn``
(h11's ``Connection``, whose ``their_state`` is h11's public API), ``transport``, ``loop``,
``logger`` and ``on_response_complete``; tests/serve/test_hostile.py drives them with raw sockets,
and this module refuses to import (one line naming it) if an installed uvicorn lacks one of them.
"""

from __future__ import annotations

import asyncio

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from .errors import APIError

# What this module uses of uvicorn's internals, written against uvicorn 0.55.0 (constraints.txt):
# methods it overrides or calls, and attributes uvicorn's H11Protocol.__init__ sets.
WRITTEN_AGAINST = "uvicorn 0.55.0"
USES_METHODS = ("connection_made", "data_received", "on_response_complete", "connection_lost")
USES_ATTRIBUTES = ("conn", "loop", "transport", "logger")


def uvicorn_internals_missing(protocol: type = H11Protocol) -> list[str]:
    """The names this module relies on that ``protocol`` (uvicorn's H11Protocol) no longer has."""
    missing = [name for name in USES_METHODS if not callable(getattr(protocol, name, None))]
    if not missing:  # instance attributes: the names uvicorn's __init__ sets (self.conn = ..., self.transport = None)
        missing = [name for name in USES_ATTRIBUTES if name not in protocol.__init__.__code__.co_names]
    return missing


if uvicorn_internals_missing():
    raise RuntimeError(
        f"{__file__}: the installed uvicorn's H11Protocol lacks {', '.join(uvicorn_internals_missing())}, which this module "
        f"(written against {WRITTEN_AGAINST}) uses; install the version in constraints.txt"
    )


class HeaderDeadline(H11Protocol):
    """uvicorn's h11 protocol; a connection that the app does not hold (no request whose headers
    are in and whose answer is not yet complete) for ``header_timeout`` seconds is closed: one that
    sends no request, or drips its headers, or goes on sending a body after its answer (a 401, a
    404 sent before the body was read). Subclass it with the value: ``HeaderDeadline.limited(10)``."""

    header_timeout = 10.0
    _header_timer: asyncio.TimerHandle | None = None

    @classmethod
    def limited(cls, seconds: float) -> type[HeaderDeadline]:
        return type(cls.__name__, (cls,), {"header_timeout": float(seconds)})

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._app_holds():  # the headers are in: the request is the app's now (--body-timeout, --timeout)
            self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self._app_holds():  # kept alive: the next request's headers have the same time
            self._arm()

    def _app_holds(self) -> bool:
        """A request has come in (h11 past IDLE) and its answer is not complete."""
        return self.conn.their_state is not h11.IDLE and self.conn.our_state is not h11.DONE

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._header_timer = self.loop.call_later(self.header_timeout, self._expire)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _expire(self) -> None:
        self._header_timer = None
        if not self._app_holds() and not self.transport.is_closing():
            self.logger.debug("closing a connection that sent no complete request within %g s (--header-timeout)", self.header_timeout)
            self.transport.close()


class BodyDeadline:
    """ASGI middleware: the request body must be read in full within ``timeout`` seconds of the
    headers; past that, ``receive`` raises APIError 408 (the app answers it in OpenAI's shape, and
    uvicorn closes the connection, whose body was not read)."""

    def __init__(self, app, timeout: float):
        self.app, self.timeout = app, timeout

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        reading = True

        async def timed_receive():
            nonlocal reading
            if not reading:
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), max(deadline - loop.time(), 0.0))
            except asyncio.TimeoutError:  # (TimeoutError itself from Python 3.11)
                raise APIError(
                    408,
                    f"the request body did not arrive within {self.timeout:g} s (--body-timeout)",
                    type="timeout_error",
                    code="request_timeout",
                    headers={"Connection": "close"},
                ) from None
            reading = message["type"] == "http.request" and message.get("more_body", False)
            return message

        return await self.app(scope, timed_receive, send)
