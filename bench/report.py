"""What a run found, and how it is written: sections of tables, targets met or missed, the
machine, the Markdown file and the plot.

A section (one module of bench/) returns a :class:`Section`: its tables, ready to print; its
:class:`Check` s, each a measured figure against the issue's target, with the gap when missed;
profiles that show where the time of a missed target goes; and how its panel of the plot is
drawn. A section that cannot measure what it set out to raises :class:`BenchError`; one that
failed (any exception) is a :class:`Failure` in the report instead.
"""

# The tables print × and – on purpose (ruff takes them for look-alikes of x and -).
# ruff: noqa: RUF001, RUF003

from __future__ import annotations

import cProfile
import datetime
import io
import os
import platform
import pstats
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from rounds import Spread


class BenchError(Exception):
    """A section could not measure what it set out to (a command failed, a contender found
    nothing): the message says what."""


@dataclass
class Failure:
    """A section that raised instead of returning its :class:`Section`."""

    number: int
    key: str
    reason: str  # "ExceptionType: message"

    def __post_init__(self) -> None:
        reason = " ".join(self.reason.split())  # one line, whatever the message held
        self.reason = reason if len(reason) <= REASON_CHARS else reason[: REASON_CHARS - 1] + "…"

    def line(self) -> str:
        return f"section {self.number} ({self.key}) failed: {self.reason}"


REASON_CHARS = 300  # of a failure's message, at most


@dataclass
class Table:
    """A Markdown table with a title and notes below it."""

    title: str
    header: list[str]
    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    left: int = 1  # columns aligned left, the others right (numbers)

    def markdown(self) -> str:
        lines = [f"**{self.title}**", ""] if self.title else []
        lines.append("| " + " | ".join(self.header) + " |")
        lines.append(
            "| "
            + " | ".join("---" if i < self.left else "---:" for i in range(len(self.header)))
            + " |"
        )
        lines += ["| " + " | ".join(row) + " |" for row in self.rows]
        if self.notes:
            lines.append("")
            lines += self.notes
        return "\n".join(lines)


@dataclass
class Check:
    """A measured figure against its target: ``value`` at most (or at least) ``limit``."""

    what: str
    value: Spread
    limit: float
    unit: str  # "×", "ms", "µs", "rows/s"
    at_most: bool  # the target is an upper bound (else a lower one)

    @property
    def met(self) -> bool:
        value = self.value.median
        return value <= self.limit if self.at_most else value >= self.limit

    @property
    def target(self) -> str:
        return f"{'≤' if self.at_most else '≥'} {number(self.limit, self.unit)}"

    @property
    def verdict(self) -> str:
        if self.met:
            return "PASS"
        value = self.value.median
        gap = value / self.limit - 1 if self.at_most else 1 - value / self.limit
        shown = f"{gap:.1%}" if gap < 0.1 else f"{gap:.0%}"
        return f"MISS: {shown} {'over' if self.at_most else 'short'}"

    def row(self, section: int) -> list[str]:
        low, high = _bare(self.value.low, self.unit), _bare(self.value.high, self.unit)
        measured = f"{number(self.value.median, self.unit)} ({low}–{high})"
        verdict = self.verdict if self.met else f"**{self.verdict}**"
        return [str(section), self.what, self.target, measured, verdict]


@dataclass
class Section:
    """One part of the benchmark, as it ran."""

    number: int
    key: str
    title: str
    method: str  # a paragraph: what is measured, how
    tables: list[Table] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    profiles: list[tuple[str, str]] = field(default_factory=list)  # (title, text)
    draw: Callable[[Any], None] | None = None  # draws the section's panel on a matplotlib Axes
    seconds: float = 0.0

    def markdown(self) -> str:
        parts = [f"## {self.number}. {self.title}", "", self.method]
        parts += ["", *[table.markdown() + "\n" for table in self.tables]]
        if self.checks:
            targets = Table("", ["", "what", "target", "measured (spread)", ""], left=2)
            targets.rows = [check.row(self.number) for check in self.checks]
            parts.append(targets.markdown())
        parts.append(f"\n_This section took {self.seconds:.0f} s._")
        return "\n".join(parts)


def number(value: float, unit: str) -> str:
    """``value`` with its unit, to about three significant figures."""
    if unit == "×" and value < 0.1:
        return f"{value:.2g}×"
    if unit == "×":
        return (
            f"{value:.2f}×" if value < 10 else f"{value:.1f}×" if value < 100 else f"{value:.0f}×"
        )
    if unit == "rows/s":
        return f"{value:,.0f} rows/s"
    if unit == "%":
        return f"{value:.0%}"
    digits = 2 if abs(value) < 10 else 1 if abs(value) < 100 else 0
    return f"{value:,.{digits}f} {unit}"


def cell(spread: Spread, unit: str) -> str:
    """A table cell: the median and, smaller, the spread."""
    low, high = _bare(spread.low, unit), _bare(spread.high, unit)
    return f"{number(spread.median, unit)} <sub>{low}–{high}</sub>"


def _bare(value: float, unit: str) -> str:
    text = number(value, unit)
    return text.removesuffix(f" {unit}").removesuffix("×")


def profile(fn: Callable[[], object], calls: int, *, top: int = 14) -> str:
    """The functions that take the time of ``calls`` calls of ``fn``, by own time (cProfile)."""
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(calls):
        fn()
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.strip_dirs().sort_stats("tottime").print_stats(top)
    lines = out.getvalue().splitlines()
    start = next((i for i, line in enumerate(lines) if "ncalls" in line), 0)
    head = next((line.strip() for line in lines if "function calls" in line), "")
    return "\n".join([head, "", *lines[start:]]).rstrip()


