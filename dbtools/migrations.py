"""Creating the system database and applying or rolling back the migrations in ``sql/`` (yoyo).

The SQL files stay plain, so a DBA can run the same migrations with the ``yoyo`` command and the
project's ``yoyo.ini``. Every function takes a :class:`~dbtools.config.Target`; yoyo gets the
target's libpq parameters as they are, so unix sockets, percent-encoded passwords and query
options all pass through. Each run uses one connection (yoyo's), and maps its errors in one place.

The migrations ship inside the package (``dbtools/sql`` links to the repository's top-level
``sql/``, so the wheel carries them). yoyo keeps no checksum of what it applied, so the folder's
post-apply hook (``sql/post-apply.py``, which yoyo runs after ``yoyo apply`` too) records the
sha256 of each applied file in ``_dbtools_migration_checksum``. Applying, rolling back and
reporting status all refuse (:class:`MigrationEdited`), naming the file, once an applied
migration has been edited.
"""

from __future__ import annotations

import glob
import hashlib
import logging
import os
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, redirect_stdout, suppress
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
from yoyo.migrations import topological_sort
from yoyo.topologicalsort import CycleError

from dbtools import db
from dbtools.config import Target, migration_lock_wait
from dbtools.errors import (
    ConfigurationError,
    DatabaseUnavailable,
    DbToolsError,
    MigrationEdited,
    MigrationError,
    MigrationLocked,
    PermissionDenied,
    ReadOnlyDatabase,
    Refused,
    Timeout,
)

MIGRATIONS_DIR = (Path(__file__).parent / "sql").resolve()
# yoyo logs a traceback when a Python migration fails to import; dbtools reports it in one line.
logging.getLogger("yoyo").addHandler(logging.NullHandler())
MIGRATION_TABLE = "_yoyo_migration"  # yoyo's default, so the yoyo command sees the same history
BOM = "\ufeff"
_YOYO_SCHEME = "postgresql+psycopg"

APPLIED_AT = "SELECT migration_id, applied_at_utc FROM _yoyo_migration"
DATABASE_EXISTS = "SELECT 1 FROM pg_database WHERE datname = %s"
YOYO_TABLE_EXISTS = "SELECT to_regclass('_yoyo_migration') IS NOT NULL"
CHECKSUMS_EXIST = "SELECT to_regclass('_dbtools_migration_checksum') IS NOT NULL"
# The checksums of the applications yoyo has on record (the post-apply hook owns the table; its
# first version had no applied_at_utc column, read through to_jsonb so the query works on both).
SELECT_CHECKSUMS = """
    SELECT c.migration_id, c.sha256
    FROM _dbtools_migration_checksum c
    JOIN _yoyo_migration y ON y.migration_id = c.migration_id
    WHERE coalesce((to_jsonb(c) ->> 'applied_at_utc')::timestamp, y.applied_at_utc)
          = y.applied_at_utc
"""
# yoyo's execute takes its own placeholders (:name).
FORGET_CHECKSUM_YOYO = "DELETE FROM _dbtools_migration_checksum WHERE migration_id = :id"
# The advisory lock that serialises migrate and rollback (one bigint key, fixed for good: it
# spells "dbtmigr\x01"), and who holds it.
LOCK_KEY = 0x64_62_74_6D_69_67_72_01
# How often a migrating backend checks that its client is still there (PostgreSQL 14+).
CHECK = "1s"
CHECKS_CLIENT_SINCE = 140000
TAKE_LOCK = "SELECT pg_advisory_lock(%(key)s)"
RELEASE_LOCK = "SELECT pg_advisory_unlock(%(key)s)"
LOCK_HOLDER = """
    SELECT a.pid, a.backend_start AT TIME ZONE 'UTC',
           extract(epoch FROM now() - a.backend_start)::float8
    FROM pg_locks l
    JOIN pg_stat_activity a ON a.pid = l.pid
    WHERE l.locktype = 'advisory' AND l.granted AND l.database = (
              SELECT oid FROM pg_database WHERE datname = current_database())
      AND l.classid = (%(key)s >> 32)::oid AND l.objid = (%(key)s & 4294967295)::oid
      AND l.objsubid = 1
"""
INSERT_YOYO_LOCK = """
    INSERT INTO yoyo_lock (locked, ctime, pid) VALUES (1, now() AT TIME ZONE 'UTC', %(pid)s)
"""
YOYO_LOCK_HOLDER = """
    SELECT pid, ctime, extract(epoch FROM now() AT TIME ZONE 'UTC' - ctime)::float8
    FROM yoyo_lock
"""
# What applying or rolling back needs, checked before yoyo's lock: yoyo retries every error in
# its lock loop for the lock wait, and would report a missing privilege as a missing table.
PRIVILEGES = """
    SELECT current_setting('transaction_read_only') = 'on',
           current_user,
           current_schema(),
           coalesce(has_schema_privilege(current_schema(), 'CREATE'), false),
           ARRAY(
               SELECT t
               FROM unnest(ARRAY['yoyo_lock', '_yoyo_migration', '_dbtools_migration_checksum']) t
               WHERE to_regclass(t) IS NOT NULL
                 -- has_table_privilege(t, 'A, B') is true when any one of them is held
                 AND NOT (has_table_privilege(t, 'SELECT') AND has_table_privilege(t, 'INSERT')
                          AND has_table_privilege(t, 'UPDATE') AND has_table_privilege(t, 'DELETE'))
           )
"""


