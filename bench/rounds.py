"""Interleaved rounds, the method of every benchmark in bench/.

A shared machine is noisy: another process, a frequency change or a checkpoint slows whatever
runs at that moment. So no contender is timed alone: each round times every contender once, one
batch of calls each, and the order alternates from one round to the next (A B C, then C B A), so
that noise, and any advantage of going first or last, falls on all of them alike. A round yields
one number per contender, its mean time per call over the batch; the report gives the median of
those over the rounds and their spread (the fastest and slowest round), and ratios are medians of
the per-round ratios, each taken between batches that ran side by side.

The scripts import this module by its bare name (``from rounds import ...``): Python puts the
folder of the script it runs, bench/, first on the path.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence

Samples = dict[str, list[float]]  # contender -> seconds per call, one number per round


def timed(fn: Callable[[str], object], arg: str, calls: int) -> float:
    """Seconds per call of ``fn(arg)``, over ``calls`` calls in a row."""
    start = time.perf_counter()
    for _ in range(calls):
        fn(arg)
    return (time.perf_counter() - start) / calls


async def timed_async(fn: Callable[[str], Awaitable[object]], arg: str, calls: int) -> float:
    """Seconds per call of ``await fn(arg)``, over ``calls`` calls in a row."""
    start = time.perf_counter()
    for _ in range(calls):
        await fn(arg)
    return (time.perf_counter() - start) / calls


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


def report(samples: Samples, *, width: int = 30) -> None:
    """Print each contender's median time per call and its spread, in microseconds."""
    for name, times in samples.items():
        low, high = min(times) * 1e6, max(times) * 1e6
        print(
            f"{name:<{width}} {statistics.median(times) * 1e6:9.2f} µs/call   "
            f"spread {low:.2f}-{high:.2f} over {len(times)} rounds"
        )


def ratio(samples: Samples, slower: str, faster: str) -> tuple[float, float, float]:
    """The median of the per-round ratios of ``slower`` to ``faster``, and their spread."""
    ratios = [a / b for a, b in zip(samples[slower], samples[faster], strict=True)]
    return statistics.median(ratios), min(ratios), max(ratios)


def report_ratio(samples: Samples, slower: str, faster: str, target: str = "") -> float:
    """Print :func:`ratio` of ``slower`` to ``faster`` on one line; return the median."""
    median, low, high = ratio(samples, slower, faster)
    note = f"; target: {target}" if target else ""
    print(f"ratio {slower} / {faster}: {median:.2f} (spread {low:.2f}-{high:.2f}{note})")
    return median
