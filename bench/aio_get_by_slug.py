"""Benchmark: ``dbtools.aio.tenants.get_by_slug`` against raw async psycopg and asyncpg.

Three ways to fetch one tenant row from asyncio, in interleaved rounds whose order alternates
(bench/rounds.py), one batch of awaited calls each per round:

- ``aio tenants.get_by_slug``: dbtools on an autocommit ``psycopg.AsyncConnection`` (from
  ``dbtools.aio.db.connect``), a ``Tenant`` record back;
- raw async psycopg on that same connection, as plain code writes it:
  ``await (await aconn.execute(RAW, (slug,))).fetchone()``, a tuple back, settings parsed by
  psycopg's jsonb loader;
- asyncpg on a connection of its own to the same database (the parameters of
  ``dbtools.config.resolve()``), with a statement prepared once (``await conn.prepare(...)``,
  then ``await stmt.fetchrow(slug)``), a ``Record`` back; a ``jsonb`` codec of ``json.loads``
  parses the settings, as psycopg does, where asyncpg alone would hand back the text.

Prints the median time per call of each with its spread over the rounds, and the ratios (medians
of the per-round ratios).

    .venv/bin/python bench/aio_get_by_slug.py [--rounds 15] [--calls 2000]

It needs asyncpg (``pip install -e '.[bench]'``; ``make bench`` installs it), uses the configured
database (DATABASE_URL, .env, or the embedded cluster) and creates the tenant ``bench-tenant``
there if it is absent.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from functools import partial
from typing import Any

import asyncpg  # type: ignore[import-untyped]
from rounds import interleave_async, report, report_ratio, timed_async

from dbtools import config
from dbtools.aio import db as aio_db
from dbtools.aio import tenants
from dbtools.config import Target

SLUG = "bench-tenant"
# The query as plain code writes it: the columns, settings as jsonb, a positional parameter.
RAW = "SELECT id, slug, name, status, settings, created_at, updated_at FROM tenants WHERE slug = %s"
RAW_ASYNCPG = RAW.replace("%s", "$1")

LAYER = "aio tenants.get_by_slug"
RAW_SIDE = "raw async psycopg"
ASYNCPG = "asyncpg, prepared"

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
        raise SystemExit(
            f"bench/aio_get_by_slug.py cannot give asyncpg the libpq parameters {unknown} of "
            f"{target.describe()}"
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


async def run(rounds: int, calls: int) -> None:
    target = config.resolve()
    async with await aio_db.connect(target, autocommit=True) as aconn:
        await tenants.get_or_create(
            aconn, SLUG, "Bench Tenant", settings={"plan": "pro", "seats": 10}
        )
        apg = await asyncpg.connect(**asyncpg_kwargs(target))
        try:
            await apg.set_type_codec(
                "jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
            )
            stmt = await apg.prepare(RAW_ASYNCPG)

            async def raw(slug: str) -> Any:
                return await (await aconn.execute(RAW, (slug,))).fetchone()

            sides = {
                LAYER: partial(tenants.get_by_slug, aconn),
                RAW_SIDE: raw,
                ASYNCPG: stmt.fetchrow,
            }
            for fn in sides.values():  # warm up, and let psycopg prepare the statement
                await timed_async(fn, SLUG, 200)
            samples = await interleave_async(
                {name: partial(timed_async, fn, SLUG, calls) for name, fn in sides.items()},
                rounds,
            )
        finally:
            await apg.close()

    report(samples, width=24)
    report_ratio(samples, LAYER, RAW_SIDE)
    report_ratio(samples, LAYER, ASYNCPG)
    report_ratio(samples, RAW_SIDE, ASYNCPG)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=2000, help="calls per side and round")
    args = parser.parse_args()
    asyncio.run(run(args.rounds, args.calls))


if __name__ == "__main__":
    main()
