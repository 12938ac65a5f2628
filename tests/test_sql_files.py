"""The migration files themselves: squawk-clean, and written to the house conventions."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dbtools.migrations import MIGRATIONS_DIR

PROJECT = MIGRATIONS_DIR.parent
MIGRATIONS = sorted(p for p in MIGRATIONS_DIR.glob("*.sql") if not p.name.endswith(".rollback.sql"))
ALL_SQL = sorted(MIGRATIONS_DIR.glob("*.sql"))
NAME = re.compile(r"\d{4}_[a-z0-9]+(-[a-z0-9]+)*\.sql")


def squawk(*files: Path) -> subprocess.CompletedProcess[str]:
    executable = shutil.which("squawk", path=str(Path(sys.executable).parent)) or "squawk"
    return subprocess.run(
        [executable, *map(str, files)], cwd=PROJECT, capture_output=True, text=True, check=False
    )


def test_there_are_migrations() -> None:
    assert MIGRATIONS, f"no migrations in {MIGRATIONS_DIR}"


def test_squawk_passes_on_every_migration() -> None:
    result = squawk(*ALL_SQL)
    assert result.returncode == 0, result.stdout + result.stderr


def test_squawk_would_catch_a_dangerous_migration(tmp_path: Path) -> None:
    """Proves the lint above can fail: the same configuration flags a blocking index build."""
    bad = tmp_path / "0099_bad.sql"
    bad.write_text("-- Bad.\nCREATE INDEX tenants_name_idx ON tenants (name);\n")
    result = squawk(bad)
    assert result.returncode != 0
    assert "require-concurrent-index-creation" in result.stdout


@pytest.mark.parametrize("migration", MIGRATIONS, ids=lambda p: p.name)
def test_migration_follows_the_conventions(migration: Path) -> None:
    assert NAME.fullmatch(migration.name)
    rollback = migration.with_name(migration.name.removesuffix(".sql") + ".rollback.sql")
    assert rollback.is_file(), f"{migration.name} has no rollback twin"
    for path in (migration, rollback):
        text = path.read_text()
        first_line = text.splitlines()[0]
        assert first_line.startswith("-- "), f"{path.name}: line 1 is not a comment"
        assert first_line.endswith("."), f"{path.name}: line 1 is not one sentence"
        assert "SET LOCAL lock_timeout" in text, f"{path.name} sets no lock_timeout"
        assert "SET LOCAL statement_timeout" in text, f"{path.name} sets no statement_timeout"
        statements = re.findall(r"^\s*(BEGIN|COMMIT|ROLLBACK)\s*;", text, re.I | re.M)
        assert statements == [], f"{path.name}: yoyo wraps migrations in a transaction"


def test_only_migrations_live_in_sql() -> None:
    stray = [
        p.name
        for p in MIGRATIONS_DIR.iterdir()
        if p.suffix == ".sql" and not NAME.fullmatch(p.name.replace(".rollback.sql", ".sql"))
    ]
    assert stray == []
