"""Section 5: how long the ``dbtools`` command takes to start and finish.

Each is a process of its own, timed from its start to its exit, in interleaved rounds: the
interpreter doing nothing (``python -c pass``, the floor), ``dbtools --help``, and
``dbtools migrate`` on a database with nothing to apply (it connects, takes the migration lock,
reads the applied migrations and their checksums). When ``--help`` misses its target, the
imports that take its time (``python -X importtime``) are the profile.
"""

# The tables print × and – on purpose (ruff takes them for look-alikes of x and -).
# ruff: noqa: RUF001, RUF003

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable

from contenders import dbtools_program
from report import BenchError, Check, Section, Table, cell
from rounds import Mode, interleave, ratio, spread

from dbtools.config import Target

FLOOR = "python -c pass"
HELP = "dbtools --help"
MIGRATE = "dbtools migrate (nothing to apply)"
HELP_TARGET = 150.0  # milliseconds, at most


def run(target: Target, mode: Mode) -> Section:
    section = Section(
        5,
        "startup",
        "process start",
        f"Each a process of its own, from start to exit, {mode.startup_rounds} interleaved "
        "rounds: the virtualenv's interpreter doing nothing, `dbtools --help`, and `dbtools "
        "migrate` on a migrated database (`DATABASE_URL` the scratch database).",
    )
    program = dbtools_program()
    env = os.environ | {"DATABASE_URL": target.url()}
    commands = {
        FLOOR: [sys.executable, "-c", "pass"],
        HELP: [program, "--help"],
        MIGRATE: [program, "migrate"],
    }
    runs: dict[str, Callable[[], float]] = {
        name: _timer(command, env) for name, command in commands.items()
    }
    for fn in runs.values():  # warm up: the page cache, .pyc files
        fn()
    samples = interleave(runs, mode.startup_rounds)
    table = Table(
        "Milliseconds from start to exit (median, spread below)", ["command", "ms", f"× {FLOOR}"]
    )
    for name in commands:
        table.rows.append(
            [
                name,
                cell(spread(samples, name).scaled(1e3), "ms"),
                cell(ratio(samples, name, FLOOR), "×"),
            ]
        )
    section.tables.append(table)
    check = Check(
        "`dbtools --help`", spread(samples, HELP).scaled(1e3), HELP_TARGET, "ms", at_most=True
    )
    section.checks.append(check)
    if not check.met:
        section.profiles.append(
            (
                "imports of `dbtools --help`, slowest first (`-X importtime`, µs)",
                _imports(program, env),
            )
        )
    return section


def _timer(command: list[str], env: dict[str, str]) -> Callable[[], float]:
    def timed() -> float:
        start = time.perf_counter()
        done = subprocess.run(command, env=env, capture_output=True, check=False)
        elapsed = time.perf_counter() - start
        if done.returncode != 0:
            raise BenchError(f"{' '.join(command)} failed: {done.stderr.decode().strip()}")
        return elapsed

    return timed


def _imports(program: str, env: dict[str, str], top: int = 20) -> str:
    """The slowest imports of ``dbtools --help``, by cumulative time, as Python reports them."""
    done = subprocess.run(
        [program, "--help"],
        env=env | {"PYTHONPROFILEIMPORTTIME": "1"},
        capture_output=True,
        text=True,
        check=False,
    )
    lines = [line for line in done.stderr.splitlines() if line.startswith("import time:")]
    if not lines:
        return "(no -X importtime output)"
    header, rows = lines[0], lines[1:]

    def cumulative(line: str) -> int:
        try:
            return int(line.split("|")[1])
        except (IndexError, ValueError):
            return 0

    rows.sort(key=cumulative, reverse=True)
    return "\n".join([header, *rows[:top]])
