"""`dbtools migrate|rollback|status|seed|demo|db ...` as an operator runs them (in-process)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import psycopg
import pytest

from dbtools import config, db, localdb, migrations
from dbtools.config import Target
from dbtools.errors import MigrationEdited, MigrationError
from tests.helpers import MIGRATION_IDS, Cli, copy_migrations


def test_migrate_creates_the_database_then_reports_nothing_pending(
    cli: Cli, missing_db: Target
) -> None:
    first = cli("migrate", env={"DATABASE_URL": missing_db.url()})
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines() == [
        f"created database {missing_db.dbname!r}",
        *(f"applied {migration_id}" for migration_id in MIGRATION_IDS),
    ]

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
    assert applied.stdout.splitlines()[-1] == f"{len(MIGRATION_IDS)} applied, 0 pending"

    rolled_back = cli("--database-url", db_url, "rollback")
    assert rolled_back.returncode == 0
    assert rolled_back.stdout == f"rolled back {MIGRATION_IDS[-1]}\n"

    pending = cli("--database-url", db_url, "status")
    assert pending.returncode == 3
    assert pending.stdout.splitlines()[-2:] == [
        f"pending  {'':<23} {MIGRATION_IDS[-1]}",
        f"{len(MIGRATION_IDS) - 1} applied, 1 pending",
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
    assert demo.stdout.splitlines()[: 3 + len(MIGRATION_IDS)] == [
        f"started the embedded PostgreSQL (socket in {cluster.placement.socket_dir})",
        "created database 'dbtools_system'",
        *(f"applied {migration_id}" for migration_id in MIGRATION_IDS),
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
    assert migration["id"] == MIGRATION_IDS[-1]
    assert migration["sql"] == (migrations.MIGRATIONS_DIR / f"{MIGRATION_IDS[-1]}.sql").read_text()
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
    result = cli("--database-url", db_url, "--json", "rollback", "--count", "50")
    assert json.loads(result.stdout) == {"rolled_back": MIGRATION_IDS[::-1]}
    assert cli("--database-url", db_url, "rollback").stdout == "nothing to roll back\n"
    applied = cli("--database-url", db_url, "migrate").stdout
    assert applied == "".join(f"applied {migration_id}\n" for migration_id in MIGRATION_IDS)


@pytest.mark.parametrize("command", ["start", "stop", "status", "url"])
def test_db_commands_refuse_a_database_url(cli: Cli, db_url: str, command: str) -> None:
    """They act on the embedded cluster only; silently ignoring the URL would mislead."""
    result = cli("--database-url", db_url, "db", command)
    assert result.returncode == 2
    assert "the db commands work on the embedded PostgreSQL only" in result.stderr


@pytest.mark.parametrize("json_output", [True, False])
def test_rows_a_migration_returns_stay_out_of_stdout(
    cli: Cli, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, json_output: bool
) -> None:
    """yoyo prints a table of the rows a migration's SELECT returns: on stderr, out of the way
    of the one JSON document (or the plain report) on stdout."""
    copy_migrations(tmp_path, ("0099_select.sql", "-- Returns a row.\nSELECT 42 AS answer;\n"))
    monkeypatch.setattr(migrations, "MIGRATIONS_DIR", tmp_path)
    result = cli("--database-url", db_url, *(["--json"] if json_output else []), "migrate")
    assert result.returncode == 0, result.stderr
    if json_output:
        assert json.loads(result.stdout)["applied"] == ["0099_select"]
    else:
        assert result.stdout == "applied 0099_select\n"
    assert "answer" in result.stderr


@pytest.mark.parametrize("command", [["migrate"], ["migrate", "--dry-run"], ["status"], ["demo"]])
def test_a_missing_migrations_folder_is_a_configuration_error_before_anything_is_created(
    cli: Cli,
    missing_db: Target,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    command: list[str],
) -> None:
    monkeypatch.setattr(migrations, "MIGRATIONS_DIR", tmp_path / "nowhere")
    result = cli("--database-url", missing_db.url(), *command)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == (
        f"dbtools: error: the migrations folder {tmp_path / 'nowhere'} does not exist\n"
    )
    assert not migrations.database_exists(missing_db)


def test_an_unreadable_migration_is_a_configuration_error(
    cli: Cli, missing_db: Target, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Even root cannot read /proc/self/mem from its start: an OSError at read time."""
    folder = copy_migrations(tmp_path / "sql")
    (folder / "0099_unreadable.sql").symlink_to("/proc/self/mem")
    monkeypatch.setattr(migrations, "MIGRATIONS_DIR", folder)
    result = cli("--database-url", missing_db.url(), "migrate")
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"dbtools: error: cannot read the migrations in {folder}: ")
    assert not migrations.database_exists(missing_db)


