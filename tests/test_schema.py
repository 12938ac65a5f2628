"""dbtools.schema and `dbtools schema dump|check`: the committed schema file, and drift."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
import pytest
from yoyo import read_migrations

from dbtools import db, migrations, schema
from dbtools.config import Target
from dbtools.errors import ConfigurationError, PermissionDenied, SchemaDrift
from tests.helpers import SERVER, Cli

Conn = psycopg.Connection[Any]


def test_committed_schema_file_is_what_the_migrations_produce() -> None:
    assert schema.SCHEMA_FILE.read_text() == schema.expected(SERVER), (
        "run `dbtools schema dump` and commit it"
    )


def test_yoyo_takes_only_the_migrations_for_migrations() -> None:
    """The schema file sits where yoyo does not read it as one more migration."""
    listed = {Path(m.path).name for m in read_migrations(str(migrations.MIGRATIONS_DIR))}
    forwards = migrations.MIGRATIONS_DIR.glob("*.sql")
    assert listed == {p.name for p in forwards if not p.name.endswith(".rollback.sql")}
    assert schema.SCHEMA_FILE.name not in listed


def test_dump_has_the_schema_and_no_bookkeeping() -> None:
    text = schema.SCHEMA_FILE.read_text()
    assert "CREATE TABLE public.tenants" in text
    assert "CONSTRAINT tenants_slug_format_check" in text
    assert "COMMENT ON COLUMN public.tenants.slug" in text
    assert "CREATE TRIGGER tenants_notify_update AFTER UPDATE ON public.tenants" in text
    assert "_yoyo" not in text
    assert "_dbtools_migration_checksum" not in text
    assert "Dumped by" not in text


def test_dump_writes_the_file_once(cli: Cli, db_url: str, tmp_path: Path) -> None:
    target_file = tmp_path / "schema.sql"
    first = cli("--database-url", db_url, "--json", "schema", "dump", "--file", str(target_file))
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout) == {"file": str(target_file), "changed": True}
    assert target_file.read_text() == schema.SCHEMA_FILE.read_text()

    second = cli("--database-url", db_url, "--json", "schema", "dump", "--file", str(target_file))
    assert json.loads(second.stdout) == {"file": str(target_file), "changed": False}


def test_check_passes_on_a_migrated_database(cli: Cli, db_url: str) -> None:
    result = cli("--database-url", db_url, "schema", "check")
    assert result.returncode == 0, result.stderr
    assert "match the migrations" in result.stdout


def test_check_catches_an_index_added_by_hand(cli: Cli, db_url: str, conn: Conn) -> None:
    conn.execute("CREATE INDEX tenants_name_idx ON tenants (name)")
    result = cli("--database-url", db_url, "schema", "check")
    assert result.returncode == 1
    assert "+CREATE INDEX tenants_name_idx ON public.tenants USING btree (name);" in result.stdout
    assert "differs from what the migrations produce: database" in result.stderr


def test_check_catches_a_column_added_by_hand(target: Target, conn: Conn) -> None:
    conn.execute("ALTER TABLE tenants ADD COLUMN plan text")
    with pytest.raises(SchemaDrift) as caught:
        schema.check(target)
    [difference] = caught.value.differences
    assert difference.subject == f"database {target.dbname!r}"
    assert "+    plan text" in difference.diff


def test_check_catches_a_stale_schema_file(cli: Cli, db_url: str, tmp_path: Path) -> None:
    stale = tmp_path / "schema.sql"
    current = schema.SCHEMA_FILE.read_text()
    stale.write_text(current.replace("tenants_name_length_check", "tenants_name_size_check"))
    result = cli("--database-url", db_url, "--json", "schema", "check", "--file", str(stale))
    assert result.returncode == 1
    [difference] = json.loads(result.stdout)["differences"]
    assert difference["subject"] == str(stale)
    assert f"+++ {stale}" in difference["diff"]
    assert "-    CONSTRAINT tenants_name_length_check" in difference["diff"]
    assert str(stale) in result.stderr


def test_check_only_reads_the_database_it_checks(cli: Cli, missing_db: Target) -> None:
    """A dbname in the query string must not become the scratch database that gets migrated."""
    params = missing_db.params
    query = f"host={quote(params['host'], safe='')}&port={params['port']}&dbname={params['dbname']}"
    url = f"postgresql://{params['user']}@/?{query}"
    migrations.ensure_database(missing_db)
    result = cli("--database-url", url, "schema", "check", "--file", str(schema.SCHEMA_FILE))
    assert result.returncode == 1  # an empty database differs from the migrations' schema
    assert migrations.status(missing_db)[0].applied_at is None
    with db.connect(missing_db) as empty:
        assert empty.execute(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
        ).fetchone() == (0,)


def test_a_url_without_a_host_part_works(cli: Cli, target: Target) -> None:
    params = target.params
    host = quote(params["host"], safe="")
    url = (
        f"postgresql:///{params['dbname']}?host={host}&port={params['port']}&user={params['user']}"
    )
    result = cli("--database-url", url, "schema", "check")
    assert result.returncode == 0, result.stderr


def test_check_of_a_database_that_does_not_exist_fails(cli: Cli, missing_db: Target) -> None:
    """A mistyped URL must not pass as a database that matches the migrations."""
    result = cli("--database-url", missing_db.url(), "schema", "check")
    assert result.returncode == 3
    assert result.stderr == (
        f"dbtools: error: {missing_db.describe()} does not exist, so there is nothing to check: "
        "check the URL, or run `dbtools migrate` first\n"
    )


@pytest.mark.parametrize("where", ["/proc/dbtools-schema.sql", "/dev/full", "."])
def test_dump_to_a_file_that_cannot_be_written_is_a_usage_error(
    cli: Cli, db_url: str, where: str
) -> None:
    result = cli("--database-url", db_url, "schema", "dump", "--file", where)
    assert result.returncode == 2
    assert result.stderr in (
        f"dbtools: error: {where} is not a regular file\n",
        f"dbtools: error: cannot write {where}: No such file or directory\n",
    )


def test_check_of_a_file_that_is_not_utf8_reports_drift(
    cli: Cli, db_url: str, tmp_path: Path
) -> None:
    broken = tmp_path / "schema.sql"
    broken.write_bytes(schema.SCHEMA_FILE.read_bytes() + b"\xff\xfe\n")
    result = cli("--database-url", db_url, "schema", "check", "--file", str(broken))
    assert result.returncode == 1
    assert "+\ufffd\ufffd" in result.stdout


def test_secrets_never_reach_pg_dumps_command_line(
    target: Target, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ps shows every process's arguments; the password and sslpassword go another way."""
    calls: list[list[str]] = []
    real = subprocess.run

    def recorded(args: list[str], **kwargs: Any) -> Any:
        calls.append(args)
        return real(args, **kwargs)

    monkeypatch.setattr(subprocess, "run", recorded)
    with_secrets = Target.from_params(**(target.params | {"password": "Zq1", "sslpassword": "Zq2"}))
    assert "CREATE TABLE public.tenants" in schema.dump(with_secrets)
    [args] = [call for call in calls if Path(call[0]).name == "pg_dump"]
    assert "Zq" not in " ".join(args)


