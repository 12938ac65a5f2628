"""Benchmark: ``tenants.get_by_slug`` against raw psycopg on the same connection.

All sides fetch the same row on one autocommit connection, in alternating rounds so that noise
on a shared machine hits them alike. "raw psycopg" is what plain code writes,
``conn.execute("SELECT ... WHERE slug = %s", (slug,)).fetchone()`` (a new cursor per call, a
tuple back, settings parsed by psycopg's jsonb loader); "raw, one cursor" reuses a single cursor,
a floor that code shared between threads cannot use. Prints the
median time per call of each, and the ratio of get_by_slug to raw psycopg.

    .venv/bin/python bench/get_by_slug.py [--rounds 15] [--calls 2000]

It uses the configured database (DATABASE_URL, .env, or the embedded cluster) and creates the
tenant ``bench-tenant`` there if it is absent.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

from dbtools import db, tenants

SLUG = "bench-tenant"
# The query as plain code writes it: the columns, settings as jsonb, a positional parameter.
RAW = "SELECT id, slug, name, status, settings, created_at, updated_at FROM tenants WHERE slug = %s"


def _timed(fn: Callable[[], Any], calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args()

    with db.connect(autocommit=True) as conn:
        tenants.get_or_create(conn, SLUG, "Bench Tenant", settings={"plan": "pro", "seats": 10})
        raw_cursor = conn.cursor()

        def raw() -> Any:
            return conn.execute(RAW, (SLUG,)).fetchone()

        def raw_one_cursor() -> Any:
            raw_cursor.execute(RAW, (SLUG,))
            return raw_cursor.fetchone()

        def layer() -> Any:
            return tenants.get_by_slug(conn, SLUG)

        sides = {
            "raw psycopg": raw,
            "raw, one cursor": raw_one_cursor,
            "tenants.get_by_slug": layer,
        }
        for fn in sides.values():  # warm up, and let psycopg prepare the statement
            _timed(fn, 200)
        samples: dict[str, list[float]] = {name: [] for name in sides}
        for _ in range(args.rounds):
            for name, fn in sides.items():
                samples[name].append(_timed(fn, args.calls))

    medians = {name: statistics.median(times) for name, times in samples.items()}
    for name, median in medians.items():
        print(f"{name:<22} {median * 1e6:8.1f} µs/call (median of {args.rounds} rounds)")
    ratio = medians["tenants.get_by_slug"] / medians["raw psycopg"]
    print(f"{'ratio':<22} {ratio:8.3f}  (target: <= 1.10)")


if __name__ == "__main__":
    main()
