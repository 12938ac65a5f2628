"""Interleaved rounds, the method of every benchmark in bench/.

A shared machine is noisy: another process, a frequency change or a checkpoint slows whatever
runs at that moment. So no contender is timed alone: each round times every contender once, one
batch of calls each, and the order alternates from one round to the next (A B C, then C B A), so
that noise, and any advantage of going first or last, falls on all of them alike. A round yields
one number per contender, its mean time per call over the batch; the report gives the median of
those over the rounds and their spread (the fastest and slowest round), and ratios are medians of
the per-round ratios, each taken between batches that ran side by side.

Each contender's batch is sized by :func:`calibrate` to take about the same time, so a slow
contender does not stretch a round and a fast one is not lost in the timer's resolution.

The modules import this one by its bare name (``from rounds import ...``): Python puts the folder
of the script it runs, bench/, first on the path.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

Samples = dict[str, list[float]]  # contender -> seconds per call, one number per round
Batch = Callable[[int], float]  # calls -> seconds per call over that many calls in a row


def timed(fn: Callable[[str], object], arg: str, calls: int) -> float:
    """Seconds per call of ``fn(arg)``, over ``calls`` calls in a row."""
    start = time.perf_counter()
    for _ in range(calls):
        fn(arg)
    return (time.perf_counter() - start) / calls


def timed_calls(fn: Callable[[], object], calls: int) -> float:
    """Seconds per call of ``fn()``, over ``calls`` calls in a row."""
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


async def timed_async(fn: Callable[[str], Awaitable[object]], arg: str, calls: int) -> float:
    """Seconds per call of ``await fn(arg)``, over ``calls`` calls in a row."""
    start = time.perf_counter()
    for _ in range(calls):
        await fn(arg)
    return (time.perf_counter() - start) / calls


def calibrate(batch: Batch, seconds: float, *, most: int = 1_000_000) -> int:
    """How many calls make a batch of about ``seconds``: a first call, then a short batch (both
    warm-ups too: caches filled, statements prepared), give the time per call."""
    per_call = batch(1)
    probe = max(1, min(most, int(0.02 / max(per_call, 1e-9))))
    per_call = batch(probe)
    return max(1, min(most, round(seconds / max(per_call, 1e-9))))


def schedule(names: Sequence[str], rounds: int) -> Iterator[str]:
    """Each name once per round, in an order that alternates from round to round."""
    for index in range(rounds):
        yield from (names if index % 2 == 0 else reversed(names))


def interleave(batches: Mapping[str, Callable[[], float]], rounds: int) -> Samples:
    """Run each batch once per round, as :func:`schedule` orders them: their samples."""
    samples: Samples = {name: [] for name in batches}
    for name in schedule(list(batches), rounds):
        samples[name].append(batches[name]())
    return samples


async def interleave_async(
    batches: Mapping[str, Callable[[], Awaitable[float]]], rounds: int
) -> Samples:
    """:func:`interleave` for batches that are awaited."""
    samples: Samples = {name: [] for name in batches}
    for name in schedule(list(batches), rounds):
        samples[name].append(await batches[name]())
    return samples


@dataclass(frozen=True)
class Spread:
    """The median of some numbers, and the lowest and highest of them."""

    median: float
    low: float
    high: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        return cls(statistics.median(values), min(values), max(values))

    def scaled(self, factor: float) -> Spread:
        return Spread(self.median * factor, self.low * factor, self.high * factor)


def spread(samples: Samples, name: str) -> Spread:
    """The median of ``name``'s per-round numbers and their spread."""
    return Spread.of(samples[name])


def ratio(samples: Samples, slower: str, faster: str) -> Spread:
    """The median of the per-round ratios of ``slower`` to ``faster``, and their spread."""
    return Spread.of([a / b for a, b in zip(samples[slower], samples[faster], strict=True)])


def report(samples: Samples, *, width: int = 30) -> None:
    """Print each contender's median time per call and its spread, in microseconds."""
    for name, times in samples.items():
        low, high = min(times) * 1e6, max(times) * 1e6
        print(
            f"{name:<{width}} {statistics.median(times) * 1e6:9.2f} µs/call   "
            f"spread {low:.2f}-{high:.2f} over {len(times)} rounds"
        )


def report_ratio(samples: Samples, slower: str, faster: str, target: str = "") -> float:
    """Print :func:`ratio` of ``slower`` to ``faster`` on one line; return the median."""
    found = ratio(samples, slower, faster)
    note = f"; target: {target}" if target else ""
    print(
        f"ratio {slower} / {faster}: {found.median:.2f} "
        f"(spread {found.low:.2f}-{found.high:.2f}{note})"
    )
    return found.median


@dataclass(frozen=True)
class Mode:
    """How long a run measures: ``make bench`` (full) or ``make bench-quick``."""

    name: str
    rounds: int  # interleaved rounds of each section
    batch_seconds: float  # the time one contender's batch takes (calibrate)
    sizes: tuple[int, ...]  # tenants in the tables of the table-size section
    import_rows: int  # rows of the imported CSV
    loop_rows: int  # rows created one by one, against the import
    import_rounds: int
    startup_rounds: int
    cache_calls: int  # database calls per round of the cache's hits
    hit_calls: int  # cache hits per round
    updates: int  # renames whose staleness is measured


QUICK = Mode(
    name="quick",
    rounds=7,
    batch_seconds=0.02,
    sizes=(10_000, 100_000),
    import_rows=10_000,
    loop_rows=1_000,
    import_rounds=2,
    startup_rounds=5,
    cache_calls=300,
    hit_calls=20_000,
    updates=100,
)
FULL = Mode(
    name="full",
    rounds=15,
    batch_seconds=0.15,
    sizes=(10_000, 100_000, 1_000_000),
    import_rows=100_000,
    loop_rows=5_000,
    import_rounds=3,
    startup_rounds=20,
    cache_calls=1000,
    hit_calls=50_000,
    updates=500,
)