@dataclass(frozen=True)
class MigrationState:
    """One migration: its id, its file, and when it was applied (``None``: pending). A
    migration the database has applied but this checkout does not have has no file."""

    id: str
    path: Path | None
    applied_at: datetime | None

    @property
    def sql(self) -> str:
        if self.path is None:
            raise MigrationError(f"migration {self.id} is not in this checkout")
        return self.path.read_text()


@dataclass(frozen=True)
class Plan:
    """What ``migrate`` would do to a database: create it or not, and the pending migrations."""

    database: str
    create_database: bool
    pending: list[MigrationState]

    def script(self) -> str:
        """The SQL that would run, as a commented script."""
        parts = [f"-- would create database {self.database!r}"] if self.create_database else []
        parts += [f"-- {state.id} ({state.path})\n{state.sql.rstrip()}\n" for state in self.pending]
        if not self.pending:
            parts.append(f"-- no pending migrations: {self.database!r} is up to date")
        return "\n".join(parts)


def database_exists(target: Target) -> bool:
    """Whether ``target``'s database exists on its server."""
    try:
        with db.connect(target):
            return True
    except DatabaseUnavailable as exc:
        direct_failure = exc
    try:
        with db.maintenance_connection(target) as conn:
            return conn.execute(DATABASE_EXISTS, (target.dbname,)).fetchone() is not None
    except DatabaseUnavailable:
        raise direct_failure from None


def ensure_database(target: Target) -> bool:
    """Create ``target``'s database if it does not exist; True if it was created.

    Connects to the maintenance database of the same server with the same credentials. Safe
    when two callers race: the loser finds the database there.
    """
    if database_exists(target):
        return False
    with db.maintenance_connection(target) as conn:
        if db.behind_pooler(conn):
            raise _through_pooler(target)
        try:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(target.dbname)))
        except (psycopg.errors.DuplicateDatabase, psycopg.errors.UniqueViolation):
            return False  # a racing caller created it first (the catalog's unique index says so)
        except psycopg.errors.InsufficientPrivilege as exc:
            raise PermissionDenied(
                f"database {target.dbname!r} does not exist and may not be created by this "
                "user: create it as a superuser, or grant CREATEDB",
                user=conn.info.user,
            ) from exc
        except psycopg.Error as exc:  # a read-only server, a lost connection...
            raise _failure(exc, conn, f"cannot create {target.describe()}") from exc
    return True


def apply(target: Target, migrations_dir: Path | None = None) -> list[str]:
    """Apply the pending migrations in order; return their ids (empty when none were pending).

    Refuses (:class:`MigrationEdited`) if an applied migration's file was edited since.
    """
    migrations = _read(migrations_dir)
    with _session(target, write=True) as backend, _locked_by_us(backend, target):
        conn = backend.connection
        # Records what was applied without a checksum (trust on first use), then verifies.
        with _running("record the migrations' checksums", conn):
            backend.run_post_apply(migrations)
        _verify(conn, migrations, _applied_at(conn))
        pending = backend.to_apply(migrations)
        for migration in pending:
            with _running(f"apply migration {migration.id}", conn):
                _apply_one(backend, migration)
            with _running("record the migrations' checksums", conn):
                backend.run_post_apply(migrations)
    return [m.id for m in pending]


