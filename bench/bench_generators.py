#!/usr/bin/env python
"""Benchmark: durable (compiled) generators against plain Python generators.

Prints one Markdown table. Everything is measured in one run: each row times its variants
interleaved (native, compiled, peer; one sample of each per round, the order rotating every
round) and reports the median sample; a ratio is the median of the per-round ratios, so both
sides of a ratio always come from the same moment of the same run. Timing samples run with the
garbage collector disabled, as ``timeit`` does. The PASS/MISS column is informational only:
the script always exits with status 0 unless something is functionally wrong.

    PYTHONPATH=. python bench/bench_generators.py            # thorough (< 2 minutes)
    PYTHONPATH=. python bench/bench_generators.py --quick    # fewer samples (< 20 s)

The benchmark program below (``PROGRAM``) is written once. It is loaded three times, each time
preceded by a single line that defines ``durable``:

* native:   ``def durable(fn): return fn``  then plain ``exec``;
* compiled: ``from runtime import durable`` then ``transpiler.compile_source`` and ``exec`` into a
  module registered in ``sys.modules`` (so ``restore`` finds ``module:qualname``);
* peer:     ``from dispatch.experimental.durable import durable`` (dispatch-functions 0.0.14, a
  frame-copying implementation that pickles real CPython 3.11 frames), if it is installed.
"""
from __future__ import annotations

import argparse
import pickle
import platform
import sys
import types
from typing import Any, Callable

from timing import Collector, format_ns, load_module, measure, median, paired_ratio, print_measured

WORKER = '''
# snapshot / restore: suspended with live locals n, total, i, data (8 ints), seen (5 entries)
# and the range iterator of the for loop
@durable
def worker(n):
    total = 0
    data = [1, 2, 3, 4, 5, 6, 7, 8]
    seen = {"a": 1, "b": 2, "c": 3, "d": 4, "e": 5}
    for i in range(n):
        x = yield i
        total += x + i
        data[i % 8] += n
        seen["a"] += 1
    return total, data, seen
'''
"""The snapshot/restore benchmark program, also row 1 of bench_values.py (the same frame)."""

PROGRAM = '''
# (a) a tight loop yielding ints
@durable
def ints(n):
    for i in range(n):
        yield i


# (b) three levels of yield from
@durable
def inner(n):
    for i in range(n):
        yield i


@durable
def middle(n):
    result = yield from inner(n)
    return result


@durable
def outer(n):
    result = yield from middle(n)
    return result


# (c) real work between yields: parse CSV-like lines and accumulate per-key totals
@durable
def tally(lines):
    counts = {}
    revenue = 0.0
    for line in lines:
        name, qty, price = line.split(",")
        q = int(qty)
        amount = q * float(price)
        revenue += amount
        counts[name] = counts.get(name, 0) + q
        yield amount
    return revenue, counts


''' + WORKER

HEADERS = {
    "native": "def durable(fn): return fn",
    "compiled": "from runtime import durable",
    "peer": "from dispatch.experimental.durable import durable",
}

PEER_NAME = "dispatch-functions 0.0.14"
PEER_MISSING = "not installed (pip install dispatch-functions==0.0.14 on Python 3.11)"
WORKER_LOCALS = ("n", "total", "i", "data", "seen")  # plus the for loop's range iterator

N_INTS = 10_000      # (a), (b): items per generator
N_LINES = 2_000      # (c): lines per generator
WORKER_STEPS = 3     # the worker is suspended after this many yields


# -- loading the program ------------------------------------------------------------------------
def load_native() -> types.ModuleType:
    source = HEADERS["native"] + PROGRAM
    filename = "<bench program: native>"
    return load_module("bench_program_native", filename, compile(source, filename, "exec", dont_inherit=True))


def load_compiled() -> types.ModuleType:
    from transpiler import compile_source
    source = HEADERS["compiled"] + PROGRAM
    filename = "<bench program: compiled>"
    generated = compile_source(source, filename)
    try:  # what the import hook does: map generated lines back to the original ones
        from transpiler.linemap import compile_mapped
        code = compile_mapped(generated, filename)
    except ImportError:
        code = compile(generated, filename, "exec", dont_inherit=True)
    module = load_module("bench_program_compiled", filename, code)
    module.__generated__ = generated
    return module


