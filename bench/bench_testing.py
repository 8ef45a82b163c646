#!/usr/bin/env python
"""Benchmark: the test kit (runtime.testing) — a simulated run, a crash at every point, a fresh-interpreter replay.

Prints a Markdown table (median of repeated runs) and exits with status 0 unless a check fails; nothing
about time is asserted.

    PYTHONPATH=. python bench/bench_testing.py --quick   # about 15 s
    PYTHONPATH=. python bench/bench_testing.py           # more repetitions

The program makes N = 50 requests (25 steps and 25 checkpoints, alternating). Rows:

1. one fault-free simulated run (in-memory store, virtual clock);
2. ``assert_survives_crashes(points="all", fresh=0)``: the fault-free run, then a crash before every commit
   and after every commit a worker goes on from, each followed to the end of the run;
3. one fresh-interpreter replay (``fresh=1`` minus ``fresh=0``): a new interpreter imports the program's
   module, restores a snapshot from the middle of the run and replays it to the end. Its cost is mostly
   interpreter start-up and import; with ``PYTHONDONTWRITEBYTECODE`` set the import hook's compiled-module
   cache is not written, so each replay compiles the module again (the row says which).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.timing import median  # noqa: E402

REQUESTS = 50
PROGRAM = '''"""The program bench_testing.py checks."""
from runtime import checkpoint, durable, step


def fetch(i):
    return i * 10


@durable
def long_run(n):
    total = 0
    for i in range(n):
        if i % 2:
            yield checkpoint()
        else:
            total += yield step(fetch, i)
    return total
'''


def seconds(fn: Callable[[], object], repeats: int) -> float:
    samples = []
    for _ in range(repeats):
        begun = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - begun)
    return median(samples)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    options = parser.parse_args(argv)
    repeats = 5 if options.quick else 15
    folder = tempfile.mkdtemp(prefix="dg-bench-testing-")
    Path(folder, "dg_bench_kit.py").write_text(PROGRAM, encoding="utf-8")
    sys.path.insert(0, folder)
    from transpiler import install_import_hook

    install_import_hook(["dg_bench_kit"])
    import dg_bench_kit  # type: ignore[import-not-found]

    from runtime.testing import Simulation, assert_survives_crashes

    os.chdir(folder)
    expected = sum(dg_bench_kit.fetch(i) for i in range(0, REQUESTS, 2))
    if Simulation().run(dg_bench_kit.long_run, REQUESTS).result() != expected:
        print("the simulated run returned a wrong result")
        return 1
    report = assert_survives_crashes(dg_bench_kit.long_run, REQUESTS, points="all", fresh=0)
    one_run = seconds(lambda: Simulation().run(dg_bench_kit.long_run, REQUESTS), repeats)
    every_point = seconds(lambda: assert_survives_crashes(dg_bench_kit.long_run, REQUESTS, points="all", fresh=0),
                          repeats)
    with_fresh = seconds(lambda: assert_survives_crashes(dg_bench_kit.long_run, REQUESTS, points=2, fresh=1),
                         repeats)
    without_fresh = seconds(lambda: assert_survives_crashes(dg_bench_kit.long_run, REQUESTS, points=2, fresh=0),
                            repeats)
    cache = "off (PYTHONDONTWRITEBYTECODE)" if sys.dont_write_bytecode else "on"
    print(f"Test kit, CPython {sys.version.split()[0]}, a program of {REQUESTS} requests, median of {repeats}\n")
    print("| what | time |")
    print("|---|---:|")
    print(f"| one simulated run ({report.commits} commits) | {one_run * 1e3:.1f} ms |")
    print(f"| crash at every point: {report.possible_points} crash points, each followed to the end | "
          f"{every_point * 1e3:.0f} ms |")
    print(f"| one fresh-interpreter replay (compiled-module cache {cache}) | "
          f"{(with_fresh - without_fresh) * 1e3:.0f} ms |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