def rollback(target: Target, count: int = 1, migrations_dir: Path | None = None) -> list[str]:
    """Roll back the ``count`` newest applied migrations; return their ids, newest first."""
    if count < 1:
        raise ValueError(f"count must be at least 1, not {count}")
    migrations = _read(migrations_dir)
    with _session(target, write=True) as backend, _locked_by_us(backend, target):
        conn = backend.connection
        with _running("record the migrations' checksums", conn):
            backend.run_post_apply(migrations)
        applied_at = _applied_at(conn)
        _verify(conn, migrations, applied_at)
        targets = list(backend.to_rollback(migrations))[:count]
        _refuse_unknown_newer(migrations, applied_at, targets)
        for migration in targets:
            with _running(f"roll back migration {migration.id}", conn):
                _rollback_one(backend, migration)
    return [m.id for m in targets]


def listed(migrations_dir: Path | None = None) -> list[MigrationState]:
    """Every migration in ``migrations_dir``, in the order yoyo applies them, all pending."""
    return [MigrationState(m.id, Path(m.path), None) for m in _read(migrations_dir)]


def status(target: Target, migrations_dir: Path | None = None) -> list[MigrationState]:
    """Every migration in ``migrations_dir``, in order, with the time it was applied.

    Only reads: a database that never saw a migration has everything pending and stays untouched.
    Refuses (:class:`MigrationEdited`) if an applied migration's file was edited.
    """
    migrations = _read(migrations_dir)
    with _session(target, write=False) as backend:
        applied_at = _applied_at(backend.connection)
        _verify(backend.connection, migrations, applied_at)
    states = [MigrationState(m.id, Path(m.path), applied_at.get(m.id)) for m in migrations]
    unknown = sorted(set(applied_at) - {m.id for m in migrations}, key=applied_at.__getitem__)
    return states + [MigrationState(i, None, applied_at[i]) for i in unknown]


def plan(target: Target, migrations_dir: Path | None = None) -> Plan:
    """What ``migrate`` would do, found without changing anything (not even creating the
    database or yoyo's tables)."""
    with db.maintenance_connection(target) as conn:  # as migrate would refuse, so does its plan
        if db.behind_pooler(conn):
            raise _through_pooler(target)
    if not database_exists(target):
        return Plan(target.dbname, True, listed(migrations_dir))
    pending = [state for state in status(target, migrations_dir) if state.applied_at is None]
    return Plan(target.dbname, False, pending)


def _refuse_unknown_newer(
    migrations: Any, applied_at: dict[str, datetime], targets: list[Any]
) -> None:
    """Refuse to roll back while the database has newer migrations this checkout lacks:
    "the newest" would otherwise skip them and undo an older one underneath."""
    known = {m.id for m in migrations}
    if not targets:
        return
    oldest_target = min(applied_at[m.id] for m in targets)
    newer = sorted(i for i, at in applied_at.items() if i not in known and at >= oldest_target)
    if newer:
        raise MigrationError(
            f"the database has newer migrations that are not in this checkout's sql/: "
            f"{', '.join(newer)}; roll back with a checkout that has them"
        )


def file_checksum(path: Path) -> str:
    """The sha256 of a migration file, as recorded when it is applied."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


@contextmanager
def _session(target: Target, *, write: bool) -> Iterator[Any]:
    """yoyo's backend on one connection to ``target``, every failure mapped to a dbtools error.

    With ``write``, the role's privileges are checked first and yoyo's tables created."""
    try:
        backend = get_backend_class(_YOYO_SCHEME)(_uri(target), MIGRATION_TABLE)
    except psycopg.OperationalError as exc:
        raise db.unavailable(
            exc, target.describe(), connecting=True, password=target.password
        ) from exc
    with backend:
        conn = backend.connection
        if write and db.behind_pooler(conn):
            raise _through_pooler(target)
        if conn.info.server_version >= CHECKS_CLIENT_SINCE:
            # yoyo runs each migration on a connection of its own (a copy of the backend): a
            # backend whose client was killed mid-migration ends within a second, rolling back.
            backend.uri = _uri(target, options=f"-c client_connection_check_interval={CHECK}")
        try:
            if write:
                _check_privileges(conn, target)
                backend.init_database()  # creates yoyo's lock table
                # yoyo's own tables, created or upgraded now: yoyo takes its lock row for that,
                # which must not wait for the one taken in _locked_by_us.
                backend.ensure_internal_schema_updated()
            yield backend
        except yoyo_exceptions.LockTimeout as exc:  # yoyo's lock, around its internal upgrade
            raise MigrationLocked(target.dbname, by_yoyo=True) from exc
        except psycopg.Error as exc:
            raise _failure(exc, conn, f"cannot migrate {target.describe()}") from exc


def _through_pooler(target: Target) -> ConfigurationError:
    return ConfigurationError(
        f"cannot migrate {target.describe()} through a connection pooler (PgBouncer...): "
        "migrations hold a lock on one server session for the whole run; give migrate "
        "and rollback the URL of the PostgreSQL server itself (its own host and port)"
    )


def _uri(target: Target, *, options: str = "") -> DatabaseURI:
    """yoyo's DatabaseURI for ``target``: every parameter as a libpq keyword argument (nothing to
    parse again), with ``options`` added to the target's own."""
    kwargs = target.connect_kwargs()
    if options:
        kwargs["options"] = f"{kwargs.get('options', '')} {options}".strip()
    return DatabaseURI(
        scheme=_YOYO_SCHEME,
        username=None,
        password=None,
        hostname=None,
        port=None,
        database=None,
        args=kwargs,
    )