def load_peer() -> types.ModuleType | None:
    if sys.version_info[:2] != (3, 11):
        return None
    try:
        import dispatch.experimental.durable  # noqa: F401
    except Exception:
        return None
    source = HEADERS["peer"] + PROGRAM
    filename = "<bench program: peer>"
    return load_module("bench_program_peer", filename, compile(source, filename, "exec", dont_inherit=True))


# -- the benchmark ------------------------------------------------------------------------------
def make_lines(count: int) -> list[str]:
    names = ["apple", "banana", "cherry", "damson", "elder", "fig", "grape"]
    return [f"{names[k % 7]},{k % 13 + 1},{(k * 37) % 1000 / 100 + 0.5:.2f}" for k in range(count)]


def suspended_worker(module: types.ModuleType) -> Any:
    gen = module.worker(10)
    next(gen)
    for step in range(1, WORKER_STEPS):
        gen.send(step)
    return gen


def finish(gen: Any) -> tuple[list[Any], Any]:
    """Drive a suspended worker to completion (sending 10, 11, ...): its yields and return value."""
    out = []
    value = 10
    try:
        while True:
            out.append(gen.send(value))
            value += 1
    except StopIteration as stop:
        return out, stop.value


def check_compiled(native: types.ModuleType, compiled: types.ModuleType, lines: list[str]) -> None:
    """Same results natively and compiled; the worker's live locals are the documented ones."""
    assert sum(native.ints(N_INTS)) == sum(compiled.ints(N_INTS))
    assert sum(native.outer(N_INTS)) == sum(compiled.outer(N_INTS))
    assert list(native.tally(lines)) == list(compiled.tally(lines))
    meta = compiled.worker.__durable__
    live = set(meta.states[1])
    iterators = {name for name in live if name.startswith("_dg_it")}
    if live - iterators != set(WORKER_LOCALS) or len(iterators) != 1:
        raise SystemExit(f"worker's live locals at the yield changed: {sorted(live)} "
                         f"(expected {list(WORKER_LOCALS)} + the range iterator)")


def check_roundtrip(module: types.ModuleType, dump: Callable[[Any], bytes], load: Callable[[bytes], Any]) -> None:
    reference = finish(suspended_worker(module))
    copy = load(dump(suspended_worker(module)))
    if finish(copy) != reference:
        raise SystemExit(f"restored worker of {module.__name__} did not continue like the original")


def run(quick: bool, include_peer: bool) -> str:
    import runtime

    # Short samples (~1 ms) are less likely to be cut by the scheduler than long ones; many of
    # them make the median stable.
    rounds = 101 if quick else 1001
    target_ns = 1_000_000
    snap_rounds = 101 if quick else 1001
    snap_target_ns = 1_000_000

    native = load_native()
    compiled = load_compiled()
    peer = load_peer() if include_peer else None
    lines = make_lines(N_LINES)
    check_compiled(native, compiled, lines)
    check_roundtrip(compiled, runtime.snapshot, runtime.restore)
    if peer is not None:
        check_roundtrip(peer, lambda g: pickle.dumps(g, pickle.HIGHEST_PROTOCOL), pickle.loads)

    modules = {"native": native, "compiled": compiled}
    if peer is not None:
        modules["peer"] = peer

    results: dict[str, dict[str, list[float]]] = {}
    results["a"] = measure({k: (lambda m=m: sum(m.ints(N_INTS))) for k, m in modules.items()}, rounds, target_ns)
    results["b"] = measure({k: (lambda m=m: sum(m.outer(N_INTS))) for k, m in modules.items()}, rounds, target_ns)
    results["c"] = measure({k: (lambda m=m: sum(m.tally(lines))) for k, m in modules.items()}, rounds, target_ns)

    # snapshot / restore of the suspended worker
    gen = suspended_worker(compiled)
    blob = runtime.snapshot(gen)
    snap = {"compiled": lambda: runtime.snapshot(gen)}
    restore_c = Collector(lambda: runtime.restore(blob))
    restores: dict[str, Any] = {"compiled": restore_c}
    sizes = {"compiled": len(blob)}
    if peer is not None:
        pgen = suspended_worker(peer)
        pblob = pickle.dumps(pgen, pickle.HIGHEST_PROTOCOL)
        snap["peer"] = lambda: pickle.dumps(pgen, pickle.HIGHEST_PROTOCOL)
        restores["peer"] = Collector(lambda: pickle.loads(pblob))
        sizes["peer"] = len(pblob)
    results["snapshot"] = measure(snap, snap_rounds, snap_target_ns)
    results["restore"] = measure(restores, snap_rounds, snap_target_ns,
                                 setup=lambda: [c.reset() for c in restores.values()])
    for c in restores.values():
        c.reset()
    runtime.detach(gen)

    return render(results, sizes, peer is not None, include_peer, quick, rounds, snap_rounds)