def test_a_role_without_createdb_is_told_why(conn: Conn, target: Target) -> None:
    conn.execute("CREATE ROLE dbtools_no_createdb LOGIN")
    try:
        with pytest.raises(PermissionDenied, match="grant CREATEDB"):
            schema.expected(Target.from_params(**(target.params | {"user": "dbtools_no_createdb"})))
    finally:
        conn.execute("DROP ROLE dbtools_no_createdb")


def test_check_of_a_file_that_is_not_there_is_a_usage_error(cli: Cli, db_url: str) -> None:
    result = cli("--database-url", db_url, "schema", "check", "--file", "typo.sql")
    assert result.returncode == 2
    assert "no such file: typo.sql" in result.stderr


def test_dump_creates_no_folders(cli: Cli, db_url: str, tmp_path: Path) -> None:
    where = tmp_path / "no" / "such" / "schema.sql"
    result = cli("--database-url", db_url, "schema", "dump", "--file", str(where))
    assert result.returncode == 2
    assert not (tmp_path / "no").exists()


def test_a_secret_with_a_service_cannot_reach_pg_dump_safely(target: Target) -> None:
    with_service = Target.from_params(**(target.params | {"service": "x", "sslpassword": "Zq1"}))
    with pytest.raises(ConfigurationError, match="put it in the service file") as caught:
        schema.dump(with_service)
    assert "Zq" not in str(caught.value)


@pytest.mark.parametrize("command", ["dump", "check"])
def test_a_schema_path_that_cannot_be_looked_at_is_a_configuration_error(
    cli: Cli, db_url: str, command: str
) -> None:
    """Path.exists() raises for some errors (a name too long here; a folder that may not be
    searched for a user): exit 2 with the reason, never a bug's exit 70."""
    result = cli("--database-url", db_url, "schema", command, "--file", "x" * 300)
    assert result.returncode == 2, result.stderr
    assert "File name too long" in result.stderr
