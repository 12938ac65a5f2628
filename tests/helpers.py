"""What several test modules share: the test server, small queries, and running Python apart.

Fixtures live in ``conftest.py``; plain helpers live here and are imported by name.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from dbtools import localdb, migrations
from dbtools.config import Target

PROJECT = Path(__file__).resolve().parent.parent
TEST_SERVER_VAR = "DBTOOLS_TEST_DATABASE_URL"
# Every migration of the project, in the order yoyo applies them.
MIGRATION_IDS = [state.id for state in migrations.listed()]
# Text that would do harm if it ever reached SQL unparameterised.
INJECTION = "'; DROP TABLE tenants; --"
# A RAM-backed folder where there is one, for throw-away clusters: CREATE DATABASE from the
# template (once per test) takes 15-20 ms there against 300-400 ms on this machine's disk.
_SHM = Path("/dev/shm")  # noqa: S108 - only throw-away test clusters live there
FAST_TMP = (
    _SHM if _SHM.is_dir() and os.access(_SHM, os.W_OK | os.X_OK) else Path(tempfile.gettempdir())
)


@dataclass(frozen=True)
class CliResult:
    """What one run of the dbtools command printed, and its exit code."""

    returncode: int
    stdout: str
    stderr: str


# The type of the `cli` and `console` fixtures: run dbtools with these arguments.
Cli = Callable[..., CliResult]


def _server() -> tuple[Target, localdb.Cluster | None]:
    url = os.environ.get(TEST_SERVER_VAR)
    if url:
        return Target.from_url(url, origin=TEST_SERVER_VAR), None
    cluster = localdb.cluster(f"dbtools-test-{os.getpid()}", durable=False, base=FAST_TMP)
    return cluster.target("postgres"), cluster


# The server the tests run against: DBTOOLS_TEST_DATABASE_URL, or a throw-away embedded cluster
# of this session's own (started by a session fixture in conftest.py).
SERVER, TEST_CLUSTER = _server()


def target_for(dbname: str) -> Target:
    """Database ``dbname`` on the test server."""
    return SERVER.with_dbname(dbname)


def remove_cluster(cluster: localdb.Cluster) -> None:
    """Stop a throw-away cluster; delete it, and the /tmp/dbtools-* folder it moved to, if any."""
    cluster.stop()
    root = cluster.placement.root
    moved = root.parent.name.startswith("dbtools-")
    shutil.rmtree(root.parent if moved else root, ignore_errors=True)
    cluster.placement.lock_file.unlink(missing_ok=True)


def row_count(conn: psycopg.Connection[Any]) -> int:
    """How many tenants there are."""
    row = conn.execute("SELECT count(*) FROM tenants").fetchone()
    assert row is not None
    return int(row[0])


def run_python(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run this virtualenv's Python with ``args`` in a process of its own."""
    return subprocess.run(
        [sys.executable, *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def copy_migrations(folder: Path, *extra: tuple[str, str]) -> Path:
    """The project's migrations folder copied to ``folder`` (post-apply hook included), plus
    ``extra`` (name, SQL) files."""
    folder.mkdir(exist_ok=True)
    for source in sorted(migrations.MIGRATIONS_DIR.iterdir()):
        if source.is_file():
            (folder / source.name).write_bytes(source.read_bytes())
    for name, text in extra:
        (folder / name).write_text(text)
    return folder