# -- output -------------------------------------------------------------------------------------
def render(results: dict[str, dict[str, list[float]]], sizes: dict[str, int], have_peer: bool, include_peer: bool,
           quick: bool, rounds: int, snap_rounds: int) -> str:
    peer_off = PEER_MISSING if include_peer else "skipped (--no-peer)"
    out = []
    head = f"| Benchmark | native | durable (compiled) | compiled / native | target | | {PEER_NAME} | peer / native |"
    out.append(head)
    out.append("|---|---:|---:|---:|---:|:---:|---:|---:|")

    def ratio_row(key: str, label: str, items: int, limit: float) -> None:
        samples = results[key]
        r = {name: median(values) for name, values in samples.items()}
        ratio = paired_ratio(samples["compiled"], samples["native"])
        per = lambda v: f"{format_ns(v)} ({v / items:.1f} ns/item)"  # noqa: E731
        status = "PASS" if ratio <= limit else "MISS"
        if have_peer:
            peer_cells = f"{per(r['peer'])} | {paired_ratio(samples['peer'], samples['native']):.2f}×"
        else:
            peer_cells = f"{peer_off} | —"
        out.append(f"| {label} | {per(r['native'])} | {per(r['compiled'])} | {ratio:.3f}× | ≤ {limit:.2f}× "
                   f"| {status} | {peer_cells} |")

    ratio_row("a", f"(a) tight loop, {N_INTS:,} ints", N_INTS, 1.10)
    ratio_row("b", f"(b) 3-level `yield from`, {N_INTS:,} ints", N_INTS, 1.10)
    ratio_row("c", f"(c) parse + accumulate, {N_LINES:,} lines", N_LINES, 1.02)

    def single_row(label: str, value: float, limit: float, unit: str, peer_value: float | None) -> None:
        fmt = (lambda v: f"{v:,.0f} B") if unit == "B" else (lambda v: f"{v / 1000:.2f} µs")
        status = "PASS" if value <= limit else "MISS"
        limit_text = f"≤ {limit:.0f} B" if unit == "B" else f"≤ {limit / 1000:.0f} µs"
        peer_cell = fmt(peer_value) if peer_value is not None else peer_off
        out.append(f"| {label} | — | {fmt(value)} | — | {limit_text} | {status} | {peer_cell} | — |")

    snap = {name: median(values) for name, values in results["snapshot"].items()}
    rest = {name: median(values) for name, values in results["restore"].items()}
    single_row("snapshot (worker suspended, 5 locals + range iterator)", snap["compiled"], 5_000, "ns",
               snap.get("peer"))
    single_row("restore (to a generator suspended at the yield)", rest["compiled"], 10_000, "ns", rest.get("peer"))
    single_row("snapshot size", sizes["compiled"], 150, "B", sizes.get("peer"))

    mode = "quick" if quick else "thorough"
    notes = [
        "",
        f"Python {platform.python_version()} ({platform.python_implementation()}) on {platform.machine()}, "
        f"{mode} mode: median of {rounds} interleaved samples per generator row, {snap_rounds} per "
        "snapshot/restore row; GC disabled while timing.",
        "Times are medians; a ratio is the median of per-round ratios (samples taken back to back). "
        "(a)-(c) are the time to exhaust one generator with `sum(gen(...))`; the peer runs the same "
        "source decorated with its own `durable`; its snapshot/restore are `pickle.dumps`/`pickle.loads` "
        "(highest protocol) of its generator wrapper.",
        "PASS/MISS is informational only.",
    ]
    return "\n".join(out + notes)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples (finishes in under 20 seconds)")
    parser.add_argument("--no-peer", action="store_true", help=f"do not measure {PEER_NAME} even if installed")
    args = parser.parse_args(argv)
    return print_measured(lambda: run(args.quick, not args.no_peer))

if __name__ == "__main__":
    sys.exit(main())
