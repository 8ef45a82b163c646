"""What one crafted input can cost restore: peak memory and time per input byte, for the inputs that
cost the most per byte (many tiny containers) and the attacks of the review (docs/security.md).

Each row puts one value node into a real snapshot of a small compiled generator, at about the same
size, and restores it: memory is the peak traced by tracemalloc (one run), time the median of the
runs without tracing. Refused inputs count too: the work done before the refusal is what they cost.

    python bench/bench_decode_bounds.py [--mb 4] [--repeat 3]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import msgpack  # noqa: E402

import runtime  # noqa: E402
from harness import load_compiled  # noqa: E402

SOURCE = """
from runtime import durable

@durable
def gen(x):
    got = yield 1
    yield x, got
"""


def families(n: int) -> list[tuple[str, Callable[[], Any]]]:
    """Value nodes of about ``n`` bytes each (a node is what the wire format of runtime/values/wire.py says;
    slot 0 is the frame's own generator, slot 1 the outer list)."""
    return [
        ("list of empty lists", lambda: [1] + [[1]] * (n // 2)),
        ("list of empty tuples", lambda: [1] + [[2]] * (n // 2)),
        ("list of empty sets", lambda: [1] + [[4]] * (n // 2)),
        ("list of empty dicts", lambda: [1] + [{}] * n),
        ("list of refs to one list", lambda: [1, [1]] + [[0, 2]] * (n // 3)),
        ("list of small ints", lambda: [1] + [1] * n),
        ("one str", lambda: "x" * n),
        ("one big int", lambda: [6, b"\x7f" * n]),
        ("set of 64-deep shared tuples", lambda: [1, [2, 1, 2], *[[2, [0, k + 2], [0, k + 2]] for k in range(64)],
                                                 [4, [0, 66]]]),
        ("dict of colliding int keys", lambda: [3, *[_bigint(k * (2 ** 61 - 1)) for k in range(n // 16)],
                                                *[0] * (n // 16)]),
        ("Fraction of two big ints", lambda: [9, "fraction", [1, [6, b"\x7f" * (n // 2)], [6, b"\x7f" * (n // 2)]]]),
    ]


def _bigint(x: int) -> list[Any]:
    return [6, x.to_bytes((x.bit_length() + 8) // 8, "little", signed=True)]


def run(mb: float, repeat: int) -> None:
    runtime.configure(max_bytes=1 << 30)
    mod = load_compiled(SOURCE, all_generators=False, tag="bounds")
    g = mod.gen(None)
    next(g)
    envelope = msgpack.unpackb(runtime.snapshot(g), raw=False)
    runtime.detach(g)
    n = int(mb * 1_000_000)
    print(f"restore of crafted inputs of about {mb:g} MB (CPython {sys.version.split()[0]}); "
          "memory is the traced peak, time the median of the untraced runs\n")
    print("| input | bytes | outcome | peak memory | per input byte | time | per input byte |")
    print("|---|---:|---|---:|---:|---:|---:|")
    for name, node in families(n):
        envelope[2][5] = [node()]
        data = msgpack.packb(envelope, use_bin_type=True)
        tracemalloc.start()
        outcome = _restore(data)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        times = []
        for _ in range(repeat):
            started = time.perf_counter()
            _restore(data)
            times.append(time.perf_counter() - started)
        t = statistics.median(times)
        print(f"| {name} | {len(data):,} | {outcome} | {peak / 1e6:,.1f} MB | {peak / len(data):,.0f} B "
              f"| {t:.3f} s | {t / len(data) * 1e6:.2f} µs |")


def _restore(data: bytes) -> str:
    try:
        runtime.detach(runtime.restore(data))
        return "restored"
    except runtime.SnapshotError as exc:
        return type(exc).__name__


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=4.0, help="size of each input in MB (default 4)")
    parser.add_argument("--repeat", type=int, default=3)
    options = parser.parse_args()
    run(options.mb, options.repeat)
