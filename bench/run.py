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
``--only`` writes nothing unless ``--output`` is given (a ``.md`` file in a folder that exists
and may be written; checked before anything runs). Each section's tables are printed as it
ends.

A section that fails (an exception) is reported in one line on stderr and in the file, and the
others run on: the file and the plot hold those that finished. SIGINT (Ctrl-C), SIGTERM or
SIGHUP stops the run: the scratch databases are dropped, one line says so, and the exit status
is 128 + the signal's number (130, 143, 129). Otherwise the exit status is 0 whether targets are
met or not (the file says which), 1 if a section failed, 2 if the run could not start (a wrong
argument, no server, no right to create a database).
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from report import (
    Failure,
    Machine,
    Section,
    Table,
    load_average,
    machine,
    write_markdown,
    write_plot,
)
from rounds import FULL, QUICK, Mode
from scratch import Interrupted, Scratch, add_bench_tenant, fill

from dbtools import config, db
from dbtools.config import Target
from dbtools.errors import DbToolsError

# The sections are imported once the arguments are checked (see _sections): they load the bench
# extra (SQLAlchemy, asyncpg), which a wrong argument need not wait for, or even have.

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
        "--output",
        type=_output,
        metavar="FILE.md",
        help="the Markdown file to write (the PNG beside it, FILE.png)",
    )
    args = parser.parse_args(argv)
    mode = QUICK if args.quick else FULL
    chosen = {SECTIONS[int(s) - 1] if s.isdigit() else s for s in args.only or SECTIONS}
    selected = [key for key in SECTIONS if key in chosen]
    output: Path | None = args.output
    if output is None and not args.only:
        output = HERE / ("results-quick.md" if args.quick else "results.md")
        problem = _unwritable(output)
        if problem:
            parser.error(problem)
    command = shlex.join(["bench/run.py", *(argv if argv is not None else sys.argv[1:])])

    try:
        return _run(mode, selected, output, command)
    except DbToolsError as exc:  # no server, no right to create a database...
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:
        print(f"bench: {exc}: `make bench` installs the bench extra", file=sys.stderr)
        return 2
    except Interrupted as exc:  # the scratch databases were dropped on the way out
        print(f"bench: interrupted ({exc}); scratch databases dropped", file=sys.stderr)
        return exc.status
    except KeyboardInterrupt:  # Ctrl-C before any scratch database was made
        print("bench: interrupted", file=sys.stderr)
        return 128 + signal.SIGINT


def _output(value: str) -> Path:
    """``--output``: a Markdown file, in a folder that exists and may be written."""
    path = Path(value)
    if value.endswith(os.sep) or path.is_dir():
        raise argparse.ArgumentTypeError(f"{value!r} is a folder: name the .md file to write")
    if path.suffix != ".md":
        raise argparse.ArgumentTypeError(
            f"{value!r} does not end in .md (the plot is written beside it, as .png)"
        )
    problem = _unwritable(path)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return path


def _unwritable(path: Path) -> str | None:
    """Why the Markdown file ``path`` and its plot beside it could not be written, if they
    could not; each looked at where its own symbolic link, if it is one, leads."""
    for written in (path, path.with_suffix(".png")):
        file = written.resolve()
        folder = file.parent
        if not folder.is_dir():
            return f"no folder {str(folder)!r} to write {file.name!r} in"
        if not os.access(folder, os.W_OK | os.X_OK):
            return f"the folder {str(folder)!r} may not be written"
        if file.is_dir():
            return f"{str(file)!r} is a folder"
        if file.exists() and not os.access(file, os.W_OK):
            return f"{str(file)!r} may not be written"
    return None


def _run(mode: Mode, selected: list[str], output: Path | None, command: str) -> int:
    started = time.perf_counter()
    modules = _sections()
    configured = config.resolve()
    sections: list[Section] = []
    failures: list[Failure] = []
    with Scratch(configured) as scratch:
        targets = _prepare(scratch, mode, selected)
        facts = _machine(scratch.main(), mode, selected)
        print(f"bench: {mode.name} run of {', '.join(selected)} in {scratch.prefix}*", flush=True)
        runners = _runners(modules, targets, mode)
        for key in selected:
            begun = time.perf_counter()
            try:
                section = runners[key]()
            except Exception as exc:  # the others still run; an Interrupted is no Exception
                failure = Failure(SECTIONS.index(key) + 1, key, f"{type(exc).__name__}: {exc}")
                failures.append(failure)
                print(f"bench: {failure.line()}", file=sys.stderr, flush=True)
                continue
            section.seconds = time.perf_counter() - begun
            sections.append(section)
            print(f"\n{section.markdown()}\n", flush=True)
    facts.load_end = load_average()
    seconds = time.perf_counter() - started
    _summary(sections, failures, seconds)
    if output is not None:
        # Each file on its own: the figures outlive a plot that cannot be written.
        plot = output.with_suffix(".png")
        unwritten = 0
        try:
            drawn = write_plot(plot, sections, facts)
        except OSError as exc:  # the folder went away meanwhile, a full disk...
            print(f"bench: cannot write {exc.filename}: {exc.strerror}", file=sys.stderr)
            drawn, unwritten = False, 1
        try:
            write_markdown(
                output, sections, facts, plot if drawn else None, seconds, command, failures
            )
        except OSError as exc:
            print(f"bench: cannot write {exc.filename}: {exc.strerror}", file=sys.stderr)
            return 1
        print(f"wrote {_shown(output)}" + (f" and {_shown(plot)}" if drawn else ""))
        if unwritten:
            return 1
    return 1 if failures else 0


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


def _runners(
    modules: dict[str, Any], targets: dict[int, Target], mode: Mode
) -> dict[str, Callable[[], Section]]:
    sizes = sorted(size for size in targets if size)
    main = targets[sizes[0]]
    return {
        "lookup": lambda: modules["lookup"].run(main, mode),
        "batch": lambda: modules["batch"].run(main, mode, sizes[0]),
        "size": lambda: modules["size"].run({size: targets[size] for size in sizes}, mode),
        "import": lambda: modules["import"].run(targets[0], mode),
        "startup": lambda: modules["startup"].run(main, mode),
        "cache": lambda: modules["cache"].run(main, mode),
    }


def _sections() -> dict[str, Any]:
    """The section modules, by key (imported here: see the note at the top)."""
    import batches
    import bulk_import
    import cache
    import get_by_slug
    import startup
    import table_size

    return {
        "lookup": get_by_slug,
        "batch": batches,
        "size": table_size,
        "import": bulk_import,
        "startup": startup,
        "cache": cache,
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
    from contenders import pgbench_version  # the bench extra: see the note at the top

    return machine(server, connection, pgbench_version(), description)


def _summary(sections: list[Section], failures: list[Failure], seconds: float) -> None:
    table = Table(
        f"Targets ({seconds:.0f} s in all)", ["", "what", "target", "measured (spread)", ""], left=2
    )
    table.rows = [check.row(section.number) for section in sections for check in section.checks]
    table.notes = [f"**{failure.line()}**" for failure in failures]
    print(table.markdown())


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


if __name__ == "__main__":
    sys.exit(main())
