"""Connections to the system database, the transaction scopes of data-access calls, and what
psycopg's errors mean.

- :func:`connect`, :func:`create_pool` and :func:`maintenance_connection` open connections on a
  :class:`~dbtools.config.Target` (or a URL, or the configuration). Extra keyword arguments
  reach psycopg: ``prepare_threshold=None`` turns off server-side prepared statements, say.
- Pooler safety: a transaction pooler (PgBouncer ``pool_mode=transaction``) hands a client's
  prepared statements to other clients, so every connection these open turns psycopg's prepared
  statements off when :func:`behind_pooler` says it goes through one, or when
  ``DBTOOLS_PREPARED_STATEMENTS=off`` (:func:`dbtools.config.prepared_statements`). The check is
  one query when connecting; nothing on the statements' path changes.
- :func:`scope` runs a data-access call in one of three :class:`Scope` s, so that a failure
  leaves the caller's connection usable and nothing of the caller's is committed or rolled back.
  :func:`opens_transaction` is the one rule for "this call opens the caller's transaction".
- :func:`server_failure` maps the failures that come from the server rather than the data (a
  lost connection, a missing table, a missing privilege): the data-access layer raises these as
  dbtools errors. :func:`error_for` also maps what is the caller's to retry (timeouts,
  serialization failures, deadlocks); only code that owns its connection, such as the
  ``dbtools`` command and the migrations, uses it: inside an application's transaction those stay
  psycopg's own errors, for the application's retry loop.
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any, NoReturn

import psycopg
from psycopg import errors as pg_errors
from psycopg.pq import ConnStatus, ExecStatus, TransactionStatus
from psycopg.rows import TupleRow
from psycopg_pool import ConnectionPool, PoolTimeout

from dbtools.config import PreparedStatements, Target, prepared_statements, resolve
from dbtools.errors import (
    Conflict,
    DatabaseUnavailable,
    DbToolsError,
    NotMigrated,
    PermissionDenied,
    PoolExhausted,
    ReadOnlyDatabase,
    Refused,
    Timeout,
)

# admin_shutdown, crash_shutdown, cannot_connect_now: the server is going away or not ready.
_SHUTDOWN_STATES = frozenset({"57P01", "57P02", "57P03"})
# SQLSTATE classes of a statement refused for its data: data exception, integrity violation.
_REFUSALS = frozenset({"22", "23"})
# Databases to connect to for CREATE DATABASE and friends, in order of preference.
MAINTENANCE_DBS = ("postgres", "template1")
_IDLE = TransactionStatus.IDLE
_INTRANS = TransactionStatus.INTRANS
# The process id of the backend serving this session, as the server sees it (simple protocol).
_BACKEND_PID = b"SELECT pg_backend_pid()"
# What the helpers shared by dbtools.tenants and dbtools.aio.tenants take: either kind.
AnyConnection = psycopg.BaseConnection[Any]


def connect(target: Target | str | None = None, **kwargs: Any) -> psycopg.Connection[TupleRow]:
    """Open a connection to ``target`` (a Target or URL; default: the configured database).

    Raises :class:`ConfigurationError` for a malformed URL and :class:`DatabaseUnavailable` when
    the server cannot be reached or refuses the connection; neither message shows the password.
    """
    target = resolve(target)
    return _open(target, target.describe(), kwargs)


def _open(target: Target, where: str, kwargs: dict[str, Any]) -> psycopg.Connection[TupleRow]:
    """The one place that connects: a failure is DatabaseUnavailable naming ``where``.

    Server-side prepared statements are turned off when ``DBTOOLS_PREPARED_STATEMENTS`` says
    off, or says auto (the default) and the connection goes through a pooler
    (:func:`behind_pooler`); unless the caller passed ``prepare_threshold`` itself."""
    setting = prepared_statements()  # a bad value fails before anything connects
    try:
        conn = psycopg.connect(**(target.connect_kwargs() | kwargs))
    except psycopg.OperationalError as exc:
        raise unavailable(exc, where, connecting=True, password=target.password) from exc
    if "prepare_threshold" in kwargs:
        return conn
    try:
        if _prepared_statements_unsafe(conn, setting):
            conn.prepare_threshold = None
    except psycopg.OperationalError as exc:  # lost while checking: still connecting
        conn.close()
        raise unavailable(exc, where, connecting=True, password=target.password) from exc
    except BaseException:
        conn.close()
        raise
    return conn


def behind_pooler(conn: psycopg.Connection[Any]) -> bool:
    """Whether ``conn`` goes through a connection pooler (PgBouncer, Odyssey, PgCat...) rather
    than to a PostgreSQL backend of its own. One round trip; the connection is left as it was.

    A PostgreSQL server tells each client, as it connects, the process id of the backend that
    serves it (libpq's ``PQbackendPID``); a pooler makes one up, since each transaction of its
    client may run on another server connection. So the answer is whether ``pg_backend_pid()``
    differs from that id: right whatever the host, port or unix socket, and through plain TCP
    forwarding (a Docker port mapping, an SSH tunnel), which is not a pooler. A pooler in session
    mode counts too (it cannot be told apart); a pooler that passes the backend's own id on, or
    a query that fails on a working connection, also answers True: "cannot tell" is "pooler".
    Raises :class:`DatabaseUnavailable` when the connection is lost, and ``psycopg``'s
    ``ProgrammingError`` inside a failed transaction, where no query can run.
    """
    try:
        return _behind_pooler(conn)
    except psycopg.OperationalError as exc:
        raise unavailable(exc, describe_connection(conn), connecting=False) from exc


def _behind_pooler(conn: psycopg.Connection[Any]) -> bool:
    """:func:`behind_pooler`, raising ``psycopg.OperationalError`` for a lost connection."""
    with conn.lock:
        pgconn = conn.pgconn
        if pgconn.transaction_status == TransactionStatus.INERROR:
            raise psycopg.ProgrammingError(
                "behind_pooler() cannot query a connection in a failed transaction: roll it back"
            )
        # libpq's own call: one round trip, and no BEGIN even when autocommit is off.
        result = pgconn.exec_(_BACKEND_PID)
        if result.status == ExecStatus.TUPLES_OK and result.ntuples == 1:
            pid = result.get_value(0, 0)
            return pid is None or int(pid) != pgconn.backend_pid
        if pgconn.status != ConnStatus.OK:
            reason = pgconn.get_error_message().strip()
            raise psycopg.OperationalError(reason or "the server closed the connection")
        return True


def _prepared_statements_unsafe(conn: psycopg.Connection[Any], setting: PreparedStatements) -> bool:
    """Whether ``conn`` must not use server-side prepared statements: ``setting`` (from
    ``DBTOOLS_PREPARED_STATEMENTS``) is OFF, or AUTO and ``conn`` goes through a pooler. ON
    costs no query."""
    if setting is PreparedStatements.AUTO:
        return _behind_pooler(conn)
    return setting is PreparedStatements.OFF


@contextmanager
def maintenance_connection(target: Target) -> Iterator[psycopg.Connection[TupleRow]]:
    """An autocommit connection to the maintenance database of ``target``'s server (``postgres``,
    else ``template1``), with the same credentials: for creating and dropping databases."""
    where = f"the server of {target.describe()} (maintenance database {MAINTENANCE_DBS[0]!r})"
    failures: list[DatabaseUnavailable] = []
    for dbname in MAINTENANCE_DBS:
        try:
            conn = _open(target.with_dbname(dbname), where, {"autocommit": True})
        except DatabaseUnavailable as exc:
            failures.append(exc)
            continue
        with conn:
            yield conn
        return
    raise failures[0]


class Pool(ConnectionPool[psycopg.Connection[TupleRow]]):
    """A ``psycopg_pool.ConnectionPool`` on a Target whose ``connection()`` fails with dbtools
    errors: :class:`DatabaseUnavailable` when the pool cannot connect (an outage) and
    :class:`PoolExhausted` when every connection stayed busy, instead of ``PoolTimeout``."""

    def __init__(self, target: Target, **kwargs: Any) -> None:
        self.target = target
        # Every new connection is checked as db.connect() checks it, before the caller's
        # configure hook, unless the caller chose prepare_threshold for the connections.
        setting = prepared_statements()
        if "prepare_threshold" not in (kwargs.get("kwargs") or {}):
            then = kwargs.pop("configure", None)

            def configure(conn: psycopg.Connection[TupleRow]) -> None:
                if _prepared_statements_unsafe(conn, setting):
                    conn.prepare_threshold = None
                if then is not None:
                    then(conn)

            kwargs["configure"] = configure
        self._in_use = 0  # connections given to callers and not yet returned
        self._in_use_lock = threading.Lock()
        super().__init__(**kwargs)

    @contextmanager
    def connection(self, timeout: float | None = None) -> Iterator[psycopg.Connection[TupleRow]]:
        """A connection of the pool for the block, returned afterwards (its transaction committed,
        or rolled back on an error). A connection lost meanwhile, even at the commit when the
        block ends, is :class:`DatabaseUnavailable`, not psycopg's error."""
        try:
            with super().connection(timeout) as conn:
                yield conn
        except psycopg.Error as exc:
            lost = lost_connection(exc, self.target)
            if lost is None:
                raise
            raise lost from exc

    def getconn(self, timeout: float | None = None) -> psycopg.Connection[TupleRow]:
        try:
            conn = super().getconn(timeout)
        except PoolTimeout as exc:
            with self._in_use_lock:
                in_use = self._in_use
            raise pool_timeout_error(self, in_use, timeout) from exc
        with self._in_use_lock:
            self._in_use += 1
        return conn

    def putconn(self, conn: psycopg.Connection[TupleRow]) -> None:
        with self._in_use_lock:
            self._in_use -= 1
        super().putconn(conn)


