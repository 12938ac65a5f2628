"""Scratch databases: where the benchmark puts its tables, never in the configured database.

:class:`Scratch` creates ``dbtools_bench_<pid>`` on the server of the configured target
(``dbtools.config.resolve()``, with the same credentials), applies the migrations to it, and
clones it (``CREATE DATABASE ... TEMPLATE``, migrated and empty) for each further database a
run needs: the bigger tables of the table-size section, the import's. Leaving the ``with`` block
drops every database it made (``DROP DATABASE ... WITH (FORCE)``), whatever happened. Inside it,
SIGINT, SIGTERM and SIGHUP raise :class:`Interrupted`, so that the run unwinds; once one has,
and while the databases are dropped, further ones are held back, so that no second Ctrl-C or
``kill`` cuts the cleanup short (a signal that arrives only during the cleanup is raised after
it). The previous handlers are back when the block is left.

Tables are filled set-based (:func:`fill`): one ``INSERT ... SELECT ... generate_series`` with the
table's triggers off for that transaction only (the audit trail would otherwise double the work of
a fill that only sets the stage), then ``VACUUM (ANALYZE)``.
"""

from __future__ import annotations

import os
import signal
import time
from types import FrameType, TracebackType
from typing import Any, LiteralString

import psycopg
from psycopg import sql

from dbtools import db, migrations, tenants
from dbtools.config import Target

SLUG = "bench-tenant"  # the tenant every single lookup fetches
SETTINGS = {"plan": "pro", "seats": 10}
# The query as plain code writes it: the columns, settings as jsonb, a positional parameter.
RAW = "SELECT id, slug, name, status, settings, created_at, updated_at FROM tenants WHERE slug = %s"

# Tenant i of a filled table: slug t-0000001 (so slug order is number order), its name, settings.
FILL: LiteralString = """
    INSERT INTO tenants (slug, name, settings)
    SELECT 't-' || lpad(i::text, 7, '0'), 'Tenant ' || i,
           jsonb_build_object('plan', 'pro', 'seats', i %% 100)
    FROM generate_series(%(first)s::integer, %(last)s::integer) AS i
"""
TRIGGERS_OFF: LiteralString = "ALTER TABLE tenants DISABLE TRIGGER USER"
TRIGGERS_ON: LiteralString = "ALTER TABLE tenants ENABLE TRIGGER USER"
VACUUM: LiteralString = "VACUUM (ANALYZE) tenants"
# Emptying a table between runs: tenant_events is append-only (a trigger refuses TRUNCATE), so
# that trigger is off for the one transaction that purges it.
EMPTY: tuple[LiteralString, ...] = (
    "ALTER TABLE tenant_events DISABLE TRIGGER USER",
    "TRUNCATE tenants, tenant_events",
    "ALTER TABLE tenant_events ENABLE TRIGGER USER",
)
CLONE_TRIES = 20  # CREATE DATABASE ... TEMPLATE fails while a session is still leaving it
STOPPING = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)  # each stops a run, which cleans up


def slug_of(number: int) -> str:
    """The slug of tenant ``number`` of a filled table (1-based)."""
    return f"t-{number:07d}"


class Interrupted(KeyboardInterrupt):
    """A run stopped by a signal (SIGINT, SIGTERM or SIGHUP). A ``KeyboardInterrupt``, so that
    psycopg cancels a query under way, as on Ctrl-C, and ``except Exception`` lets it pass."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(f"stopped by {signal.Signals(signum).name}")

    @property
    def status(self) -> int:
        """The exit status of a process that a signal ended: 128 + its number."""
        return 128 + self.signum


class Scratch:
    """The scratch databases of one run, on the server of ``configured``; a context manager
    that drops them all on the way out."""

    def __init__(self, configured: Target) -> None:
        self.configured = configured
        self.prefix = f"dbtools_bench_{os.getpid()}"
        self.made: list[str] = []
        self._previous: dict[signal.Signals, Any] = {}
        self._stopped_by: int | None = None  # the first stopping signal received
        self._closing = False

    def __enter__(self) -> Scratch:
        for signum in STOPPING:
            self._previous[signum] = signal.signal(signum, self._on_signal)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._closing = True
        try:
            self.drop_all()
        finally:
            for signum, previous in self._previous.items():
                # None: a handler not set from Python, which cannot be put back; the default.
                signal.signal(signum, signal.SIG_DFL if previous is None else previous)
            self._previous.clear()
        if self._stopped_by is not None and not isinstance(exc, KeyboardInterrupt):
            raise Interrupted(self._stopped_by)  # held back while the databases were dropped

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        # Unwinding or cleaning up already; or just entering __exit__, before _closing is set.
        entering = frame is not None and frame.f_code is Scratch.__exit__.__code__
        if self._stopped_by is not None or self._closing or entering:
            if self._stopped_by is None:
                self._stopped_by = signum
            return
        self._stopped_by = signum
        raise Interrupted(signum)

    def main(self) -> Target:
        """The first scratch database, migrated (made on the first call)."""
        target = self.configured.with_dbname(self.prefix)
        if self.prefix not in self.made:
            self.made.append(self.prefix)
            migrations.ensure_database(target)
            migrations.apply(target)
        return target

    def clone(self, suffix: str) -> Target:
        """A new database ``<prefix>_<suffix>``: a copy of :meth:`main` as it is now (call it
        before anything is written there, and with no session open on it)."""
        template = self.main()
        name = f"{self.prefix}_{suffix}"
        statement = sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
            sql.Identifier(name), sql.Identifier(template.dbname)
        )
        self.made.append(name)  # before it exists: an interruption may come as it is made
        with db.maintenance_connection(self.configured) as conn:
            for attempt in range(CLONE_TRIES):
                try:
                    conn.execute(statement)
                    break
                except psycopg.errors.ObjectInUse:  # a session of the migrations still closing
                    if attempt == CLONE_TRIES - 1:
                        raise
                    time.sleep(0.1)
        return self.configured.with_dbname(name)

    def drop_all(self) -> None:
        """Drop every database this run made, the newest first."""
        if not self.made:
            return
        with db.maintenance_connection(self.configured) as conn:
            while self.made:
                name = self.made.pop()
                conn.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                )


def fill(target: Target, count: int, *, first: int = 1) -> None:
    """Add tenants ``first`` to ``first + count - 1`` (see :func:`slug_of`) to ``target``'s
    table in one set-based statement, then vacuum and analyse it."""
    with db.connect(target) as conn:
        with conn.transaction():
            conn.execute(TRIGGERS_OFF)
            conn.execute(FILL, {"first": first, "last": first + count - 1})
            conn.execute(TRIGGERS_ON)
        conn.commit()
        conn.autocommit = True
        conn.execute(VACUUM)


def add_bench_tenant(target: Target) -> None:
    """The tenant :data:`SLUG` that the single lookups fetch, as ``tenants.create`` makes it."""
    with db.connect(target, autocommit=True) as conn:
        tenants.get_or_create(conn, SLUG, "Bench Tenant", settings=SETTINGS)


def empty(conn: psycopg.Connection[object]) -> None:
    """Empty ``tenants`` and its audit trail on ``conn`` (committed)."""
    with conn.transaction():
        for statement in EMPTY:
            conn.execute(statement)
