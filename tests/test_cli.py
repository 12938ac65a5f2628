"""The dbtools command as an operator runs it: output, exit codes, one-line errors, no passwords."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from dbtools import config, localdb
from tests.conftest import SERVER, remove_cluster


def test_migrate_creates_the_database_then_reports_nothing_pending(
    run_cli: Any, missing_db: str
) -> None:
    first = run_cli("migrate", env={"DATABASE_URL": missing_db})
    assert first.returncode == 0, first.stderr
    assert "created database 'dbtools_new_" in first.stdout
    assert "applied 0001_create-tenants" in first.stdout

    second = run_cli("migrate", env={"DATABASE_URL": missing_db})
    assert second.returncode == 0, second.stderr
    assert "no pending migrations" in second.stdout
    assert "created" not in second.stdout


def test_status_exits_3_while_migrations_are_pending(run_cli: Any, db_url: str) -> None:
    applied = run_cli("--database-url", db_url, "status")
    assert applied.returncode == 0
    assert "1 applied, 0 pending" in applied.stdout

    rolled_back = run_cli("--database-url", db_url, "rollback")
    assert rolled_back.returncode == 0
    assert "rolled back 0001_create-tenants" in rolled_back.stdout

    pending = run_cli("--database-url", db_url, "status")
    assert pending.returncode == 3
    assert "pending " in pending.stdout
    assert "0 applied, 1 pending" in pending.stdout


def test_seed_twice(run_cli: Any, db_url: str) -> None:
    first = run_cli("seed", env={"DATABASE_URL": db_url})
    assert first.returncode == 0
    assert "created tenant 'demo'" in first.stdout
    second = run_cli("seed", env={"DATABASE_URL": db_url})
    assert second.returncode == 0
    assert "already exists; left unchanged" in second.stdout


def test_two_seed_processes_racing(
    run_cli: Any, db_url: str, conn: psycopg.Connection[Any]
) -> None:
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda _: run_cli("seed", env={"DATABASE_URL": db_url}), range(2)))
    assert [r.returncode for r in results] == [0, 0]
    created = [r.stdout for r in results if "created tenant 'demo'" in r.stdout]
    existed = [r.stdout for r in results if "already exists; left unchanged" in r.stdout]
    assert (len(created), len(existed)) == (1, 1)
    assert conn.execute("SELECT count(*) FROM tenants").fetchone() == (1,)


def test_dotenv_in_the_current_folder_is_read(run_cli: Any, db_url: str, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(f"DATABASE_URL={db_url}\n")
    result = run_cli("seed")
    assert result.returncode == 0, result.stderr
    assert "created tenant 'demo'" in result.stdout


def test_database_url_option_wins_over_the_environment(run_cli: Any, db_url: str) -> None:
    result = run_cli(
        "--database-url", db_url, "seed", env={"DATABASE_URL": "postgresql://nobody@127.0.0.1:1/x"}
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("url", "code", "complaint"),
    [
        ("postgresql://admin:TopSecret42@127.0.0.1:1/dbtools_system", 3, "cannot connect"),
        ("postgresql://admin:TopSecret42@/dbtools_system?host=/nonexistent", 3, "cannot connect"),
        ("postgresql://admin:TopSecret42@host:nope/dbtools_system", 2, "invalid port"),
        ("mysql://admin:TopSecret42@host/dbtools_system", 2, "must start with postgresql://"),
    ],
)
@pytest.mark.parametrize("command", ["migrate", "seed", "status"])
def test_bad_or_unreachable_database_is_one_line_without_password(
    run_cli: Any, url: str, code: int, complaint: str, command: str
) -> None:
    result = run_cli(command, env={"DATABASE_URL": url})
    assert result.returncode == code
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("dbtools: error: ")
    assert complaint in result.stderr
    assert "TopSecret42" not in result.stderr


def test_usage_error_exits_2(run_cli: Any) -> None:
    result = run_cli("rollback", "--count", "0")
    assert result.returncode == 2
    assert "must be at least 1" in result.stderr


def test_demo_on_the_embedded_default(
    run_cli: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What `make demo` does on a fresh machine: no DATABASE_URL at all, a new embedded cluster."""
    local_dir = tmp_path / "local"
    monkeypatch.setenv(localdb.LOCAL_DIR_VAR, str(local_dir))
    cluster = localdb.default_cluster()
    env = {localdb.LOCAL_DIR_VAR: str(local_dir)}
    try:
        demo = run_cli("demo", env=env)
        assert demo.returncode == 0, demo.stderr
        assert "started the embedded PostgreSQL" in demo.stdout
        assert "created database 'dbtools_system'" in demo.stdout
        assert "created tenant 'demo'" in demo.stdout
        assert "name        Demo Tenant" in demo.stdout

        url = run_cli("db", "url", env=env)
        assert url.stdout.strip() == cluster.url(config.DEFAULT_DBNAME)
        with psycopg.connect(**config.parse_url(url.stdout.strip())) as conn:
            assert conn.execute("SELECT name FROM tenants WHERE slug = 'demo'").fetchone() == (
                "Demo Tenant",
            )

        assert run_cli("db", "status", env=env).returncode == 0
        stop = run_cli("db", "stop", env=env)
        assert stop.returncode == 0
        assert "stopped" in stop.stdout
        status = run_cli("db", "status", env=env)
        assert status.returncode == 3
        assert "stopped" in status.stdout
    finally:
        remove_cluster(cluster)


