"""Benchmark: ``tenants.get_by_slug`` against raw psycopg on the same connection.

All sides fetch the same row on one autocommit connection, in interleaved rounds whose order
alternates (bench/rounds.py), so that noise on a shared machine hits them alike. "raw psycopg"
is what plain code writes, ``conn.execute("SELECT ... WHERE slug = %s", (slug,)).fetchone()``
(a new cursor per call, a tuple back, settings parsed by psycopg's jsonb loader); "raw, one
cursor" reuses a single cursor, a floor that code shared between threads cannot use. Prints the
median time per call of each with its spread over the rounds, and the ratio of get_by_slug to
raw psycopg.

    .venv/bin/python bench/get_by_slug.py [--rounds 15] [--calls 2000]

It uses the configured database (DATABASE_URL, .env, or the embedded cluster) and creates the
tenant ``bench-tenant`` there if it is absent.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from functools import partial
from typing import Any

from rounds import interleave, report, report_ratio, timed

from dbtools import db, tenants

SLUG = "bench-tenant"
# The query as plain code writes it: the columns, settings as jsonb, a positional parameter.
RAW = "SELECT id, slug, name, status, settings, created_at, updated_at FROM tenants WHERE slug = %s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=2000, help="calls per side and round")
    args = parser.parse_args()

    with db.connect(autocommit=True) as conn:
        tenants.get_or_create(conn, SLUG, "Bench Tenant", settings={"plan": "pro", "seats": 10})
        raw_cursor = conn.cursor()

        def raw(slug: str) -> Any:
            return conn.execute(RAW, (slug,)).fetchone()

        def raw_one_cursor(slug: str) -> Any:
            raw_cursor.execute(RAW, (slug,))
            return raw_cursor.fetchone()

        sides: dict[str, Callable[[str], object]] = {
            "raw psycopg": raw,
            "raw, one cursor": raw_one_cursor,
            "tenants.get_by_slug": partial(tenants.get_by_slug, conn),
        }
        for fn in sides.values():  # warm up, and let psycopg prepare the statement
            timed(fn, SLUG, 200)
        samples = interleave(
            {name: partial(timed, fn, SLUG, args.calls) for name, fn in sides.items()},
            args.rounds,
        )

    report(samples, width=22)
    report_ratio(samples, "tenants.get_by_slug", "raw psycopg", "<= 1.10")


if __name__ == "__main__":
    main()
