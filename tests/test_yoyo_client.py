"""Plain ``yoyo`` as a first-class client of the same migrations: what a DBA runs by hand or in
a script, alongside dbtools, on the same database."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest

from dbtools import db, migrations
from dbtools.config import Target
from dbtools.errors import MigrationEdited
from tests.helpers import MIGRATION_IDS, PROJECT, copy_migrations

YOYO = Path(sys.executable).parent / "yoyo"


def yoyo(*args: str, cwd: Path = PROJECT) -> subprocess.CompletedProcess[str]:
    """Run the yoyo command as a script does: no terminal on stdin or stdout."""
    return subprocess.run(
        [str(YOYO), *args],
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def recorded(conn: psycopg.Connection[Any]) -> dict[str, str]:
    rows = conn.execute("SELECT migration_id, sha256 FROM _dbtools_migration_checksum")
    return dict(rows.fetchall())


def test_the_project_yoyo_ini_rolls_back_one_migration_in_a_script(target: Target) -> None:
    """yoyo.ini used to say batch_mode = off: a scripted rollback crashed on termios."""
    result = yoyo("rollback", "--database", target.yoyo_url)
    assert result.returncode == 0, result.stderr
    assert "termios" not in result.stderr
    applied = [state.id for state in migrations.status(target) if state.applied_at is not None]
    assert applied == MIGRATION_IDS[:-1]

    result = yoyo("apply", "--database", target.yoyo_url)
    assert result.returncode == 0, result.stderr
    assert [state.applied_at is not None for state in migrations.status(target)] == [True] * len(
        MIGRATION_IDS
    )


def test_yoyo_apply_records_checksums_so_a_later_edit_is_caught(
    missing_db: Target, tmp_path: Path
) -> None:
    folder = copy_migrations(tmp_path / "sql")
    migrations.ensure_database(missing_db)
    result = yoyo("apply", "--no-config-file", "--database", missing_db.yoyo_url, str(folder))
    assert result.returncode == 0, result.stderr
    with db.connect(missing_db) as conn:
        assert recorded(conn) == {
            migration_id: migrations.file_checksum(folder / f"{migration_id}.sql")
            for migration_id in MIGRATION_IDS
        }
    first = folder / f"{MIGRATION_IDS[0]}.sql"
    first.write_text(first.read_text() + "\n-- edited after yoyo applied it\n")
    with pytest.raises(MigrationEdited):
        migrations.status(missing_db, folder)


def test_yoyo_rollback_edit_and_apply_is_not_an_edited_migration(
    target: Target, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    """Rolled back by yoyo (no hook runs), edited while unapplied, applied again by yoyo: the
    file as applied now is what counts, not the checksum of the first application."""
    folder = copy_migrations(tmp_path / "sql")
    newest = folder / f"{MIGRATION_IDS[-1]}.sql"
    args = ("--no-config-file", "--database", target.yoyo_url, str(folder))
    assert yoyo("rollback", *args).returncode == 0
    newest.write_text(newest.read_text() + "\n-- reworded while it was not applied\n")
    result = yoyo("apply", *args)
    assert result.returncode == 0, result.stderr

    states = migrations.status(target, folder)
    assert [state.applied_at is not None for state in states] == [True] * len(MIGRATION_IDS)
    assert recorded(conn)[MIGRATION_IDS[-1]] == migrations.file_checksum(newest)


def test_dbtools_applies_what_yoyo_rolled_back_and_was_edited_since(
    target: Target, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    folder = copy_migrations(tmp_path / "sql")
    newest = folder / f"{MIGRATION_IDS[-1]}.sql"
    assert (
        yoyo("rollback", "--no-config-file", "--database", target.yoyo_url, str(folder)).returncode
        == 0
    )
    newest.write_text(newest.read_text() + "\n-- reworded while it was not applied\n")
    assert migrations.apply(target, folder) == [MIGRATION_IDS[-1]]
    assert recorded(conn)[MIGRATION_IDS[-1]] == migrations.file_checksum(newest)


def test_checksums_recorded_before_the_table_knew_applications_are_kept(
    target: Target, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    """The table's first version had no applied_at_utc: its checksums still catch an edit."""
    conn.execute("ALTER TABLE _dbtools_migration_checksum DROP COLUMN applied_at_utc")
    folder = copy_migrations(tmp_path / "sql")
    first = folder / f"{MIGRATION_IDS[0]}.sql"
    first.write_text(first.read_text() + "\n-- edited\n")
    for operation in (migrations.status, migrations.apply):
        with pytest.raises(MigrationEdited):
            operation(target, migrations_dir=folder)
    columns = "SELECT count(*) FROM _dbtools_migration_checksum WHERE applied_at_utc IS NULL"
    assert conn.execute(columns).fetchone() == (0,)  # upgraded by the apply, and pinned


def test_the_post_apply_hook_ships_with_the_migrations() -> None:
    """Without it, nothing would record checksums (and no edit would ever be caught)."""
    hooks = [Path(hook.path).name for hook in migrations._read(None).post_apply]
    assert hooks == ["post-apply.py"]
