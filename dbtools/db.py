"""Connections to the system database, and the translation of connection failures.

``connect()`` gives one connection, ``create_pool()`` a pool for long-running services. Both take
an explicit URL or fall back on the configuration (``DATABASE_URL``, ``.env``, the embedded
cluster). Extra keyword arguments reach psycopg untouched: ``prepare_threshold=None`` turns off
server-side prepared statements (PgBouncer in transaction pooling mode), for instance.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg.pq import TransactionStatus

from dbtools.config import describe, parse_url, resolve_url
from dbtools.errors import DatabaseUnavailable, NotMigrated

if TYPE_CHECKING:
    from psycopg.rows import TupleRow
    from psycopg_pool import ConnectionPool


# admin_shutdown, crash_shutdown, cannot_connect_now: the server is going away or not ready.
_SHUTDOWN_STATES = frozenset({"57P01", "57P02", "57P03"})


def connect(url: str | None = None, **kwargs: Any) -> psycopg.Connection[TupleRow]:
    """Open a connection to ``url`` (default: the configured database).

    Raises :class:`ConfigurationError` for a malformed URL and :class:`DatabaseUnavailable` when
    the server cannot be reached or refuses the connection; neither message shows the password.
    """
    params = parse_url(resolve_url(url))
    try:
        return psycopg.connect(**params, **kwargs)
    except psycopg.OperationalError as exc:
        raise unavailable(exc, params) from exc


def create_pool(
    url: str | None = None, *, min_size: int = 1, max_size: int | None = None, **kwargs: Any
) -> ConnectionPool[psycopg.Connection[TupleRow]]:
    """A ``psycopg_pool.ConnectionPool`` on ``url`` (default: the configured database).

    The pool is opened, and waits for its first connection so a wrong URL fails here, not on the
    first request. Use it as a context manager, or close it when the service stops.
    """
    from psycopg_pool import ConnectionPool, PoolTimeout

    params = parse_url(resolve_url(url))
    pool: ConnectionPool[psycopg.Connection[TupleRow]] = ConnectionPool(
        kwargs=params | kwargs.pop("kwargs", {}),
        min_size=min_size,
        max_size=max_size,
        open=False,
        **kwargs,
    )
    try:
        pool.open(wait=True, timeout=kwargs.get("timeout", 30.0))
    except PoolTimeout as exc:
        pool.close()
        raise DatabaseUnavailable(f"cannot connect to {describe(params)}: {exc}") from exc
    return pool


def unavailable(exc: psycopg.Error, params: dict[str, Any]) -> DatabaseUnavailable:
    """A one-line :class:`DatabaseUnavailable` for a failed connection, password removed."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    reason = lines[0] if lines else type(exc).__name__
    password = params.get("password")
    if password:
        reason = reason.replace(password, "***")
    return DatabaseUnavailable(f"cannot connect to {describe(params)}: {reason}")


def server_error(conn: psycopg.Connection[Any], exc: psycopg.Error) -> DatabaseUnavailable | None:
    """The dbtools error for a statement that failed because of the server rather than the data:
    a lost connection (:class:`DatabaseUnavailable`) or a missing table (:class:`NotMigrated`).
    None for anything else (constraint violations, serialization failures, timeouts...), which
    the caller maps or re-raises as it is."""
    dbname = "?" if conn.closed else conn.info.dbname
    if isinstance(exc, psycopg.errors.UndefinedTable):
        reason = exc.diag.message_primary or "a table is missing"
        return NotMigrated(f"database {dbname!r} is not migrated ({reason}): run `dbtools migrate`")
    if is_connection_failure(conn, exc):
        return unavailable(exc, {"dbname": dbname})
    return None


def is_connection_failure(conn: psycopg.Connection[Any], exc: psycopg.Error) -> bool:
    """Whether ``exc`` means the connection is gone, rather than that one statement failed.

    psycopg files serialization failures, deadlocks, lock and statement timeouts under
    OperationalError too; those leave the connection working and are the caller's to retry.
    """
    if conn.closed:  # also true once libpq saw the connection break
        return True
    sqlstate = exc.sqlstate or ""
    return isinstance(exc, psycopg.OperationalError) and (
        not sqlstate or sqlstate.startswith("08") or sqlstate in _SHUTDOWN_STATES
    )


@contextmanager
def contained(
    conn: psycopg.Connection[Any], *, savepoint: bool, atomic: bool = False
) -> Iterator[None]:
    """Run the block so that, when it fails, the caller's connection is still usable and
    nothing of the caller's is committed or rolled back. The rule, in one place:

    - inside the caller's transaction, with ``savepoint``: in a savepoint, rolled back on failure;
    - idle in autocommit mode: as it is (each statement its own transaction), or, with
      ``atomic``, in one transaction of its own for all its statements;
    - idle, not in autocommit: the block opens the caller's transaction, which holds nothing
      else, so on failure it is rolled back; on success the commit is the caller's.

    Server failures become dbtools errors (see :func:`server_error`); others pass unchanged.
    """
    status = conn.pgconn.transaction_status  # conn.info would build an object on every call
    idle = status == TransactionStatus.IDLE
    if (status == TransactionStatus.INTRANS and savepoint) or (idle and conn.autocommit and atomic):
        try:
            with conn.transaction():
                yield
        except psycopg.Error as exc:
            raise_server_error(conn, exc, opened_transaction=False)
            raise
        return
    opens_transaction = idle and not conn.autocommit
    try:
        yield
    except psycopg.Error as exc:
        raise_server_error(conn, exc, opens_transaction)
        raise
    except BaseException:
        if opens_transaction and not conn.closed:
            with suppress(psycopg.Error):
                conn.rollback()
        raise


def raise_server_error(
    conn: psycopg.Connection[Any], exc: psycopg.Error, opened_transaction: bool
) -> None:
    """After ``exc``: roll back a transaction the failed statement opened, then raise the
    dbtools error for ``exc`` if it is a server failure; else return, for the caller to map
    ``exc`` or re-raise it."""
    if opened_transaction and not conn.closed:
        with suppress(psycopg.Error):
            conn.rollback()
    mapped = server_error(conn, exc)
    if mapped is not None:
        raise mapped from exc
