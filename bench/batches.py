"""Section 2: many tenants at once. ``get_many`` of 1, 10, 100 and 1,000 slugs against as many
calls of ``get_by_slug`` and against raw psycopg fetching the same rows; ``list_tenants`` pages
of 100 and 1,000 against raw psycopg fetching the same page.

The slugs are a fixed random sample of the 10,000 tenants of the scratch table, all present;
the pages start in the middle of the table. Raw psycopg is what plain code writes:
``conn.execute("SELECT ... WHERE slug = ANY(%s)", (slugs,)).fetchall()`` and ``... WHERE slug >
%s ORDER BY slug LIMIT %s``, tuples back, settings parsed by psycopg's jsonb loader.
"""

# The tables print × and – on purpose (ruff takes them for look-alikes of x and -).
# ruff: noqa: RUF001, RUF003

from __future__ import annotations

import random
from collections.abc import Callable
from functools import partial
from typing import Any

from report import BenchError, Check, Section, Table, cell, profile
from rounds import Batch, Mode, Samples, calibrate, interleave, ratio, spread, timed_calls
from scratch import slug_of

from dbtools import db, tenants
from dbtools.config import Target

COLUMNS = "id, slug, name, status, settings, created_at, updated_at"
RAW_MANY = f"SELECT {COLUMNS} FROM tenants WHERE slug = ANY(%s)"  # noqa: S608 (constant text)
RAW_PAGE = f"SELECT {COLUMNS} FROM tenants WHERE slug > %s ORDER BY slug LIMIT %s"  # noqa: S608
COUNTS = (1, 10, 100, 1000)
PAGES = (100, 1000)
MANY_TARGET = 1.2  # get_many and list_tenants at most this many times raw psycopg
PROFILE_SECONDS = 0.3  # about how long a missed target's contender is profiled
SINGLES_TARGET = 20.0  # get_many of 1,000 at least this many times faster than 1,000 lookups


def many(n: int) -> str:
    return f"get_many({n})"


def singles(n: int) -> str:
    return f"{n} × get_by_slug"


def raw_many(n: int) -> str:
    return f"raw psycopg, {n} rows"


def page(n: int) -> str:
    return f"list_tenants(limit={n})"


def raw_page(n: int) -> str:
    return f"raw psycopg, page of {n}"