def _check_privileges(conn: psycopg.Connection[Any], target: Target) -> None:
    [(read_only, user, schema, may_create, missing)] = conn.execute(PRIVILEGES).fetchall()
    if read_only:  # yoyo's lock loop would retry the refused INSERT, then blame another process
        raise ReadOnlyDatabase(
            f"{target.describe()} is read-only (a standby, or default_transaction_read_only): "
            "migrate through the primary"
        )
    if schema is None:
        raise MigrationError(
            f"cannot migrate {target.describe()}: no schema of the search_path exists"
        )
    if not may_create:
        raise PermissionDenied(
            f"permission denied for schema {schema}: migrating needs CREATE on it "
            "(grant it, or migrate as the schema's owner)",
            user=user,
            database=target.dbname,
        )
    if missing:
        raise PermissionDenied(
            f"permission denied for table {', '.join(missing)}: migrating needs SELECT, INSERT, "
            "UPDATE and DELETE on yoyo's and dbtools' bookkeeping tables",
            user=user,
            database=target.dbname,
        )


@contextmanager
def _locked_by_us(backend: Any, target: Target) -> Iterator[None]:
    """The migration lock, waited for at most ``DBTOOLS_MIGRATION_LOCK_WAIT`` seconds (10).

    A session-level advisory lock on yoyo's main connection serialises dbtools runs: the server
    releases it when that session ends, however the process died. yoyo runs each migration on a
    connection of its own; every one checks its client each second (PostgreSQL 14+), so a
    backend whose process was killed mid-migration ends and rolls back within a second.
    yoyo's own lock row is taken too, for the plain ``yoyo`` command, in a transaction of a second
    connection that is never committed: the server removes it with that connection.
    """
    conn = backend.connection
    if conn.info.server_version >= CHECKS_CLIENT_SINCE:
        conn.execute(sql.SQL("SET client_connection_check_interval = {}").format(CHECK))
    wait = migration_lock_wait()
    conn.execute(sql.SQL("SET lock_timeout = {}").format(f"{max(1, round(wait * 1000))}ms"))
    try:
        conn.execute(TAKE_LOCK, {"key": LOCK_KEY})
    except psycopg.errors.LockNotAvailable:
        raise _held_by(conn, target) from None
    finally:
        conn.execute("RESET lock_timeout")
    try:
        with _yoyo_lock_row(target, wait):
            yield
    finally:
        with suppress(psycopg.Error):
            conn.execute(RELEASE_LOCK, {"key": LOCK_KEY})


@contextmanager
def _yoyo_lock_row(target: Target, wait: float) -> Iterator[None]:
    """yoyo's lock row, inserted and left uncommitted: a plain ``yoyo apply`` waits for it, and
    it vanishes with this connection. A row yoyo committed (a running ``yoyo`` command, or one
    that died) is waited for, ``wait`` seconds at most."""
    deadline = time.monotonic() + wait
    with db.connect(target) as lock_conn:
        try:
            lock_conn.execute(
                sql.SQL("SET LOCAL lock_timeout = {}").format(f"{max(1, round(wait * 1000))}ms")
            )
            while True:
                try:
                    with lock_conn.transaction():  # a savepoint: a refused insert is retried
                        lock_conn.execute(INSERT_YOYO_LOCK, {"pid": os.getpid()})
                    break
                except psycopg.errors.UniqueViolation:
                    if time.monotonic() > deadline:
                        raise _held_by_yoyo(lock_conn, target) from None
                    time.sleep(0.2)
            yield
        except psycopg.errors.LockNotAvailable:  # an uncommitted row of a racing yoyo
            raise MigrationLocked(target.dbname, by_yoyo=True) from None
        finally:
            lock_conn.rollback()


