"""What only a real ``dbtools`` process shows: the console script, the cost of ``--help``, the exit
codes the shell sees, and two processes racing. Everything else runs in-process (test_cli*.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg
import pytest

from dbtools import __version__, config, migrations
from dbtools.config import Target
from tests.helpers import Cli, copy_migrations, row_count, run_python


def test_the_console_script_is_installed_and_runs(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "dbtools"
    result = subprocess.run(
        [str(script), "--version"], capture_output=True, text=True, check=False, cwd=tmp_path
    )
    assert (result.returncode, result.stdout) == (0, f"dbtools {__version__}\n")


def test_help_imports_nothing_heavy() -> None:
    script = (
        "import sys\n"
        "from dbtools import cli\n"
        "code = cli.main(['--help'])\n"
        "heavy = sorted(m for m in ('psycopg', 'pydantic', 'yoyo', 'dotenv') if m in sys.modules)\n"
        "print('exit', code, 'heavy', heavy, file=sys.stderr)\n"
    )
    result = run_python("-c", script)
    assert result.stderr == "exit 0 heavy []\n"


def test_exit_codes_reach_the_shell(console: Cli, db_url: str) -> None:
    assert console("--database-url", db_url, "status").returncode == 0
    missing = console("--database-url", db_url, "tenants", "show", "nobody")
    assert (missing.returncode, missing.stderr) == (
        1,
        "dbtools: error: no tenant with slug 'nobody'\n",
    )
    usage = console("tenants", "list", "--limit", "0")
    assert usage.returncode == 2
    unreachable = console("--database-url", "postgresql://u:Zq1@127.0.0.1:1/db", "status")
    assert unreachable.returncode == 3
    assert unreachable.stderr.startswith("dbtools: error: cannot connect to database 'db' on ")
    assert "Zq1" not in unreachable.stderr


def test_two_seed_processes_racing(
    console: Cli, db_url: str, conn: psycopg.Connection[Any]
) -> None:
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda _: console("seed", env={"DATABASE_URL": db_url}), range(2)))
    assert [r.returncode for r in results] == [0, 0]
    assert sorted(r.stdout for r in results) == [
        "created tenant 'demo' (Demo Tenant)\n",
        "tenant 'demo' already exists; left unchanged\n",
    ]
    assert row_count(conn) == 1


def test_a_reader_that_goes_away_ends_the_command_quietly(db_url: str, tmp_path: Path) -> None:
    """`dbtools tenants list | head -0`: no traceback, no "internal error", exit 141 like cat."""
    process = subprocess.Popen(
        [sys.executable, "-m", "dbtools", "--database-url", db_url, "tenants", "list"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=tmp_path,
    )
    assert process.stdout is not None
    process.stdout.close()  # before the command can print anything
    _, stderr = process.communicate(timeout=60)
    assert (process.returncode, stderr) == (141, b"")


# A migration that half-does its work, then sleeps while the table sleep_flag exists.
SLOW_MIGRATION = """-- Half done, then takes its time.
CREATE TABLE half_done (id int);
SELECT pg_sleep(CASE WHEN to_regclass('sleep_flag') IS NULL THEN 0 ELSE 60 END);
"""


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL], ids=["TERM", "KILL"])
def test_a_migrate_killed_mid_migration_leaves_no_lock_and_the_next_one_completes_it(
    target: Target, conn: psycopg.Connection[Any], tmp_path: Path, signum: int
) -> None:
    """What a CI or Kubernetes timeout sends. The killed migration leaves the database as it
    was before it; the next migrate, with no manual step, applies it once and at once."""
    folder = copy_migrations(tmp_path / "sql", ("0099_slow.sql", SLOW_MIGRATION))
    conn.execute("CREATE TABLE sleep_flag ()")
    script = (
        "import sys; from pathlib import Path; from dbtools import cli, migrations\n"
        f"migrations.MIGRATIONS_DIR = Path({str(folder)!r})\n"
        f"sys.exit(cli.main(['--database-url', {target.url()!r}, 'migrate']))\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 60
    while not conn.execute(
        "SELECT 1 FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep%'"
    ).fetchone():
        assert time.monotonic() < deadline, "the slow migration never started"
        time.sleep(0.05)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=60)
    if signum == signal.SIGTERM:
        assert (process.returncode, stderr) == (143, "dbtools: error: terminated\n")
    else:
        assert process.returncode == -signal.SIGKILL
    conn.execute("DROP TABLE sleep_flag")

    started = time.monotonic()
    assert migrations.apply(target, folder) == ["0099_slow"]  # waits for no stale lock
    assert time.monotonic() - started < config.DEFAULT_MIGRATION_LOCK_WAIT
    assert conn.execute("SELECT to_regclass('half_done') IS NOT NULL").fetchone() == (True,)
    assert conn.execute("SELECT count(*) FROM yoyo_lock").fetchone() == (0,)
    applied = "SELECT count(*) FROM _yoyo_migration WHERE migration_id = '0099_slow'"
    assert conn.execute(applied).fetchone() == (1,)


def test_an_import_from_a_slow_pipe_connects_once_it_is_read(
    db_url: str, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    """The command reads standard input to its end before it connects: a session would
    otherwise sit idle while the writer of the pipe takes its time, and a server that ends idle
    sessions (idle_session_timeout) would drop it before the rows arrive."""
    import_ = subprocess.Popen(
        [sys.executable, "-m", "dbtools", "--database-url", db_url, "tenants", "import", "-"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PGOPTIONS": "-c idle_session_timeout=500"},
    )
    assert import_.stdin is not None
    import_.stdin.write("slug,name\nacme,Acme\n")
    import_.stdin.flush()
    time.sleep(1.5)  # three idle_session_timeouts
    out, err = import_.communicate("globex,Globex\n", timeout=60)
    assert (import_.returncode, err) == (0, "")
    assert out == "imported 2 tenants from standard input\n"
    assert row_count(conn) == 2
