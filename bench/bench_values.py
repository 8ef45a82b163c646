#!/usr/bin/env python
"""Benchmark: durable snapshots of suspended generators against pickle of the same locals.

Prints one Markdown table. For each state below, a compiled durable generator is suspended with
that state in its live locals, and three things are compared with ``pickle`` (highest protocol)
of a dict holding the same values (the generator's live locals, read from its frame):

* time: ``runtime.snapshot(gen)`` against ``pickle.dumps(locals)``;
* time: ``runtime.restore(data)`` (a generator suspended at the yield) against ``pickle.loads``;
* size: ``len`` of the two byte strings.

Everything is measured in one run: each comparison times its two sides interleaved (one sample
of each per round, the order alternating) and reports the median sample; a ratio is the median
of the per-round ratios, so both sides of a ratio come from the same moment of the same run.
Timing samples run with the garbage collector disabled, as ``timeit`` does. Targets (the
issue's): durable within 1.5x of pickle's time and no larger than pickle's bytes, on every row.
The PASS/MISS column is informational only: the script exits with status 0 unless something
is functionally wrong.

    PYTHONPATH=. python bench/bench_values.py            # thorough (< 2 minutes)
    PYTHONPATH=. python bench/bench_values.py --quick    # fewer samples (< 30 s)

States:

1. the foundation's 6-local frame (``bench_generators.py``'s worker): n, total, i, a list of 8
   ints, a dict of 5 entries and the for loop's range iterator;
2. a list of 1,000 dataclass instances (int id, str name, float price, bool active) whose class
   is defined in the compiled benchmark module;
3. 50 locals of mixed types (ints, floats, strs, short lists, dicts, tuples, None, bytes);
4. about 1 MB: a list of 10,000 dicts of seven scalars each.
"""
from __future__ import annotations

import argparse
import gc
import pickle
import platform
import sys
import types
from typing import Any

from timing import Collector, format_ns, load_module, measure, median, paired_ratio, print_measured
from bench_generators import WORKER

# 50 locals of mixed types for state 3: cycles through these kinds of values
_MIXED = [
    "{k}", "{k} + 0.25", "'value-{k}'", "[{k}, {k} + 1, {k} + 2]", "{{'key': {k}, 'other': 'x{k}'}}",
    "({k}, 'tuple', {k}.5)", "None", "b'bytes-{k}'", "-{k} * 1000003", "'{k}' * 3",
]
MIXED_NAMES = [f"v{k:02d}" for k in range(50)]
_MIXED_BODY = "\n".join(f"    {name} = {_MIXED[k % len(_MIXED)].format(k=k)}" for k, name in enumerate(MIXED_NAMES))

PROGRAM = '''
from dataclasses import dataclass


@dataclass
class Item:
    id: int
    name: str
    price: float
    active: bool


# 1. the foundation's worker (bench_generators.WORKER), added below


# 2. 1,000 dataclass instances
@durable
def catalog(n):
    items = [Item(k, f"item-{k:04d}", k * 1.25 + 0.99, k % 3 != 0) for k in range(n)]
    x = yield len(items)
    return items, x


# 3. 50 locals of mixed types
@durable
def mixed():
''' + _MIXED_BODY + '''
    x = yield 0
    return (x, ''' + ", ".join(MIXED_NAMES) + ''')


# 4. about 1 MB of state
@durable
def table(n):
    rows = [{"id": k, "customer": f"customer-{k:06d}", "email": f"customer{k:06d}@example.com", "region": ("north", "south", "east", "west")[k % 4],
             "amount": k * 0.37 + 1.0, "paid": k % 5 != 0, "units": k % 17} for k in range(n)]
    x = yield len(rows)
    return rows, x
''' + WORKER

MODULE = "bench_values_compiled"

ROWS = [
    # (key, label, call that creates the generator, names of the live locals besides iterators)
    ("frame", "1. 6-local frame (n, total, i, 8-int list, 5-entry dict, range iterator)", "worker(10)",
     {"n", "total", "i", "data", "seen"}),
    ("dataclasses", "2. 1,000 dataclass instances (int, str, float, bool)", "catalog(1000)", {"items"}),
    ("mixed", "3. 50 locals of mixed types", "mixed()", set(MIXED_NAMES)),
    ("large", "4. ~1 MB: 10,000 dicts of 7 scalars", "table(10000)", {"rows"}),
]

TIME_LIMIT = 1.5   # durable / pickle
SIZE_LIMIT = 1.0


# -- loading the program ------------------------------------------------------------------------
def load_compiled() -> types.ModuleType:
    from transpiler import compile_source
    source = "from runtime import durable\n" + PROGRAM
    filename = "<bench values program: compiled>"
    generated = compile_source(source, filename)
    return load_module(MODULE, filename, compile(generated, filename, "exec", dont_inherit=True))


def _reset(collectors: dict[str, Collector]) -> None:
    for c in collectors.values():
        c.reset()
    gc.collect()  # the restored values hold cycles; collect them outside the timed samples


