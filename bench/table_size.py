"""Section 3: what a lookup and a page cost as the table grows.

One scratch database per size (10,000, 100,000 and 1,000,000 tenants in the full run), all
measured in the same interleaved rounds, so that each size's figure is compared with the
10,000 one of the same round: ``get_by_slug`` of a tenant drawn in turn from 1,000 random ones
(an index lookup), ``list_tenants`` first page (100 tenants) and a page 90 % of the way into the
table (keyset: ``slug > after``, the unique index serves both the range and the order). All
three should stay flat.
"""

# The tables print × and – on purpose (ruff takes them for look-alikes of x and -).
# ruff: noqa: RUF001, RUF003

from __future__ import annotations

import contextlib
import itertools
import random
from collections.abc import Callable
from functools import partial
from typing import Any

from report import BenchError, Check, Section, Table, cell
from rounds import Batch, Mode, calibrate, interleave, ratio, spread, timed_calls
from scratch import slug_of

from dbtools import db, tenants
from dbtools.config import Target

LOOKUP = "get_by_slug"
FIRST = "list_tenants, first page"
DEEP = "list_tenants, page at 90 %"
OPERATIONS = (LOOKUP, FIRST, DEEP)
PAGE = 100
SAMPLE = 1000  # tenants looked up in turn
FLAT_TARGET = 1.2  # at most this many times the figure of the smallest table


def name(operation: str, size: int) -> str:
    return f"{operation} @ {size:,}"


def run(targets: dict[int, Target], mode: Mode) -> Section:
    sizes = sorted(targets)
    section = Section(
        3,
        "size",
        "cost against table size",
        f"Tables of {', '.join(f'{size:,}' for size in sizes)} tenants, one scratch database each, "
        "every operation on every size in the same interleaved rounds "
        f"({mode.rounds}). `get_by_slug` looks up a tenant drawn in turn from {SAMPLE:,} random "
        f"ones; `list_tenants` reads the first page of {PAGE} and a page 90 % of the way into the "
        "table (`after=` the slug there). Ratios are to the smallest table's figure of the same "
        "round.",
    )
    with contextlib.ExitStack() as stack:
        batches: dict[str, Batch] = {}
        for size in sizes:
            conn = stack.enter_context(db.connect(targets[size], autocommit=True))
            batches |= {
                name(op, size): partial(timed_calls, fn)
                for op, fn in _operations(conn, size).items()
            }
        sized = {
            key: partial(batch, calibrate(batch, mode.batch_seconds))
            for key, batch in batches.items()
        }
        samples = interleave(sized, mode.rounds)
    smallest = sizes[0]
    table = Table(
        "Microseconds per call (median, spread below), and the ratio to the smallest table",
        ["operation", *(f"{size:,} tenants" for size in sizes)],
    )
    for op in OPERATIONS:
        row = [op]
        for size in sizes:
            figure = cell(spread(samples, name(op, size)).scaled(1e6), "µs")
            if size != smallest:
                figure += f"<br>{cell(ratio(samples, name(op, size), name(op, smallest)), '×')}"
                section.checks.append(
                    Check(
                        f"`{op}` at {size:,} / at {smallest:,}",
                        ratio(samples, name(op, size), name(op, smallest)),
                        FLAT_TARGET,
                        "×",
                        at_most=True,
                    )
                )
            row.append(figure)
        table.rows.append(row)
    section.tables.append(table)
    figures = {op: [spread(samples, name(op, size)) for size in sizes] for op in OPERATIONS}
    section.draw = partial(_draw, sizes, figures)
    return section


def _operations(conn: Any, size: int) -> dict[str, Callable[[], object]]:
    picks = random.Random(size).sample(range(1, size + 1), min(SAMPLE, size))  # noqa: S311
    turn = itertools.cycle([slug_of(i) for i in picks])
    deep = slug_of(int(size * 0.9))

    def lookup() -> object:
        found = tenants.get_by_slug(conn, next(turn))
        if found is None:
            raise BenchError("a tenant of the filled table is missing")
        return found

    return {
        LOOKUP: lookup,
        FIRST: partial(tenants.list_tenants, conn, limit=PAGE),
        DEEP: partial(tenants.list_tenants, conn, after=deep, limit=PAGE),
    }


def _draw(sizes: list[int], figures: dict[str, list[Any]], axis: Any) -> None:
    for (op, values), style in zip(figures.items(), ("o-", "s-", "^-"), strict=True):
        medians = [value.median * 1e6 for value in values]
        errors = [
            [m - value.low * 1e6 for m, value in zip(medians, values, strict=True)],
            [value.high * 1e6 - m for m, value in zip(medians, values, strict=True)],
        ]
        axis.errorbar(sizes, medians, yerr=errors, fmt=style, capsize=3, label=op)
    axis.set_xscale("log")
    axis.set_xticks(sizes, [f"{size:,}" for size in sizes])
    axis.minorticks_off()
    axis.set_xlim(sizes[0] / 2, sizes[-1] * 2)
    axis.set_ylim(bottom=0)
    axis.set_xlabel("tenants in the table (log scale)")
    axis.set_ylabel("µs per call (whiskers: fastest and slowest round)")
    axis.set_title("3. cost against table size")
    axis.legend(fontsize=8)
    axis.grid(which="both", alpha=0.3)
