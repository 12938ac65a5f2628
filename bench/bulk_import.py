"""Section 4: ``dbtools tenants import`` against creating the tenants one by one.

Into an empty scratch database, emptied again (``TRUNCATE``, untimed) before every run:

- ``dbtools tenants import FILE``, the command, as a process of its own (its start and its
  connection counted: what an operator waits for), a CSV of ``slug,name,settings`` rows;
- ``dbtools.importing.import_csv`` of the same file in this process, on an open connection,
  committed (the same work without the process's start);
- ``tenants.create`` once per row in one transaction (each in its savepoint, as the API runs a
  write inside the caller's transaction), fewer rows, scaled to rows per second;
- psycopg's ``cursor.executemany`` of ``tenants.INSERT`` in one transaction (psycopg pipelines
  it): the fastest way to send one INSERT per row, for scale.

Every insert fires the table's triggers (the audit trail, the notifications), as in production.

Then what the table's rules cost the database: the same rows copied into ``tenants`` with all of
them, and without some (triggers disabled, CHECK constraints dropped, in transactions rolled
back), interleaved: the profile of the server's side, which cProfile cannot see.
"""

# The tables print × and – on purpose (ruff takes them for look-alikes of x and -).
# ruff: noqa: RUF001, RUF003

from __future__ import annotations

import contextlib
import itertools
import json
import os
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from contenders import dbtools_program
from psycopg import sql
from report import BenchError, Check, Section, Table, cell, profile
from rounds import Mode, Spread, interleave, ratio, spread
from scratch import empty

from dbtools import db, importing, tenants
from dbtools.config import Target

COMMAND = "dbtools tenants import (the command)"
IN_PROCESS = "import_csv, in this process"
ONE_BY_ONE = "tenants.create per row, one transaction"
EXECUTEMANY = "cursor.executemany(tenants.INSERT), one transaction"
# import_csv's steps, as its progress callback marks them: the first report of Phase.INSERT, and
# its last before the final one. The rows are sent faster than the database inserts them: the
# third step is the wait for it (the last 1,000 rows sent count in it).
PHASES = (
    "read and check the rows (Python)",
    "send the rows (COPY into tenants)",
    "the database inserts them (constraints, indexes, triggers), commit",
)
# What the table's rules cost the database: the same rows copied into tenants without some of
# them, in a transaction rolled back (ALTER TABLE and DROP CONSTRAINT are transactional).
# (the ALTER TABLE that disables triggers, whether to drop every CHECK constraint too)
WITHOUT: dict[str, tuple[str | None, bool]] = {
    "every constraint and trigger, as the import": (None, False),
    "without the audit trail (tenants_audit_insert)": (
        "ALTER TABLE tenants DISABLE TRIGGER tenants_audit_insert",
        False,
    ),
    "without the notifications (tenants_notify_insert)": (
        "ALTER TABLE tenants DISABLE TRIGGER tenants_notify_insert",
        False,
    ),
    "without the reserved-slug check (tenants_admit_insert)": (
        "ALTER TABLE tenants DISABLE TRIGGER tenants_admit_insert",
        False,
    ),
    "without any trigger": ("ALTER TABLE tenants DISABLE TRIGGER USER", False),
    "without any trigger or CHECK constraint (indexes only)": (
        "ALTER TABLE tenants DISABLE TRIGGER USER",
        True,
    ),
}
CHECKS = """
    SELECT conname FROM pg_constraint WHERE conrelid = 'tenants'::regclass AND contype = 'c'
"""
IMPORT_TARGET = 100_000.0  # rows per second, at least
FASTER_TARGET = 10.0  # times the rows per second of one tenants.create per row, at least


def row(number: int) -> tuple[str, str, dict[str, Any]]:
    return f"i-{number:07d}", f"Imported Tenant {number}", {"plan": "pro", "seats": number % 100}


