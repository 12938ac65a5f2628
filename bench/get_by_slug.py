"""Section 1: one tenant by slug, every way there is, in the same interleaved rounds.

Contenders, all fetching the row of ``bench-tenant`` from the same database:

- ``tenants.get_by_slug`` and raw psycopg (``conn.execute(RAW, (slug,)).fetchone()``: a new
  cursor per call, a tuple back, settings parsed by psycopg's jsonb loader) on one autocommit
  connection; "raw, one cursor" reuses a single cursor, a floor that code shared between threads
  cannot use;
- ``TenantCache.get_by_slug`` when the tenant is cached (a hit), sync and asyncio;
- the asyncio API against raw async psycopg on one ``AsyncConnection``, and asyncpg with a
  statement prepared once (a ``jsonb`` codec of ``json.loads``, as psycopg parses it);
- SQLAlchemy 2 ORM sessions, one per lookup as a web request makes one, with the original
  design's model and with ``dbtools.sqlalchemy.Tenant`` (bench/contenders.py);
- pgbench ``-M prepared`` running the same query: the C client, the round trip itself.

Async batches run in the same rounds through one ``asyncio.Runner``; pgbench's batch is a run of
the program, timed by its own latency average (connecting not counted).
"""

# The tables print × and – on purpose (ruff takes them for look-alikes of x and -).
# ruff: noqa: RUF001, RUF003

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from functools import partial
from typing import Any

import asyncpg  # type: ignore[import-untyped]
from contenders import OriginalTenant, Pgbench, asyncpg_kwargs, engine, orm_lookup, pgbench_path
from report import BenchError, Check, Section, Table, cell, profile
from rounds import Batch, Mode, Samples, calibrate, interleave, ratio, spread, timed, timed_async
from scratch import RAW, SLUG

from dbtools import db, tenants
from dbtools import sqlalchemy as mirror
from dbtools.aio import db as aio_db
from dbtools.aio import tenants as aio_tenants
from dbtools.aio.cache import TenantCache as AsyncTenantCache
from dbtools.cache import TenantCache
from dbtools.config import Target

RAW_ASYNCPG = RAW.replace("%s", "$1")

LAYER = "tenants.get_by_slug"
RAW_SIDE = "raw psycopg"
ONE_CURSOR = "raw psycopg, one cursor"
HIT = "TenantCache.get_by_slug, a hit"
ORIGINAL = "SQLAlchemy session, the original model"
MIRROR = "SQLAlchemy session, dbtools.sqlalchemy"
AIO_LAYER = "aio tenants.get_by_slug"
AIO_RAW = "raw async psycopg"
AIO_HIT = "aio TenantCache.get_by_slug, a hit"
ASYNCPG = "asyncpg, prepared"
PGBENCH = "pgbench -M prepared (C)"

# Rows of the table, in this order; the plot draws them from the slowest down.
ORDER = (
    ORIGINAL,
    MIRROR,
    LAYER,
    RAW_SIDE,
    ONE_CURSOR,
    AIO_LAYER,
    AIO_RAW,
    ASYNCPG,
    PGBENCH,
    HIT,
    AIO_HIT,
)
GET_BY_SLUG_TARGET = 1.05  # at most this many times raw psycopg
ORM_TARGET = 4.0  # at least this many times faster than a SQLAlchemy session