def lost_connection(exc: psycopg.Error, target: Target) -> DatabaseUnavailable | None:
    """What a pool's ``connection()`` block raises for ``exc``: DatabaseUnavailable when the
    connection to ``target`` was lost, else None (the block's own error stands)."""
    if not is_connection_failure(exc):
        return None
    return unavailable(exc, target.describe(), connecting=False, password=target.password)


def pool_timeout_error(
    pool: Pool | Any, in_use: int, timeout: float | None
) -> DatabaseUnavailable | PoolExhausted:
    """What a pool's ``PoolTimeout`` means, given how many of its connections callers held:
    every connection the pool may have busy is :class:`PoolExhausted`; anything less is a pool
    that could not connect (an outage, or the backoff of its reconnection after one)."""
    waited = pool.timeout if timeout is None else timeout
    where = pool.target.describe()
    if in_use < (pool.max_size or 1):
        return DatabaseUnavailable(
            f"cannot connect to {where}: the pool had no working connection within {waited:g} s"
        )
    return PoolExhausted(
        f"all {pool.get_stats()['pool_size']} connections of the pool to {where} stayed busy "
        f"for {waited:g} s: try again, or give the pool a larger max_size"
    )


def create_pool(
    target: Target | str | None = None,
    *,
    min_size: int = 1,
    max_size: int | None = None,
    **kwargs: Any,
) -> Pool:
    """A connection :class:`Pool` on ``target`` (default: the configured database).

    The pool is opened, and waits for its first connection so a wrong URL fails here, not on the
    first request. Use it as a context manager, or close it when the service stops. Other keyword
    arguments go to ``psycopg_pool.ConnectionPool`` (``kwargs=`` to each connection).
    """
    target = resolve(target)
    pool = Pool(target, **pool_arguments(target, min_size, max_size, kwargs))
    wait = kwargs.get("timeout", 30.0)
    try:
        pool.open(wait=True, timeout=wait)
    except PoolTimeout as exc:
        pool.close()
        raise no_first_connection(target, wait) from exc
    return pool