def run(target: Target, mode: Mode) -> Section:
    section = Section(
        4,
        "import",
        "CSV import against one tenants.create per row",
        f"An empty scratch table, emptied again before each run; {mode.import_rounds} interleaved "
        f"rounds. The import reads a CSV of {mode.import_rows:,} rows (`slug,name,settings`); "
        f"the one-by-one contenders create {mode.loop_rows:,} rows, scaled to rows per second. "
        "The command is timed as a process (its start and connection included); `import_csv` "
        "on an open connection, commit included. Every row fires the table's triggers (audit "
        "trail, notifications).",
    )
    with contextlib.ExitStack() as stack:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="dbtools-bench-")))
        csv_path = folder / "tenants.csv"
        _write_csv(csv_path, mode.import_rows)
        admin = stack.enter_context(db.connect(target))
        conn = stack.enter_context(db.connect(target))
        env = os.environ | {"DATABASE_URL": target.url()}
        program = dbtools_program()
        rows = [row(number) for number in range(1, mode.loop_rows + 1)]

        def command() -> float:
            empty(admin)
            start = time.perf_counter()
            done = subprocess.run(
                [program, "tenants", "import", str(csv_path)],
                env=env,
                capture_output=True,
                text=True,
                check=False,
            )
            elapsed = time.perf_counter() - start
            if done.returncode != 0:
                raise BenchError(f"dbtools tenants import failed: {done.stderr.strip()}")
            return elapsed / mode.import_rows

        phases: dict[str, list[float]] = {phase: [] for phase in PHASES}

        def in_process() -> float:
            empty(admin)
            reported: dict[importing.Phase, list[float]] = {phase: [] for phase in importing.Phase}

            def progress(phase: importing.Phase, count: int) -> None:
                reported[phase].append(time.perf_counter())

            start = time.perf_counter()
            created = importing.import_csv(conn, csv_path, progress=progress)
            conn.commit()
            end = time.perf_counter()
            elapsed = end - start
            sending = reported[importing.Phase.INSERT]
            marks = [start, sending[0], sending[-2], end]
            for phase, (first, last) in zip(PHASES, itertools.pairwise(marks), strict=True):
                phases[phase].append(last - first)
            if created != mode.import_rows:
                raise BenchError(f"import_csv created {created} tenants, not {mode.import_rows}")
            return elapsed / created

        def one_by_one() -> float:
            empty(admin)
            start = time.perf_counter()
            with conn.transaction():
                for slug, name, settings in rows:
                    tenants.create(conn, slug, name, settings=settings)
            conn.commit()
            return (time.perf_counter() - start) / len(rows)

        def executemany() -> float:
            empty(admin)
            params = [
                {"slug": slug, "name": name, "settings": json.dumps(settings)}
                for slug, name, settings in rows
            ]
            start = time.perf_counter()
            with conn.transaction(), conn.cursor() as cur:
                cur.executemany(tenants.INSERT, params)
            conn.commit()
            return (time.perf_counter() - start) / len(rows)

        contenders: dict[str, Callable[[], float]] = {
            COMMAND: command,
            IN_PROCESS: in_process,
            ONE_BY_ONE: one_by_one,
            EXECUTEMANY: executemany,
        }
        in_process()  # warm up the short ones (the others are long enough to need none)
        executemany()
        for values in phases.values():
            values.clear()
        samples = interleave(contenders, mode.import_rounds)  # seconds per row
        table = Table(
            "Rows per second (median, spread below)",
            [
                "contender",
                "rows per run",
                "rows/s",
                "× the rows/s of one create per row",
                "× those of executemany",
            ],
        )
        for name in contenders:
            count = mode.import_rows if name in (COMMAND, IN_PROCESS) else mode.loop_rows
            rate = _rate(spread(samples, name))
            table.rows.append(
                [
                    name,
                    f"{count:,}",
                    cell(rate, "rows/s"),
                    cell(ratio(samples, ONE_BY_ONE, name), "×"),
                    cell(ratio(samples, EXECUTEMANY, name), "×"),
                ]
            )
        section.tables.append(table)
        where = Table(
            f"Where `import_csv`'s time goes ({mode.import_rows:,} rows, median of the rounds)",
            ["phase", "seconds", "µs per row", "share"],
        )
        total = sum(statistics.median(values) for values in phases.values())
        for phase, values in phases.items():
            median = statistics.median(values)
            where.rows.append(
                [
                    phase,
                    f"{median:.2f}",
                    f"{median / mode.import_rows * 1e6:.1f}",
                    f"{median / total:.0%}",
                ]
            )
        section.tables.append(where)
        section.tables.append(_rules(conn, admin, mode))
        section.checks += [
            Check(
                "`dbtools tenants import`",
                _rate(spread(samples, COMMAND)),
                IMPORT_TARGET,
                "rows/s",
                at_most=False,
            ),
            Check(
                f"`dbtools tenants import` / `{ONE_BY_ONE}`",
                ratio(samples, ONE_BY_ONE, COMMAND),
                FASTER_TARGET,
                "×",
                at_most=False,
            ),
        ]
        if not all(check.met for check in section.checks):
            empty(admin)
            section.profiles.append(
                (
                    f"import_csv of {mode.import_rows:,} rows, in this process",
                    profile(partial(_import_once, conn, csv_path), 1),
                )
            )
        empty(admin)
    return section


