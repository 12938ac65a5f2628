"""The benchmark's harness (bench/), not its figures: the scratch databases are dropped however a
run is stopped, a signal during the drops included, and ``--output`` is refused before anything
runs. Against the test server; bench/ is no package, so its modules are loaded from their files.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any, SupportsIndex

import pytest
from psycopg import sql

from dbtools import db
from tests.helpers import PROJECT, SERVER, run_python

BENCH = PROJECT / "bench"
STOPPING = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
NO_SERVER = "postgresql://nobody@127.0.0.1:1/nothing"  # any database work would fail on it


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


scratch = _load("scratch")


def _exists(name: str) -> bool:
    with db.maintenance_connection(SERVER) as conn:
        found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
    return found is not None


def _make(made: list[str]) -> str:
    """A database on the test server, listed in ``made`` as the Scratch lists its own."""
    name = f"dbtools_bench_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    made.append(name)
    with db.maintenance_connection(SERVER) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return name


class SignalledDrops(list[str]):
    """A Scratch's list of databases that sends this process a signal before each drop."""

    def __init__(self, signals: Iterator[int]) -> None:
        super().__init__()
        self.signals = signals

    def pop(self, index: SupportsIndex = -1) -> str:
        os.kill(os.getpid(), next(self.signals))
        time.sleep(0.05)  # the handler runs here, before the drop
        return super().pop(index)


def _handlers() -> dict[signal.Signals, object]:
    return {signum: signal.getsignal(signum) for signum in STOPPING}


def _run(body: Callable[[Any], None]) -> None:
    """``body(scratch)`` inside a Scratch on the test server."""
    with scratch.Scratch(SERVER) as run:
        body(run)


@pytest.mark.parametrize("signum", STOPPING, ids=lambda signum: signum.name)
def test_a_signal_stops_the_run_and_its_databases_are_dropped(signum: signal.Signals) -> None:
    before = _handlers()
    names: list[str] = []

    def body(run: Any) -> None:
        names.append(_make(run.made))
        os.kill(os.getpid(), signum)
        time.sleep(5)  # interrupted long before

    with pytest.raises(scratch.Interrupted) as stopped:
        _run(body)
    assert stopped.value.signum == signum
    assert stopped.value.status == 128 + signum
    assert not _exists(names[0])
    assert _handlers() == before


def test_signals_during_the_drops_wait_until_they_are_done() -> None:
    before = _handlers()
    names: list[str] = []

    def body(run: Any) -> None:
        run.made = SignalledDrops(iter([signal.SIGHUP, signal.SIGINT, signal.SIGTERM]))
        names.extend(_make(run.made) for _ in range(3))

    with pytest.raises(scratch.Interrupted) as stopped:
        _run(body)
    assert stopped.value.signum == signal.SIGHUP  # the first, raised once all were dropped
    assert len(names) == 3
    assert not any(_exists(name) for name in names)
    assert _handlers() == before


def test_a_second_signal_does_not_cut_the_drops_short() -> None:
    names: list[str] = []

    def body(run: Any) -> None:
        run.made = SignalledDrops(iter([signal.SIGINT, signal.SIGTERM]))
        names.extend(_make(run.made) for _ in range(2))
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)

    with pytest.raises(scratch.Interrupted) as stopped:
        _run(body)
    assert stopped.value.signum == signal.SIGTERM  # the one that stopped the run
    assert len(names) == 2
    assert not any(_exists(name) for name in names)


@pytest.mark.parametrize(
    ("output", "why"),
    [
        ("results.png", "does not end in .md"),
        ("results", "does not end in .md"),
        ("missing/results.md", "no folder '"),
        (".", "is a folder"),
        ("dangling.md", "no folder '"),  # a symbolic link to a file in a missing folder
        ("plot.md", "to write 'plot.png' in"),  # plot.png is such a link, plot.md is fine
    ],
)
def test_output_is_refused_before_anything_runs(tmp_path: Path, output: str, why: str) -> None:
    links = [tmp_path / "dangling.md", tmp_path / "plot.png"]
    for link in links:
        link.symlink_to(tmp_path / "gone" / link.name)
    done = run_python(
        str(BENCH / "run.py"),
        "--only",
        "startup",
        "--output",
        str(tmp_path / output),
        env=os.environ | {"DATABASE_URL": NO_SERVER},
    )
    assert done.returncode == 2
    *usage, error = done.stderr.splitlines()
    assert usage[0].startswith("usage: run.py")
    assert error.startswith("run.py: error: argument --output: ")
    assert why in error
    assert done.stdout == ""
    assert sorted(tmp_path.iterdir()) == sorted(links)


def test_the_import_sections_triggers_are_the_schemas(
    conn: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """bench/bulk_import.py times the COPY without each trigger it names: each must exist (a
    renamed trigger failed the section at the end of a full run)."""
    monkeypatch.syspath_prepend(str(BENCH))  # its sibling modules, imported by name
    bulk_import = _load("bulk_import")
    statements = [disable for disable, _ in bulk_import.WITHOUT.values() if disable is not None]
    assert statements
    for statement in statements:
        with conn.transaction(force_rollback=True):
            conn.execute(statement)