def _held_by(conn: psycopg.Connection[Any], target: Target) -> DbToolsError:
    """MigrationLocked naming the server process that holds the advisory lock, and how long its
    session has been connected (about as long as it has held the lock)."""
    holder = None
    with suppress(psycopg.Error):
        holder = conn.execute(LOCK_HOLDER, {"key": LOCK_KEY}).fetchone()
    if holder is None:
        return MigrationLocked(target.dbname)
    pid, since, held = holder
    return MigrationLocked(target.dbname, pid=pid, since=since, held=held)


def _held_by_yoyo(conn: psycopg.Connection[Any], target: Target) -> DbToolsError:
    """MigrationLocked naming the yoyo command's process, from its committed lock row."""
    conn.rollback()
    holder = conn.execute(YOYO_LOCK_HOLDER).fetchone()
    if holder is None:
        return MigrationLocked(target.dbname, by_yoyo=True)
    pid, since, held = holder
    return MigrationLocked(target.dbname, pid=pid, since=since, held=held, by_yoyo=True)


def _failure(exc: psycopg.Error, conn: psycopg.Connection[Any], doing: str) -> DbToolsError:
    """The dbtools error for ``exc``: a lost connection, a timeout, a missing privilege... or a
    MigrationError that says what was being done and the server's reason."""
    mapped = db.error_for(exc, conn)
    if isinstance(mapped, Timeout):
        return Timeout(mapped.kind, f"{doing}: {mapped.reason}", database=mapped.database)
    if mapped is not None and not isinstance(mapped, Refused):  # a refusal is the migration's
        return mapped
    reason = exc.diag.message_primary or (str(exc).strip().splitlines() or [""])[0]
    return MigrationError(f"{doing}: {reason}")


def _applied_at(conn: psycopg.Connection[Any]) -> dict[str, datetime]:
    """When each applied migration was applied, read from yoyo's table (absent: none applied)."""
    if conn.execute(YOYO_TABLE_EXISTS).fetchone() != (True,):
        return {}
    rows = conn.execute(APPLIED_AT).fetchall()
    return {row[0]: row[1].replace(tzinfo=UTC) for row in rows}


def _verify(conn: psycopg.Connection[Any], migrations: Any, applied: Iterable[str]) -> None:
    """Check the applied migrations against their recorded checksums (applied ones that have
    none, by a yoyo without the hook or before it existed, are taken as they are)."""
    applied = set(applied)
    recorded: dict[str, str] = {}
    if conn.execute(CHECKSUMS_EXIST).fetchone() == (True,):
        recorded = dict(conn.execute(SELECT_CHECKSUMS).fetchall())
    for migration in migrations:
        expected = recorded.get(migration.id)
        if migration.id not in applied or expected is None:
            continue
        if expected != file_checksum(Path(migration.path)):
            raise MigrationEdited(str(migration.path))