def _rules(conn: Any, admin: Any, mode: Mode) -> Table:
    """What each of the table's rules costs the COPY of the import's rows (see WITHOUT)."""
    empty(admin)
    data = "".join(
        f"{slug}\t{name}\t{json.dumps(settings)}\n"
        for slug, name, settings in map(row, range(1, mode.import_rows + 1))
    ).encode()
    checks = [name for (name,) in conn.execute(CHECKS).fetchall()]
    conn.rollback()
    batches = {
        label: partial(_copy_without, conn, disable, checks if drop else [], data)
        for label, (disable, drop) in WITHOUT.items()
    }
    samples = interleave(batches, mode.import_rounds)
    table = Table(
        f"What the table's rules cost: `COPY` of the same {mode.import_rows:,} rows into "
        "tenants, without some of them (rolled back; the database's time only)",
        ["COPY into tenants", "seconds", "rows/s", "× the time of indexes only"],
    )
    floor = next(reversed(WITHOUT))
    for label in WITHOUT:
        seconds = spread(samples, label)
        table.rows.append(
            [
                label,
                cell(seconds, "s"),
                cell(_rate(seconds.scaled(1 / mode.import_rows)), "rows/s"),
                cell(ratio(samples, label, floor), "×"),
            ]
        )
    return table


def _copy_without(conn: Any, disable: str | None, checks: list[str], data: bytes) -> float:
    """Seconds to COPY ``data`` into tenants with the ``disable`` statement run and the
    ``checks`` constraints dropped first, in a transaction rolled back."""
    try:
        if disable is not None:
            conn.execute(disable)
        for name in checks:
            conn.execute(
                sql.SQL("ALTER TABLE tenants DROP CONSTRAINT {}").format(sql.Identifier(name))
            )
        start = time.perf_counter()
        with conn.cursor() as cur, cur.copy(importing.COPY_TENANTS) as copy:
            copy.write(data)
        return time.perf_counter() - start
    finally:
        conn.rollback()


def _import_once(conn: Any, path: Path) -> None:
    importing.import_csv(conn, path)
    conn.rollback()


def _rate(seconds_per_row: Spread) -> Spread:
    """Rows per second from seconds per row (the spread's ends swap)."""
    return Spread(1 / seconds_per_row.median, 1 / seconds_per_row.high, 1 / seconds_per_row.low)


def _write_csv(path: Path, count: int) -> None:
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write("slug,name,settings\n")
        for number in range(1, count + 1):
            slug, name, settings = row(number)
            text = json.dumps(settings).replace('"', '""')
            out.write(f'{slug},{name},"{text}"\n')
