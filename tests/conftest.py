"""Fixtures: a real PostgreSQL, a migrated template database and a fresh clone per test, and
the dbtools command run in-process.

The server is ``DBTOOLS_TEST_DATABASE_URL`` when set (a role that may create databases), else a
throw-away embedded cluster (no fsync, in RAM where /dev/shm exists) made for this session and
deleted after it, so two test sessions never share one. Migrations are applied once into
pytest-postgresql's template database; each test gets a clone of it.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import psycopg
import pytest
from psycopg import sql
from pytest_postgresql import factories

from dbtools import cli as dbtools_cli
from dbtools import db, localdb
from dbtools.config import Target
from tests.helpers import (
    FAST_TMP,
    PGBOUNCER_MISSING,
    SERVER,
    SIDES,
    TEST_CLUSTER,
    AsyncBridge,
    Cli,
    CliResult,
    PgBouncer,
    Standby,
    pgbouncer_binary,
    remove_cluster,
    run_python,
    target_for,
)


@pytest.fixture(scope="session", autouse=True)
def _test_server() -> Iterator[None]:
    """Start the embedded test cluster for the session (nothing to do for an external server)."""
    if TEST_CLUSTER is None:
        yield
        return
    TEST_CLUSTER.start()
    yield
    remove_cluster(TEST_CLUSTER)


def _started_pgbouncer(name: str, pool_size: int) -> Iterator[PgBouncer]:
    binary = pgbouncer_binary()
    if binary is None:
        pytest.fail(PGBOUNCER_MISSING, pytrace=False)
    bouncer = PgBouncer(SERVER, FAST_TMP / f"{name}-{os.getpid()}", pool_size=pool_size)
    try:
        bouncer.start(binary)
        yield bouncer
    finally:
        bouncer.stop()
        shutil.rmtree(bouncer.folder, ignore_errors=True)


@pytest.fixture(scope="session")
def pgbouncer(_test_server: None) -> Iterator[PgBouncer]:
    """PgBouncer in transaction pooling mode in front of the test server, for the session (one
    per xdist worker), with two server connections per database so that clients share them.
    Fails, rather than skips, when PgBouncer is not installed."""
    yield from _started_pgbouncer("dbtools-pgbouncer", PgBouncer.POOL_SIZE)


# DBTOOLS_TEST_POOLER=pgbouncer: the code under test reaches each test's database through
# PgBouncer in transaction pooling mode (`make test` runs the data-access and command tests so,
# a second time). Tests marked `direct` test session behaviour and keep a direct connection.
THROUGH_PGBOUNCER = os.environ.get("DBTOOLS_TEST_POOLER", "") == "pgbouncer"


@pytest.fixture(scope="session")
def routing_pgbouncer(_test_server: None) -> Iterator[PgBouncer]:
    """The PgBouncer the code under test goes through under DBTOOLS_TEST_POOLER=pgbouncer
    (enough server connections for a test that holds several transactions at once)."""
    yield from _started_pgbouncer("dbtools-routing-pgbouncer", 20)


@pytest.fixture(scope="session")
def standby(_test_server: None) -> Iterator[Standby]:
    """A streaming replica of the test cluster, replaying a second behind (one per xdist
    worker, started by the first test that asks for it)."""
    replica = Standby(FAST_TMP / f"dbtools-standby-{os.getpid()}")
    try:
        replica.start()
        yield replica
    finally:
        replica.stop()


@pytest.fixture
def pooled_target(pgbouncer: PgBouncer, target: Target) -> Target:
    """This test's freshly migrated database, through PgBouncer (transaction pooling)."""
    return pgbouncer.target(target.dbname)


_params = SERVER.params
postgresql_noproc = factories.postgresql_noproc(
    host=_params.get("host"),
    port=_params.get("port", "5432"),
    user=_params.get("user"),
    password=_params.get("password"),
    dbname=f"dbtools_test_{os.getpid()}",  # the server may be shared with other sessions
    load=["dbtools.testing:load_schema"],  # what downstream projects use (see the README)
)
postgresql = factories.postgresql("postgresql_noproc")