def run(target: Target, mode: Mode) -> Section:
    section = Section(
        1,
        "lookup",
        "get_by_slug against every other way",
        "One tenant by slug (`bench-tenant`), every contender in the same interleaved rounds "
        f"({mode.rounds}), each batch sized to about {mode.batch_seconds * 1e3:.0f} ms. "
        "Raw psycopg is `conn.execute(sql, (slug,)).fetchone()` on the same autocommit "
        "connection as `tenants.get_by_slug` (a tuple back); the SQLAlchemy contenders open one "
        "`Session` per lookup, as a web request does, on an engine that keeps its connection "
        "(psycopg 3, the same libpq parameters), so each lookup is three round trips: BEGIN, "
        "the query, and the ROLLBACK that returns the connection to the pool; asyncpg runs a "
        "statement prepared once; pgbench (`-M prepared`, one client) runs the same query in C: "
        "the round trip itself.",
    )
    with contextlib.ExitStack() as stack:
        batches, profiles = _contenders(stack, target)
        sized = {
            name: partial(batch, calibrate(batch, mode.batch_seconds))
            for name, batch in batches.items()
        }
        samples = interleave(sized, mode.rounds)
        _tables(section, samples)
        _checks(section, samples)
        if not section.checks[0].met:  # get_by_slug against raw psycopg
            for title, fn in profiles.items():
                section.profiles.append((title, profile(fn, 3000)))
    section.draw = partial(
        _draw, {name: spread(samples, name) for name in ORDER if name in samples}
    )
    return section


def _contenders(
    stack: contextlib.ExitStack, target: Target
) -> tuple[dict[str, Batch], dict[str, Callable[[], object]]]:
    """Every contender's batch (calls -> seconds per call), opened on ``stack``; and the two
    functions profiled when get_by_slug misses its target."""
    runner = stack.enter_context(asyncio.Runner())
    conn = stack.enter_context(db.connect(target, autocommit=True))
    cache = stack.enter_context(TenantCache(stack.enter_context(db.create_pool(target))))
    aconn = runner.run(aio_db.connect(target, autocommit=True))
    stack.callback(lambda: runner.run(aconn.close()))
    apool = runner.run(aio_db.create_pool(target))
    stack.callback(lambda: runner.run(apool.close()))
    acache = AsyncTenantCache(apool)
    runner.run(acache.open())
    stack.callback(lambda: runner.run(acache.close()))
    apg = runner.run(asyncpg.connect(**asyncpg_kwargs(target)))
    stack.callback(lambda: runner.run(apg.close()))
    runner.run(
        apg.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
    )
    statement = runner.run(apg.prepare(RAW_ASYNCPG))
    bound = engine(target)
    stack.callback(bound.dispose)
    one_cursor = conn.cursor()

    def raw(slug: str) -> Any:
        return conn.execute(RAW, (slug,)).fetchone()

    def raw_one_cursor(slug: str) -> Any:
        one_cursor.execute(RAW, (slug,))
        return one_cursor.fetchone()

    async def aio_raw(slug: str) -> Any:
        return await (await aconn.execute(RAW, (slug,))).fetchone()

    def sync(fn: Callable[[str], object]) -> Batch:
        return partial(timed, fn, SLUG)

    def awaited(fn: Callable[[str], Any]) -> Batch:
        return lambda calls: runner.run(timed_async(fn, SLUG, calls))

    sync_calls: dict[str, Callable[[str], object]] = {
        LAYER: partial(tenants.get_by_slug, conn),
        RAW_SIDE: raw,
        ONE_CURSOR: raw_one_cursor,
        HIT: cache.get_by_slug,
        ORIGINAL: orm_lookup(bound, OriginalTenant),
        MIRROR: orm_lookup(bound, mirror.Tenant),
    }
    async_calls: dict[str, Callable[[str], Any]] = {
        AIO_LAYER: partial(aio_tenants.get_by_slug, aconn),
        AIO_RAW: aio_raw,
        AIO_HIT: acache.get_by_slug,
        ASYNCPG: statement.fetchrow,
    }
    batches: dict[str, Batch] = {name: sync(fn) for name, fn in sync_calls.items()}
    batches |= {name: awaited(fn) for name, fn in async_calls.items()}
    for name, fn in {**sync_calls, **async_calls}.items():  # none is timed doing less
        found = fn(SLUG) if name in sync_calls else runner.run(fn(SLUG))
        if found is None:
            raise BenchError(f"{name} did not find the tenant {SLUG!r}")
    program = pgbench_path()
    if program is not None:  # it comes with PostgreSQL, but not with every client install
        batches[PGBENCH] = pgbench = Pgbench(program, target, SLUG)
        stack.callback(pgbench.close)
    profiles: dict[str, Callable[[], object]] = {
        f"{LAYER}, 3000 calls": partial(tenants.get_by_slug, conn, SLUG),
        f"{RAW_SIDE}, 3000 calls": partial(raw, SLUG),
    }
    return batches, profiles


