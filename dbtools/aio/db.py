"""Async connections to the system database, and the transaction scopes of async calls.

The twins of :func:`dbtools.db.connect`, :func:`dbtools.db.create_pool` and
:func:`dbtools.db.scope` for ``psycopg.AsyncConnection``: the same pooler check (server-side
prepared statements off behind a transaction pooler), the same errors, the same rule for when a
call runs in a savepoint (:func:`dbtools.db.in_transaction_block`). Finding the target may start
the embedded PostgreSQL, which blocks: do it when the application starts, not per request.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Any, NoReturn

import psycopg
from psycopg.pq import TransactionStatus
from psycopg.rows import TupleRow, tuple_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from dbtools.config import PreparedStatements, Target, prepared_statements, resolve
from dbtools.db import (
    Scope,
    in_transaction_block,
    is_connection_failure,
    lost_connection,
    no_first_connection,
    opens_transaction,
    pool_arguments,
    pool_timeout_error,
    server_failure,
    unavailable,
)

__all__ = [
    "AsyncPool",
    "behind_pooler",
    "connect",
    "create_pool",
    "raise_failure",
    "roll_back_opened",
    "scope",
]


async def connect(
    target: Target | str | None = None, **kwargs: Any
) -> psycopg.AsyncConnection[TupleRow]:
    """Open an async connection to ``target``, as :func:`dbtools.db.connect` opens a sync one."""
    target = resolve(target)
    setting = prepared_statements()  # a bad value fails before anything connects
    try:
        conn = await psycopg.AsyncConnection.connect(**(target.connect_kwargs() | kwargs))
    except psycopg.OperationalError as exc:
        raise unavailable(
            exc, target.describe(), connecting=True, password=target.password
        ) from exc
    if "prepare_threshold" in kwargs:
        return conn
    try:
        if await _prepared_statements_unsafe(conn, setting):
            conn.prepare_threshold = None
    except psycopg.OperationalError as exc:  # lost while checking: still connecting
        await conn.close()
        raise unavailable(
            exc, target.describe(), connecting=True, password=target.password
        ) from exc
    except BaseException:
        await conn.close()
        raise
    return conn


async def behind_pooler(conn: psycopg.AsyncConnection[Any]) -> bool:
    """:func:`dbtools.db.behind_pooler` for an async connection: whether the server's backend
    pid differs from the one announced at connection time. The connection is left as it was
    (a transaction this query opened is rolled back)."""
    status = conn.pgconn.transaction_status
    if status == TransactionStatus.INERROR:
        raise psycopg.ProgrammingError(
            "behind_pooler() cannot query a connection in a failed transaction: roll it back"
        )
    try:
        async with conn.cursor(row_factory=tuple_row) as cur:
            await cur.execute("SELECT pg_backend_pid()", prepare=False)
            row = await cur.fetchone()
        if status == TransactionStatus.IDLE and not conn.autocommit:
            await conn.rollback()
    except psycopg.Error as exc:
        if is_connection_failure(exc, conn):
            raise
        # A working connection that cannot run the query: "cannot tell" is "pooler".
        if status == TransactionStatus.IDLE and not conn.autocommit:
            with suppress(psycopg.Error):
                await conn.rollback()
        return True
    return row is None or row[0] != conn.pgconn.backend_pid


async def _prepared_statements_unsafe(
    conn: psycopg.AsyncConnection[Any], setting: PreparedStatements
) -> bool:
    if setting is PreparedStatements.AUTO:
        return await behind_pooler(conn)
    return setting is PreparedStatements.OFF


class AsyncPool(AsyncConnectionPool[psycopg.AsyncConnection[TupleRow]]):
    """:class:`dbtools.db.Pool` for asyncio: ``connection()`` fails with
    :class:`~dbtools.errors.DatabaseUnavailable` or :class:`~dbtools.errors.PoolExhausted`,
    and every new connection is checked for a pooler."""

    def __init__(self, target: Target, **kwargs: Any) -> None:
        self.target = target
        setting = prepared_statements()
        if "prepare_threshold" not in (kwargs.get("kwargs") or {}):
            then = kwargs.pop("configure", None)

            async def configure(conn: psycopg.AsyncConnection[TupleRow]) -> None:
                if await _prepared_statements_unsafe(conn, setting):
                    conn.prepare_threshold = None
                if then is not None:
                    await then(conn)

            kwargs["configure"] = configure
        self._in_use = 0  # connections given to callers and not yet returned (one event loop)
        super().__init__(**kwargs)

    @asynccontextmanager
    async def connection(
        self, timeout: float | None = None
    ) -> AsyncIterator[psycopg.AsyncConnection[TupleRow]]:
        """As :meth:`dbtools.db.Pool.connection`."""
        try:
            async with super().connection(timeout) as conn:
                yield conn
        except psycopg.Error as exc:
            lost = lost_connection(exc, self.target)
            if lost is None:
                raise
            raise lost from exc

    async def getconn(self, timeout: float | None = None) -> psycopg.AsyncConnection[TupleRow]:
        try:
            conn = await super().getconn(timeout)
        except PoolTimeout as exc:
            raise pool_timeout_error(self, self._in_use, timeout) from exc
        self._in_use += 1
        return conn

    async def putconn(self, conn: psycopg.AsyncConnection[TupleRow]) -> None:
        self._in_use -= 1
        await super().putconn(conn)


async def create_pool(
    target: Target | str | None = None,
    *,
    min_size: int = 1,
    max_size: int | None = None,
    **kwargs: Any,
) -> AsyncPool:
    """An opened :class:`AsyncPool` on ``target``, as :func:`dbtools.db.create_pool`; use it as
    ``async with`` or close it when the service stops."""
    target = resolve(target)
    pool = AsyncPool(target, **pool_arguments(target, min_size, max_size, kwargs))
    wait = kwargs.get("timeout", 30.0)
    try:
        await pool.open(wait=True, timeout=wait)
    except PoolTimeout as exc:
        await pool.close()
        raise no_first_connection(target, wait) from exc
    return pool


async def roll_back_opened(conn: psycopg.AsyncConnection[Any], opened: bool) -> None:
    """:func:`dbtools.db.roll_back_opened`, awaited."""
    if opened and not conn.closed:
        with suppress(psycopg.Error):
            await conn.rollback()


async def raise_failure(
    conn: psycopg.AsyncConnection[Any], exc: psycopg.Error, opened: bool
) -> NoReturn:
    """:func:`dbtools.db.raise_failure`, awaited."""
    await roll_back_opened(conn, opened)
    mapped = server_failure(exc, conn)
    if mapped is not None:
        raise mapped from exc
    raise exc


@asynccontextmanager
async def scope(conn: psycopg.AsyncConnection[Any], kind: Scope) -> AsyncIterator[None]:
    """:func:`dbtools.db.scope` for an async connection: the same rules."""
    if in_transaction_block(conn, kind):
        try:
            async with conn.transaction():
                yield
        except psycopg.Error as exc:
            await raise_failure(conn, exc, opened=False)
        return
    opened = opens_transaction(conn)
    try:
        yield
    except psycopg.Error as exc:
        await raise_failure(conn, exc, opened)
    except BaseException:
        await roll_back_opened(conn, opened)
        raise
