"""`dbtools schema dump|check`: the committed schema file, and drift in a live database."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
from psycopg import sql

from dbtools import config, migrations, schema
from tests.conftest import url_for


def test_committed_schema_file_is_what_the_migrations_produce() -> None:
    expected = schema.expected(url_for("postgres"))
    assert schema.SCHEMA_FILE.read_text() == expected, "run `dbtools schema dump` and commit it"


def test_schema_file_lives_outside_the_migrations_folder() -> None:
    assert schema.SCHEMA_FILE.parent != migrations.MIGRATIONS_DIR


def test_dump_has_the_schema_and_no_bookkeeping() -> None:
    text = schema.SCHEMA_FILE.read_text()
    assert "CREATE TABLE public.tenants" in text
    assert "CONSTRAINT tenants_slug_format_check" in text
    assert "COMMENT ON COLUMN public.tenants.slug" in text
    assert "_yoyo" not in text
    assert "_dbtools_migration_checksum" not in text
    assert "Dumped by" not in text


def test_dump_writes_the_file_once(run_cli: Any, db_url: str, tmp_path: Path) -> None:
    target = tmp_path / "schema.sql"
    first = run_cli("--database-url", db_url, "--json", "schema", "dump", "--file", str(target))
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout) == {"file": str(target), "changed": True}
    assert target.read_text() == schema.SCHEMA_FILE.read_text()

    second = run_cli("--database-url", db_url, "--json", "schema", "dump", "--file", str(target))
    assert json.loads(second.stdout) == {"file": str(target), "changed": False}


def test_check_passes_on_a_migrated_database(run_cli: Any, db_url: str) -> None:
    result = run_cli("--database-url", db_url, "schema", "check")
    assert result.returncode == 0, result.stderr
    assert "match the migrations" in result.stdout


def test_check_catches_an_index_added_by_hand(
    run_cli: Any, db_url: str, conn: psycopg.Connection[Any]
) -> None:
    conn.execute("CREATE INDEX tenants_name_idx ON tenants (name)")
    result = run_cli("--database-url", db_url, "schema", "check")
    assert result.returncode == 1
    assert "+CREATE INDEX tenants_name_idx ON public.tenants USING btree (name);" in result.stdout
    assert "differs from what the migrations produce: database" in result.stderr


def test_check_catches_a_column_added_by_hand(
    run_cli: Any, db_url: str, conn: psycopg.Connection[Any]
) -> None:
    conn.execute("ALTER TABLE tenants ADD COLUMN plan text")
    result = run_cli("--database-url", db_url, "--json", "schema", "check")
    assert result.returncode == 1
    document = json.loads(result.stdout)
    assert document["ok"] is False
    [difference] = document["differences"]
    assert difference["subject"].startswith("database ")
    assert "+    plan text" in difference["diff"]


def test_check_catches_a_stale_schema_file(run_cli: Any, db_url: str, tmp_path: Path) -> None:
    stale = tmp_path / "schema.sql"
    current = schema.SCHEMA_FILE.read_text()
    stale.write_text(current.replace("tenants_name_length_check", "tenants_name_size_check"))
    result = run_cli("--database-url", db_url, "schema", "check", "--file", str(stale))
    assert result.returncode == 1
    assert f"+++ {stale}" in result.stdout
    assert "-    CONSTRAINT tenants_name_length_check" in result.stdout
    assert str(stale) in result.stderr


def test_check_only_reads_the_database_it_checks(run_cli: Any, missing_db: str) -> None:
    """A dbname in the query string must not become the scratch database that gets migrated."""
    params = config.parse_url(missing_db)
    query = f"host={quote(params['host'], safe='')}&port={params['port']}&dbname={params['dbname']}"
    url = f"postgresql://{params['user']}@/?{query}"
    with psycopg.connect(**(params | {"dbname": "postgres"}), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(params["dbname"])))
    result = run_cli("--database-url", url, "schema", "check", "--file", str(schema.SCHEMA_FILE))
    assert result.returncode == 1  # an empty database differs from the migrations' schema
    with psycopg.connect(**params) as conn:
        assert conn.execute(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
        ).fetchone() == (0,)


def test_a_url_without_a_host_part_works(run_cli: Any, db_url: str) -> None:
    params = config.parse_url(db_url)
    host = quote(params["host"], safe="")
    url = (
        f"postgresql:///{params['dbname']}?host={host}&port={params['port']}&user={params['user']}"
    )
    result = run_cli("--database-url", url, "schema", "check")
    assert result.returncode == 0, result.stderr
