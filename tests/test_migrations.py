"""Migrations through yoyo: apply, roll back, apply again; creating a database; failures."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from dbtools import config, db, migrations, schema
from dbtools.config import Target
from dbtools.errors import (
    DatabaseUnavailable,
    MigrationEdited,
    MigrationError,
    MigrationLocked,
    PermissionDenied,
    ReadOnlyDatabase,
    Timeout,
)
from tests.helpers import MIGRATION_IDS, copy_migrations

Conn = psycopg.Connection[Any]


def tables(target: Target) -> set[str]:
    with db.connect(target) as conn:
        rows = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        return {row[0] for row in rows}


def test_apply_rollback_apply_gives_an_identical_schema(target: Target) -> None:
    applied_once = schema.dump(target)
    assert "CREATE TABLE public.tenants" in applied_once

    assert migrations.rollback(target, count=100) == MIGRATION_IDS[::-1]
    rolled_back = schema.dump(target)
    for name in ("tenants", "tenant_status", "tg_tenants__timestamps", "tg_tenants__notify"):
        assert name not in rolled_back

    assert migrations.apply(target) == MIGRATION_IDS
    assert schema.dump(target) == applied_once


def test_each_rollback_restores_exactly_the_schema_before_its_migration(
    target: Target, tmp_path: Path
) -> None:
    """What a DBA counts on when a deploy is undone: rolling back migration N leaves the schema
    (comments and privileges included) that migrations 1 to N-1 made, not merely one that works."""
    migrations.rollback(target, count=len(MIGRATION_IDS))
    before = [schema.dump(target)]  # before[n]: the schema with the first n migrations applied
    for count in range(1, len(MIGRATION_IDS)):
        folder = copy_migrations(tmp_path / f"first-{count}")
        for later in MIGRATION_IDS[count:]:
            (folder / f"{later}.sql").unlink()
            (folder / f"{later}.rollback.sql").unlink()
        migrations.apply(target, folder)
        before.append(schema.dump(target))
    assert migrations.apply(target) == MIGRATION_IDS[-1:]
    for count in reversed(range(len(MIGRATION_IDS))):
        assert migrations.rollback(target) == [MIGRATION_IDS[count]]
        assert schema.dump(target) == before[count], MIGRATION_IDS[count]


def test_apply_is_a_no_op_when_nothing_is_pending(target: Target) -> None:
    assert migrations.apply(target) == []


def test_status_reports_applied_and_pending(target: Target) -> None:
    states = migrations.status(target)
    assert [state.id for state in states] == MIGRATION_IDS
    for state in states:
        assert state.applied_at is not None
        assert abs(datetime.now(UTC) - state.applied_at).total_seconds() < 3600
    migrations.rollback(target)
    *applied, newest = migrations.status(target)
    assert [s.applied_at is None for s in applied] == [False] * len(applied)
    assert (newest.id, newest.applied_at) == (MIGRATION_IDS[-1], None)


def test_ensure_database_creates_a_missing_database(missing_db: Target) -> None:
    assert migrations.ensure_database(missing_db) is True
    assert migrations.ensure_database(missing_db) is False
    assert migrations.apply(missing_db) == MIGRATION_IDS
    assert "tenants" in tables(missing_db)


def test_concurrent_database_creation_creates_it_once(missing_db: Target) -> None:
    barrier = threading.Barrier(6)

    def create(_: int) -> bool:
        barrier.wait()
        return migrations.ensure_database(missing_db)

    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(create, range(6)))
    assert sorted(results) == [False] * 5 + [True]


def test_status_of_a_fresh_database_creates_nothing(missing_db: Target) -> None:
    migrations.ensure_database(missing_db)
    states = migrations.status(missing_db)
    assert [(s.id, s.applied_at) for s in states] == [(i, None) for i in MIGRATION_IDS]
    assert tables(missing_db) == set()  # not even yoyo's bookkeeping tables


# --- plan: what --dry-run prints ---------------------------------------------------------------


def test_plan_for_a_missing_database_creates_nothing(missing_db: Target) -> None:
    plan = migrations.plan(missing_db)
    assert (plan.database, plan.create_database) == (missing_db.dbname, True)
    assert [state.id for state in plan.pending] == MIGRATION_IDS
    script = plan.script()
    assert script.startswith(f"-- would create database {missing_db.dbname!r}\n-- 0001_create")
    assert "CREATE TABLE tenants (" in script
    assert not migrations.database_exists(missing_db)


def test_plan_lists_only_what_is_pending(target: Target) -> None:
    up_to_date = migrations.plan(target)
    assert (up_to_date.create_database, up_to_date.pending) == (False, [])
    assert up_to_date.script() == f"-- no pending migrations: {target.dbname!r} is up to date"
    migrations.rollback(target)
    [pending] = migrations.plan(target).pending
    assert pending.id == MIGRATION_IDS[-1]
    assert pending.sql == (migrations.MIGRATIONS_DIR / f"{pending.id}.sql").read_text()
    assert migrations.status(target)[-1].applied_at is None  # still pending


# --- checksums ---------------------------------------------------------------------------------


def test_editing_an_applied_migration_is_refused(missing_db: Target, tmp_path: Path) -> None:
    folder = copy_migrations(tmp_path)
    migrations.ensure_database(missing_db)
    migrations.apply(missing_db, folder)
    applied = folder / "0001_create-tenants.sql"
    applied.write_text(applied.read_text() + "\n-- an innocent-looking edit\n")

    for operation in (migrations.apply, migrations.status, migrations.rollback):
        with pytest.raises(MigrationEdited, match=r"0001_create-tenants\.sql was edited after"):
            operation(missing_db, migrations_dir=folder)
    assert "tenants" in tables(missing_db)  # the rollback was refused too


def test_a_migration_applied_by_yoyo_alone_is_checksummed_on_the_next_migrate(
    target: Target, conn: Conn, tmp_path: Path
) -> None:
    conn.execute("DELETE FROM _dbtools_migration_checksum")  # as if applied by `yoyo apply`
    folder = copy_migrations(tmp_path)
    assert migrations.apply(target, folder) == []
    recorded = conn.execute("SELECT migration_id, sha256 FROM _dbtools_migration_checksum")
    assert sorted(recorded.fetchall()) == [
        (i, migrations.file_checksum(folder / f"{i}.sql")) for i in MIGRATION_IDS
    ]


# --- failures ----------------------------------------------------------------------------------


def test_a_failing_migration_is_reported_and_rolled_back(target: Target, tmp_path: Path) -> None:
    broken = "-- A broken migration.\nCREATE TABLE half_done (id int);\nSELECT nope FROM tenants;\n"
    folder = copy_migrations(tmp_path, ("0099_broken.sql", broken))
    with pytest.raises(MigrationError) as caught:
        migrations.apply(target, migrations_dir=folder)
    assert str(caught.value) == ('cannot apply migration 0099_broken: column "nope" does not exist')
    assert "half_done" not in tables(target)
    states = migrations.status(target, folder)
    assert [(s.id, s.applied_at is None) for s in states] == [
        *((i, False) for i in MIGRATION_IDS),
        ("0099_broken", True),
    ]


def test_unreachable_server_is_database_unavailable() -> None:
    target = Target.from_url("postgresql://someone:hunter2@127.0.0.1:1/dbtools_system")
    for operation in (migrations.apply, migrations.status):
        with pytest.raises(DatabaseUnavailable) as caught:
            operation(target)
        assert str(caught.value).startswith(
            "cannot connect to database 'dbtools_system' on 127.0.0.1:1: "
        )
        assert "hunter2" not in str(caught.value)


def test_a_connection_lost_during_a_migration_is_database_unavailable(
    target: Target, tmp_path: Path
) -> None:
    """The same rule as everywhere: a terminated session is a lost connection, not a failed
    migration."""
    killer = "-- Ends its own session.\nSELECT pg_terminate_backend(pg_backend_pid());\n"
    folder = copy_migrations(tmp_path, ("0099_killer.sql", killer))
    with pytest.raises(DatabaseUnavailable) as caught:
        migrations.apply(target, migrations_dir=folder)
    assert str(caught.value).startswith(f"lost the connection to database {target.dbname!r} on ")


def test_a_lock_timeout_in_a_migration_is_a_timeout_naming_it(
    target: Target, conn: Conn, connect: Any, tmp_path: Path
) -> None:
    waits = (
        "-- Waits for a lock another session holds.\n"
        "SET LOCAL lock_timeout = '100ms';\n"
        "ALTER TABLE tenants ADD COLUMN plan text;\n"
    )
    folder = copy_migrations(tmp_path, ("0099_waits.sql", waits))
    holder = connect()
    holder.execute("SELECT count(*) FROM tenants")  # holds ACCESS SHARE until rolled back
    with pytest.raises(Timeout) as caught:
        migrations.apply(target, migrations_dir=folder)
    holder.rollback()
    assert caught.value.setting == "lock_timeout"
    assert "cannot apply migration 0099_waits" in str(caught.value)
    assert str(caught.value).endswith("; try again")


def test_a_yoyo_command_holding_its_lock_is_migration_locked(
    target: Target, conn: Conn, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A committed row in yoyo_lock is the yoyo command's lock (dbtools never commits one)."""
    monkeypatch.setenv(config.MIGRATION_LOCK_WAIT_VAR, "1")
    since = datetime(2026, 1, 2, 3, 4, 5)
    conn.execute("INSERT INTO yoyo_lock (locked, ctime, pid) VALUES (1, %s, 4242)", (since,))
    with pytest.raises(MigrationLocked) as caught:
        migrations.apply(target)
    assert (caught.value.pid, caught.value.since, caught.value.by_yoyo) == (4242, since, True)
    assert str(caught.value).startswith(
        f"the yoyo command (process 4242) has held the migration lock of database "
        f"{target.dbname!r} for "
    )
    assert str(caught.value).endswith(
        "(since 2026-01-02 03:04:05 UTC); try again when it is done (if that process is dead, "
        "remove its lock with `yoyo break-lock`)"
    )