def _tables(section: Section, samples: Samples) -> None:
    table = Table(
        "Microseconds per lookup (median of the rounds, spread below)",
        ["contender", "µs per call", f"× {RAW_SIDE}", f"× {LAYER}"],
    )
    for name in (name for name in ORDER if name in samples):
        table.rows.append(
            [
                name,
                cell(spread(samples, name).scaled(1e6), "µs"),
                cell(ratio(samples, name, RAW_SIDE), "×"),
                cell(ratio(samples, name, LAYER), "×"),
            ]
        )
    added = (spread(samples, LAYER).median - spread(samples, RAW_SIDE).median) * 1e6
    notes = [
        f"`{LAYER}` costs {added:+.1f} µs a call over `{RAW_SIDE}` (difference of the medians)",
        f"`{AIO_LAYER}` / `{AIO_RAW}`: {cell(ratio(samples, AIO_LAYER, AIO_RAW), '×')}",
        f"`{AIO_LAYER}` / `{ASYNCPG}`: {cell(ratio(samples, AIO_LAYER, ASYNCPG), '×')}",
    ]
    if PGBENCH in samples:
        notes.append(f"`{LAYER}` / `{PGBENCH}`: {cell(ratio(samples, LAYER, PGBENCH), '×')}")
    else:
        notes.append("pgbench was not found: its row is missing")
    table.notes.append("; ".join(notes) + ".")
    section.tables.append(table)


def _checks(section: Section, samples: Samples) -> None:
    section.checks += [
        Check(
            f"`{LAYER}` / `{RAW_SIDE}`",
            ratio(samples, LAYER, RAW_SIDE),
            GET_BY_SLUG_TARGET,
            "×",
            at_most=True,
        ),
        Check(
            f"`{AIO_LAYER}` / `{AIO_RAW}`",
            ratio(samples, AIO_LAYER, AIO_RAW),
            GET_BY_SLUG_TARGET,
            "×",
            at_most=True,
        ),
        Check(
            f"`{ORIGINAL}` / `{LAYER}`",
            ratio(samples, ORIGINAL, LAYER),
            ORM_TARGET,
            "×",
            at_most=False,
        ),
        Check(
            f"`{MIRROR}` / `{LAYER}`", ratio(samples, MIRROR, LAYER), ORM_TARGET, "×", at_most=False
        ),
    ]


def _draw(figures: dict[str, Any], axis: Any) -> None:
    names = list(figures)[::-1]
    medians = [figures[name].median * 1e6 for name in names]
    lows = [figures[name].low * 1e6 for name in names]
    highs = [figures[name].high * 1e6 for name in names]
    errors = [
        [m - lo for m, lo in zip(medians, lows, strict=True)],
        [hi - m for m, hi in zip(medians, highs, strict=True)],
    ]
    colors = [_color(name) for name in names]
    axis.barh(names, medians, xerr=errors, color=colors, capsize=3)
    axis.set_xscale("log")
    axis.set_xlabel("µs per lookup (log scale; whiskers: fastest and slowest round)")
    axis.set_title("1. one tenant by slug")
    for y, (value, high) in enumerate(zip(medians, highs, strict=True)):
        label = f"{value:,.0f} µs" if value >= 10 else f"{value:.2f} µs"
        axis.annotate(label, (high, y), xytext=(6, -3), textcoords="offset points", fontsize=8)
    axis.set_xlim(right=max(highs) * 4)
    axis.tick_params(axis="y", labelsize=8)
    axis.grid(axis="x", which="both", alpha=0.3)


def _color(name: str) -> str:
    if "SQLAlchemy" in name:
        return "tab:red"
    if "TenantCache" in name:
        return "tab:green"
    if "tenants.get_by_slug" in name:
        return "tab:blue"
    return "tab:gray"
