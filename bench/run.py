"""Every benchmark of dbtools in one run against one server: ``make bench`` (``make bench-quick``).

    .venv/bin/python bench/run.py [--quick] [--only SECTION ...] [--output FILE.md]

Sections, in order (name or number for ``--only``):

1. ``lookup``: ``get_by_slug``, its cache and asyncio twins, against raw psycopg, SQLAlchemy
   sessions, asyncpg and pgbench (bench/get_by_slug.py);
2. ``batch``: ``get_many`` and ``list_tenants`` against single lookups and raw psycopg
   (bench/batches.py);
3. ``size``: lookups and pages as the table grows (bench/table_size.py);
4. ``import``: ``dbtools tenants import`` against one ``tenants.create`` per row
   (bench/bulk_import.py);
5. ``startup``: ``dbtools --help`` and a migrate with nothing to do (bench/startup.py);
6. ``cache``: the tenant cache's hits and staleness (bench/cache.py).

Everything runs in scratch databases made on the server of the configured target
(``DATABASE_URL``, ``.env``, or the embedded cluster) and dropped at the end (bench/scratch.py):
nothing is written to the configured database. The full run writes ``bench/results.md`` and
``bench/results.png``; ``--quick`` (about a minute: fewer rounds, smaller batches, tables of
10,000 and 100,000 tenants) writes ``bench/results-quick.md`` and ``.png``, which git ignores;
``--only`` writes nothing unless ``--output`` is given. Each section's tables are printed as it
ends. The exit status is 0 whether targets are met or not: the file says which.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path

import batches
import bulk_import
import cache
import get_by_slug
import startup
import table_size
from contenders import pgbench_version
from report import Machine, Section, Table, load_average, machine, write_markdown, write_plot
from rounds import FULL, QUICK, Mode
from scratch import Scratch, add_bench_tenant, fill

from dbtools import config, db
from dbtools.config import Target
from dbtools.errors import DbToolsError

HERE = Path(__file__).resolve().parent
SECTIONS = ("lookup", "batch", "size", "import", "startup", "cache")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="about a minute, for routine use")
    parser.add_argument(
        "--only",
        nargs="+",
        metavar="SECTION",
        choices=[*SECTIONS, *(str(n) for n in range(1, len(SECTIONS) + 1))],
        help=f"run these sections only: {', '.join(SECTIONS)} (or 1-{len(SECTIONS)})",
    )
    parser.add_argument(
        "--output", type=Path, help="the Markdown file to write (the PNG beside it)"
    )
    args = parser.parse_args(argv)
    mode = QUICK if args.quick else FULL
    chosen = {SECTIONS[int(s) - 1] if s.isdigit() else s for s in args.only or SECTIONS}
    selected = [key for key in SECTIONS if key in chosen]
    output: Path | None = args.output
    if output is None and not args.only:
        output = HERE / ("results-quick.md" if args.quick else "results.md")
    command = shlex.join(["bench/run.py", *(argv if argv is not None else sys.argv[1:])])

    try:
        return _run(mode, selected, output, command)
    except DbToolsError as exc:  # no server, no right to create a database...
        print(f"bench: {exc}", file=sys.stderr)
        return 2


def _run(mode: Mode, selected: list[str], output: Path | None, command: str) -> int:
    started = time.perf_counter()
    configured = config.resolve()
    sections: list[Section] = []
    with Scratch(configured) as scratch:
        targets = _prepare(scratch, mode, selected)
        facts = _machine(scratch.main(), mode, selected)
        print(f"bench: {mode.name} run of {', '.join(selected)} in {scratch.prefix}*", flush=True)
        runners = _runners(targets, mode)
        for key in selected:
            begun = time.perf_counter()
            section = runners[key]()
            section.seconds = time.perf_counter() - begun
            sections.append(section)
            print(f"\n{section.markdown()}\n", flush=True)
    facts.load_end = load_average()
    seconds = time.perf_counter() - started
    _summary(sections, seconds)
    if output is not None:
        plot = output.with_suffix(".png")
        drawn = write_plot(plot, sections, facts)
        write_markdown(output, sections, facts, plot if drawn else None, seconds, command)
        print(f"wrote {_shown(output)}" + (f" and {_shown(plot)}" if drawn else ""))
    return 0


def _prepare(scratch: Scratch, mode: Mode, selected: list[str]) -> dict[int, Target]:
    """The scratch databases, filled: by table size (the smallest is the main one, where the
    lookups, batches, start-up and cache run); the import's under key 0."""
    main = scratch.main()
    sizes = mode.sizes if "size" in selected else mode.sizes[:1]
    targets = {size: scratch.clone(f"{size // 1000}k") for size in sizes[1:]}  # clones first
    if "import" in selected:
        targets[0] = scratch.clone("import")
    targets[sizes[0]] = main
    for size in sizes:
        begun = time.perf_counter()
        fill(targets[size], size)
        print(f"bench: {size:,} tenants in {time.perf_counter() - begun:.1f} s", flush=True)
    add_bench_tenant(main)
    return targets


def _runners(targets: dict[int, Target], mode: Mode) -> dict[str, Callable[[], Section]]:
    sizes = sorted(size for size in targets if size)
    main = targets[sizes[0]]
    return {
        "lookup": lambda: get_by_slug.run(main, mode),
        "batch": lambda: batches.run(main, mode, sizes[0]),
        "size": lambda: table_size.run({size: targets[size] for size in sizes}, mode),
        "import": lambda: bulk_import.run(targets[0], mode),
        "startup": lambda: startup.run(main, mode),
        "cache": lambda: cache.run(main, mode),
    }


def _machine(target: Target, mode: Mode, selected: list[str]) -> Machine:
    with db.connect(target, autocommit=True) as conn:
        row = conn.execute("SHOW server_version").fetchone()
        server = str(row[0]) if row else "unknown"
        host = conn.info.host
    if host.startswith("/"):
        connection = "over a Unix socket"
    elif host in ("localhost", "127.0.0.1", "::1"):
        connection = "over TCP on this machine"
    else:
        connection = "over TCP to another machine"
    description = (
        f"{mode.name}: {mode.rounds} rounds, batches of about {mode.batch_seconds * 1e3:.0f} ms, "
        f"tables of {', '.join(f'{size:,}' for size in mode.sizes)} tenants; sections "
        f"{', '.join(selected)}"
    )
    return machine(server, connection, pgbench_version(), description)


def _summary(sections: list[Section], seconds: float) -> None:
    table = Table(
        f"Targets ({seconds:.0f} s in all)", ["", "what", "target", "measured (spread)", ""], left=2
    )
    table.rows = [check.row(section.number) for section in sections for check in section.checks]
    print(table.markdown())


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


if __name__ == "__main__":
    sys.exit(main())
