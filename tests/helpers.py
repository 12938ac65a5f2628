"""What several test modules share: the test server, small queries, running Python apart,
PgBouncer (or a plain TCP forwarder) in front of the test server, and the bridge that runs one
test on both the sync and the async API.

Fixtures live in ``conftest.py``; plain helpers live here and are imported by name.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from contextlib import AbstractAsyncContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from uuid import UUID

import psycopg

from dbtools import localdb, migrations
from dbtools import tenants as sync_tenants
from dbtools.aio import db as aio_db
from dbtools.aio import tenants as aio_tenants
from dbtools.config import Target
from dbtools.errors import LocalDatabaseError
from dbtools.tenants import TenantEvent

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


def psql_program() -> str:
    """psql beside the server binaries (the test cluster's own), else the one on PATH."""
    try:
        beside_server = Path(localdb.find_binaries().tool("psql"))
        if beside_server.is_file():
            return str(beside_server)
    except LocalDatabaseError:
        pass
    found = shutil.which("psql")
    if found is None:
        raise RuntimeError("psql not found: install the PostgreSQL client tools")
    return found


def run_psql(target: Target, *commands: str) -> subprocess.CompletedProcess[str]:
    """Run ``commands`` with psql in a process of its own, as another client would; stops at
    the first error."""
    env = os.environ | ({"PGPASSWORD": target.password} if target.password else {})
    return subprocess.run(
        [
            psql_program(),
            "--no-psqlrc",
            "--set=ON_ERROR_STOP=1",
            f"--dbname={target.conninfo()}",
            *(f"--command={command}" for command in commands),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
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


# --- PgBouncer, and a plain TCP forwarder, in front of the test server --------------------------

# Debian installs PgBouncer in /usr/sbin, which is not on every user's PATH.
PGBOUNCER_MISSING = (
    "PgBouncer is not installed: the pooler tests run the real thing "
    "(apt-get install pgbouncer; .ci/run installs it when missing)"
)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on at the moment."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def pgbouncer_binary() -> str | None:
    """The ``pgbouncer`` program, on PATH or in Debian's /usr/sbin; None when not installed."""
    found = shutil.which("pgbouncer")
    if found:
        return found
    sbin = Path("/usr/sbin/pgbouncer")
    return str(sbin) if os.access(sbin, os.X_OK) else None


def _os_user() -> pwd.struct_passwd | None:
    """Who runs the servers when we are root (PgBouncer refuses root, as PostgreSQL does)."""
    if os.geteuid() != 0:
        return None
    return pwd.getpwnam(os.environ.get(localdb.OS_USER_VAR) or "postgres")


def _pgbouncer_value(value: str) -> str:
    """A value for a PgBouncer connection string, quoted as libpq quotes."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


class PgBouncer:
    """Debian's PgBouncer on a free 127.0.0.1 port in transaction pooling mode, in front of
    ``server``; every database of the server is reached by its own name, as its user.

    Two server connections per database: the clients of a test share them, as the clients of a
    production PgBouncer do. Run as the unprivileged server user when we are root.
    """

    POOL_SIZE = 2

    def __init__(self, server: Target, folder: Path, *, pool_size: int = POOL_SIZE) -> None:
        self.server = server
        self.folder = folder
        self.pool_size = pool_size
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def log_file(self) -> Path:
        return self.folder / "pgbouncer.log"

    def target(self, dbname: str) -> Target:
        """Database ``dbname`` of the test server, through this PgBouncer."""
        params = {"host": "127.0.0.1", "port": str(self.port), "dbname": dbname}
        if self.server.user:
            params["user"] = self.server.user
        return Target.from_params(origin="PgBouncer", **params)

    def start(self, binary: str, attempts: int = 3) -> None:
        """Start PgBouncer and wait until it takes connections (another free port when the one
        picked was taken meanwhile)."""
        user = _os_user()
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        if user is not None:
            os.chown(self.folder, user.pw_uid, user.pw_gid)
        for _ in range(attempts):
            self.port = free_port()
            config = self.folder / "pgbouncer.ini"
            config.write_text(self._config())
            config.chmod(0o600)  # it may hold the test server's password
            if user is not None:
                os.chown(config, user.pw_uid, user.pw_gid)
            as_user: dict[str, Any] = {}
            if user is not None:
                as_user = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
            self._process = subprocess.Popen(
                [binary, str(config)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                cwd=self.folder,
                process_group=0,
                **as_user,
            )
            if self._wait_until_up():
                return
            self.stop()
        raise RuntimeError(f"PgBouncer did not start; its log ends with:\n{self.log_tail()}")

    def _config(self) -> str:
        params = self.server.params
        server = " ".join(
            f"{key}={_pgbouncer_value(params[key])}"
            for key in ("host", "port", "user", "password")
            if params.get(key)
        )
        return "\n".join(
            [
                "[databases]",
                f"* = {server}",
                "[pgbouncer]",
                "listen_addr = 127.0.0.1",
                f"listen_port = {self.port}",
                "unix_socket_dir =",
                # The client's user name is not checked: every client logs in to the server as
                # the user of the [databases] line, which the test server trusts.
                "auth_type = any",
                "pool_mode = transaction",
                f"default_pool_size = {self.pool_size}",
                "max_client_conn = 500",
                f"logfile = {self.log_file}",
                "pidfile =",
                "",
            ]
        )

    def _wait_until_up(self, timeout: float = 15.0) -> bool:
        assert self._process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                return False  # the port was taken, or the configuration refused
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return True
            time.sleep(0.02)
        return False

    def stop(self) -> None:
        """Stop PgBouncer (SIGINT: at once, closing every connection)."""
        if self._process is None:
            return
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGINT)
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None

    def log_tail(self, lines: int = 10) -> str:
        try:
            text = self.log_file.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


class Standby:
    """A streaming replica of the embedded test cluster, made with pg_basebackup, that replays
    each commit ``delay`` after the primary (recovery_min_apply_delay): a standby lagging
    behind, as read replicas do. Its server runs as the server user, like the test cluster."""

    def __init__(self, folder: Path, delay: str = "1s") -> None:
        self.folder, self.delay = folder, delay

    def start(self) -> None:
        if TEST_CLUSTER is None:
            raise RuntimeError("a standby needs the embedded test cluster")
        source = SERVER.params
        self.folder.mkdir(mode=0o777, exist_ok=True)
        self.folder.chmod(0o777)  # the server user makes its data folder inside
        tool = TEST_CLUSTER.binaries.tool
        data, log = self.folder / "data", self.folder / "server.log"
        settings = (
            f"port = {source.get('port', '5432')}\n"
            f"unix_socket_directories = '{self.folder}'\n"
            f"recovery_min_apply_delay = '{self.delay}'\n"
        )
        script = (
            f"set -e; {tool('pg_basebackup')} -D {data} -R -X stream -c fast "
            f"-d 'host={source['host']} port={source.get('port', '5432')} user={source['user']}'; "
            f'printf "{settings}" >> {data}/postgresql.auto.conf; '
            f"{tool('pg_ctl')} -D {data} -l {log} -w -t 60 -s start"
        )
        result = localdb.run_server_tool(["sh", "-c", script], self.folder)
        if result.returncode != 0:
            raise RuntimeError(f"the standby did not start: {result.stderr.strip()}")

    def target(self, dbname: str) -> Target:
        """``dbname`` on the standby."""
        return Target.from_params(**(SERVER.params | {"host": str(self.folder), "dbname": dbname}))

    def stop(self) -> None:
        if TEST_CLUSTER is not None and (self.folder / "data").exists():
            tool = TEST_CLUSTER.binaries.tool("pg_ctl")
            localdb.run_server_tool(
                [tool, "-D", str(self.folder / "data"), "-m", "immediate", "-w", "-s", "stop"],
                self.folder,
            )
        shutil.rmtree(self.folder, ignore_errors=True)


class Forwarder:
    """A plain TCP port on 127.0.0.1 that forwards each connection to the test server, as a
    Docker port mapping or an SSH tunnel does: another port, and no pooling. :meth:`pause`
    makes it a black hole, as a network that fails silently is: nothing is forwarded, nothing
    is refused or closed, until :meth:`resume`; ``pause(replies=True)`` holds back only what
    the server sends, as a slow network does with an answer already on its way."""

    def __init__(self, server: Target) -> None:
        params = server.params
        host, port = params.get("host") or "127.0.0.1", int(params.get("port") or 5432)
        self._address: str | tuple[str, int]
        if host.startswith("/"):
            self._family, self._address = socket.AF_UNIX, f"{host}/.s.PGSQL.{port}"
        else:
            self._family, self._address = socket.AF_INET, (host, port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._open = threading.Event()
        self._open.set()
        self._replies_open = threading.Event()
        self._replies_open.set()
        self._closed = False
        self._sockets: list[socket.socket] = []  # every socket made, closed by close()
        threading.Thread(target=self._accept, daemon=True).start()

    def target(self, dbname: str, **params: str) -> Target:
        """``dbname`` on the test server, through this forwarder."""
        return Target.from_params(
            **(SERVER.params | {"host": "127.0.0.1", "port": str(self.port), "dbname": dbname})
            | params
        )

    def pause(self, *, replies: bool = False) -> None:
        (self._replies_open if replies else self._open).clear()

    def resume(self) -> None:
        self._open.set()
        self._replies_open.set()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):  # closed
            while True:
                client, _ = self._listener.accept()
                self._sockets.append(client)
                threading.Thread(target=self._connect, args=(client,), daemon=True).start()

    def _connect(self, client: socket.socket) -> None:
        self._open.wait()
        if self._closed:
            return
        upstream = socket.socket(self._family, socket.SOCK_STREAM)
        self._sockets.append(upstream)
        upstream.connect(self._address)
        for source, sink, gate in (
            (client, upstream, self._open),
            (upstream, client, self._replies_open),
        ):
            threading.Thread(target=self._pump, args=(source, sink, gate), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, gate: threading.Event) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                self._open.wait()
                gate.wait()
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self._closed = True
        self.resume()
        self._listener.close()
        for each in self._sockets:
            each.close()


def replay(events: list[TenantEvent]) -> dict[UUID, dict[str, Any]]:
    """The rows the events describe, by tenant id; deleted ones absent."""
    rows: dict[UUID, dict[str, Any]] = {}
    for event in events:
        if event.kind.value == "created":
            rows[event.tenant_id] = dict(event.new_values or {})
        elif event.kind.value == "deleted":
            del rows[event.tenant_id]
        else:
            assert rows[event.tenant_id] | (event.old_values or {}) == rows[event.tenant_id]
            rows[event.tenant_id] |= event.new_values or {}
    return rows


# --- one test, both APIs ----------------------------------------------------------------------
#
# Run the same test against dbtools.tenants and dbtools.aio.tenants.
#
# A test of the data-access layer takes ``conn`` (and ``connect``) and calls ``tenants.X(conn,
# ...)``. In test modules that run on both sides, ``tenants`` is :data:`tenants` below, and the
# ``conn`` fixture is, for the async side, an :class:`AsyncBridge`: a real
# ``psycopg.AsyncConnection`` running on an event loop of its own thread, with the attributes and
# methods tests use of a ``psycopg.Connection``. ``tenants.X(bridge, ...)`` then awaits
# ``dbtools.aio.tenants.X(bridge.aconn, ...)`` on that loop, so one test body checks both APIs.

T = TypeVar("T")
# How long a test waits for one awaited call before calling it hung.
CALL_TIMEOUT = 120.0


class EventLoopThread:
    """An asyncio event loop running in a daemon thread, until :meth:`stop`."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the loop and wait for its result (its exception is raised here)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(CALL_TIMEOUT)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(CALL_TIMEOUT)
        self.loop.close()


class BridgeCursor:
    """The result of :meth:`AsyncBridge.execute`, fetched synchronously."""

    def __init__(self, bridge: AsyncBridge, cursor: psycopg.AsyncCursor[Any]) -> None:
        self._bridge, self._cursor = bridge, cursor

    def fetchone(self) -> Any:
        return self._bridge.run(self._cursor.fetchone())

    def fetchall(self) -> list[Any]:
        return self._bridge.run(self._cursor.fetchall())

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount


class AsyncBridge:
    """A ``psycopg.AsyncConnection`` that synchronous test code uses like a Connection."""

    def __init__(self, aconn: psycopg.AsyncConnection[Any], loop: EventLoopThread) -> None:
        self.aconn = aconn
        self._loop = loop

    @classmethod
    def connect(cls, target: Target, **kwargs: Any) -> AsyncBridge:
        """Connect with :func:`dbtools.aio.db.connect`, on a new event loop thread."""
        loop = EventLoopThread()
        try:
            aconn = loop.run(aio_db.connect(target, **kwargs))
        except BaseException:
            loop.stop()
            raise
        return cls(aconn, loop)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self._loop.run(coro)

    def execute(self, query: Any, params: Any = None, **kwargs: Any) -> BridgeCursor:
        return BridgeCursor(self, self.run(self.aconn.execute(query, params, **kwargs)))

    @contextmanager
    def transaction(self, **kwargs: Any) -> Iterator[Any]:
        with self.entered(self.aconn.transaction(**kwargs)) as tx:
            yield tx

    @contextmanager
    def entered(self, manager: AbstractAsyncContextManager[T]) -> Iterator[T]:
        """``async with manager``, from synchronous code."""
        value = self.run(manager.__aenter__())
        try:
            yield value
        except BaseException as exc:
            if not self.run(manager.__aexit__(type(exc), exc, exc.__traceback__)):
                raise
        else:
            self.run(manager.__aexit__(None, None, None))

    def commit(self) -> None:
        self.run(self.aconn.commit())

    def rollback(self) -> None:
        self.run(self.aconn.rollback())

    def close(self) -> None:
        """Close the connection; the loop runs on, for calls on the closed connection."""
        self.run(self.aconn.close())

    def dispose(self) -> None:
        """Close the connection and stop its loop."""
        if not self._loop.loop.is_closed():
            self.close()
            self._loop.stop()

    def __enter__(self) -> AsyncBridge:
        return self

    def __exit__(self, *exc: object) -> None:
        self.dispose()

    @property
    def autocommit(self) -> bool:
        return self.aconn.autocommit

    @autocommit.setter
    def autocommit(self, value: bool) -> None:
        self.run(self.aconn.set_autocommit(value))

    @property
    def closed(self) -> bool:
        return self.aconn.closed

    @property
    def pgconn(self) -> Any:
        return self.aconn.pgconn

    @property
    def info(self) -> Any:
        return self.aconn.info


class BothSides:
    """``dbtools.tenants`` for a ``psycopg.Connection``; ``dbtools.aio.tenants``, awaited on the
    bridge's loop, for an :class:`AsyncBridge`. Other names are those of ``dbtools.tenants``."""

    def __getattr__(self, name: str) -> Any:
        sync = getattr(sync_tenants, name)
        if name not in aio_tenants.__all__:
            return sync
        awaited = getattr(aio_tenants, name)
        if name == "acting_as":
            return _acting_as
        return _either(sync, awaited)


def _either(sync: Callable[..., Any], awaited: Callable[..., Any]) -> Callable[..., Any]:
    def call(conn: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(conn, AsyncBridge):
            return conn.run(awaited(conn.aconn, *args, **kwargs))
        return sync(conn, *args, **kwargs)

    return call


@contextmanager
def _acting_as(conn: Any, actor: str) -> Iterator[None]:
    if not isinstance(conn, AsyncBridge):
        with sync_tenants.acting_as(conn, actor):
            yield
        return
    with conn.entered(aio_tenants.acting_as(conn.aconn, actor)):
        yield


if TYPE_CHECKING:  # the type checker sees the sync signatures, which both sides share
    from dbtools import tenants as tenants
else:
    tenants = BothSides()
SIDES = ("sync", "async")
