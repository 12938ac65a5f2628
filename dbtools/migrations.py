"""Creating the system database and applying or rolling back the migrations in ``sql/`` (yoyo).

The SQL files stay plain, so a DBA can run the same migrations with the ``yoyo`` command and the
project's ``yoyo.ini``. These functions take any libpq URL; yoyo itself is handed the parsed
parameters, so unix sockets, percent-encoded passwords and query options all pass through.

yoyo keeps no checksum of what it applied, so this module does: the sha256 of each migration file
when it is applied, in ``_dbtools_migration_checksum``. Applying, rolling back and reporting status
all refuse, naming the file, once an applied migration has been edited.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from yoyo import exceptions as yoyo_exceptions
from yoyo import read_migrations
from yoyo.backends import get_backend_class
from yoyo.connections import DatabaseURI

from dbtools.config import describe, parse_url
from dbtools.db import unavailable
from dbtools.errors import DbToolsError, MigrationError

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "sql"
MIGRATION_TABLE = "_yoyo_migration"  # yoyo's default, so the yoyo command sees the same history
_YOYO_SCHEME = "postgresql+psycopg"
_MAINTENANCE_DBS = ("postgres", "template1")

APPLIED_AT = "SELECT migration_id, applied_at_utc FROM _yoyo_migration"
DATABASE_EXISTS = "SELECT 1 FROM pg_database WHERE datname = %s"
CREATE_CHECKSUMS = """
    CREATE TABLE IF NOT EXISTS _dbtools_migration_checksum (
        migration_id text PRIMARY KEY,
        sha256 text NOT NULL,
        recorded_at timestamptz NOT NULL DEFAULT now()
    )
"""
YOYO_TABLE_EXISTS = "SELECT to_regclass('_yoyo_migration') IS NOT NULL"
CHECKSUMS_EXIST = "SELECT to_regclass('_dbtools_migration_checksum') IS NOT NULL"
SELECT_CHECKSUMS = "SELECT migration_id, sha256 FROM _dbtools_migration_checksum"
RECORD_CHECKSUM = """
    INSERT INTO _dbtools_migration_checksum (migration_id, sha256)
    VALUES (%(id)s, %(sha256)s)
    ON CONFLICT (migration_id) DO UPDATE SET sha256 = excluded.sha256, recorded_at = now()
"""
FORGET_CHECKSUM = "DELETE FROM _dbtools_migration_checksum WHERE migration_id = %(id)s"


@dataclass(frozen=True)
class MigrationState:
    """One migration: its id, its file, and when it was applied (``None``: pending)."""

    id: str
    path: Path
    applied_at: datetime | None


def database_exists(url: str) -> bool:
    """Whether the database named in ``url`` exists on its server."""
    params = parse_url(url)
    with suppress(psycopg.OperationalError), psycopg.connect(**params):
        return True
    with _maintenance_connection(params) as conn:
        return conn.execute(DATABASE_EXISTS, (params["dbname"],)).fetchone() is not None


def ensure_database(url: str) -> bool:
    """Create the database named in ``url`` if it does not exist; True if it was created.

    Connects to the maintenance database (``postgres``, else ``template1``) of the same server
    with the same credentials. Safe when two callers race: the loser finds the database there.
    """
    if database_exists(url):
        return False
    params = parse_url(url)
    dbname = params["dbname"]
    with _maintenance_connection(params) as conn:
        try:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
        except (psycopg.errors.DuplicateDatabase, psycopg.errors.UniqueViolation):
            return False  # a racing caller created it first (the catalog's unique index says so)
        except psycopg.errors.InsufficientPrivilege as exc:
            raise MigrationError(
                f"database {dbname!r} does not exist and user {conn.info.user!r} may not create "
                "it: create it as a superuser, or grant CREATEDB"
            ) from exc
    return True


def apply(url: str, migrations_dir: Path = MIGRATIONS_DIR) -> list[str]:
    """Apply the pending migrations in order; return their ids (empty when none were pending).

    Refuses (:class:`MigrationError`) if an applied migration's file was edited since.
    """
    migrations = _read(migrations_dir)
    with _backend(url) as backend, backend.lock(), _bookkeeping(url) as conn:
        conn.execute(CREATE_CHECKSUMS)
        unrecorded = _verify(conn, migrations, _applied_at(conn))
        for migration in migrations:  # applied outside dbtools (with yoyo): trust on first use
            if migration.id in unrecorded:
                _record(conn, migration)
        pending = backend.to_apply(migrations)
        for migration in pending:
            _run(backend.apply_one, migration, "apply")
            _record(conn, migration)
    return [m.id for m in pending]


def rollback(url: str, count: int = 1, migrations_dir: Path = MIGRATIONS_DIR) -> list[str]:
    """Roll back the ``count`` newest applied migrations; return their ids, newest first."""
    if count < 1:
        raise ValueError(f"count must be at least 1, not {count}")
    migrations = _read(migrations_dir)
    with _backend(url) as backend, backend.lock(), _bookkeeping(url) as conn:
        conn.execute(CREATE_CHECKSUMS)
        _verify(conn, migrations, _applied_at(conn))
        targets = list(backend.to_rollback(migrations))[:count]
        for migration in targets:
            _run(backend.rollback_one, migration, "roll back")
            conn.execute(FORGET_CHECKSUM, {"id": migration.id})
    return [m.id for m in targets]


def listed(migrations_dir: Path = MIGRATIONS_DIR) -> list[MigrationState]:
    """Every migration in ``migrations_dir``, in the order yoyo applies them, all pending."""
    return [MigrationState(m.id, Path(m.path), None) for m in _read(migrations_dir)]


def status(url: str, migrations_dir: Path = MIGRATIONS_DIR) -> list[MigrationState]:
    """Every migration in ``migrations_dir``, in order, with the time it was applied.

    Only reads: a database that never saw a migration has everything pending and stays untouched.
    Refuses (:class:`MigrationError`) if an applied migration's file was edited.
    """
    migrations = _read(migrations_dir)
    with _bookkeeping(url) as conn:
        applied_at = _applied_at(conn)
        _verify(conn, migrations, applied_at)
    return [MigrationState(m.id, Path(m.path), applied_at.get(m.id)) for m in migrations]


def file_checksum(path: Path) -> str:
    """The sha256 of a migration file, as recorded when it is applied."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _applied_at(conn: psycopg.Connection[Any]) -> dict[str, datetime]:
    """When each applied migration was applied, read from yoyo's table (absent: none applied)."""
    if conn.execute(YOYO_TABLE_EXISTS).fetchone() != (True,):
        return {}
    rows = conn.execute(APPLIED_AT).fetchall()
    return {row[0]: row[1].replace(tzinfo=UTC) for row in rows}


