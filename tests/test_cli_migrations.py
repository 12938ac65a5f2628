"""`dbtools migrate|rollback|status|seed|demo|db ...` as an operator runs them (in-process)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg
import pytest

from dbtools import config, db, localdb, migrations
from dbtools.config import Target
from tests.helpers import Cli


def test_migrate_creates_the_database_then_reports_nothing_pending(
    cli: Cli, missing_db: Target
) -> None:
    first = cli("migrate", env={"DATABASE_URL": missing_db.url()})
    assert first.returncode == 0, first.stderr
    assert first.stdout == (
        f"created database {missing_db.dbname!r}\napplied 0001_create-tenants\n"
    )

    second = cli("--json", "migrate", env={"DATABASE_URL": missing_db.url()})
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout) == {
        "database": missing_db.dbname,
        "created_database": False,
        "applied": [],
    }


def test_status_exits_3_while_migrations_are_pending(cli: Cli, db_url: str) -> None:
    applied = cli("--database-url", db_url, "status")
    assert applied.returncode == 0
    assert applied.stdout.splitlines()[-1] == "1 applied, 0 pending"

    rolled_back = cli("--database-url", db_url, "rollback")
    assert rolled_back.returncode == 0
    assert rolled_back.stdout == "rolled back 0001_create-tenants\n"

    pending = cli("--database-url", db_url, "status")
    assert pending.returncode == 3
    assert pending.stdout.splitlines() == [
        f"pending  {'':<23} 0001_create-tenants",
        "0 applied, 1 pending",
    ]


def test_seed_twice(cli: Cli, db_url: str) -> None:
    first = cli("seed", env={"DATABASE_URL": db_url})
    assert first.returncode == 0
    assert first.stdout == "created tenant 'demo' (Demo Tenant)\n"
    second = cli("seed", env={"DATABASE_URL": db_url})
    assert second.returncode == 0
    assert second.stdout == "tenant 'demo' already exists; left unchanged\n"


def test_dotenv_in_the_current_folder_is_read(cli: Cli, db_url: str, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(f"DATABASE_URL={db_url}\n")
    result = cli("seed")
    assert result.returncode == 0, result.stderr
    assert "created tenant 'demo'" in result.stdout


def test_database_url_option_wins_over_the_environment(cli: Cli, db_url: str) -> None:
    elsewhere = {"DATABASE_URL": "postgresql://nobody@127.0.0.1:1/x"}
    result = cli("--database-url", db_url, "seed", env=elsewhere)
    assert result.returncode == 0, result.stderr


def test_a_bad_count_is_a_usage_error(cli: Cli) -> None:
    result = cli("rollback", "--count", "0")
    assert result.returncode == 2
    assert result.stderr == (
        "dbtools: error: argument --count: must be at least 1, not 0 "
        "(try: dbtools rollback --help)\n"
    )


def test_demo_on_the_embedded_default(cli: Cli, local_dir: Path) -> None:
    """What `make demo` does on a fresh machine: no DATABASE_URL at all, a new embedded cluster."""
    cluster = localdb.default_cluster()
    demo = cli("demo")
    assert demo.returncode == 0, demo.stderr
    assert demo.stdout.splitlines()[:4] == [
        f"started the embedded PostgreSQL (socket in {cluster.placement.socket_dir})",
        "created database 'dbtools_system'",
        "applied 0001_create-tenants",
        "created tenant 'demo' (Demo Tenant)",
    ]
    assert "name        Demo Tenant" in demo.stdout

    url = cli("db", "url")
    assert url.stdout.strip() == cluster.target(config.DEFAULT_DBNAME).url()
    with db.connect(url.stdout.strip()) as conn:
        assert conn.execute("SELECT name FROM tenants WHERE slug = 'demo'").fetchone() == (
            "Demo Tenant",
        )

    again = cli("demo")
    assert "started" not in again.stdout
    assert "tenant 'demo' already exists; left unchanged" in again.stdout

    assert cli("db", "status").returncode == 0
    assert cli("db", "stop").stdout == "stopped the embedded PostgreSQL\n"
    status = cli("--json", "db", "status")
    assert status.returncode == 3
    assert json.loads(status.stdout)["running"] is False


def test_missing_server_binaries_is_one_line(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(localdb, "SERVER_BIN_GLOBS", ())
    monkeypatch.delenv(localdb.BINDIR_VAR, raising=False)
    env = {"PATH": str(tmp_path), localdb.LOCAL_DIR_VAR: str(tmp_path / "local")}
    result = cli("db", "start", env=env)
    assert result.returncode == 3
    assert result.stderr.count("\n") == 1
    assert "apt-get install postgresql" in result.stderr
    assert not (tmp_path / "local").exists()  # nothing was created


def test_dry_run_on_a_missing_database_changes_nothing(cli: Cli, missing_db: Target) -> None:
    result = cli("--database-url", missing_db.url(), "migrate", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"-- would create database {missing_db.dbname!r}\n")
    assert "CREATE TABLE tenants (" in result.stdout
    assert not migrations.database_exists(missing_db)


def test_dry_run_prints_pending_sql_and_applies_nothing(cli: Cli, db_url: str) -> None:
    up_to_date = cli("--database-url", db_url, "migrate", "--dry-run")
    assert "no pending migrations" in up_to_date.stdout

    assert cli("--database-url", db_url, "rollback").returncode == 0
    pending = cli("--database-url", db_url, "--json", "migrate", "--dry-run")
    assert pending.returncode == 0
    [migration] = json.loads(pending.stdout)["pending"]
    assert migration["id"] == "0001_create-tenants"
    assert "CREATE TYPE tenant_status" in migration["sql"]
    assert cli("--database-url", db_url, "status").returncode == 3  # still pending


def test_dry_run_and_status_leave_a_fresh_database_untouched(cli: Cli, missing_db: Target) -> None:
    migrations.ensure_database(missing_db)
    dry_run = cli("--database-url", missing_db.url(), "migrate", "--dry-run")
    assert dry_run.returncode == 0, dry_run.stderr
    assert "CREATE TABLE tenants (" in dry_run.stdout
    assert cli("--database-url", missing_db.url(), "status").returncode == 3
    with db.connect(missing_db) as conn:
        relations = "SELECT count(*) FROM pg_class WHERE relnamespace = 'public'::regnamespace"
        assert conn.execute(relations).fetchone() == (0,)


def test_rollback_of_everything_then_migrate(
    cli: Cli, db_url: str, conn: psycopg.Connection[Any]
) -> None:
    result = cli("--database-url", db_url, "--json", "rollback", "--count", "5")
    assert json.loads(result.stdout) == {"rolled_back": ["0001_create-tenants"]}
    assert cli("--database-url", db_url, "rollback").stdout == "nothing to roll back\n"
    assert cli("--database-url", db_url, "migrate").stdout == "applied 0001_create-tenants\n"


@pytest.mark.parametrize("command", ["start", "stop", "status", "url"])
def test_db_commands_refuse_a_database_url(cli: Cli, db_url: str, command: str) -> None:
    """They act on the embedded cluster only; silently ignoring the URL would mislead."""
    result = cli("--database-url", db_url, "db", command)
    assert result.returncode == 2
    assert "the db commands work on the embedded PostgreSQL only" in result.stderr


def test_rows_a_migration_returns_do_not_break_json(
    cli: Cli, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for source in migrations.MIGRATIONS_DIR.glob("*.sql"):
        (tmp_path / source.name).write_text(source.read_text())
    (tmp_path / "0002_select.sql").write_text("-- Returns a row.\nSELECT 42 AS answer;\n")
    monkeypatch.setattr(migrations, "MIGRATIONS_DIR", tmp_path)
    result = cli("--database-url", db_url, "--json", "migrate")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["applied"] == ["0002_select"]
    assert "answer" in result.stderr  # yoyo's table of the rows, out of the way
