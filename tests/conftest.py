"""Shared fixtures: a real PostgreSQL, a migrated template database, and a fresh clone per test.

The server is ``DBTOOLS_TEST_DATABASE_URL`` when set (a role that may create databases), else a
throw-away embedded cluster (no fsync) made for this session in ``.dbtools/test-<pid>`` and
deleted after it, so two test sessions never share one. Migrations are applied once into
pytest-postgresql's template database; each test gets a clone of it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
import pytest
from psycopg import sql
from pytest_postgresql import factories

from dbtools import config, localdb, migrations

PROJECT = Path(__file__).resolve().parent.parent
TEST_SERVER_VAR = "DBTOOLS_TEST_DATABASE_URL"


def _server() -> tuple[dict[str, Any], localdb.Cluster | None]:
    url = os.environ.get(TEST_SERVER_VAR)
    if url:
        return config.parse_url(url), None
    cluster = localdb.cluster(f"test-{os.getpid()}", durable=False)
    return config.parse_url(cluster.url("postgres")), cluster


SERVER, TEST_CLUSTER = _server()


def url_for(dbname: str, server: dict[str, Any] = SERVER) -> str:
    """A libpq URL for ``dbname`` on the test server."""
    user = quote(server.get("user", ""), safe="")
    password = server.get("password")
    userinfo = f"{user}:{quote(password, safe='')}@" if password else f"{user}@"
    query = f"host={quote(server.get('host', ''), safe='/')}&port={server.get('port', '5432')}"
    return f"postgresql://{userinfo}/{quote(dbname, safe='')}?{query}"


def remove_cluster(cluster: localdb.Cluster) -> None:
    """Stop a throw-away cluster; delete it, and the /tmp/dbtools-* folder it moved to, if any."""
    cluster.stop()
    moved = cluster.root.parent.name.startswith("dbtools-")
    shutil.rmtree(cluster.root.parent if moved else cluster.root, ignore_errors=True)
    (cluster.root.parent / f".{cluster.root.name}.lock").unlink(missing_ok=True)


def _load_migrations(*, dbname: str, **_: Any) -> None:
    migrations.apply(url_for(dbname))


@pytest.fixture(scope="session", autouse=True)
def _test_server() -> Iterator[None]:
    """Start the embedded test cluster for the session (nothing to do for an external server)."""
    if TEST_CLUSTER is None:
        yield
        return
    TEST_CLUSTER.start()
    yield
    remove_cluster(TEST_CLUSTER)


postgresql_noproc = factories.postgresql_noproc(
    host=SERVER.get("host"),
    port=SERVER.get("port", "5432"),
    user=SERVER.get("user"),
    password=SERVER.get("password"),
    dbname=f"dbtools_test_{os.getpid()}",  # the server may be shared with other sessions
    load=[_load_migrations],
)
postgresql = factories.postgresql("postgresql_noproc")


@pytest.fixture
def conn(postgresql: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    """An autocommit connection to a freshly migrated database of its own."""
    postgresql.autocommit = True
    return postgresql


@pytest.fixture
def db_url(postgresql: psycopg.Connection[Any]) -> str:
    """The URL of this test's freshly migrated database."""
    return url_for(postgresql.info.dbname)


@pytest.fixture
def missing_db() -> Iterator[str]:
    """The URL of a database that does not exist yet on the test server; dropped afterwards."""
    dbname = f"dbtools_new_{uuid.uuid4().hex[:8]}"
    yield url_for(dbname)
    with psycopg.connect(**(SERVER | {"dbname": "postgres"}), autocommit=True) as conn:
        drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname))
        conn.execute(drop)


@pytest.fixture
def connect(db_url: str) -> Iterator[Any]:
    """Open more connections to this test's database; all are closed afterwards."""
    opened: list[psycopg.Connection[Any]] = []

    def _connect(**kwargs: Any) -> psycopg.Connection[Any]:
        opened.append(psycopg.connect(**config.parse_url(db_url), **kwargs))
        return opened[-1]

    yield _connect
    for connection in opened:
        connection.close()


@pytest.fixture
def run_cli(tmp_path: Path) -> Any:
    """Run the real ``dbtools`` command in a subprocess, from an empty folder (no .env)."""

    def _run(*args: str, env: dict[str, Any] | None = None) -> subprocess.CompletedProcess[str]:
        environ = {k: v for k, v in os.environ.items() if k != config.DATABASE_URL_VAR}
        return subprocess.run(
            [sys.executable, "-m", "dbtools", *args],
            cwd=tmp_path,
            env=environ | (env or {}),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    return _run