@pytest.fixture
def target(postgresql: psycopg.Connection[Any], request: pytest.FixtureRequest) -> Target:
    """This test's freshly migrated database (through PgBouncer under DBTOOLS_TEST_POOLER)."""
    direct = target_for(postgresql.info.dbname)
    if THROUGH_PGBOUNCER and request.node.get_closest_marker("direct") is None:
        bouncer: PgBouncer = request.getfixturevalue("routing_pgbouncer")
        return bouncer.target(direct.dbname)
    return direct


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Tests marked both_sides that take ``conn`` or ``connect`` run once on the sync API and
    once on the async one (AsyncBridge, tests/helpers.py)."""
    if "side" in metafunc.fixturenames and metafunc.definition.get_closest_marker("both_sides"):
        metafunc.parametrize("side", SIDES, indirect=True)


@pytest.fixture
def side(request: pytest.FixtureRequest) -> str:
    """Which API ``conn`` and ``connect`` serve: "sync" (psycopg.Connection), or "async"
    (AsyncBridge) in the second run of a test marked both_sides."""
    return str(getattr(request, "param", "sync"))


@pytest.fixture
def conn(
    postgresql: psycopg.Connection[Any], target: Target, side: str
) -> Iterator[psycopg.Connection[Any]]:
    """An autocommit connection to a freshly migrated database of its own."""
    if side == "async":
        with AsyncBridge.connect(target, autocommit=True) as bridge:
            yield cast(psycopg.Connection[Any], bridge)
        return
    if target.dbname == postgresql.info.dbname and target.hosts == SERVER.hosts:
        postgresql.autocommit = True
        yield postgresql
        return
    with db.connect(target, autocommit=True) as pooled:
        yield pooled


@pytest.fixture
def db_url(target: Target) -> str:
    """The URL of this test's freshly migrated database, as an operator would type it."""
    return target.url()


@pytest.fixture
def missing_db() -> Iterator[Target]:
    """A database that does not exist yet on the test server; dropped afterwards."""
    dbname = f"dbtools_new_{uuid.uuid4().hex[:8]}"
    yield target_for(dbname)
    with db.maintenance_connection(SERVER) as admin:
        drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname))
        admin.execute(drop)


@pytest.fixture
def local_dir(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty DBTOOLS_LOCAL_DIR (in RAM where possible) for embedded clusters; every cluster
    started there is stopped, and the folder deleted, afterwards."""
    folder = FAST_TMP / f"dbtools-local-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv(localdb.LOCAL_DIR_VAR, str(folder))
    yield folder
    for data in folder.glob("*/data"):
        remove_cluster(localdb.Cluster(localdb.Placement(data.parent)))
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def connect(target: Target, side: str) -> Iterator[Callable[..., psycopg.Connection[Any]]]:
    """Open more connections to this test's database (AsyncBridges on the async side); all are
    closed afterwards."""
    opened: list[psycopg.Connection[Any]] = []
    bridges: list[AsyncBridge] = []

    def _connect(**kwargs: Any) -> psycopg.Connection[Any]:
        if side == "async":
            bridges.append(AsyncBridge.connect(target, **kwargs))
            return cast(psycopg.Connection[Any], bridges[-1])
        opened.append(db.connect(target, **kwargs))
        return opened[-1]

    yield _connect
    for connection in opened:
        connection.close()
    for bridge in bridges:
        bridge.dispose()


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> Cli:
    """Run ``dbtools ARGS...`` in this process, from an empty folder with no DATABASE_URL;
    ``env=`` sets environment variables for that run only."""
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.chdir(tmp_path)

    def _run(*argv: str, env: dict[str, str] | None = None) -> CliResult:
        with pytest.MonkeyPatch.context() as patch:
            for name, value in (env or {}).items():
                patch.setenv(name, value)
            capsys.readouterr()
            code = dbtools_cli.main(list(argv))
            out, err = capsys.readouterr()
        return CliResult(code, out, err)

    return _run


@pytest.fixture
def console(tmp_path: Path) -> Cli:
    """Run the real ``dbtools`` program (``python -m dbtools``) in a process of its own, from an
    empty folder with no DATABASE_URL: for what only a real process shows."""

    def _run(*argv: str, env: dict[str, str] | None = None) -> CliResult:
        environ = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"} | (env or {})
        result = run_python("-m", "dbtools", *argv, env=environ, cwd=tmp_path)
        return CliResult(result.returncode, result.stdout, result.stderr)

    return _run