def test_another_dbtools_holding_the_lock_is_named_with_its_server_process(
    target: Target, connect: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(config.MIGRATION_LOCK_WAIT_VAR, "1")
    holder = connect(autocommit=True)
    holder.execute(migrations.TAKE_LOCK, {"key": migrations.LOCK_KEY})
    holder_pid = holder.info.backend_pid
    with pytest.raises(MigrationLocked) as caught:
        migrations.apply(target)
    assert (caught.value.pid, caught.value.by_yoyo) == (holder_pid, False)
    assert caught.value.held is not None
    assert str(caught.value).startswith(
        f"server process {holder_pid} has held the migration lock of database "
        f"{target.dbname!r} for "
    )
    holder.close()  # the server releases the lock with the session
    assert migrations.apply(target) == []


def test_the_lock_leaves_nothing_behind(target: Target, conn: Conn) -> None:
    assert migrations.rollback(target) == [MIGRATION_IDS[-1]]
    assert migrations.apply(target) == [MIGRATION_IDS[-1]]
    assert conn.execute("SELECT count(*) FROM yoyo_lock").fetchone() == (0,)
    locks = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
    assert conn.execute(locks).fetchone() == (0,)


def test_two_migrations_started_together_apply_each_migration_once(missing_db: Target) -> None:
    migrations.ensure_database(missing_db)
    barrier = threading.Barrier(2)

    def migrate(_: int) -> list[str]:
        barrier.wait()
        return migrations.apply(missing_db)

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(migrate, range(2)))
    assert sorted(results, key=len) == [[], MIGRATION_IDS]
    with db.connect(missing_db) as conn:
        applied = conn.execute("SELECT count(*) FROM _yoyo_migration").fetchone()
    assert applied == (len(MIGRATION_IDS),)


