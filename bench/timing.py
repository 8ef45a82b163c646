"""What the benchmark scripts share: interleaved GC-free timing, paired ratios, module loading, reporting."""
from __future__ import annotations

import gc
import statistics
import sys
import time
import types
from pathlib import Path
from typing import Any, Callable


def load_module(name: str, filename: str, code: types.CodeType) -> types.ModuleType:
    """Run ``code`` as module ``name``, registered in ``sys.modules`` first (compiled code declares
    its durable functions as ``module:qualname`` while it runs)."""
    module = types.ModuleType(name)
    module.__file__ = filename
    sys.modules[name] = module
    exec(code, module.__dict__)
    return module


def _sample(fn: Callable[[], Any], number: int) -> int:
    """Nanoseconds for ``number`` calls of ``fn`` with the GC disabled (as timeit does)."""
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        start = time.perf_counter_ns()
        for _ in range(number):
            fn()
        return time.perf_counter_ns() - start
    finally:
        if gc_was_enabled:
            gc.enable()


def _calibrate(fn: Callable[[], Any], target_ns: int, setup: Callable[[], None] | None) -> int:
    number = 1
    while True:
        if setup is not None:
            setup()
        elapsed = _sample(fn, number)
        if elapsed >= target_ns or number >= 1 << 20:
            return number
        number = max(number * 2, int(number * target_ns / max(elapsed, 1) * 1.1))


def measure(variants: dict[str, Callable[[], Any]], rounds: int, target_ns: int,
            setup: Callable[[], None] | None = None) -> dict[str, list[float]]:
    """Nanoseconds per call of each variant, one sample per variant per round; the samples of a
    round are taken back to back (order rotated every round) so they see the same machine load.
    ``setup`` runs before every sample, outside the timing."""
    numbers = {name: _calibrate(fn, target_ns, setup) for name, fn in variants.items()}
    samples: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            if setup is not None:
                setup()
            samples[name].append(_sample(variants[name], numbers[name]) / numbers[name])
    return samples


def median(samples: list[float]) -> float:
    return statistics.median(samples)


def paired_ratio(num: list[float], den: list[float]) -> float:
    """Median over rounds of num/den: each ratio compares two samples taken moments apart."""
    return statistics.median(a / b for a, b in zip(num, den))


class Collector:
    """Calls ``fn`` and keeps the results alive, so freeing them is not part of the timing."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.fn = fn
        self.kept: list[Any] = []

    def __call__(self) -> None:
        self.kept.append(self.fn())

    def reset(self) -> None:
        kept, self.kept = self.kept, []
        for obj in kept:
            close = getattr(obj, "close", None)
            if close is not None:
                close()


def format_ns(value: float) -> str:
    if value >= 1_000_000:
        return f"{value / 1_000_000:.2f} ms"
    if value >= 1_000:
        return f"{value / 1_000:.2f} µs"
    return f"{value:.0f} ns"


def print_measured(make_table: Callable[[], str]) -> int:
    """Print the table ``make_table`` builds, with how much of the run this process had the CPU."""
    started, cpu_started = time.perf_counter(), time.process_time()
    table = make_table()
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    print(table)
    print(f"Measured in {wall:.1f} s; this process had the CPU {cpu / wall:.0%} of that time.")
    if cpu / wall < 0.9:
        print("Warning: other processes competed for the CPU during the run; times are noisy "
              "(ratios less so). Rerun on an idle machine for reliable numbers.")
    return 0


def fs_type(path: Path) -> str:
    """The filesystem holding ``path`` (from /proc/mounts, longest matching mount point)."""
    best, kind = "", "unknown"
    try:
        with open("/proc/mounts", encoding="utf-8") as fh:
            for line in fh:
                parts = line.split()
                if len(parts) > 2 and str(path).startswith(parts[1]) and len(parts[1]) > len(best):
                    best, kind = parts[1], parts[2]
    except OSError:
        pass
    return kind
