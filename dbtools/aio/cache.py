"""Tenants by slug from memory, for asyncio: :class:`TenantCache` on an async pool.

The twin of :class:`dbtools.cache.TenantCache`, with the same :class:`~dbtools.cache.CacheCore`
(entries, bounds, invalidation, the race between a load and a change) and the same rules; here
the listener is a task of the event loop instead of a thread::

    from dbtools.aio import db
    from dbtools.aio.cache import TenantCache

    async with await db.create_pool() as pool, TenantCache(pool) as cache:
        tenant = await cache.get_by_slug("acme")

See :mod:`dbtools.cache` for how it stays true and what the listening connection needs.
"""

from __future__ import annotations

import asyncio
from contextlib import suppress
from typing import Any

import psycopg
from psycopg.rows import tuple_row

from dbtools.aio import db as aio_db
from dbtools.aio import tenants
from dbtools.cache import (
    CLOSE_WAIT,
    LISTEN,
    LISTENER_CHECK,
    MISS,
    POOL_CHECK,
    RETRY_FIRST,
    RETRY_MAX,
    CacheCore,
    Relay,
    listener_kwargs,
    through_pooler,
)
from dbtools.db import error_for
from dbtools.errors import CacheClosed
from dbtools.slugs import is_valid_slug
from dbtools.tenants import Tenant

__all__ = ["TenantCache"]


class TenantCache(CacheCore):
    """:class:`dbtools.cache.TenantCache` for a ``psycopg_pool.AsyncConnectionPool``: the same
    arguments (``pool`` an ``AsyncConnectionPool``, such as :func:`dbtools.aio.db.create_pool`
    makes); open it with ``async with`` (or ``await cache.open()``, then ``await
    cache.close()``), in the event loop that uses it."""

    _task: asyncio.Task[None] | None = None  # the listener, once open
    _opening: asyncio.Lock | None = None

    async def open(self) -> None:
        """Connect and listen, or raise as :class:`dbtools.cache.TenantCache` does. Opening
        an open cache does nothing; one whose event loop ended listens again."""
        self.check_open()
        if self._opening is None:
            self._opening = asyncio.Lock()
        async with self._opening:  # callers racing to open make one listener
            if self._task is not None and not self._task.done():
                return
            conn = await self._open_listener()
            self.listening_started()
            self._task = asyncio.create_task(self._listen(conn), name="dbtools-tenant-cache")

    async def get_by_slug(self, slug: str) -> Tenant | None:
        """As :meth:`dbtools.cache.TenantCache.get_by_slug`, awaited."""
        if type(slug) is str:  # a str subclass may hash and compare as it likes: not held
            found = self.lookup(slug)
            if found is not MISS:
                return found  # type: ignore[return-value]
        if self._task is None or self._task.done():
            self.check_open()
            raise CacheClosed(
                "the tenant cache is not listening: use `async with TenantCache(pool)`, or await "
                "open() (again, when the event loop that ran it has ended)"
            )
        if not is_valid_slug(slug):
            return None
        if type(slug) is not str:
            async with self._pool.connection() as conn:
                return await tenants.get_by_slug(conn, slug)
        with self.loading(slug) as load:
            async with self._pool.connection() as conn:
                load.answer = await tenants.get_by_slug(conn, slug)
                self.answered_by(load, conn.pgconn)
        return load.answer

    async def close(self) -> None:
        """Stop listening, close the listening connection, drop every entry. Idempotent."""
        self._mark_closed()
        task, self._task = self._task, None
        while task is not None and not task.done():  # cancelled until it ends, however it waits
            task.cancel()
            await asyncio.wait({task}, timeout=CLOSE_WAIT)

    async def __aenter__(self) -> TenantCache:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- the listener task --------------------------------------------------------------------

    async def _open_listener(self) -> psycopg.AsyncConnection[Any]:
        target = self._listen_target
        conn = await aio_db.connect(target, **listener_kwargs(target))
        try:
            if await aio_db.behind_pooler(conn):
                raise through_pooler(target, self._listen_derived)
            identity = self.listener_identity(await (await conn.execute(LISTENER_CHECK)).fetchone())
            await conn.execute(LISTEN)
            async with (
                self._pool.connection() as pooled,
                pooled.cursor(row_factory=tuple_row) as cur,
            ):
                await cur.execute(POOL_CHECK)
                self.listen_to(identity, await cur.fetchone())
        except psycopg.Error as exc:
            mapped = error_for(exc, conn)  # before closing: it reads the connection
            await conn.close()
            if mapped is None:
                raise
            raise mapped from exc
        except BaseException:
            await conn.close()
            raise
        return conn

    async def _listen(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """The task: relay notifications; when the connection is lost, listen again (until
        cancelled by close()). Any failure counts as a loss."""
        try:
            while True:
                try:
                    await self._relay(conn)
                except Exception as exc:  # whatever it is, the channel is silent
                    self._lost(exc)
                finally:
                    await conn.close()
                conn = await self._reconnect()
                self._back()
        finally:
            # Cancelled by close(), or by the end of its event loop (asyncio.run cancels the
            # tasks left): either way nothing is heard any more.
            self.listening_lost()

    async def _reconnect(self) -> psycopg.AsyncConnection[Any]:
        """A new listening connection, tried with a growing delay (until cancelled)."""
        delay = RETRY_FIRST
        while True:
            await asyncio.sleep(delay)
            try:
                return await self._open_listener()
            except Exception as exc:  # said, and tried again
                self._cannot_listen(exc)
            delay = min(delay * 2, RETRY_MAX)

    async def _relay(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Relay until cancelled; raise when the connection fails (see :class:`Relay`)."""
        relay = Relay(self, conn.pgconn)
        readable = asyncio.Event()
        loop = asyncio.get_running_loop()
        socket = conn.pgconn.socket
        loop.add_reader(socket, readable.set)
        try:
            while True:
                # asyncio.timeout, not wait_for: on Python 3.11, wait_for drops a cancellation
                # (close()) that arrives as the wait ends, and the task would run on forever.
                with suppress(TimeoutError):
                    async with asyncio.timeout(relay.wait()):
                        await readable.wait()
                ready = readable.is_set()
                readable.clear()
                relay.step(ready)
        finally:
            loop.remove_reader(socket)