@pytest.fixture
def no_create_role(conn: Conn, target: Target) -> Iterator[Target]:
    """The test's database as a login role that may not create tables in schema public."""
    role = f"dbtools_ro_{uuid.uuid4().hex[:8]}"
    conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
    conn.execute("DROP TABLE yoyo_lock")  # yoyo must create it again, which needs CREATE
    conn.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
    yield Target.from_params(**(target.params | {"user": role}))
    conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_a_missing_privilege_is_permission_denied_at_once(no_create_role: Target) -> None:
    """Not yoyo's lock loop retrying for lock wait and then blaming a missing table."""
    for operation in (migrations.apply, migrations.rollback):
        with pytest.raises(PermissionDenied) as caught:
            operation(no_create_role)
        assert str(caught.value) == (
            "permission denied for schema public: migrating needs CREATE on it (grant it, or "
            f"migrate as the schema's owner) (user {no_create_role.user!r}, "
            f"database {no_create_role.dbname!r})"
        )
    assert "yoyo_lock" not in tables(no_create_role)


def test_a_read_only_server_is_said_at_once_not_taken_for_a_held_lock(target: Target) -> None:
    """yoyo's lock loop would retry the refused INSERT for lock wait, then blame a
    process that does not exist."""
    read_only = Target.from_params(
        **(target.params | {"options": "-c default_transaction_read_only=on"})
    )
    with pytest.raises(ReadOnlyDatabase, match=r"is read-only .*: migrate through the primary"):
        migrations.apply(read_only)


