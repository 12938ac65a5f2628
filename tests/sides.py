"""Run the same test against dbtools.tenants and dbtools.aio.tenants.

A test of the data-access layer takes ``conn`` (and ``connect``) and calls ``tenants.X(conn,
...)``. In test modules that run on both sides, ``tenants`` is :data:`tenants` below, and the
``conn`` fixture is, for the async side, an :class:`AsyncBridge`: a real
``psycopg.AsyncConnection`` running on an event loop of its own thread, with the attributes and
methods tests use of a ``psycopg.Connection``. ``tenants.X(bridge, ...)`` then awaits
``dbtools.aio.tenants.X(bridge.aconn, ...)`` on that loop, so one test body checks both APIs.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine, Iterator
from contextlib import AbstractAsyncContextManager, contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import psycopg

from dbtools import tenants as sync_tenants
from dbtools.aio import db as aio_db
from dbtools.aio import tenants as aio_tenants
from dbtools.config import Target

T = TypeVar("T")
# How long a test waits for one awaited call before calling it hung.
CALL_TIMEOUT = 120.0


class EventLoopThread:
    """An asyncio event loop running in a daemon thread, until :meth:`stop`."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the loop and wait for its result (its exception is raised here)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(CALL_TIMEOUT)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(CALL_TIMEOUT)
        self.loop.close()


class BridgeCursor:
    """The result of :meth:`AsyncBridge.execute`, fetched synchronously."""

    def __init__(self, bridge: AsyncBridge, cursor: psycopg.AsyncCursor[Any]) -> None:
        self._bridge, self._cursor = bridge, cursor

    def fetchone(self) -> Any:
        return self._bridge.run(self._cursor.fetchone())

    def fetchall(self) -> list[Any]:
        return self._bridge.run(self._cursor.fetchall())

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount


class AsyncBridge:
    """A ``psycopg.AsyncConnection`` that synchronous test code uses like a Connection."""

    def __init__(self, aconn: psycopg.AsyncConnection[Any], loop: EventLoopThread) -> None:
        self.aconn = aconn
        self._loop = loop

    @classmethod
    def connect(cls, target: Target, **kwargs: Any) -> AsyncBridge:
        """Connect with :func:`dbtools.aio.db.connect`, on a new event loop thread."""
        loop = EventLoopThread()
        try:
            aconn = loop.run(aio_db.connect(target, **kwargs))
        except BaseException:
            loop.stop()
            raise
        return cls(aconn, loop)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self._loop.run(coro)

    def execute(self, query: Any, params: Any = None, **kwargs: Any) -> BridgeCursor:
        return BridgeCursor(self, self.run(self.aconn.execute(query, params, **kwargs)))

    @contextmanager
    def transaction(self, **kwargs: Any) -> Iterator[Any]:
        with self.entered(self.aconn.transaction(**kwargs)) as tx:
            yield tx

    @contextmanager
    def entered(self, manager: AbstractAsyncContextManager[T]) -> Iterator[T]:
        """``async with manager``, from synchronous code."""
        value = self.run(manager.__aenter__())
        try:
            yield value
        except BaseException as exc:
            if not self.run(manager.__aexit__(type(exc), exc, exc.__traceback__)):
                raise
        else:
            self.run(manager.__aexit__(None, None, None))

    def commit(self) -> None:
        self.run(self.aconn.commit())

    def rollback(self) -> None:
        self.run(self.aconn.rollback())

    def close(self) -> None:
        """Close the connection; the loop runs on, for calls on the closed connection."""
        self.run(self.aconn.close())

    def dispose(self) -> None:
        """Close the connection and stop its loop."""
        if not self._loop.loop.is_closed():
            self.close()
            self._loop.stop()

    def __enter__(self) -> AsyncBridge:
        return self

    def __exit__(self, *exc: object) -> None:
        self.dispose()

    @property
    def autocommit(self) -> bool:
        return self.aconn.autocommit

    @autocommit.setter
    def autocommit(self, value: bool) -> None:
        self.run(self.aconn.set_autocommit(value))

    @property
    def closed(self) -> bool:
        return self.aconn.closed

    @property
    def pgconn(self) -> Any:
        return self.aconn.pgconn

    @property
    def info(self) -> Any:
        return self.aconn.info


class BothSides:
    """``dbtools.tenants`` for a ``psycopg.Connection``; ``dbtools.aio.tenants``, awaited on the
    bridge's loop, for an :class:`AsyncBridge`. Other names are those of ``dbtools.tenants``."""

    def __getattr__(self, name: str) -> Any:
        sync = getattr(sync_tenants, name)
        if name not in aio_tenants.__all__:
            return sync
        awaited = getattr(aio_tenants, name)
        if name == "acting_as":
            return _acting_as
        return _either(sync, awaited)


def _either(sync: Callable[..., Any], awaited: Callable[..., Any]) -> Callable[..., Any]:
    def call(conn: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(conn, AsyncBridge):
            return conn.run(awaited(conn.aconn, *args, **kwargs))
        return sync(conn, *args, **kwargs)

    return call


@contextmanager
def _acting_as(conn: Any, actor: str) -> Iterator[None]:
    if not isinstance(conn, AsyncBridge):
        with sync_tenants.acting_as(conn, actor):
            yield
        return
    with conn.entered(aio_tenants.acting_as(conn.aconn, actor)):
        yield


if TYPE_CHECKING:  # the type checker sees the sync signatures, which both sides share
    from dbtools import tenants as tenants
else:
    tenants = BothSides()
SIDES = ("sync", "async")
