"""The other clients that dbtools is measured against, each set up on a ``Target``.

- **SQLAlchemy, the original design**: :class:`OriginalTenant`, the plain declarative model of
  ``tenants`` that the story's first design would have written (``String`` columns, ``status``
  as a ``String``, ``JSON`` settings), and ``dbtools.sqlalchemy.Tenant``, the project's mirror.
  Both are queried as a web application does: one ``Session`` per request on an engine whose
  pool keeps the connection (:func:`orm_lookup`).
- **asyncpg** with a prepared statement (:func:`asyncpg_kwargs` gives it the target).
- **pgbench** ``-M prepared`` running the same query (:func:`pgbench`): the C client, so the round
  trip itself, without a Python object made from the row.
"""

from __future__ import annotations

import datetime
import os
import re
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from report import BenchError
from sqlalchemy import JSON, DateTime, Engine, String, create_engine, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column
from sqlalchemy.pool import QueuePool

from dbtools import db
from dbtools.config import Target


class OriginalBase(DeclarativeBase):
    """A declarative base of its own: the original model shares nothing with the mirror."""


class OriginalTenant(OriginalBase):
    """The tenants table as a first design maps it: plain types, no knowledge of the schema."""

    __tablename__ = "tenants"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    slug: Mapped[str] = mapped_column(String(50), unique=True)
    name: Mapped[str] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(20))
    settings: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime.datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime.datetime] = mapped_column(DateTime(timezone=True))


def engine(target: Target) -> Engine:
    """A SQLAlchemy engine on ``target`` through psycopg 3: its connections are made by
    ``dbtools.db.connect`` (the same libpq parameters, and psycopg's server-side prepared
    statements after five runs of a query, as for dbtools), pooled as SQLAlchemy's default
    ``QueuePool`` pools them."""
    return create_engine(
        "postgresql+psycopg://",
        creator=lambda: db.connect(target),
        poolclass=QueuePool,
        pool_size=1,
    )


def orm_lookup(bound: Engine, model: Any) -> Callable[[str], object]:
    """One request's lookup of a tenant by slug: a session of its own, one query, closed."""

    def lookup(slug: str) -> object:
        with Session(bound) as session:
            return session.scalars(select(model).where(model.slug == slug)).one_or_none()

    return lookup


# libpq parameter -> asyncpg.connect keyword; any other parameter stops the benchmark, rather
# than have asyncpg connect somewhere else, or otherwise, than psycopg does.
ASYNCPG_KEYWORDS = {
    "host": "host",
    "port": "port",
    "user": "user",
    "password": "password",
    "dbname": "database",
    "sslmode": "ssl",
    "connect_timeout": "timeout",
    "target_session_attrs": "target_session_attrs",
}


def asyncpg_kwargs(target: Target) -> dict[str, Any]:
    """``asyncpg.connect`` keyword arguments for ``target``: the same host (a Unix socket
    directory is a host to asyncpg too), port, user, password and database."""
    params = target.params
    unknown = sorted(set(params) - set(ASYNCPG_KEYWORDS) - {"application_name"})
    if unknown:
        raise BenchError(
            f"cannot give asyncpg the libpq parameters {unknown} of {target.describe()}"
        )
    kwargs: dict[str, Any] = {}
    for key, keyword in ASYNCPG_KEYWORDS.items():
        value = params.get(key)
        if value is None:
            continue
        if key in ("host", "port") and "," in value:
            kwargs[keyword] = value.split(",")  # several hosts, tried in order
        elif key == "port":
            kwargs[keyword] = int(value)
        elif key == "connect_timeout":
            kwargs[keyword] = float(value)
        else:
            kwargs[keyword] = value
    if "application_name" in params:
        kwargs["server_settings"] = {"application_name": params["application_name"]}
    return kwargs


# pgbench's script: the query of tenants.get_by_slug, the slug a parameter ($1 with -M prepared).
PGBENCH_SCRIPT = (
    "SELECT id, slug, name, status, settings, created_at, updated_at "
    "FROM tenants WHERE slug = :slug;\n"
)
_LATENCY = re.compile(r"^latency average = ([0-9.]+) ms$", re.MULTILINE)


def dbtools_program() -> str:
    """The ``dbtools`` command of the virtualenv that runs this benchmark."""
    beside = Path(sys.executable).parent / "dbtools"
    if beside.exists():
        return str(beside)
    raise BenchError(f"no dbtools command beside {sys.executable}: install the package")


def pgbench_path() -> str | None:
    """The pgbench of the server binaries dbtools finds, else the one on PATH, else None."""
    from dbtools import localdb

    try:
        found = Path(localdb.find_binaries().tool("pgbench"))
    except Exception:  # no server binaries found: any pgbench will do
        return shutil.which("pgbench")
    return str(found) if found.exists() else shutil.which("pgbench")


def pgbench_version() -> str:
    """What ``pgbench --version`` says."""
    program = pgbench_path()
    if program is None:
        return "no pgbench"
    done = subprocess.run([program, "--version"], capture_output=True, text=True, check=False)
    return done.stdout.strip()


class Pgbench:
    """``pgbench -M prepared`` on ``target``, one client, the lookup of ``slug``."""

    def __init__(self, program: str, target: Target, slug: str) -> None:
        self.program = program
        self.target = target
        self.slug = slug
        handle, name = tempfile.mkstemp(prefix="dbtools-bench-", suffix=".sql")
        with os.fdopen(handle, "w") as script:
            script.write(PGBENCH_SCRIPT)
        self.script = Path(name)

    def __call__(self, calls: int) -> float:
        """Seconds per lookup over ``calls`` lookups, as pgbench reports its latency average
        (connecting is not counted)."""
        # The conninfo is the dbname argument, which pgbench expands; secrets go by environment.
        env = os.environ | {
            f"PG{key.upper()}": value
            for key, value in self.target.secrets().items()
            if key == "password"
        }
        command = [
            self.program,
            "--no-vacuum",
            "--protocol=prepared",
            "--client=1",
            f"--transactions={calls}",
            f"--define=slug={self.slug}",
            f"--file={self.script}",
            self.target.conninfo(),
        ]
        done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
        found = _LATENCY.search(done.stdout)
        if done.returncode != 0 or found is None:
            raise BenchError(f"pgbench failed: {done.stderr.strip() or done.stdout}")
        return float(found.group(1)) / 1e3

    def close(self) -> None:
        self.script.unlink(missing_ok=True)