def run(target: Target, mode: Mode, table_size: int) -> Section:
    section = Section(
        2,
        "batch",
        "get_many and list_tenants against single lookups and raw psycopg",
        f"A table of {table_size:,} tenants. `get_many` of N slugs (a fixed random sample, every "
        "one present) against N calls of `get_by_slug` and against raw psycopg fetching the same "
        "rows (`WHERE slug = ANY(%s)`, tuples back); `list_tenants` pages, starting in the "
        "middle of the table, against raw psycopg fetching the same page (`WHERE slug > %s "
        "ORDER BY slug LIMIT %s`). One autocommit connection; every contender in the same "
        f"interleaved rounds ({mode.rounds}).",
    )
    picks = random.Random(11).sample(range(1, table_size + 1), max(COUNTS))  # noqa: S311
    slugs = {n: [slug_of(i) for i in picks[:n]] for n in COUNTS}
    after = slug_of(table_size // 2)
    with db.connect(target, autocommit=True) as conn:

        def raw_rows(n: int) -> list[Any]:
            return conn.execute(RAW_MANY, (slugs[n],)).fetchall()

        def one_by_one(n: int) -> list[Any]:
            return [tenants.get_by_slug(conn, slug) for slug in slugs[n]]

        def raw_list(n: int) -> list[Any]:
            return conn.execute(RAW_PAGE, (after, n)).fetchall()

        calls: dict[str, Callable[[], object]] = {}
        for n in COUNTS:
            calls[many(n)] = partial(tenants.get_many, conn, slugs[n])
            calls[raw_many(n)] = partial(raw_rows, n)
            calls[singles(n)] = partial(one_by_one, n)
        for n in PAGES:
            calls[page(n)] = partial(tenants.list_tenants, conn, after=after, limit=n)
            calls[raw_page(n)] = partial(raw_list, n)
        _check_answers(calls)
        batches: dict[str, Batch] = {name: partial(timed_calls, fn) for name, fn in calls.items()}
        sized = {
            name: partial(batch, calibrate(batch, mode.batch_seconds))
            for name, batch in batches.items()
        }
        samples = interleave(sized, mode.rounds)
        _tables(section, samples)
        _checks(section, samples, calls)
    section.draw = partial(_draw, samples)
    return section


def _check_answers(calls: dict[str, Callable[[], object]]) -> None:
    """Every contender returns the rows it is meant to, so none is timed doing less."""
    expected = {name: n for n in COUNTS for name in (many(n), raw_many(n), singles(n))}
    expected |= {name: n for n in PAGES for name in (page(n), raw_page(n))}
    for name, n in expected.items():
        found = calls[name]()
        if not isinstance(found, dict | list) or len(found) != n:
            raise BenchError(f"{name} did not return {n} tenants")


def _tables(section: Section, samples: Samples) -> None:
    table = Table(
        "get_many: microseconds per call (median, spread below)",
        [
            "slugs",
            "get_many",
            "raw psycopg, same rows",
            "N × get_by_slug",
            "get_many / raw",
            "N lookups / get_many",
        ],
    )
    for n in COUNTS:
        table.rows.append(
            [
                f"{n:,}",
                cell(spread(samples, many(n)).scaled(1e6), "µs"),
                cell(spread(samples, raw_many(n)).scaled(1e6), "µs"),
                cell(spread(samples, singles(n)).scaled(1e6), "µs"),
                cell(ratio(samples, many(n), raw_many(n)), "×"),
                cell(ratio(samples, singles(n), many(n)), "×"),
            ]
        )
    per_row = ", ".join(
        f"{n:,}: {spread(samples, many(n)).median * 1e6 / n:.1f} µs" for n in COUNTS
    )
    table.notes.append(f"get_many per row: {per_row}.")
    section.tables.append(table)
    pages = Table(
        "list_tenants: microseconds per page (median, spread below)",
        ["page", "list_tenants", "raw psycopg, same page", "list_tenants / raw"],
    )
    for n in PAGES:
        pages.rows.append(
            [
                f"{n:,}",
                cell(spread(samples, page(n)).scaled(1e6), "µs"),
                cell(spread(samples, raw_page(n)).scaled(1e6), "µs"),
                cell(ratio(samples, page(n), raw_page(n)), "×"),
            ]
        )
    section.tables.append(pages)


def _checks(section: Section, samples: Samples, calls: dict[str, Callable[[], object]]) -> None:
    """The targets; a missed one is profiled, with its raw psycopg counterpart."""
    pairs = [(many(n), raw_many(n), f"`get_many` of {n:,} / raw psycopg") for n in COUNTS]
    pairs += [(page(n), raw_page(n), f"`list_tenants` page of {n:,} / raw psycopg") for n in PAGES]
    for mine, raw, what in pairs:
        check = Check(what, ratio(samples, mine, raw), MANY_TARGET, "×", at_most=True)
        section.checks.append(check)
        if not check.met:
            count = max(5, min(2000, round(PROFILE_SECONDS / spread(samples, mine).median)))
            section.profiles += [
                (f"{mine}, {count:,} calls", profile(calls[mine], count)),
                (f"{raw}, {count:,} calls", profile(calls[raw], count)),
            ]
    n = max(COUNTS)
    what = f"{n:,} × `get_by_slug` / `get_many` of {n:,}"
    section.checks.append(
        Check(what, ratio(samples, singles(n), many(n)), SINGLES_TARGET, "×", at_most=False)
    )


def _draw(samples: Samples, axis: Any) -> None:
    for label, name, style in (
        ("N × get_by_slug", singles, "o-"),
        ("get_many(N)", many, "s-"),
        ("raw psycopg, = ANY(N slugs)", raw_many, "^--"),
    ):
        axis.plot(
            COUNTS, [spread(samples, name(n)).median * 1e6 for n in COUNTS], style, label=label
        )
    from matplotlib.ticker import FuncFormatter

    axis.set_xscale("log")
    axis.set_yscale("log")
    axis.set_xticks(COUNTS, [f"{n:,}" for n in COUNTS])
    axis.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:,.0f}"))
    axis.set_xlabel("tenants fetched (N, log scale)")
    axis.set_ylabel("µs per call (log scale)")
    axis.set_title("2. many tenants: one query against N lookups")
    axis.legend(fontsize=8)
    axis.grid(which="both", alpha=0.3)