def _read(migrations_dir: Path | None) -> Any:
    """yoyo's migrations from ``migrations_dir`` (default: :data:`MIGRATIONS_DIR`), each file
    read, parsed and ordered here, before anything connects: yoyo would do it lazily, mid-run,
    after the database was created."""
    migrations_dir = MIGRATIONS_DIR if migrations_dir is None else migrations_dir
    if not migrations_dir.is_dir():
        raise ConfigurationError(f"the migrations folder {migrations_dir} does not exist")
    try:
        migrations = read_migrations(glob.escape(str(migrations_dir)))  # yoyo globs sources
        for migration in [*migrations, *migrations.post_apply]:
            for path in (Path(migration.path), _rollback_file(Path(migration.path))):
                if path.is_file() or path == Path(migration.path):
                    path.name.encode("utf-8")  # a name that is not UTF-8 cannot be reported
                    text = path.read_bytes().decode("utf-8")
                    if path.suffix == ".sql" and text.startswith(BOM):
                        raise MigrationError(
                            f"{path} starts with a byte-order mark, which PostgreSQL would "
                            "reject mid-run: save it as UTF-8 without one"
                        )
            _load(migration)  # parses it, and resolves its -- depends:
        list(topological_sort(migrations))  # a dependency cycle (it sorts lazily)
    except OSError as exc:
        where = exc.filename or migrations_dir
        raise ConfigurationError(
            f"cannot read the migrations in {migrations_dir}: {where}: {exc.strerror or exc}"
        ) from exc
    except UnicodeDecodeError as exc:
        raise MigrationError(f"{path} is not UTF-8 ({exc.reason})") from exc
    except UnicodeEncodeError as exc:  # a file name that is not UTF-8 (a surrogate escape)
        raise MigrationError(
            f"cannot read the migrations in {migrations_dir}: the file name "
            f"{exc.object!a} is not UTF-8"
        ) from exc
    except yoyo_exceptions.BadMigration as exc:
        raise MigrationError(
            f"cannot read the migrations in {migrations_dir}: {_reason(exc)}"
        ) from exc
    except CycleError as exc:
        ids = ", ".join(sorted(m.id for m in exc.args[1]))
        raise MigrationError(
            f"cannot read the migrations in {migrations_dir}: Circular dependencies among "
            f"these migrations: {ids}"
        ) from exc
    if not migrations:
        raise ConfigurationError(f"the migrations folder {migrations_dir} holds no migration")
    return migrations


def _load(migration: Any) -> None:
    """Load one migration; a Python migration that exits while loading is a broken one, not
    the end of the program (it would end a deploy's ``dbtools status`` with exit 0)."""
    try:
        migration.load()
    except SystemExit as exc:
        raise MigrationError(
            f"{migration.path} exits while it is loaded (code {exc.code!r})"
        ) from None


def _reason(exc: Exception) -> str:
    """yoyo's BadMigration in one line: (path, cause) for a Python file that does not import,
    else a message (an unresolved dependency, a cycle)."""
    *where, cause = exc.args or [exc]
    text = (str(cause).strip().splitlines() or [""])[0]
    if isinstance(cause, Exception):
        text = f"{type(cause).__name__}: {text}"
    return f"{Path(str(where[0])).name}: {text}" if where else text


def _rollback_file(path: Path) -> Path:
    return path.with_name(path.name.removesuffix(".sql") + ".rollback.sql")


def _apply_one(backend: Any, migration: Any) -> None:
    """Apply ``migration`` and mark it applied in one transaction on the locked session.

    yoyo's own apply_one runs a migration on a connection of its own and marks it afterwards, in
    a second transaction: a process killed between the two leaves a migration applied but not
    marked, which the next run applies again. A migration that opts out of transactions
    (``-- transactional: false``) still goes yoyo's way."""
    migration.load()
    if not migration.use_transactions:
        backend.apply_one(migration)
        return
    backend.ensure_internal_schema_updated()
    with backend.transaction():
        migration.process_steps(backend, "apply")
        backend.mark_one(migration, log=False)
        backend.log_migration(migration, "apply")  # as yoyo logs it: "mark" means not run


def _rollback_one(backend: Any, migration: Any) -> None:
    """Roll ``migration`` back, unmark it and forget its checksum, in one transaction."""
    migration.load()
    if not migration.use_transactions:
        backend.rollback_one(migration)
        backend.execute(FORGET_CHECKSUM_YOYO, {"id": migration.id})
        return
    backend.ensure_internal_schema_updated()
    with backend.transaction():
        migration.process_steps(backend, "rollback")
        backend.unmark_one(migration, log=False)
        backend.log_migration(migration, "rollback")
        backend.execute(FORGET_CHECKSUM_YOYO, {"id": migration.id})


@contextmanager
def _running(doing: str, conn: psycopg.Connection[Any]) -> Iterator[None]:
    """Run yoyo's work with its output on stderr and its errors mapped: ``cannot {doing}: ...``."""
    try:
        # yoyo prints the rows a statement returns; stdout is the caller's (one JSON document).
        with redirect_stdout(sys.stderr):
            yield
    except yoyo_exceptions.BadMigration as exc:
        raise MigrationError(f"cannot {doing}: {exc}") from exc
    except psycopg.Error as exc:
        raise _failure(exc, conn, f"cannot {doing}") from exc
