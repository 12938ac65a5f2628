"""Reading and changing tenants from asyncio: :mod:`dbtools.tenants`, awaited.

Every function here takes a ``psycopg.AsyncConnection`` where its namesake in
:mod:`dbtools.tenants` takes a ``psycopg.Connection``, and otherwise behaves the same: the same
:class:`~dbtools.tenants.Tenant` records, the same errors, the same SQL and the same rules for
the caller's transaction (see that module). Each function builds its statement with the one
definition in :mod:`dbtools.tenants`, validation included, and only sends it here::

    from dbtools.aio import db, tenants

    async with await db.connect(autocommit=True) as conn:
        acme = await tenants.get_by_slug(conn, "acme")
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from typing import Any, TypeVar
from uuid import UUID

import psycopg

from dbtools.aio.db import raise_failure, roll_back_opened, scope
from dbtools.db import Scope, opens_transaction
from dbtools.slugs import is_valid_slug
from dbtools.tenants import (
    GET_BY_SLUG,
    GET_OR_CREATE_TRIES,
    Tenant,
    TenantEvent,
    TenantStatus,
    _acts_in_a_transaction_of_its_own,
    _Call,
    _create_call,
    _delete_call,
    _deleted_each_time,
    _get_by_id_call,
    _get_many_call,
    _has_rows,
    _history_call,
    _insert_if_absent_call,
    _list_call,
    _restore_actor_call,
    _restores_actor,
    _set_actor_call,
    _set_status_call,
    _tenant_row,
    _update_call,
    write_error,
)

__all__ = [
    "acting_as",
    "activate",
    "create",
    "delete",
    "get_by_id",
    "get_by_slug",
    "get_many",
    "get_or_create",
    "history",
    "list_tenants",
    "suspend",
    "update",
]

R = TypeVar("R")
AsyncConn = psycopg.AsyncConnection[Any]


async def get_by_slug(conn: AsyncConn, slug: str) -> Tenant | None:
    """As :func:`dbtools.tenants.get_by_slug`."""
    if not is_valid_slug(slug):
        return None
    # The hot path, written out as in dbtools.tenants.get_by_slug.
    opened = opens_transaction(conn)
    try:
        async with conn.cursor(row_factory=_tenant_row) as cur:
            await cur.execute(GET_BY_SLUG, {"slug": slug})
            return await cur.fetchone()
    except psycopg.Error as exc:
        await raise_failure(conn, exc, opened)
    except BaseException:  # cancelled (a timeout of the caller's), interrupted
        await roll_back_opened(conn, opened)
        raise


async def get_by_id(conn: AsyncConn, tenant_id: UUID) -> Tenant | None:
    """As :func:`dbtools.tenants.get_by_id`."""
    return await _run(conn, _get_by_id_call(tenant_id))


async def get_many(conn: AsyncConn, slugs: Iterable[str]) -> dict[str, Tenant]:
    """As :func:`dbtools.tenants.get_many`."""
    return await _run(conn, _get_many_call(slugs))


async def list_tenants(
    conn: AsyncConn,
    *,
    status: TenantStatus | str | None = None,
    after: str | None = None,
    limit: int = 100,
) -> list[Tenant]:
    """As :func:`dbtools.tenants.list_tenants`."""
    return await _run(conn, _list_call(status, after, limit))


async def create(
    conn: AsyncConn, slug: str, name: str, *, settings: Mapping[str, Any] | None = None
) -> Tenant:
    """As :func:`dbtools.tenants.create`."""
    return await _run(conn, _create_call(slug, name, settings))


async def get_or_create(
    conn: AsyncConn, slug: str, name: str, *, settings: Mapping[str, Any] | None = None
) -> tuple[Tenant, bool]:
    """As :func:`dbtools.tenants.get_or_create`."""
    insert = _insert_if_absent_call(slug, name, settings)
    opened = opens_transaction(conn)
    try:
        for _ in range(GET_OR_CREATE_TRIES):
            inserted = await _run(conn, insert)
            if inserted is not None:
                return inserted, True
            existing = await get_by_slug(conn, slug)
            if existing is not None:
                return existing, False
        raise _deleted_each_time(slug)
    except BaseException:
        await roll_back_opened(conn, opened)
        raise


async def update(
    conn: AsyncConn,
    slug: str,
    *,
    name: str | None = None,
    settings: Mapping[str, Any] | None = None,
) -> Tenant:
    """As :func:`dbtools.tenants.update`."""
    return await _run(conn, _update_call(slug, name, settings))


async def suspend(conn: AsyncConn, slug: str) -> Tenant:
    """As :func:`dbtools.tenants.suspend`."""
    return await _run(conn, _set_status_call(slug, TenantStatus.SUSPENDED))


async def activate(conn: AsyncConn, slug: str) -> Tenant:
    """As :func:`dbtools.tenants.activate`."""
    return await _run(conn, _set_status_call(slug, TenantStatus.ACTIVE))


async def delete(conn: AsyncConn, slug: str) -> None:
    """As :func:`dbtools.tenants.delete`."""
    await _run(conn, _delete_call(slug))


async def history(conn: AsyncConn, slug: str) -> list[TenantEvent]:
    """As :func:`dbtools.tenants.history`."""
    return await _run(conn, _history_call(slug))


@asynccontextmanager
async def acting_as(conn: AsyncConn, actor: str) -> AsyncIterator[None]:
    """As :func:`dbtools.tenants.acting_as`, with ``async with``."""
    set_actor = _set_actor_call(actor)
    if _acts_in_a_transaction_of_its_own(conn):
        async with conn.transaction():
            await _run(conn, set_actor)
            yield
        return
    previous = await _run(conn, set_actor)
    try:
        yield
    finally:
        if _restores_actor(conn):
            await _run(conn, _restore_actor_call(previous))


async def _run(conn: AsyncConn, call: _Call[R]) -> R:
    """:func:`dbtools.tenants._run`, awaited."""
    if call.sql is None:
        return call.result([], 0, call.slug)
    try:
        async with (
            scope(conn, call.scope),
            conn.cursor(row_factory=call.rows, binary=call.binary) as cur,
        ):
            await cur.execute(call.sql, call.params)
            rows = await cur.fetchall() if _has_rows(cur) else []
            return call.result(rows, cur.rowcount, call.slug)
    except psycopg.Error as exc:
        mapped = None if call.scope is Scope.READ else write_error(exc, call.slug)
        if mapped is None:
            raise
        raise mapped from exc