def test_missing_server_binaries_is_one_line(run_cli: Any, tmp_path: Path) -> None:
    script = (
        "import sys; from dbtools import localdb, cli; localdb.SERVER_BIN_GLOBS = (); "
        "sys.exit(cli.main(['db', 'start']))"
    )
    result = run_cli_python(run_cli, script, tmp_path)
    assert result.returncode == 3
    assert result.stderr.count("\n") == 1
    assert "apt-get install postgresql" in result.stderr


def run_cli_python(run_cli: Any, script: str, empty: Path) -> Any:
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, "-c", script],
        env={
            "PATH": str(empty),
            localdb.LOCAL_DIR_VAR: str(empty / "local"),
            localdb.BINDIR_VAR: str(empty),
        },
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def test_dry_run_on_a_missing_database_changes_nothing(run_cli: Any, missing_db: str) -> None:
    result = run_cli("--database-url", missing_db, "migrate", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("-- would create database 'dbtools_new_")
    assert "CREATE TABLE tenants (" in result.stdout
    dbname = config.parse_url(missing_db)["dbname"]
    with psycopg.connect(**(SERVER | {"dbname": "postgres"})) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone()
    assert exists is None


def test_dry_run_prints_pending_sql_and_applies_nothing(run_cli: Any, db_url: str) -> None:
    up_to_date = run_cli("--database-url", db_url, "migrate", "--dry-run")
    assert "no pending migrations" in up_to_date.stdout

    run_cli("--database-url", db_url, "rollback")
    pending = run_cli("--database-url", db_url, "--json", "migrate", "--dry-run")
    assert pending.returncode == 0
    [migration] = json.loads(pending.stdout)["pending"]
    assert migration["id"] == "0001_create-tenants"
    assert "CREATE TYPE tenant_status" in migration["sql"]
    assert run_cli("--database-url", db_url, "status").returncode == 3  # still pending


def test_dry_run_and_status_leave_a_fresh_database_untouched(run_cli: Any, missing_db: str) -> None:
    with psycopg.connect(**(SERVER | {"dbname": "postgres"}), autocommit=True) as conn:
        dbname = config.parse_url(missing_db)["dbname"]
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    dry_run = run_cli("--database-url", missing_db, "migrate", "--dry-run")
    assert dry_run.returncode == 0, dry_run.stderr
    assert "CREATE TABLE tenants (" in dry_run.stdout
    assert run_cli("--database-url", missing_db, "status").returncode == 3
    with psycopg.connect(**config.parse_url(missing_db)) as conn:
        count = conn.execute(
            "SELECT count(*) FROM pg_class WHERE relnamespace = 'public'::regnamespace"
        )
        assert count.fetchone() == (0,)