def pool_arguments(
    target: Target, min_size: int, max_size: int | None, kwargs: dict[str, Any]
) -> dict[str, Any]:
    """The arguments of a psycopg_pool pool on ``target`` made by ``create_pool``: opened by
    the caller, each connection with the target's parameters and ``kwargs["kwargs"]``."""
    extra = dict(kwargs)
    connection = target.connect_kwargs() | extra.pop("kwargs", {})
    return {"kwargs": connection, "min_size": min_size, "max_size": max_size, "open": False} | extra


def no_first_connection(target: Target, wait: float) -> DatabaseUnavailable:
    """The error of a new pool that got no connection within ``wait`` seconds."""
    return DatabaseUnavailable(
        f"cannot connect to {target.describe()}: no connection within {wait:g} s"
    )


# -- what a failure means --------------------------------------------------------------------


def unavailable(
    exc: psycopg.Error, where: str, *, connecting: bool, password: str | None = None
) -> DatabaseUnavailable:
    """A one-line :class:`DatabaseUnavailable` for a failed or lost connection to ``where``."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    reason = lines[0] if lines else type(exc).__name__
    if password:  # libpq does not echo passwords; this only guards against a future one that does
        reason = reason.replace(password, "***")
    verb = "cannot connect to" if connecting else "lost the connection to"
    return DatabaseUnavailable(f"{verb} {where}: {reason}")


def is_connection_failure(exc: psycopg.Error, conn: AnyConnection | None = None) -> bool:
    """Whether ``exc`` means the connection is gone, rather than that one statement failed.

    psycopg files serialization failures, deadlocks, lock and statement timeouts under
    OperationalError too; those leave the connection working.
    """
    if conn is not None and conn.closed:  # also true once libpq saw the connection break
        return True
    sqlstate = exc.sqlstate or ""
    return isinstance(exc, psycopg.OperationalError) and (
        not sqlstate or sqlstate.startswith("08") or sqlstate in _SHUTDOWN_STATES
    )


def describe_connection(conn: AnyConnection) -> str:
    """``database 'x' on host:port`` for an open or broken connection, from libpq itself."""
    try:
        pgconn = conn.pgconn
        dbname, host, port = (pgconn.db.decode(), pgconn.host.decode(), pgconn.port.decode())
    except psycopg.Error:  # closed by its owner: libpq has forgotten everything
        return "the database (the connection is closed)"
    return f"database {dbname!r} on {host}:{port}"


def server_failure(exc: psycopg.Error, conn: AnyConnection) -> DbToolsError | None:
    """The dbtools error for a statement that failed because of the server rather than the data:
    a lost connection, a missing table (:class:`NotMigrated`), a missing privilege. None for
    anything else (constraint violations, timeouts, serialization failures...)."""
    if is_connection_failure(exc, conn):
        return unavailable(exc, describe_connection(conn), connecting=False)
    if isinstance(exc, pg_errors.UndefinedTable):
        where = describe_connection(conn).partition(" on ")[0]
        reason = exc.diag.message_primary or "a table is missing"
        return NotMigrated(f"{where} is not migrated ({reason}): run `dbtools migrate`")
    if isinstance(exc, pg_errors.ReadOnlySqlTransaction):
        return ReadOnlyDatabase(
            f"{describe_connection(conn)} is read-only ({exc.diag.message_primary}): writes "
            "need the primary (target_session_attrs=read-write picks it from several hosts)"
        )
    if isinstance(exc, pg_errors.InsufficientPrivilege):
        return PermissionDenied(
            exc.diag.message_primary or "permission denied",
            user=None if conn.closed else conn.info.user,
            database=None if conn.closed else conn.info.dbname,
        )
    return None


def error_for(exc: psycopg.Error, conn: AnyConnection) -> DbToolsError | None:
    """Everything :func:`server_failure` maps, plus what a caller that owns the connection
    retries: lock and statement timeouts (:class:`Timeout`), serialization failures and
    deadlocks (:class:`Conflict`); and data the database refused for a rule of someone else's
    (:class:`Refused`: a constraint, a trigger's RAISE). None for the rest."""
    mapped = server_failure(exc, conn)
    if mapped is not None:
        return mapped
    reason = exc.diag.message_primary or str(exc).strip().splitlines()[0]
    database = None if conn.closed else conn.info.dbname
    if isinstance(exc, pg_errors.LockNotAvailable):
        return Timeout("lock", reason, database=database)
    if isinstance(exc, pg_errors.QueryCanceled):
        return Timeout("statement", reason, database=database)
    if isinstance(exc, pg_errors.SerializationFailure | pg_errors.DeadlockDetected):
        return Conflict(f"{reason} (database {database!r})")
    if (exc.sqlstate or "")[:2] in _REFUSALS or isinstance(exc, pg_errors.RaiseException):
        return Refused(reason, constraint=exc.diag.constraint_name)
    return None


# -- the caller owns the transaction ---------------------------------------------------------


class Scope(enum.Enum):
    """How a data-access call runs inside, or beside, the caller's transaction.

    READ: no savepoint, so a read stays one round trip; a read fails only when the server does,
    and then the caller's open transaction is aborted as by any failed statement.
    WRITE: inside the caller's transaction, in a savepoint that is rolled back on failure.
    ATOMIC: like WRITE, and in autocommit mode one transaction of its own for all statements.

    In every scope, on an idle connection that is not in autocommit mode the call opens the
    caller's transaction (psycopg's rule): on failure it is rolled back, as it holds nothing
    else; on success the commit is the caller's.
    """

    READ = "read"
    WRITE = "write"
    ATOMIC = "atomic"


def opens_transaction(conn: AnyConnection) -> bool:
    """Whether the next statement on ``conn`` opens the caller's transaction."""
    # conn.pgconn, not conn.info: the latter builds an object on every access (the hot path).
    return not conn.autocommit and conn.pgconn.transaction_status == _IDLE


def roll_back_opened(conn: psycopg.Connection[Any], opened: bool) -> None:
    """After a failed call (an error, or an interruption: Ctrl-C, a cancelled task): roll back
    the transaction it opened, if ``opened``, so the caller's connection is idle again."""
    if opened and not conn.closed:
        with suppress(psycopg.Error):
            conn.rollback()


def raise_failure(conn: psycopg.Connection[Any], exc: psycopg.Error, opened: bool) -> NoReturn:
    """After ``exc``: roll back the transaction the failed call opened (if ``opened``), then
    raise the dbtools error for a server failure, or ``exc`` itself."""
    roll_back_opened(conn, opened)
    mapped = server_failure(exc, conn)
    if mapped is not None:
        raise mapped from exc
    raise exc


def in_transaction_block(conn: AnyConnection, kind: Scope) -> bool:
    """Whether a call in scope ``kind`` runs in ``conn.transaction()`` (a savepoint inside the
    caller's transaction, or a transaction of its own in autocommit mode for ATOMIC)."""
    status = conn.pgconn.transaction_status
    return (kind is not Scope.READ and status == _INTRANS) or (
        kind is Scope.ATOMIC and status == _IDLE and conn.autocommit
    )


@contextmanager
def scope(conn: psycopg.Connection[Any], kind: Scope) -> Iterator[None]:
    """Run the block in the :class:`Scope` ``kind``; server failures become dbtools errors."""
    if in_transaction_block(conn, kind):
        try:
            with conn.transaction():
                yield
        except psycopg.Error as exc:
            raise_failure(conn, exc, opened=False)
        return
    opened = opens_transaction(conn)
    try:
        yield
    except psycopg.Error as exc:
        raise_failure(conn, exc, opened)
    except BaseException:
        roll_back_opened(conn, opened)
        raise