# -- the benchmark ------------------------------------------------------------------------------
def suspend(module: types.ModuleType, call: str) -> Any:
    gen = eval(call, vars(module))
    next(gen)
    if call.startswith("worker"):  # the foundation's worker is suspended after three yields
        gen.send(1)
        gen.send(2)
    return gen


def live_locals(gen: Any, expected: set[str]) -> dict[str, Any]:
    """The live locals of a suspended compiled generator (what its snapshot carries), by name."""
    from runtime import registry
    meta = registry.BY_CODE[id(gen.gi_code)]
    f_locals = gen.gi_frame.f_locals
    names = meta.states[f_locals["_dg_s"]]
    plain = {n for n in names if not n.startswith("_dg_")}
    if plain != expected:
        raise SystemExit(f"{meta.ident}: live locals at the yield are {sorted(names)}, expected {sorted(expected)}")
    return {name: f_locals[name] for name in names}


def finish(gen: Any) -> Any:
    try:
        while True:
            gen.send(7)
    except StopIteration as stop:
        return stop.value


def run(quick: bool) -> str:
    import runtime

    module = load_compiled()
    rounds_small = 101 if quick else 1001
    rounds_large = 15 if quick else 61
    target_ns = 1_000_000

    results: list[tuple[str, dict[str, list[float]], dict[str, list[float]], int, int]] = []
    for key, label, call, expected in ROWS:
        gen = suspend(module, call)
        values = live_locals(gen, expected)
        blob = runtime.snapshot(gen)
        pblob = pickle.dumps(values, pickle.HIGHEST_PROTOCOL)
        # functional checks: both round trips give the same continuation / values back
        reference = finish(suspend(module, call))
        if finish(runtime.restore(blob)) != reference:
            raise SystemExit(f"{label}: the restored generator did not continue like the original")
        if pickle.loads(pblob).keys() != values.keys():
            raise SystemExit(f"{label}: pickle did not round-trip the locals")

        rounds = rounds_small if len(blob) < 10_000 else rounds_large
        snap = measure({"durable": lambda: runtime.snapshot(gen),
                        "pickle": lambda: pickle.dumps(values, pickle.HIGHEST_PROTOCOL)}, rounds, target_ns)
        restores = {"durable": Collector(lambda: runtime.restore(blob)),
                    "pickle": Collector(lambda: pickle.loads(pblob))}
        rest = measure(restores, rounds, target_ns, setup=lambda: _reset(restores))
        _reset(restores)
        runtime.detach(gen)
        results.append((label, snap, rest, len(blob), len(pblob)))
    return render(results, quick, rounds_small, rounds_large)


# -- output -------------------------------------------------------------------------------------
def _bytes(n: int) -> str:
    return f"{n:,} B"


def render(results: list[Any], quick: bool, rounds_small: int, rounds_large: int) -> str:
    out = ["| State | measure | durable | pickle | durable / pickle | target | |",
           "|---|---|---:|---:|---:|---:|:---:|"]
    misses = 0
    for label, snap, rest, size, psize in results:
        first = label
        for what, samples in (("snapshot vs `pickle.dumps`", snap), ("restore vs `pickle.loads`", rest)):
            ratio = paired_ratio(samples["durable"], samples["pickle"])
            status = "PASS" if ratio <= TIME_LIMIT else "MISS"
            misses += status == "MISS"
            out.append(f"| {first} | {what} | {format_ns(median(samples['durable']))} | {format_ns(median(samples['pickle']))} "
                       f"| {ratio:.2f}× | ≤ {TIME_LIMIT:.1f}× | {status} |")
            first = ""
        ratio = size / psize
        status = "PASS" if ratio <= SIZE_LIMIT else "MISS"
        misses += status == "MISS"
        out.append(f"| {first} | size | {_bytes(size)} | {_bytes(psize)} | {ratio:.2f}× | ≤ {SIZE_LIMIT:.1f}× "
                   f"| {status} |")
    mode = "quick" if quick else "thorough"
    out += [
        "",
        f"Python {platform.python_version()} ({platform.python_implementation()}) on {platform.machine()}, "
        f"{mode} mode: median of {rounds_small} interleaved samples per row under 10 kB, {rounds_large} for the "
        "larger ones; GC disabled while timing.",
        "pickle side: `pickle.dumps`/`pickle.loads` (highest protocol) of a dict of the generator's live locals "
        "(the same values the snapshot carries); durable side: `runtime.snapshot`/`runtime.restore` of the "
        "generator (restore returns a generator suspended at its yield). A ratio is the median of per-round "
        "ratios (samples taken back to back).",
        f"PASS/MISS is informational only ({misses} MISS).",
    ]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples (finishes in under 30 seconds)")
    args = parser.parse_args(argv)
    return print_measured(lambda: run(args.quick))

if __name__ == "__main__":
    sys.exit(main())
