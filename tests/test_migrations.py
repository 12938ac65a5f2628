"""Migrations through yoyo: apply, roll back, apply again; creating a missing database."""

from __future__ import annotations

import re
import subprocess
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import psycopg
import pytest
from psycopg import sql

from dbtools import config, localdb, migrations
from dbtools.errors import DatabaseUnavailable, MigrationError


def schema_dump(url: str) -> str:
    """``pg_dump --schema-only``, without the lines that differ between two dumps of one schema."""
    params = config.parse_url(url)
    result = subprocess.run(
        [str(localdb.find_bindir() / "pg_dump"), "--schema-only", "--no-owner", "--dbname", url],
        capture_output=True,
        text=True,
        check=True,
        env={"PGPASSWORD": params.get("password", ""), "PATH": "/usr/bin:/bin"},
    )
    # Comments carry versions; \restrict lines (since 13.22, 14.19, 15.14...) carry a random key.
    volatile = re.compile(r"^(--.*|\\(un)?restrict .*)$")
    return "\n".join(line for line in result.stdout.splitlines() if not volatile.match(line))


def tables(url: str) -> set[str]:
    with psycopg.connect(**config.parse_url(url)) as conn:
        rows = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
        ).fetchall()
    return {row[0] for row in rows}


def test_apply_rollback_apply_gives_an_identical_schema(db_url: str) -> None:
    applied_once = schema_dump(db_url)
    assert "CREATE TABLE public.tenants" in applied_once

    rolled_back = migrations.rollback(db_url, count=100)
    assert rolled_back == ["0001_create-tenants"]
    assert "tenants" not in tables(db_url)
    assert "tenant_status" not in schema_dump(db_url)
    assert "tg_tenants__timestamps" not in schema_dump(db_url)

    assert migrations.apply(db_url) == ["0001_create-tenants"]
    assert schema_dump(db_url) == applied_once


def test_apply_is_a_no_op_when_nothing_is_pending(db_url: str) -> None:
    assert migrations.apply(db_url) == []


def test_status_reports_applied_and_pending(db_url: str) -> None:
    [state] = migrations.status(db_url)
    assert state.id == "0001_create-tenants"
    assert state.applied_at is not None
    assert state.applied_at.tzinfo is not None
    migrations.rollback(db_url)
    assert [(s.id, s.applied_at) for s in migrations.status(db_url)] == [
        ("0001_create-tenants", None)
    ]


def test_ensure_database_creates_a_missing_database(missing_db: str) -> None:
    assert migrations.ensure_database(missing_db) is True
    assert migrations.ensure_database(missing_db) is False
    assert migrations.apply(missing_db) == ["0001_create-tenants"]
    assert "tenants" in tables(missing_db)


def test_a_failing_migration_is_reported_and_rolled_back(db_url: str, tmp_path: Any) -> None:
    for source in sorted(migrations.MIGRATIONS_DIR.glob("*.sql")):
        (tmp_path / source.name).write_text(source.read_text())
    (tmp_path / "0002_broken.sql").write_text(
        "-- A broken migration.\n"
        "CREATE TABLE half_done (id int);\n"
        "SELECT no_such_column FROM tenants;\n"
    )
    with pytest.raises(MigrationError, match=r"0002_broken.*no_such_column"):
        migrations.apply(db_url, migrations_dir=tmp_path)
    assert "half_done" not in tables(db_url)
    assert [s.applied_at is None for s in migrations.status(db_url, tmp_path)] == [False, True]


def test_unreachable_server_is_database_unavailable() -> None:
    url = "postgresql://someone:hunter2@127.0.0.1:1/dbtools_system"
    with pytest.raises(DatabaseUnavailable) as caught:
        migrations.apply(url)
    assert "hunter2" not in str(caught.value)
    assert "127.0.0.1:1" in str(caught.value)


def copy_migrations(target: Path) -> Path:
    for source in sorted(migrations.MIGRATIONS_DIR.glob("*.sql")):
        (target / source.name).write_text(source.read_text())
    return target


def test_editing_an_applied_migration_is_refused(missing_db: str, tmp_path: Path) -> None:
    folder = copy_migrations(tmp_path)
    migrations.ensure_database(missing_db)
    migrations.apply(missing_db, folder)
    applied = folder / "0001_create-tenants.sql"
    applied.write_text(applied.read_text() + "\n-- an innocent-looking edit\n")

    for operation in (migrations.apply, migrations.status, migrations.rollback):
        with pytest.raises(MigrationError, match=r"0001_create-tenants\.sql was edited after"):
            operation(missing_db, migrations_dir=folder)
    assert "tenants" in tables(missing_db)  # the rollback was refused too


def test_a_migration_applied_by_yoyo_alone_is_checksummed_on_the_next_migrate(
    db_url: str, tmp_path: Path
) -> None:
    with psycopg.connect(**config.parse_url(db_url), autocommit=True) as conn:
        conn.execute("DELETE FROM _dbtools_migration_checksum")  # as if applied by `yoyo apply`
        folder = copy_migrations(tmp_path)
        assert migrations.apply(db_url, folder) == []
        recorded = conn.execute("SELECT migration_id, sha256 FROM _dbtools_migration_checksum")
        assert recorded.fetchall() == [
            ("0001_create-tenants", migrations.file_checksum(folder / "0001_create-tenants.sql"))
        ]


def test_status_of_a_fresh_database_creates_nothing(missing_db: str) -> None:
    migrations.ensure_database(missing_db)
    states = migrations.status(missing_db)
    assert [(s.id, s.applied_at) for s in states] == [("0001_create-tenants", None)]
    assert tables(missing_db) == set()  # not even yoyo's bookkeeping tables


def test_concurrent_database_creation_creates_it_once(missing_db: str) -> None:
    barrier = threading.Barrier(6)

    def create(_: int) -> bool:
        barrier.wait()
        return migrations.ensure_database(missing_db)

    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(create, range(6)))
    assert sorted(results) == [False] * 5 + [True]


def test_a_missing_privilege_is_a_migration_error(db_url: str) -> None:
    role = f"dbtools_ro_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(**config.parse_url(db_url), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
        conn.execute("DROP TABLE yoyo_lock")  # yoyo must create it again, which needs CREATE
        conn.execute(sql.SQL("REVOKE CREATE ON SCHEMA public FROM PUBLIC"))
    try:
        params = config.parse_url(db_url) | {"user": role}
        as_role = "postgresql://?" + urlencode(params, quote_via=quote)
        with pytest.raises(MigrationError, match=r"^cannot migrate database '"):
            migrations.apply(as_role)
    finally:
        with psycopg.connect(**config.parse_url(db_url), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))