def test_a_database_ahead_of_the_checkout(target: Target, tmp_path: Path) -> None:
    """The database has 0002, this checkout does not: status says so; rollback refuses rather
    than undo 0001 underneath it."""
    ahead = copy_migrations(
        tmp_path / "ahead", ("0099_more.sql", "-- More.\nCREATE TABLE more (id int);\n")
    )
    (ahead / "0099_more.rollback.sql").write_text("-- Less.\nDROP TABLE more;\n")
    assert migrations.apply(target, ahead) == ["0099_more"]

    states = migrations.status(target)
    assert [(s.id, s.path is None) for s in states] == [
        *((i, False) for i in MIGRATION_IDS),
        ("0099_more", True),
    ]
    with pytest.raises(
        MigrationError, match="newer migrations that are not in this checkout's sql/: 0099_more"
    ):
        migrations.rollback(target)
    assert "tenants" in tables(target)


def test_a_migration_that_is_not_utf8_is_a_migration_error(tmp_path: Path) -> None:
    folder = copy_migrations(tmp_path)
    (folder / "0099_latin1.sql").write_bytes(b"-- Caf\xe9.\nSELECT 1;\n")
    with pytest.raises(MigrationError, match="is not UTF-8"):
        migrations.listed(folder)


def test_a_role_that_may_only_read_the_bookkeeping_is_permission_denied(
    conn: Conn, target: Target
) -> None:
    """has_table_privilege(t, 'SELECT, INSERT') is true when either is held: each is asked."""
    conn.execute("CREATE ROLE dbtools_reader LOGIN")
    try:
        conn.execute("GRANT CREATE ON SCHEMA public TO dbtools_reader")
        conn.execute("GRANT SELECT ON yoyo_lock, _yoyo_migration TO dbtools_reader")
        as_reader = Target.from_params(**(target.params | {"user": "dbtools_reader"}))
        with pytest.raises(PermissionDenied) as caught:
            migrations.apply(as_reader)
        assert str(caught.value).startswith(
            "permission denied for table yoyo_lock, _yoyo_migration, _dbtools_migration_checksum:"
        )
    finally:
        conn.execute("DROP OWNED BY dbtools_reader")
        conn.execute("DROP ROLE dbtools_reader")


def test_a_locked_lock_table_gives_up_instead_of_hanging(
    target: Target, connect: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(config.MIGRATION_LOCK_WAIT_VAR, "1")
    holder = connect()
    holder.execute("LOCK TABLE yoyo_lock IN ACCESS EXCLUSIVE MODE")
    with pytest.raises((MigrationLocked, Timeout)) as caught:
        migrations.apply(target)
    holder.rollback()
    assert str(caught.value).endswith("try again") or "try again when" in str(caught.value)


def test_creating_a_database_on_a_read_only_server_is_read_only_database(
    missing_db: Target,
) -> None:
    read_only = Target.from_params(
        **(missing_db.params | {"options": "-c default_transaction_read_only=on"})
    )
    with pytest.raises(ReadOnlyDatabase):
        migrations.ensure_database(read_only)


def test_a_migration_and_its_mark_commit_together(
    target: Target, conn: Conn, tmp_path: Path
) -> None:
    """yoyo alone commits a migration, then marks it in a second transaction: a process killed
    in between leaves it applied and unmarked, and the next run applies it again."""
    conn.execute(
        "CREATE FUNCTION refuse_marks() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN RAISE EXCEPTION 'no marking today'; END $$"
    )
    conn.execute(
        "CREATE TRIGGER refuse_marks BEFORE INSERT ON _yoyo_migration "
        "FOR EACH ROW EXECUTE FUNCTION refuse_marks()"
    )
    folder = copy_migrations(
        tmp_path, ("0099_made.sql", "-- A table.\nCREATE TABLE made (id int);\n")
    )
    with pytest.raises(MigrationError, match="cannot apply migration 0099_made: no marking today"):
        migrations.apply(target, folder)
    assert "made" not in tables(target)


def test_a_lock_wait_of_zero_gives_up_at_once(
    target: Target, connect: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """lock_timeout = 0 would mean wait for ever: a zero wait must not."""
    monkeypatch.setenv(config.MIGRATION_LOCK_WAIT_VAR, "0")
    holder = connect(autocommit=True)
    holder.execute(migrations.TAKE_LOCK, {"key": migrations.LOCK_KEY})
    started = time.monotonic()
    with pytest.raises(MigrationLocked):
        migrations.apply(target)
    assert time.monotonic() - started < 5


def test_yoyo_log_says_applied_and_rolled_back(target: Target, conn: Conn) -> None:
    """_yoyo_log's "mark" means declared applied without running: not what dbtools does."""
    conn.execute("DELETE FROM _yoyo_log")
    migrations.rollback(target)
    migrations.apply(target)
    rows = conn.execute(
        "SELECT operation FROM _yoyo_log WHERE migration_id = %s ORDER BY created_at_utc",
        (MIGRATION_IDS[-1],),
    ).fetchall()
    assert rows == [("rollback",), ("apply",)]