def test_a_missing_migrations_folder_starts_no_embedded_cluster(
    cli: Cli, local_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(migrations, "MIGRATIONS_DIR", tmp_path / "nowhere")
    for command in (["migrate"], ["demo"], ["status"], ["rollback"], ["migrate", "--dry-run"]):
        result = cli(*command)
        assert result.returncode == 2, (command, result.stderr)
        assert "started the embedded PostgreSQL" not in result.stdout + result.stderr
    assert not local_dir.exists()


@pytest.mark.parametrize(
    ("name", "text", "reason"),
    [
        (
            "0099_orphan.sql",
            "-- Depends on nothing that exists.\n-- depends: 0098_gone\nSELECT 1;\n",
            "Could not resolve dependencies in",
        ),
        ("0099_broken.py", "from yoyo import step\nstep(\n", "0099_broken.py: SyntaxError: "),
    ],
)
def test_a_broken_migration_fails_in_one_line_before_the_database_is_created(
    cli: Cli,
    missing_db: Target,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    text: str,
    reason: str,
) -> None:
    folder = copy_migrations(tmp_path / "sql", (name, text))
    monkeypatch.setattr(migrations, "MIGRATIONS_DIR", folder)
    for command in (["migrate"], ["migrate", "--dry-run"], ["status"]):
        result = cli("--database-url", missing_db.url(), *command)
        assert result.returncode == 3, (command, result.stderr)
        assert result.stderr.startswith(f"dbtools: error: cannot read the migrations in {folder}")
        assert reason in result.stderr
        assert len(result.stderr.splitlines()) == 1
    assert not migrations.database_exists(missing_db)


def test_a_dependency_cycle_is_a_migration_error(tmp_path: Path) -> None:
    folder = copy_migrations(
        tmp_path / "sql",
        ("0098_a.sql", "-- A.\n-- depends: 0099_b\nSELECT 1;\n"),
        ("0099_b.sql", "-- B.\n-- depends: 0098_a\nSELECT 1;\n"),
    )
    with pytest.raises(MigrationError, match="Circular dependencies among these migrations"):
        migrations.listed(folder)


def test_a_folder_without_migrations_is_a_configuration_error(
    cli: Cli, missing_db: Target, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(migrations, "MIGRATIONS_DIR", tmp_path)
    result = cli("--database-url", missing_db.url(), "migrate")
    assert (result.returncode, result.stderr) == (
        2,
        f"dbtools: error: the migrations folder {tmp_path} holds no migration\n",
    )
    assert not migrations.database_exists(missing_db)


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("0099_bom.sql", b"\xef\xbb\xbf-- A BOM.\nSELECT 1;\n", "starts with a byte-order mark"),
        ("0099_exits.py", b"import sys\nsys.exit(0)\n", "exits while it is loaded (code 0)"),
        (b"0099_\xff.sql", b"-- Fine.\nSELECT 1;\n", "is not UTF-8"),
    ],
    ids=["bom", "sys-exit", "name-not-utf8"],
)
def test_migrations_that_would_fail_mid_run_or_end_the_program_are_refused_first(
    cli: Cli,
    missing_db: Target,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    name: str | bytes,
    content: bytes,
    reason: str,
) -> None:
    folder = copy_migrations(tmp_path / "sql")
    (folder / os.fsdecode(name)).write_bytes(content)
    monkeypatch.setattr(migrations, "MIGRATIONS_DIR", folder)
    for command in (["migrate"], ["status"]):
        result = cli("--database-url", missing_db.url(), *command)
        assert result.returncode == 3, (command, result.stderr)
        assert reason in result.stderr
        assert len(result.stderr.splitlines()) == 1
    assert not migrations.database_exists(missing_db)


@pytest.mark.parametrize("command", [["schema", "dump", "--file", "out.sql"], ["schema", "check"]])
def test_schema_commands_read_the_folder_before_starting_the_embedded_cluster(
    cli: Cli, local_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: list[str]
) -> None:
    monkeypatch.setattr(migrations, "MIGRATIONS_DIR", tmp_path / "nowhere")
    result = cli(*command)
    assert result.returncode == 2, result.stderr
    assert not local_dir.exists()


def test_db_stop_without_a_cluster_creates_nothing(cli: Cli, local_dir: Path) -> None:
    result = cli("db", "stop")
    assert result.stdout == "the embedded PostgreSQL is not running\n"
    assert not local_dir.exists()


def test_an_edited_python_migration_is_caught_too(target: Target, tmp_path: Path) -> None:
    step = 'from yoyo import step\nstep("CREATE TABLE py_thing (id int)", "DROP TABLE py_thing")\n'
    folder = copy_migrations(tmp_path / "sql", ("0099_py-thing.py", step))
    assert migrations.apply(target, folder) == ["0099_py-thing"]
    (folder / "0099_py-thing.py").write_text(step.replace("(id int)", "(id int, evil text)"))
    with pytest.raises(MigrationEdited, match=r"0099_py-thing\.py was edited"):
        migrations.status(target, folder)