# -- the machine ------------------------------------------------------------------------------


@dataclass
class Machine:
    """What the figures depend on, written beside them."""

    facts: dict[str, str] = field(default_factory=dict)
    caption: str = ""  # one line, for the plot
    load_start: str = ""
    load_end: str = ""

    def markdown(self) -> str:
        table = Table("", ["", ""], left=2)
        facts = dict(self.facts)
        facts["load average (1, 5, 15 min)"] = (
            f"{self.load_start} at the start, {self.load_end} at the end"
        )
        table.rows = [[key, value] for key, value in facts.items()]
        return table.markdown()


def load_average() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def memory() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 2**20:.0f} GiB"
    except OSError:
        pass
    return "unknown"


def version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def checkout() -> str:
    """The commit of the checkout, and whether files differ from it."""
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=here,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "not a git checkout"
    return f"{commit}{' with uncommitted changes' if dirty else ''}"


def machine(server_version: str, connection: str, pgbench: str, mode: str) -> Machine:
    """The machine facts, the load average of now as the start."""
    import psycopg

    cores = os.cpu_count() or 0
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    cpu = cpu_model()
    python = platform.python_version()
    psycopg_impl = f"{psycopg.__version__} ({psycopg.pq.__impl__} implementation, libpq {_libpq()})"
    facts = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "CPU": f"{cpu}, {cores} cores ({usable} usable by this process)",
        "memory": memory(),
        "system": f"{platform.system()} {platform.release()}",
        "PostgreSQL": f"{server_version}, {connection}; {pgbench}",
        "Python": f"{python} ({platform.python_implementation()})",
        "packages": (
            f"psycopg {psycopg_impl}, pydantic {version('pydantic')}, SQLAlchemy "
            f"{version('sqlalchemy')}, asyncpg {version('asyncpg')}"
        ),
        "checkout": checkout(),
        "mode": mode,
    }
    caption = f"{cpu}, {cores} cores; PostgreSQL {server_version.split()[0]}; Python {python}"
    return Machine(facts, caption, load_start=load_average())


def _libpq() -> str:
    import psycopg

    raw = psycopg.pq.version()
    return f"{raw // 10000}.{raw % 10000}" if raw >= 100000 else str(raw)


# -- the file and the plot --------------------------------------------------------------------


def write_markdown(
    path: Path,
    sections: Sequence[Section],
    machine: Machine,
    plot: Path | None,
    seconds: float,
    command: str,
    failures: Sequence[Failure] = (),
) -> None:
    checks = [(section.number, check) for section in sections for check in section.checks]
    missed = sum(not check.met for _, check in checks)
    parts = [
        "# Benchmarks",
        "",
        f"Written by `python {command}`; not edited by hand. "
        f"{len(checks) - missed} of {len(checks)} targets met. The run took {seconds:.0f} s.",
        "",
    ]
    for failure in failures:
        reason = failure.reason.replace("`", "'")  # inside a code span
        parts += [
            f"**Section {failure.number} ({failure.key}) failed**, so its figures and targets "
            f"are missing: `{reason}`",
            "",
        ]
    parts += [
        "Method: every figure is the median of interleaved rounds: each round runs every "
        "contender of a section once, one batch of calls each, in an order that alternates from "
        "round to round, so that the noise of a shared machine falls on all of them alike "
        "(bench/rounds.py). The spread is the fastest and the slowest round; a ratio is the "
        "median of the per-round ratios. Everything runs in scratch databases on the server of "
        "the configured target, dropped at the end; nothing is written to the configured "
        "database.",
        "",
    ]
    if plot is not None:
        parts += [
            f"![per-call latency of each contender, and cost against table size]({plot.name})",
            "",
        ]
    parts += ["## The machine", "", machine.markdown(), ""]
    if checks:
        table = Table("", ["", "what", "target", "measured (spread)", ""], left=2)
        table.rows = [check.row(number) for number, check in checks]
        parts += ["## Targets", "", table.markdown(), ""]
    parts += [section.markdown() + "\n" for section in sections]
    profiles = [
        (section.number, title, text) for section in sections for title, text in section.profiles
    ]
    if profiles:
        parts += [
            "## Profiles",
            "",
            "Where the time of a missed target goes: cProfile of the contender and of what it is "
            "compared with, the functions that take the most time of their own first (profiling "
            "slows Python code more than waiting, so read the shares, not the totals); for the "
            "start-up, the imports by cumulative time (`-X importtime`, microseconds).",
            "",
        ]
        for number_, title, text in profiles:
            parts += [f"**{number_}. {title}**", "", "```text", text, "```", ""]
    path.write_text("\n".join(parts).rstrip() + "\n")


def write_plot(path: Path, sections: Sequence[Section], machine: Machine) -> bool:
    """The PNG: per-call latency of each contender of section 1 (log axis), cost against table
    size (section 3), and batches against single lookups (section 2). False if there is nothing
    to draw."""
    panels = [section for section in sections if section.draw is not None]
    if not panels:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # The first panel (the contenders of one lookup) across the top, the others below it.
    below = len(panels) - 1
    figure = plt.figure(figsize=(12, 10 if below else 5.5), layout="constrained")
    grid = figure.add_gridspec(
        2 if below else 1, max(below, 1), height_ratios=[1.1, 1] if below else None
    )
    axes = [figure.add_subplot(grid[0, :])]
    axes += [figure.add_subplot(grid[1, column]) for column in range(below)]
    for axis, section in zip(axes, panels, strict=True):
        section.draw(axis)  # type: ignore[misc]
    figure.suptitle(f"dbtools — {machine.caption} — {machine.facts.get('date', '')}", fontsize=10)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return True