def _verify(conn: psycopg.Connection[Any], migrations: Any, applied: Iterable[str]) -> set[str]:
    """Check the applied migrations against their recorded checksums; return the applied ids
    that have none recorded (applied by plain yoyo)."""
    applied = set(applied)
    recorded: dict[str, str] = {}
    if conn.execute(CHECKSUMS_EXIST).fetchone() == (True,):
        recorded = dict(conn.execute(SELECT_CHECKSUMS).fetchall())
    for migration in migrations:
        expected = recorded.get(migration.id)
        if migration.id not in applied or expected is None:
            continue
        if expected != file_checksum(Path(migration.path)):
            raise MigrationError(
                f"{migration.path} was edited after it was applied (its sha256 no longer matches "
                "the one recorded): never edit an applied migration, add a new one. If the edit "
                "is deliberate and harmless, delete its row from _dbtools_migration_checksum"
            )
    return {m.id for m in migrations if m.id in applied and m.id not in recorded}


def _record(conn: psycopg.Connection[Any], migration: Any) -> None:
    conn.execute(
        RECORD_CHECKSUM, {"id": migration.id, "sha256": file_checksum(Path(migration.path))}
    )


def _read(migrations_dir: Path) -> Any:
    if not migrations_dir.is_dir():
        raise MigrationError(f"migrations folder {migrations_dir} does not exist")
    try:
        return read_migrations(str(migrations_dir))
    except yoyo_exceptions.BadMigration as exc:
        raise MigrationError(f"cannot read the migrations in {migrations_dir}: {exc}") from exc


@contextmanager
def _backend(url: str) -> Iterator[Any]:
    params = parse_url(url)
    args = {key: value for key, value in params.items() if key != "dbname"}
    uri = DatabaseURI(_YOYO_SCHEME, None, None, None, None, params["dbname"], args)
    try:
        backend = get_backend_class(_YOYO_SCHEME)(uri, MIGRATION_TABLE)
        backend.init_database()  # creates yoyo's tables: needs CREATE on the schema
    except psycopg.Error as exc:
        raise _database_error(exc, params) from exc
    with backend:
        try:
            yield backend
        except yoyo_exceptions.LockTimeout as exc:
            raise MigrationError(
                f"another process is migrating {describe(params)} (yoyo_lock is held); "
                "try again, or break a stale lock with `yoyo break-lock`"
            ) from exc
        except psycopg.Error as exc:
            raise _database_error(exc, params) from exc


@contextmanager
def _bookkeeping(url: str) -> Iterator[psycopg.Connection[Any]]:
    """An autocommit connection for the checksum table, beside yoyo's own."""
    params = parse_url(url)
    try:
        conn = psycopg.connect(**params, autocommit=True)
    except psycopg.OperationalError as exc:
        raise unavailable(exc, params) from exc
    with conn:
        try:
            yield conn
        except psycopg.Error as exc:
            raise _database_error(exc, params) from exc


def _database_error(exc: psycopg.Error, params: dict[str, Any]) -> DbToolsError:
    """A lost connection is DatabaseUnavailable; any other failure (a missing privilege, say)
    is a MigrationError that names the database and the server's reason."""
    if isinstance(exc, psycopg.OperationalError) and (exc.sqlstate or "08").startswith("08"):
        return unavailable(exc, params)
    reason = exc.diag.message_primary or str(exc).strip().splitlines()[0]
    return MigrationError(f"cannot migrate {describe(params)}: {reason}")


def _run(operation: Any, migration: Any, verb: str) -> None:
    try:
        operation(migration)
    except yoyo_exceptions.BadMigration as exc:
        raise MigrationError(f"cannot {verb} migration {migration.id}: {exc}") from exc
    except psycopg.Error as exc:
        reason = exc.diag.message_primary or str(exc).splitlines()[0]
        raise MigrationError(f"cannot {verb} migration {migration.id}: {reason}") from exc


@contextmanager
def _maintenance_connection(params: dict[str, Any]) -> Iterator[psycopg.Connection[Any]]:
    error: psycopg.OperationalError | None = None
    for dbname in _MAINTENANCE_DBS:
        try:
            conn = psycopg.connect(**(params | {"dbname": dbname}), autocommit=True)
        except psycopg.OperationalError as exc:
            error = error or exc
            continue
        with conn:
            yield conn
        return
    if error is None:  # unreachable: the loop returns or records an error
        raise MigrationError("no maintenance database to connect to")
    raise unavailable(error, params)
